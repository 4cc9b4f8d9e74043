/** The bench's own SVG writer and progress output: well-formed charts that carry the data, plain lines off a terminal. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Progress } from '../../bench/progress.js';
import { barChart, lineChart } from '../../bench/svg.js';

/** Tags balance and every attribute value is quoted: enough of XML to catch a broken writer. */
function wellFormed(svg: string): boolean {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-z]+)([^>]*?)(\/?)>/g)) {
    const [, close, name, attrs, self] = m;
    if (/=\s*[^"\s]/.test(attrs!.replace(/="[^"]*"/g, ''))) return false;
    if (self) continue;
    if (close) {
      if (stack.pop() !== name) return false;
    } else stack.push(name!);
  }
  return stack.length === 0;
}

describe('bench charts (bench/svg.ts)', () => {
  it('a line chart: one polyline per series with a point per datum, log2 x axis, escaped names', () => {
    const svg = lineChart({
      title: 'chains/s <vs> batch & policy',
      xLabel: 'batch',
      yLabel: 'M chains/s',
      logX: true,
      series: [
        { name: 'wasm event-idx', points: [[1, 2], [4, 6], [16, 12], [256, 20]] },
        { name: 'reference "always"', points: [[1, 0.5], [256, 2]] },
        { name: 'ideal', dashed: true, points: [[1, 1], [256, 30]] },
      ],
      hline: { y: 20, label: 'target 20 M' },
    });
    expect(wellFormed(svg)).toBe(true);
    expect(svg.match(/<polyline/g)).toHaveLength(3);
    expect(svg.match(/<circle/g)).toHaveLength(6); // dashed reference lines carry no markers
    expect(svg).toContain('chains/s &lt;vs&gt; batch &amp; policy');
    expect(svg).toContain('reference &quot;always&quot;');
    // log2 axis: 1, 4, 16 are evenly spaced
    const xs = [...svg.matchAll(/<text x="([\d.]+)" y="\d+" text-anchor="middle">(1|4|16)<\/text>/g)].map((m) => Number(m[1]));
    expect(xs).toHaveLength(3);
    expect(xs[1]! - xs[0]!).toBeCloseTo(xs[2]! - xs[1]!, 5);
  });

  it('a bar chart: a bar per value, n/a where a peer is missing, the ratio over the group', () => {
    const svg = barChart({
      title: 'blk',
      yLabel: 'k IOPS',
      groups: [
        { label: '1q randread', bars: [{ name: 'ours', value: 120 }, { name: 'qsd', value: 100 }], note: '1.20x' },
        { label: '4q randread', bars: [{ name: 'ours', value: 300 }, { name: 'qsd', value: undefined }] },
      ],
    });
    expect(wellFormed(svg)).toBe(true);
    expect(svg.match(/<rect x=/g)).toHaveLength(3);
    expect(svg).toContain('n/a');
    expect(svg).toContain('1.20x');
  });

  it('no data: still a chart that says so', () => {
    expect(lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [] })).toContain('no data');
    expect(barChart({ title: 't', yLabel: 'y', groups: [] })).toContain('no data');
  });
});

describe('bench progress (bench/progress.ts)', () => {
  it('off a terminal: one plain line per step and per message, with the step count', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => (text += d.toString()));
    const p = new Progress(2, out as unknown as NodeJS.WriteStream);
    p.step('sweep: wasm');
    p.log('  6.1 M chains/s');
    p.tick();
    p.step('latency');
    p.tick();
    p.finish();
    expect(text.split('\n').filter(Boolean)).toEqual(['[bench 1/2] sweep: wasm', '[bench]   6.1 M chains/s', '[bench 2/2] latency']);
    expect(text).not.toContain('\r');
  });

  it('on a terminal: the bar is redrawn in place and messages print above it', () => {
    const out = new PassThrough() as unknown as NodeJS.WriteStream & { isTTY: boolean; columns: number };
    out.isTTY = true;
    out.columns = 80;
    let text = '';
    (out as unknown as PassThrough).on('data', (d: Buffer) => (text += d.toString()));
    const ci = process.env['CI'];
    delete process.env['CI'];
    try {
      const p = new Progress(4, out);
      p.step('one');
      p.tick();
      p.log('hello');
      p.finish();
    } finally {
      if (ci !== undefined) process.env['CI'] = ci;
    }
    expect(text).toContain('\r\x1b[2K[#######');
    expect(text).toContain('1/4');
    expect(text).toContain('[bench] hello\n');
  });
});
