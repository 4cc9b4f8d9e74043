/** Result shapes of the issue-2 benchmark and their text rendering. */
import type { DriveReport } from '../src/cli/drive.js';
import type { PingPongResult } from './c-baseline.js';

export const LATENCY_RATIO_TARGET = 1.3;
export const PER_QUEUE_TARGET = 10e6;

/** virtqueue layout of a run: split (VIRTIO 1.x 2.7) or packed (VIRTIO_F_RING_PACKED) */
export type RingFormat = 'split' | 'packed';

export interface ThroughputScenario {
  name: string;
  queues: number;
  /** virtqueue format the run used (absent in older results: split) */
  ring?: RingFormat;
  /** 'eventfd': back-end --poll-us 0, driver sleeps on the call fd; 'polling': back-end spins, driver spins */
  notify: 'eventfd' | 'polling';
  backendArgs: string[];
  drivePolling: boolean;
  /** one back-end worker + one driver thread per queue, against os.cpus().length */
  busyThreads: number;
  oversubscribed: boolean;
  note?: string;
  ok: boolean;
  error?: string;
  perQueueChainsPerSec?: number[];
  totalChainsPerSec?: number;
  kicksPerChain?: number;
  callsPerChain?: number;
  driverErrors?: number;
  report?: DriveReport;
}

export interface LatencyRun {
  ok: boolean;
  loadavg1?: number;
  error?: string;
  p50Us?: number;
  p90Us?: number;
  p99Us?: number;
  meanUs?: number;
  samples?: number;
  kicksPerChain?: number;
  callsPerChain?: number;
  report?: DriveReport;
}

export interface CRun {
  ok: boolean;
  /** 1-minute load average when the run started */
  loadavg1?: number;
  error?: string;
  result?: PingPongResult;
}

export interface LatencyRound {
  round: number;
  cBefore: CRun;
  ours: LatencyRun;
  cAfter: CRun;
  /** mean of the p50s of the C runs right before and right after */
  cP50Us?: number;
  ratio?: number;
}

export interface LatencySection {
  backendArgs: string[];
  /** C, ours, C, ours, ..., C: each C run brackets the runs of ours beside it */
  rounds: LatencyRound[];
  /** medians over the rounds */
  oursP50Us?: number;
  oursP99Us?: number;
  cP50Us?: number;
  cP99Us?: number;
  ratio?: number;
  /** median of the per-round ratios (ours / mean of its two brackets) */
  medianRoundRatio?: number;
  /** least-disturbed comparison: lowest p50 of ours over lowest p50 of C (each side's quietest run) */
  minOursP50Us?: number;
  minCP50Us?: number;
  minRatio?: number;
  target: number;
  pass?: boolean;
  /** max/min of the C p50s over the run: far above 1, the machine was busy and the ratio is unreliable */
  cP50Spread?: number;
  noisy?: boolean;
}

export interface BenchResults {
  benchmark: 'issue2';
  startedAt: string;
  finishedAt?: string;
  host: { cpus: number; cpuModel: string; node: string; platform: string; release: string; loadavgAtStart: number[]; loadavgAtEnd?: number[] };
  options: { seconds: number; quick: boolean; rounds: number; queueSize: number; batch: number; pollUsPolling: number };
  cBaseline: { binary?: string; compiled?: boolean; error?: string };
  throughput: ThroughputScenario[];
  latency: LatencySection;
  best: { perQueueChainsPerSec?: number; scenario?: string; oversubscribed?: boolean; target: number; pass?: boolean };
  /** best per-queue rate among scenarios that are not oversubscribed */
  bestNotOversubscribed: { perQueueChainsPerSec?: number; scenario?: string };
  errors: string[];
}

export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

const M = (x: number | undefined, d = 3): string => (x === undefined ? '-' : (x / 1e6).toFixed(d));
const F = (x: number | undefined, d: number): string => (x === undefined ? '-' : x.toFixed(d));
const us = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(2));

function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  ').trimEnd(), ...rows.map(line)];
}

export function formatResults(r: BenchResults, jsonPath?: string): string {
  const out: string[] = [];
  const o = r.options;
  out.push(
    `vhost-wasm issue-2 benchmark: null device (separate back-end process), built-in front-end, ` +
      `queue size ${o.queueSize}, back-end batch ${o.batch}, ${o.seconds} s per run, ${r.host.cpus} CPU(s), node ${r.host.node}`,
  );
  out.push('');
  out.push('throughput (chains/s in millions):');
  const rows = r.throughput.map((s) => {
    if (!s.ok) return [s.name + (s.oversubscribed ? ' *' : ''), 'FAILED', '', '', '', (s.error ?? '').split('\n')[0]!.slice(0, 100)];
    return [
      s.name + (s.oversubscribed ? ' *' : ''),
      (s.perQueueChainsPerSec ?? []).map((x) => M(x)).join(' / '),
      M(s.totalChainsPerSec),
      F(s.kicksPerChain, 5),
      F(s.callsPerChain, 5),
      s.driverErrors ? `DRIVER ERRORS ${s.driverErrors}` : '',
    ];
  });
  out.push(...table(['scenario', 'per queue', 'total', 'kicks/chain', 'calls/chain', ''], rows).map((l) => '  ' + l));
  const over = r.throughput.filter((s) => s.oversubscribed);
  if (over.length) out.push(`  * oversubscribed: ${over.map((s) => `${s.name}: ${s.note}`).join('; ')}`);
  out.push('');

  const L = r.latency;
  out.push(`kick-to-call round trip (1 queue, eventfd, one chain at a time; C ping-pong bracketing each run):`);
  const lrows = L.rounds.map((x) => [
    String(x.round),
    x.cBefore.ok ? us(x.cBefore.result?.p50Us) : 'FAILED',
    x.ours.ok ? us(x.ours.p50Us) : 'FAILED',
    x.ours.ok ? us(x.ours.p99Us) : '',
    x.cAfter.ok ? us(x.cAfter.result?.p50Us) : 'FAILED',
    us(x.cP50Us),
    F(x.ratio, 2),
  ]);
  out.push(...table(['round', 'C p50 before', 'ours p50', 'ours p99', 'C p50 after', 'C mean', 'ratio'], lrows).map((l) => '  ' + l));
  for (const x of L.rounds) {
    for (const [what, e] of [
      ['C before', x.cBefore.error],
      ['ours', x.ours.error],
      ['C after', x.cAfter.error],
    ] as const)
      if (e) out.push(`  round ${x.round} ${what}: ${e.split('\n')[0]}`);
  }
  out.push('');
  const verdict = (pass: boolean | undefined): string => (pass === undefined ? 'n/a' : pass ? 'MET' : 'NOT MET');
  out.push(
    `kick-to-call p50: ours ${us(L.oursP50Us)} us, C ${us(L.cP50Us)} us, ratio ${F(L.ratio, 2)} ` +
      `(target <= ${L.target}) ${verdict(L.pass)}` +
      (L.rounds.length > 1 ? `  [medians over ${L.rounds.length} rounds; p99 ours ${us(L.oursP99Us)} us, C ${us(L.cP99Us)} us]` : `  [p99 ours ${us(L.oursP99Us)} us, C ${us(L.cP99Us)} us]`),
  );
  if (L.rounds.length > 1 && L.minRatio !== undefined)
    out.push(
      `  also: median of the per-round ratios ${F(L.medianRoundRatio, 2)}; quietest runs: ours ${us(L.minOursP50Us)} us, C ${us(L.minCP50Us)} us, ratio ${F(L.minRatio, 2)}`,
    );
  if (L.noisy)
    out.push(
      `  warning: the C ping-pong p50 moved ${F(L.cP50Spread, 1)}x between its runs (load average ${r.host.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} at start): ` +
        `the machine was busy, read the ratio with care`,
    );
  const b = r.best;
  out.push(
    `best chains/s per queue worker: ${M(b.perQueueChainsPerSec, 2)} M (target >= ${PER_QUEUE_TARGET / 1e6} M) ${verdict(b.pass)}` +
      (b.scenario ? `  [${b.scenario}${b.oversubscribed ? ', oversubscribed' : ''}]` : ''),
  );
  if (r.bestNotOversubscribed.scenario && r.bestNotOversubscribed.scenario !== b.scenario)
    out.push(`  best without oversubscription: ${M(r.bestNotOversubscribed.perQueueChainsPerSec, 2)} M  [${r.bestNotOversubscribed.scenario}]`);
  if (r.errors.length) {
    out.push('');
    out.push(`errors (${r.errors.length}):`);
    for (const e of r.errors) out.push('  ' + e.split('\n')[0]);
  }
  if (jsonPath) {
    out.push('');
    out.push(`results: ${jsonPath}`);
  }
  return out.join('\n');
}
