/**
 * The ring lab's part of the bench: the null device in a separate back-end process, driven by the built-in
 * front-end from this process.
 * - sweep: chains/s of one queue against the back-end's batch limit, for every engine of the registry
 *   (src/engine/engines.ts) and every notification policy; engines interleaved inside each (batch, policy);
 * - scaling: 1 .. os.availableParallelism() queues (one queue worker each), rounds interleaved, medians;
 *   efficiency(N) = throughput(N) / (N * throughput(1)).
 * Each queue has two busy threads: its back-end queue worker and its front-end driver thread; the table says how
 * many busy threads a row has against the cores.
 */
import os from 'node:os';
import path from 'node:path';
import { drive, type DriveReport } from '../src/cli/drive.js';
import { ENGINES } from '../src/engine/engines.js';
import { Backend, type BackendOptions } from './backend.js';
import { median } from './report.js';

export const QUEUE_SIZE = 256;
export const SCALING_TARGET = 0.85;

/** A notification policy as the lab runs it: the back-end's --notify and the driver's matching behaviour. */
export interface LabPolicy {
  /** back-end --notify */
  notify: 'always' | 'event-idx' | 'adaptive';
  /** back-end --poll-us (adaptive's budget) */
  pollUs: number;
  /** the driver: kicks when asked and sleeps on the call fd, or spins `driverPollUs` first (adaptive) */
  driverNotify: 'event-idx' | 'adaptive';
  driverPollUs: number;
  what: string;
}

export const LAB_POLICIES: Readonly<Record<string, LabPolicy>> = {
  'event-idx': { notify: 'event-idx', pollUs: 0, driverNotify: 'event-idx', driverPollUs: 0, what: 'calls and kicks when the other side asks (EVENT_IDX); both sides sleep on eventfds' },
  always: { notify: 'always', pollUs: 0, driverNotify: 'event-idx', driverPollUs: 0, what: 'a call after every back-end batch whatever the driver asked' },
  adaptive: {
    notify: 'adaptive',
    pollUs: 1000,
    driverNotify: 'adaptive',
    driverPollUs: 1000,
    what: 'both sides busy-poll the ring up to 1 ms after the last work before re-arming notifications and sleeping',
  },
};

export interface SweepPoint {
  engine: string;
  policy: string;
  batch: number;
  ok: boolean;
  error?: string;
  chainsPerSec?: number;
  kicksPerChain?: number;
  callsPerChain?: number;
  backendArgs?: string[];
}

export interface LabSweep {
  queueSize: number;
  seconds: number;
  engines: string[];
  policies: string[];
  policyNotes: Record<string, string>;
  batches: number[];
  points: SweepPoint[];
  best?: { engine: string; policy: string; batch: number; chainsPerSec: number };
}

export interface ScalingRun {
  round: number;
  ok: boolean;
  error?: string;
  totalChainsPerSec?: number;
  perQueueChainsPerSec?: number[];
}

export interface ScalingRow {
  queues: number;
  policy: string;
  /** back-end queue workers + front-end driver threads */
  busyThreads: number;
  oversubscribed: boolean;
  runs: ScalingRun[];
  medianTotal?: number;
  /** median over runs of the mean per-queue rate */
  medianPerQueue?: number;
  efficiency?: number;
  backendArgs?: string[];
}

export interface ScalingSection {
  cores: number;
  maxQueues: number;
  rounds: number;
  seconds: number;
  counting: string;
  rows: ScalingRow[];
  /** per policy: the lowest efficiency over N = 2..maxQueues */
  minEfficiency: Record<string, number | undefined>;
  target: number;
  /** best policy's lowest efficiency meets the target */
  pass?: boolean;
}

export interface LabOptions {
  tmpDir: string;
  quick: boolean;
  seconds: number;
  /** engine modules (paths) to sweep beside the shipped ones */
  extraEngines?: readonly string[];
  /** ring formats the shipped engines are swept on (default both) */
  rings?: readonly RingFormat[];
  /** a step of the progress bar */
  step: (label: string) => void;
  done: () => void;
  log: (line: string) => void;
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));

async function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => Promise<void>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => void onTimeout().finally(() => reject(new Error(`${what}: no result within ${Math.round(ms / 1000)} s`))), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

export interface NullDrive {
  mode: 'throughput' | 'latency';
  polling: boolean;
  seconds: number;
  notify?: 'always' | 'event-idx' | 'adaptive';
  pollUs?: number;
  /** packed virtqueues (VIRTIO_F_RING_PACKED) instead of split */
  packed?: boolean;
}

/** One null back-end process for one drive(): spawn, drive, SIGTERM. */
export async function driveNull(tmpDir: string, name: string, bopts: Omit<BackendOptions, 'socketPath'>, d: NullDrive): Promise<{ report: DriveReport; backendArgs: string[] }> {
  const socketPath = path.join(tmpDir, `${name.replace(/[^a-z0-9]+/gi, '-')}.sock`);
  const be = await Backend.start({ ...bopts, socketPath });
  try {
    const report = await withTimeout(
      drive({
        socketPath,
        device: 'null',
        queues: bopts.queues,
        seconds: d.seconds,
        mode: d.mode,
        polling: d.polling,
        queueSize: QUEUE_SIZE,
        descsPerChain: 1,
        eventIdx: true,
        bufLen: 64,
        notify: d.notify,
        pollUs: d.pollUs,
        packed: d.packed ?? false,
      }),
      (d.seconds * 3 + 20) * 1000,
      name,
      () => be.stop(),
    ).catch((e: unknown) => {
      throw new Error(`${errMsg(e)}${be.alive ? '' : ` (back-end ${be.describeExit()}: ${be.log})`}`);
    });
    if (!be.alive) throw new Error(`back-end died during the run (${be.describeExit()}): ${be.log}`);
    return { report, backendArgs: be.args };
  } finally {
    await be.stop();
  }
}

export type RingFormat = 'split' | 'packed';

/** A sweep label names the engine and, for packed rings, carries this suffix: 'wasm', 'wasm+packed'. */
const PACKED_SUFFIX = '+packed';

function policyRun(tmpDir: string, name: string, policy: string, queues: number, batch: number, label: string | undefined, seconds: number) {
  const p = LAB_POLICIES[policy]!;
  const packed = label?.endsWith(PACKED_SUFFIX) ?? false;
  const engine = packed ? label!.slice(0, -PACKED_SUFFIX.length) : label;
  return driveNull(tmpDir, name, { queues, pollUs: p.pollUs, batch, engine, notify: p.notify }, {
    mode: 'throughput',
    polling: false,
    seconds,
    notify: p.driverNotify,
    pollUs: p.driverPollUs,
    packed,
  });
}

export function sweepPlan(
  quick: boolean,
  extraEngines: readonly string[] = [],
  rings: readonly RingFormat[] = ['split', 'packed'],
): { engines: string[]; policies: string[]; batches: number[] } {
  // every shipped engine (one added to the registry shows up here with no change) on each ring format, then engine
  // modules named with --engine (split only: a module need not implement packed rings)
  const shipped = Object.keys(ENGINES).flatMap((e) => rings.map((r) => (r === 'packed' ? `${e}${PACKED_SUFFIX}` : e)));
  return {
    engines: [...shipped, ...extraEngines],
    policies: Object.keys(LAB_POLICIES),
    batches: quick ? [4, 128] : [1, 4, 16, 64, 256],
  };
}

export function sweepSteps(quick: boolean, extraEngines: readonly string[] = [], rings?: readonly RingFormat[]): number {
  const p = sweepPlan(quick, extraEngines, rings);
  return p.engines.length * p.policies.length * p.batches.length;
}

export async function runSweep(o: LabOptions): Promise<LabSweep> {
  const plan = sweepPlan(o.quick, o.extraEngines, o.rings);
  const seconds = o.quick ? Math.min(o.seconds, 0.5) : Math.min(o.seconds, 1);
  const r: LabSweep = {
    queueSize: QUEUE_SIZE,
    seconds,
    ...plan,
    policyNotes: Object.fromEntries(plan.policies.map((p) => [p, LAB_POLICIES[p]!.what])),
    points: [],
  };
  for (const batch of plan.batches)
    for (const policy of plan.policies)
      for (const engine of plan.engines) {
        const name = `${engine} ${policy} batch ${batch}`;
        o.step(`sweep: ${name}`);
        const pt: SweepPoint = { engine, policy, batch, ok: false };
        try {
          const { report, backendArgs } = await policyRun(o.tmpDir, name, policy, 1, batch, engine, seconds);
          Object.assign(pt, { ok: true, chainsPerSec: report.chainsPerSec, kicksPerChain: report.kicksPerChain, callsPerChain: report.callsPerChain, backendArgs });
          if (report.errors) {
            pt.ok = false;
            pt.error = `${report.errors} used elements named heads not outstanding`;
          }
        } catch (e) {
          pt.error = errMsg(e);
          o.log(`  ${name} FAILED: ${pt.error.split('\n')[0]}`);
        }
        r.points.push(pt);
        o.done();
      }
  for (const p of r.points)
    if (p.ok && p.chainsPerSec !== undefined && (!r.best || p.chainsPerSec > r.best.chainsPerSec))
      r.best = { engine: p.engine, policy: p.policy, batch: p.batch, chainsPerSec: p.chainsPerSec };
  return r;
}

export function scalingPlan(quick: boolean): { maxQueues: number; policies: string[]; rounds: number } {
  return { maxQueues: Math.max(1, Math.min(32, os.availableParallelism())), policies: ['event-idx', 'adaptive'], rounds: quick ? 1 : 3 };
}

export function scalingSteps(quick: boolean): number {
  const p = scalingPlan(quick);
  return p.maxQueues * p.policies.length * p.rounds;
}

export async function runScaling(o: LabOptions & { batch: number }): Promise<ScalingSection> {
  const plan = scalingPlan(o.quick);
  const rounds = plan.rounds;
  const seconds = o.quick ? Math.min(o.seconds, 0.5) : Math.min(o.seconds, 2);
  const cores = os.availableParallelism();
  const s: ScalingSection = {
    cores,
    maxQueues: plan.maxQueues,
    rounds,
    seconds,
    counting:
      `N queues = N back-end queue workers (one per queue) + N front-end driver threads, ${cores} core(s): ` +
      `from N > cores/2 the two sides share cores, so the efficiency measures the machine as much as the back-end`,
    rows: [],
    minEfficiency: {},
    target: SCALING_TARGET,
  };
  for (const policy of plan.policies)
    for (let q = 1; q <= plan.maxQueues; q++)
      s.rows.push({ queues: q, policy, busyThreads: 2 * q, oversubscribed: 2 * q > cores, runs: [] });
  // rounds outermost: every N of a round runs under the same background load
  for (let round = 1; round <= rounds; round++)
    for (const row of s.rows) {
      const name = `${row.queues}q ${row.policy}`;
      o.step(`scaling: ${name} round ${round}/${rounds}`);
      const run: ScalingRun = { round, ok: false };
      try {
        const { report, backendArgs } = await policyRun(o.tmpDir, name, row.policy, row.queues, o.batch, undefined, seconds);
        row.backendArgs = backendArgs;
        Object.assign(run, { ok: report.errors === 0, totalChainsPerSec: report.chainsPerSec, perQueueChainsPerSec: report.queues.map((x) => x.chainsPerSec) });
        if (report.errors) run.error = `${report.errors} used elements named heads not outstanding`;
      } catch (e) {
        run.error = errMsg(e);
        o.log(`  ${name} FAILED: ${run.error.split('\n')[0]}`);
      }
      row.runs.push(run);
      o.done();
    }
  for (const row of s.rows) {
    const ok = row.runs.filter((x) => x.ok);
    row.medianTotal = median(ok.map((x) => x.totalChainsPerSec!));
    row.medianPerQueue = median(ok.map((x) => x.totalChainsPerSec! / row.queues));
  }
  for (const policy of plan.policies) {
    const one = s.rows.find((x) => x.policy === policy && x.queues === 1)?.medianTotal;
    let min: number | undefined;
    for (const row of s.rows.filter((x) => x.policy === policy)) {
      if (one && row.medianTotal !== undefined) row.efficiency = row.medianTotal / (row.queues * one);
      if (row.queues > 1 && row.efficiency !== undefined) min = min === undefined ? row.efficiency : Math.min(min, row.efficiency);
    }
    s.minEfficiency[policy] = min;
  }
  const mins = Object.values(s.minEfficiency).filter((x): x is number => x !== undefined);
  if (mins.length) s.pass = Math.max(...mins) >= SCALING_TARGET;
  return s;
}
