/**
 * A small SVG chart writer for the bench results: line charts (one polyline per series) and grouped bar charts.
 * Plain strings, no dependencies; the charts open in any browser and render on GitHub.
 */

export interface Series {
  name: string;
  points: readonly (readonly [number, number])[];
  /** drawn dashed (reference lines: the ideal, a target) */
  dashed?: boolean;
  /** palette index (default: the series' position), so that a reference line can share its series' colour */
  colourIndex?: number;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** x on a log2 axis (batch sizes) */
  logX?: boolean;
  /** a horizontal line with its label (a target) */
  hline?: { y: number; label: string };
}

export interface BarGroup {
  label: string;
  bars: readonly { name: string; value: number | undefined }[];
  /** written above the group (a ratio) */
  note?: string;
}

export interface BarChart {
  title: string;
  yLabel: string;
  groups: readonly BarGroup[];
}

const W = 760;
const H = 440;
const M = { left: 70, right: 190, top: 40, bottom: 80 };
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function colour(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function num(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(2).replace(/\.?0+$/, '');
}

/** Round tick values for [0, max]. */
function ticks(max: number, n = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[out.length - 1]! < max) out.push(Number((out[out.length - 1]! + step).toPrecision(12)));
  return out;
}

function frame(title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - M.right / 2 + M.left / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

function yAxis(yMax: number, yLabel: string, out: string[]): (y: number) => number {
  const yt = ticks(yMax);
  const top = yt[yt.length - 1]!;
  const py = (y: number): number => H - M.bottom - (y / top) * (H - M.top - M.bottom);
  for (const t of yt) {
    out.push(`<line x1="${M.left}" y1="${py(t)}" x2="${W - M.right}" y2="${py(t)}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end">${num(t)}</text>`);
  }
  out.push(`<line x1="${M.left}" y1="${M.top}" x2="${M.left}" y2="${H - M.bottom}" stroke="black"/>`);
  out.push(`<line x1="${M.left}" y1="${H - M.bottom}" x2="${W - M.right}" y2="${H - M.bottom}" stroke="black"/>`);
  const cy = (M.top + H - M.bottom) / 2;
  out.push(`<text x="16" y="${cy}" text-anchor="middle" transform="rotate(-90 16 ${cy})">${esc(yLabel)}</text>`);
  return py;
}

function legend(names: readonly { name: string; colour: string; dashed?: boolean }[], out: string[]): void {
  names.forEach((s, i) => {
    const y = M.top + 8 + i * 18;
    const x = W - M.right + 14;
    out.push(`<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${s.colour}" stroke-width="3"${s.dashed ? ' stroke-dasharray="5 4"' : ''}/>`);
    out.push(`<text x="${x + 28}" y="${y + 4}">${esc(s.name)}</text>`);
  });
}

export function lineChart(c: LineChart): string {
  const out: string[] = [];
  const pts = c.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) return frame(c.title, [`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`]);
  const fx = (x: number): number => (c.logX ? Math.log2(x) : x);
  const xs = pts.map(([x]) => fx(x));
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  // a margin so that the first and last points sit off the axes
  const pad = (x1 - x0) * 0.04;
  x0 -= pad;
  x1 += pad;
  const yMax = Math.max(...pts.map(([, y]) => y), c.hline?.y ?? 0) * 1.05;
  const py = yAxis(yMax, c.yLabel, out);
  const px = (x: number): number => M.left + ((fx(x) - x0) / (x1 - x0)) * (W - M.left - M.right);
  const xTicks = [...new Set(pts.map(([x]) => x))].sort((a, b) => a - b);
  for (const t of xTicks) {
    out.push(`<line x1="${px(t)}" y1="${H - M.bottom}" x2="${px(t)}" y2="${H - M.bottom + 5}" stroke="black"/>`);
    out.push(`<text x="${px(t)}" y="${H - M.bottom + 18}" text-anchor="middle">${num(t)}</text>`);
  }
  out.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 16}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  if (c.hline) {
    out.push(`<line x1="${M.left}" y1="${py(c.hline.y)}" x2="${W - M.right}" y2="${py(c.hline.y)}" stroke="#555" stroke-dasharray="2 3"/>`);
    out.push(`<text x="${W - M.right - 4}" y="${py(c.hline.y) - 4}" text-anchor="end" fill="#555">${esc(c.hline.label)}</text>`);
  }
  c.series.forEach((s, si) => {
    const i = s.colourIndex ?? si;
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (p.length === 0) return;
    const d = p.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${colour(i)}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''} points="${d}"/>`);
    if (!s.dashed) for (const [x, y] of p) out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${colour(i)}"><title>${esc(`${s.name}: ${num(x)} -> ${num(y)}`)}</title></circle>`);
  });
  legend(c.series.map((s, i) => ({ name: s.name, colour: colour(s.colourIndex ?? i), dashed: s.dashed })), out);
  return frame(c.title, out);
}

export function barChart(c: BarChart): string {
  const out: string[] = [];
  const values = c.groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (values.length === 0) return frame(c.title, [`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`]);
  const py = yAxis(Math.max(...values) * 1.12, c.yLabel, out);
  const names = [...new Set(c.groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const gw = (W - M.left - M.right) / c.groups.length;
  // long group labels that would run into each other are slanted
  const slant = c.groups.some((g) => g.label.length * 6.5 > gw);
  const bw = Math.min(40, (gw * 0.8) / Math.max(1, names.length));
  c.groups.forEach((g, gi) => {
    const gx = M.left + gi * gw + (gw - bw * names.length) / 2;
    g.bars.forEach((b) => {
      const k = names.indexOf(b.name);
      const x = gx + k * bw;
      if (b.value === undefined || !Number.isFinite(b.value)) {
        out.push(`<text x="${x + bw / 2}" y="${H - M.bottom - 4}" text-anchor="middle" font-size="10">n/a</text>`);
        return;
      }
      const y = py(b.value);
      out.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(H - M.bottom - y).toFixed(1)}" fill="${colour(k)}"><title>${esc(`${g.label} ${b.name}: ${num(b.value)}`)}</title></rect>`);
    });
    const cx = M.left + gi * gw + gw / 2;
    if (slant) out.push(`<text x="${cx}" y="${H - M.bottom + 14}" text-anchor="end" font-size="11" transform="rotate(-25 ${cx} ${H - M.bottom + 14})">${esc(g.label)}</text>`);
    else out.push(`<text x="${cx}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="11">${esc(g.label)}</text>`);
    if (g.note) {
      const top = Math.min(...g.bars.map((b) => (b.value === undefined ? H - M.bottom : py(b.value))));
      out.push(`<text x="${cx}" y="${top - 6}" text-anchor="middle" font-size="11" font-weight="bold">${esc(g.note)}</text>`);
    }
  });
  legend(names.map((n, i) => ({ name: n, colour: colour(i) })), out);
  return frame(c.title, out);
}
