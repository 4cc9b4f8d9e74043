/**
 * The bench's summary.md and SVG charts (bench/svg.ts) from one run's results. Every comparison is a figure
 * beside its peer from the same run and their ratio.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BlkBenchResults } from './blk.js';
import { LAB_POLICIES } from './lab.js';
import type { NetBenchResults } from './net.js';
import { type BenchResults, median } from './report.js';
import { barChart, lineChart, type Series } from './svg.js';

export interface AllResults extends BenchResults {
  blk?: BlkBenchResults;
  net?: NetBenchResults;
}

const M = (x: number | undefined, d = 2): string => (x === undefined ? '-' : (x / 1e6).toFixed(d));
const F = (x: number | undefined, d = 2): string => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
/** An engine module given by path is shown by its file name. */
const engineLabel = (e: string): string => (e.includes('/') ? path.basename(e).replace(/\.js$/, '') : e);
const verdict = (pass: boolean | undefined): string => (pass === undefined ? 'n/a' : pass ? 'met' : 'NOT met');

function table(head: string[], rows: string[][]): string[] {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

/**
 * Per percentile, as the p50 verdict is taken: ours, the median over rounds; C, per round the mean of the runs
 * just before and after ours, then the median over rounds.
 */
function latencyPercentiles(r: BenchResults): { p: string; ours?: number; c?: number }[] {
  const rounds = r.latency.rounds.filter((x) => x.ours.ok);
  return (['p50', 'p90', 'p99'] as const).map((p) => {
    const k = `${p}Us` as const;
    const cs = rounds.flatMap((x) => {
      const v = [x.cBefore, x.cAfter].filter((c) => c.ok).map((c) => c.result![k]);
      return v.length ? [v.reduce((a, b) => a + b, 0) / v.length] : [];
    });
    return { p, ours: median(rounds.map((x) => x.ours[k]!)), c: median(cs) };
  });
}

function blkHeadline(b: BlkBenchResults): string[] {
  const h = b.headline;
  const sc = b.frontend.find((x) => x.name === h.scenario);
  return [
    `blk ${h.scenario} k IOPS`,
    F(sc?.oursIops && sc.oursIops / 1e3, 1),
    `qemu-storage-daemon ${F(sc?.qsdIops && sc.qsdIops / 1e3, 1)}`,
    F(h.ratio),
    `>= ${h.target}`,
    verdict(h.pass),
  ];
}

/** Write summary.md and the charts into dir; returns the markdown. */
export function writeSummary(dir: string, r: AllResults): { markdown: string; files: string[] } {
  const files: string[] = [];
  const chart = (name: string, svg: string): string => {
    fs.writeFileSync(path.join(dir, name), svg);
    files.push(name);
    return name;
  };
  const md: string[] = [];
  const h = r.host;
  md.push(`# vhost-wasm bench ${r.startedAt}${r.options.quick ? ' (--quick)' : ''}`, '');
  md.push(
    `Machine: ${h.cpus} CPU(s) (${h.availableParallelism} available), ${h.cpuModel}; load average ${h.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} at start` +
      (h.loadavgAtEnd ? `, ${h.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')} at end` : '') +
      `; node ${h.node}; ${h.platform} ${h.release}.`,
    '',
  );
  md.push(
    'Each ratio is ours divided by its peer measured in the same run (interleaved, medians over rounds). ' +
      'A shared machine moves the absolute figures; read the ratios.',
    '',
  );

  // ---- targets ----
  md.push('## Targets', '');
  const L = r.latency;
  const sc = r.scaling;
  const bestEff = sc ? Math.max(...Object.values(sc.minEfficiency).filter((x): x is number => x !== undefined)) : undefined;
  const bestEffPolicy = sc ? Object.entries(sc.minEfficiency).find(([, v]) => v === bestEff)?.[0] : undefined;
  md.push(
    ...table(
      ['figure', 'ours', 'peer', 'ratio', 'target', 'verdict'],
      [
        ['chains/s per queue worker, null, built-in front-end (M)', M(r.best.perQueueChainsPerSec), '-', '-', `>= ${r.best.target / 1e6} M`, verdict(r.best.pass) + (r.best.scenario ? ` (${r.best.scenario})` : '')],
        ['kick-to-call p50 (us), 1 queue, eventfds', F(L.oursP50Us), `C ping-pong ${F(L.cP50Us)}`, F(L.ratio, 3), `<= ${L.target}`, verdict(L.pass) + (L.noisy ? ' (noisy: C moved ' + F(L.cP50Spread, 1) + 'x)' : '')],
        [
          `scaling efficiency up to ${sc?.maxQueues ?? '-'} queues`,
          F(bestEff),
          '1 queue x N',
          F(bestEff),
          `>= ${sc?.target ?? 0.85}`,
          verdict(sc?.pass) + (bestEffPolicy ? ` (${bestEffPolicy})` : ''),
        ],
        ...(r.blk ? [blkHeadline(r.blk)] : []),
        ...(r.net && !r.net.skipped
          ? [[`net ${r.net.headline.scenario} Mpps`, F(r.net.headline.oursMpps, 3), `DPDK vhost PMD ${F(r.net.headline.dpdkMpps, 3)}`, F(r.net.headline.ratio), `>= ${r.net.headline.target}`, verdict(r.net.headline.pass)]]
          : []),
      ],
    ),
    '',
  );

  // ---- sweep ----
  const lab = r.lab;
  if (lab) {
    md.push('## Chains/s against batch size (1 queue)', '');
    md.push(
      `Null device, queue size ${lab.queueSize}, one chain of one 64-byte descriptor each, ${lab.seconds} s per point; \`--batch\` is the most chains the back-end pops per engine call. M chains/s:`,
      '',
    );
    const rows = lab.engines.flatMap((engine) =>
      lab.policies.map((policy) => [
        engineLabel(engine),
        policy,
        ...lab.batches.map((b) => {
          const p = lab.points.find((x) => x.engine === engine && x.policy === policy && x.batch === b);
          return p?.ok ? M(p.chainsPerSec) : 'failed';
        }),
      ]),
    );
    md.push(...table(['engine', 'policy', ...lab.batches.map((b) => `batch ${b}`)], rows), '');
    const ref = lab.engines.includes('wasm') ? 'wasm' : lab.engines[0];
    if (ref && lab.engines.length > 1) {
      md.push(`Ratio of each engine to \`${ref}\` at the same batch and policy (same run, interleaved):`, '');
      const rrows = lab.engines
        .filter((e) => e !== ref)
        .flatMap((engine) =>
          lab.policies.map((policy) => [
            engineLabel(engine),
            policy,
            ...lab.batches.map((b) => {
              const p = lab.points.find((x) => x.engine === engine && x.policy === policy && x.batch === b);
              const q = lab.points.find((x) => x.engine === ref && x.policy === policy && x.batch === b);
              return p?.ok && q?.ok ? F(p.chainsPerSec! / q.chainsPerSec!) : '-';
            }),
          ]),
        );
      md.push(...table(['engine', 'policy', ...lab.batches.map((b) => `batch ${b}`)], rrows), '');
    }
    md.push('Policies:', '', ...lab.policies.map((p) => `- \`${p}\`: ${lab.policyNotes[p] ?? LAB_POLICIES[p]?.what ?? ''}`), '');
    if (lab.best) md.push(`Best: ${M(lab.best.chainsPerSec)} M chains/s (${engineLabel(lab.best.engine)}, ${lab.best.policy}, batch ${lab.best.batch}).`, '');
    const series: Series[] = lab.engines.flatMap((engine) =>
      lab.policies.map((policy) => ({
        name: `${engineLabel(engine)} ${policy}`,
        points: lab.points.filter((x) => x.engine === engine && x.policy === policy && x.ok).map((x) => [x.batch, x.chainsPerSec! / 1e6] as const),
      })),
    );
    md.push(
      `![chains/s against batch size](${chart('chains-vs-batch.svg', lineChart({ title: 'null device, 1 queue: chains/s against batch size', xLabel: 'back-end batch limit (chains per engine call)', yLabel: 'M chains/s', series, logX: true, hline: { y: r.best.target / 1e6, label: `target ${r.best.target / 1e6} M` } }))})`,
      '',
    );
  }

  // ---- latency ----
  md.push('## Kick-to-call latency (1 queue, eventfds, one chain at a time)', '');
  const pct = latencyPercentiles(r);
  md.push(
    `The C ping-pong (\`bench/c/eventfd-pingpong.c\`: two threads bouncing an eventfd) runs before and after each of our ${L.rounds.length} run(s); medians over the runs, microseconds:`,
    '',
  );
  md.push(...table(['percentile', 'ours', 'C ping-pong', 'ratio'], pct.map((x) => [x.p, F(x.ours), F(x.c), x.ours && x.c ? F(x.ours / x.c) : '-'])), '');
  if (L.rounds.length > 1)
    md.push(`Per-round p50 ratios (ours over the mean of the C runs around it): ${L.rounds.map((x) => F(x.ratio)).join(', ')}; median ${F(L.medianRoundRatio)}; quietest runs ${F(L.minRatio)}.`, '');
  md.push(
    `![latency percentiles](${chart('latency.svg', barChart({ title: 'kick-to-call round trip: ours vs C eventfd ping-pong', yLabel: 'microseconds', groups: pct.map((x) => ({ label: x.p, bars: [{ name: 'ours', value: x.ours }, { name: 'C ping-pong', value: x.c }], note: x.ours && x.c ? `${(x.ours / x.c).toFixed(2)}x` : undefined })) }))})`,
    '',
  );

  // ---- scaling ----
  if (sc) {
    md.push(`## Multi-queue scaling (1 to ${sc.maxQueues} queues)`, '');
    md.push(`${sc.counting}. ${sc.rounds} round(s) of ${sc.seconds} s, rounds interleaved; efficiency = throughput(N) / (N x throughput(1)).`, '');
    md.push(
      ...table(
        ['policy', 'queues', 'busy threads / cores', 'total M chains/s', 'per queue', 'efficiency'],
        sc.rows.map((x) => [x.policy, String(x.queues), `${x.busyThreads} / ${sc.cores}${x.oversubscribed ? ' (over)' : ''}`, M(x.medianTotal), M(x.medianPerQueue), F(x.efficiency)]),
      ),
      '',
    );
    const policies = [...new Set(sc.rows.map((x) => x.policy))];
    const series: Series[] = policies.flatMap((p, pi) => {
      const rows = sc.rows.filter((x) => x.policy === p && x.medianTotal !== undefined);
      const one = rows.find((x) => x.queues === 1)?.medianTotal;
      return [
        { name: `${p} measured`, colourIndex: pi, points: rows.map((x) => [x.queues, x.medianTotal! / 1e6] as const) },
        ...(one ? [{ name: `${p} ideal (N x 1q)`, dashed: true, colourIndex: pi, points: rows.map((x) => [x.queues, (x.queues * one) / 1e6] as const) }] : []),
      ];
    });
    md.push(`![scaling](${chart('scaling.svg', lineChart({ title: 'null device: total chains/s against queue count', xLabel: 'queues (one queue worker each)', yLabel: 'M chains/s', series }))})`, '');
  }

  // ---- blk ----
  const blk = r.blk;
  if (blk) {
    md.push('## blk: ours vs qemu-storage-daemon (built-in front-end)', '');
    if (blk.qsd.error) md.push(`qemu-storage-daemon unavailable: ${blk.qsd.error}`, '');
    md.push(
      ...table(
        ['scenario', 'ours k IOPS', 'QSD k IOPS', 'ratio', 'per-round ratios'],
        blk.frontend.map((x) => [x.name, F(x.oursIops && x.oursIops / 1e3, 1), F(x.qsdIops && x.qsdIops / 1e3, 1), F(x.ratio), x.roundRatios.map((v) => v.toFixed(2)).join(' ')]),
      ),
      '',
    );
    if (blk.guest?.scenarios.length)
      md.push(
        ...table(
          ['guest fio', 'randread ratio', 'randwrite ratio'],
          blk.guest.scenarios.map((g) => [`${g.queues} queue(s), ${g.jobs} job(s)`, F(g.randreadRatio), F(g.randwriteRatio)]),
        ),
        '',
      );
    md.push(
      `![blk](${chart('blk.svg', barChart({ title: 'blk: IOPS, ours vs qemu-storage-daemon', yLabel: 'k IOPS', groups: blk.frontend.map((x) => ({ label: x.name, bars: [{ name: 'ours', value: x.oursIops && x.oursIops / 1e3 }, { name: 'qemu-storage-daemon', value: x.qsdIops && x.qsdIops / 1e3 }], note: x.ratio ? `${x.ratio.toFixed(2)}x` : undefined })) }))})`,
      '',
    );
  }

  // ---- net ----
  const net = r.net;
  if (net) {
    md.push('## net: ours vs DPDK vhost PMD (testpmd virtio-user front-end)', '');
    if (net.skipped) md.push(`skipped: ${net.skipped}`, '');
    else {
      md.push(
        ...table(
          ['scenario', 'ours Mpps', 'DPDK Mpps', 'ratio', 'per-round ratios', 'oversubscribed'],
          net.scenarios.map((x) => [x.name, F(x.oursMpps, 3), F(x.dpdkMpps, 3), F(x.ratio), x.roundRatios.map((v) => v.toFixed(2)).join(' '), x.oversubscribed ? 'yes' : 'no']),
        ),
        '',
      );
      md.push(
        `![net](${chart('net.svg', barChart({ title: 'net: Mpps, ours vs DPDK vhost PMD', yLabel: 'Mpps', groups: net.scenarios.map((x) => ({ label: x.name, bars: [{ name: 'ours', value: x.oursMpps }, { name: 'DPDK vhost PMD', value: x.dpdkMpps }], note: x.ratio ? `${x.ratio.toFixed(2)}x` : undefined })) }))})`,
        '',
      );
    }
  }

  const errors = [...r.errors, ...(blk?.errors ?? []).map((e) => `blk: ${e}`), ...(net?.errors ?? []).map((e) => `net: ${e}`)];
  if (errors.length) md.push('## Errors', '', ...errors.map((e) => `- ${e.split('\n')[0]}`), '');
  md.push('Files: `results.json` (everything above, every run), ' + files.map((f) => `\`${f}\``).join(', ') + '.', '');
  const markdown = md.join('\n');
  fs.writeFileSync(path.join(dir, 'summary.md'), markdown);
  return { markdown, files: ['results.json', 'summary.md', ...files] };
}
