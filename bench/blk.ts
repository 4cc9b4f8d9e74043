/**
 * The blk benchmark: our vhost-user-blk back-end (`vhost-wasm blk`) against qemu-storage-daemon's
 * vhost-user-blk export, on the same 256 MiB image on tmpfs (/dev/shm).
 *
 * 1. Front-end (the comparison that measures the back-ends): the built-in front-end's virtio-blk load
 *    (`drive --device blk`, src/frontend/blk-load.ts) in this process, 4k random read and random write at
 *    iodepth 32 per queue, 1 and 4 queues; runs interleaved ours, QSD, ours, QSD, ... Ratio = mean IOPS of
 *    ours / mean IOPS of QSD. Headline: 4 queues randread, target >= 1.5.
 * 2. Guest (`--guest` only, slow): a QEMU TCG guest runs fio 4k randread and randwrite, iodepth 32, one job
 *    per queue, 1 and 4 queues, on each back-end in turn; target: ratio >= 1.0 (the emulated guest bounds both).
 *    Rounds (--guest-rounds, default 3) boot ours with the default mapping (one worker per queue), QSD, and with
 *    4 queues ours grouped (every queue in one worker, --queue-map 0,0,0,0), interleaved; medians, both ratios.
 *    Why both: the TCG vCPU threads and the back-end share the CPUs; on a small machine four worker threads (each
 *    its own V8 isolate, JIT-warmed and woken separately) take CPU time from the guest that one worker does not.
 *
 * Runnable alone: node build/out/bench/blk.js [--quick] [--seconds S] [--rounds N] [--guest] [--guest-rounds N] [--json]
 * (npm run bench runs it after the null-device suite).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runBlkLoad, type BlkReport, type BlkRw } from '../src/frontend/blk-load.js';
import { findQsd, killAllBlkProcs, makeImage, oursCommand, refuseNewBlkProcs, SocketServer, startQsd, type QsdAio } from './blk-procs.js';
import { guestFioAvailable, makeBenchInitrd, runGuestFio, type GuestFioResult } from './guest-fio.js';
import { resultsRoot, writeSectionJson } from './paths.js';

export const BLK_HEADLINE_TARGET = 1.5;
export const BLK_GUEST_TARGET = 1.0;
/**
 * fio seconds per guest job. Long enough that the comparison is of steady states: a back-end process that starts
 * per boot spends its first seconds of I/O JIT-compiling (on the CPUs the TCG vCPUs need); QSD has no warm-up.
 * Measured here, 1 queue, one run each on a loaded 2-CPU machine: 5 s runs ours/QSD 0.74 (read) 0.54 (write), 20 s runs
 * 1.17 and 0.95.
 */
export const GUEST_SECONDS_DEFAULT = 15;
const IMAGE_BYTES = 256 << 20;
const BS = 4096;
const IODEPTH = 32;
const QUEUE_COUNTS = [1, 4] as const;
const RWS: readonly BlkRw[] = ['randread', 'randwrite'];

export type BlkBackendName = 'ours' | 'qsd';

/** Seconds per front-end run and rounds of (ours, QSD): short runs, several rounds, against a noisy machine. */
export function blkDefaults(quick: boolean): { seconds: number; rounds: number } {
  return quick ? { seconds: 1, rounds: 2 } : { seconds: 2, rounds: 3 };
}

export interface BlkBenchOptions {
  /** seconds per front-end run */
  seconds: number;
  /** rounds of (ours, QSD) per scenario */
  rounds: number;
  quick: boolean;
  guest: boolean;
  /** run the front-end comparison (default true; false with --guest-only) */
  frontend?: boolean;
  /** fio seconds per job in the guest */
  guestSeconds: number;
  /** guest rounds: each boots ours (default queue mapping), QSD and, with several queues, ours grouped (default 3; 1 with --quick) */
  guestRounds?: number;
  /** our back-end's queue workers (default: the CLI's, one per queue); queues are spread with --queue-map */
  oursWorkers?: number;
  /** scratch directory (sockets, the guest's initrd copy) */
  tmpDir: string;
  progress: (s: string) => void;
}

export interface BlkFrontendRun {
  backend: BlkBackendName;
  round: number;
  ok: boolean;
  error?: string;
  iops?: number;
  mibPerSec?: number;
  errors?: number;
  p50Us?: number;
  p99Us?: number;
  kicksPerRequest?: number;
  callsPerRequest?: number;
  perQueueIops?: number[];
  /** CPU time the back-end process used during the run, per request (µs) */
  backendCpuUsPerRequest?: number;
  loadavg1?: number;
}

export interface BlkFrontendScenario {
  name: string;
  queues: number;
  rw: BlkRw;
  bs: number;
  iodepth: number;
  runs: BlkFrontendRun[];
  oursIops?: number;
  qsdIops?: number;
  /** mean ours / mean QSD */
  ratio?: number;
  /** per round: ours / QSD of the same round */
  roundRatios: number[];
  headline: boolean;
  target?: number;
  pass?: boolean;
}

/** One guest round of one queue count: every back-end configuration boots the same guest in turn. */
export interface BlkGuestRound {
  round: number;
  ours?: GuestFioResult;
  /** ours with every queue in one queue worker (--queue-map 0,0,...): only with several queues */
  oursGrouped?: GuestFioResult;
  qsd?: GuestFioResult;
}

export interface BlkGuestScenario {
  queues: number;
  jobs: number;
  /** our command's queue mapping: 'one worker per queue' (the default), or the --ours-workers spread */
  oursMapping: string;
  rounds: BlkGuestRound[];
  /** medians over the rounds (IOPS) */
  oursRandreadIops?: number;
  oursRandwriteIops?: number;
  groupedRandreadIops?: number;
  groupedRandwriteIops?: number;
  qsdRandreadIops?: number;
  qsdRandwriteIops?: number;
  /** median ours / median QSD: ours as configured (default mapping) */
  randreadRatio?: number;
  randwriteRatio?: number;
  /** median ours grouped / median QSD */
  groupedRandreadRatio?: number;
  groupedRandwriteRatio?: number;
  target: number;
  /** the default mapping meets the target in both */
  pass?: boolean;
  groupedPass?: boolean;
}

export interface BlkBenchResults {
  benchmark: 'blk';
  startedAt: string;
  finishedAt?: string;
  host: { cpus: number; cpuModel: string; node: string; release: string; loadavgAtStart: number[]; loadavgAtEnd?: number[] };
  options: { seconds: number; rounds: number; quick: boolean; guest: boolean; guestSeconds: number; oursWorkers?: number; bs: number; iodepth: number; imageBytes: number };
  image: string;
  ours: { commands: string[][] };
  qsd: { binary?: string; version?: string; aio?: QsdAio; aioFallback?: string; ioUringFds?: number; commands: string[][]; error?: string };
  frontend: BlkFrontendScenario[];
  headline: { scenario: string; ratio?: number; target: number; pass?: boolean };
  guest?: { ok: boolean; error?: string; seconds: number; rounds: number; scenarios: BlkGuestScenario[] };
  errors: string[];
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const mean = (xs: number[]): number | undefined => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);

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

async function frontendRun(server: SocketServer, backend: BlkBackendName, round: number, queues: number, rw: BlkRw, seconds: number): Promise<BlkFrontendRun> {
  const run: BlkFrontendRun = { backend, round, ok: false, loadavg1: os.loadavg()[0] };
  const cpu0 = server.cpuSeconds();
  try {
    const r: BlkReport = await withTimeout(
      runBlkLoad({ socketPath: server.socketPath, queues, iodepth: IODEPTH, bs: BS, rw, seconds }),
      (seconds * 3 + 30) * 1000,
      `${backend} ${queues}q ${rw}`,
      () => server.stop(),
    );
    if (!server.alive) throw new Error(`back-end died during the run (${server.describeExit()}): ${server.log}`);
    Object.assign(run, {
      ok: true,
      iops: r.iops,
      mibPerSec: r.mibPerSec,
      errors: r.errors,
      p50Us: r.latency.p50Us,
      p99Us: r.latency.p99Us,
      kicksPerRequest: r.kicksPerRequest,
      callsPerRequest: r.callsPerRequest,
      perQueueIops: r.queues.map((q) => q.iops),
    });
    const cpu1 = server.cpuSeconds();
    if (cpu0 !== undefined && cpu1 !== undefined && r.completions > 0) run.backendCpuUsPerRequest = ((cpu1 - cpu0) * 1e6) / r.completions;
  } catch (e) {
    run.error = `${errMsg(e)}${server.alive ? '' : ` (back-end ${server.describeExit()}: ${server.log})`}`;
  }
  return run;
}

export async function runBlkBench(o: BlkBenchOptions): Promise<BlkBenchResults> {
  const startedAt = new Date();
  const r: BlkBenchResults = {
    benchmark: 'blk',
    startedAt: startedAt.toISOString(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version, release: os.release(), loadavgAtStart: os.loadavg() },
    options: { seconds: o.seconds, rounds: o.rounds, quick: o.quick, guest: o.guest, guestSeconds: o.guestSeconds, oursWorkers: o.oursWorkers, bs: BS, iodepth: IODEPTH, imageBytes: IMAGE_BYTES },
    image: '',
    ours: { commands: [] },
    qsd: { commands: [] },
    frontend: [],
    headline: { scenario: '4q randread', target: BLK_HEADLINE_TARGET },
    errors: [],
  };
  const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : o.tmpDir;
  const image = path.join(shm, `vhost-wasm-bench-${process.pid}.img`);
  r.image = image;
  const qsd = findQsd();
  r.qsd.binary = qsd.binary;
  r.qsd.version = qsd.version;
  if (qsd.error) {
    r.qsd.error = qsd.error;
    r.errors.push(`qemu-storage-daemon: ${qsd.error}`);
    o.progress(`blk: qemu-storage-daemon unavailable (${qsd.error}): ours only, no ratios`);
  }
  try {
    o.progress(`blk: ${IMAGE_BYTES >> 20} MiB image on ${shm}`);
    makeImage(image, IMAGE_BYTES);

    // ---- 1. front-end ----
    for (const queues of o.frontend === false ? [] : QUEUE_COUNTS) {
      const oursSock = path.join(o.tmpDir, `blk-ours-${queues}.sock`);
      const qsdSock = path.join(o.tmpDir, `blk-qsd-${queues}.sock`);
      let ours: SocketServer | undefined;
      let q: SocketServer | undefined;
      const scenarios = RWS.map(
        (rw): BlkFrontendScenario => ({ name: `${queues}q ${rw}`, queues, rw, bs: BS, iodepth: IODEPTH, runs: [], roundRatios: [], headline: queues === 4 && rw === 'randread' }),
      );
      try {
        const cmd = oursCommand(oursSock, image, queues, o.oursWorkers);
        r.ours.commands.push(cmd.slice(1));
        ours = await SocketServer.start(cmd, oursSock);
      } catch (e) {
        r.errors.push(`starting ours (${queues} queues): ${errMsg(e)}`);
      }
      if (qsd.binary) {
        try {
          const s = await startQsd(qsd.binary, qsdSock, image, queues);
          q = s.server;
          r.qsd.commands.push(s.server.command);
          r.qsd.aio ??= s.aio;
          if (s.fallback) {
            r.qsd.aioFallback ??= s.fallback;
            o.progress(`blk: qemu-storage-daemon with aio=io_uring failed, using aio=threads: ${s.fallback.split('\n')[0]}`);
          }
        } catch (e) {
          r.errors.push(`starting qemu-storage-daemon (${queues} queues): ${errMsg(e)}`);
        }
      }
      try {
        for (const sc of scenarios) {
          o.progress(`blk front-end ${sc.name}: ${o.rounds} round(s) of ours, QSD, ${o.seconds} s each`);
          for (let round = 1; round <= o.rounds; round++) {
            const pair: Partial<Record<BlkBackendName, BlkFrontendRun>> = {};
            for (const [name, server] of [
              ['ours', ours],
              ['qsd', q],
            ] as const) {
              if (!server) continue;
              const run = server.alive ? await frontendRun(server, name, round, queues, sc.rw, o.seconds) : { backend: name, round, ok: false, error: `back-end gone (${server.describeExit()}): ${server.log}` };
              if (name === 'qsd' && r.qsd.ioUringFds === undefined && server.alive) r.qsd.ioUringFds = server.ioUringFds();
              sc.runs.push(run);
              pair[name] = run;
              if (run.ok) o.progress(`  ${name.padEnd(4)} ${(run.iops! / 1e3).toFixed(1)} k IOPS  p50 ${run.p50Us!.toFixed(0)} us${run.errors ? `  ERRORS ${run.errors}` : ''}`);
              else o.progress(`  ${name} FAILED: ${run.error}`);
              if (!run.ok) r.errors.push(`${name} ${sc.name} round ${round}: ${run.error}`);
              else if (run.errors) r.errors.push(`${name} ${sc.name} round ${round}: ${run.errors} requests failed`);
            }
            if (pair.ours?.ok && pair.qsd?.ok && pair.qsd.iops! > 0) sc.roundRatios.push(pair.ours.iops! / pair.qsd.iops!);
          }
          sc.oursIops = mean(sc.runs.filter((x) => x.backend === 'ours' && x.ok).map((x) => x.iops!));
          sc.qsdIops = mean(sc.runs.filter((x) => x.backend === 'qsd' && x.ok).map((x) => x.iops!));
          if (sc.oursIops !== undefined && sc.qsdIops) sc.ratio = sc.oursIops / sc.qsdIops;
          if (sc.headline) {
            sc.target = BLK_HEADLINE_TARGET;
            if (sc.ratio !== undefined) sc.pass = sc.ratio >= BLK_HEADLINE_TARGET;
          }
          r.frontend.push(sc);
        }
      } finally {
        await ours?.stop();
        await q?.stop();
      }
    }
    const h = r.frontend.find((s) => s.headline);
    if (h) Object.assign(r.headline, { ratio: h.ratio, pass: h.pass });

    // ---- 2. guest ----
    if (o.guest) r.guest = await guestSection(o, image, qsd.binary, r);
  } finally {
    fs.rmSync(image, { force: true });
  }
  r.finishedAt = new Date().toISOString();
  r.host.loadavgAtEnd = os.loadavg();
  return r;
}

const median = (xs: number[]): number | undefined => {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
};

type GuestConfig = 'ours' | 'oursGrouped' | 'qsd';

async function guestSection(o: BlkBenchOptions, image: string, qsdBinary: string | undefined, r: BlkBenchResults): Promise<NonNullable<BlkBenchResults['guest']>> {
  const rounds = o.guestRounds ?? (o.quick ? 1 : 3);
  const g: NonNullable<BlkBenchResults['guest']> = { ok: false, seconds: o.guestSeconds, rounds, scenarios: [] };
  const avail = guestFioAvailable();
  if (!avail.ok) {
    g.error = avail.reason;
    r.errors.push(`guest: ${avail.reason}`);
    return g;
  }
  if (!qsdBinary) {
    g.error = 'qemu-storage-daemon unavailable';
    r.errors.push('guest: qemu-storage-daemon unavailable');
    return g;
  }
  const initrd = makeBenchInitrd(o.tmpDir);
  const mapping = (queues: number): string => (o.oursWorkers && o.oursWorkers < queues ? `${o.oursWorkers} worker(s), --queue-map` : 'one worker per queue');
  for (const queues of QUEUE_COUNTS) g.scenarios.push({ queues, jobs: queues, oursMapping: mapping(queues), rounds: [], target: BLK_GUEST_TARGET });
  try {
    // rounds outermost: a slow spell of the machine hits every configuration of a round alike
    for (let round = 1; round <= rounds; round++) {
      for (const sc of g.scenarios) {
        const queues = sc.queues;
        const rr: BlkGuestRound = { round };
        // interleaved: ours, QSD, ours grouped (one worker for every queue: fewer threads beside the vCPUs)
        const configs: GuestConfig[] = queues > 1 && (o.oursWorkers === undefined || o.oursWorkers > 1) ? ['ours', 'qsd', 'oursGrouped'] : ['ours', 'qsd'];
        for (const name of configs) {
          const sock = path.join(o.tmpDir, `guest-${name}-${queues}.sock`);
          const label = name === 'oursGrouped' ? 'ours grouped (1 worker)' : name;
          o.progress(`blk guest round ${round}/${rounds} ${queues}q on ${label}: boot, fio randread + randwrite ${o.guestSeconds} s each`);
          let server: SocketServer | undefined;
          let res: GuestFioResult;
          try {
            server =
              name === 'qsd'
                ? (await startQsd(qsdBinary, sock, image, queues, r.qsd.aio ?? 'io_uring')).server
                : await SocketServer.start(oursCommand(sock, image, queues, name === 'oursGrouped' ? 1 : o.oursWorkers), sock);
            const cpu0 = server.cpuSeconds();
            res = await runGuestFio({ qemu: avail.qemu!, initrd, socketPath: sock, queues, jobs: queues, seconds: o.guestSeconds });
            const cpu1 = server.cpuSeconds();
            if (cpu0 !== undefined && cpu1 !== undefined) res.backendCpuSeconds = cpu1 - cpu0;
            if (!server.alive) res = { ...res, ok: false, error: `back-end died (${server.describeExit()}): ${server.log}` };
          } catch (e) {
            res = { ok: false, durationMs: 0, error: errMsg(e) };
          } finally {
            await server?.stop();
          }
          rr[name] = res;
          if (res.ok)
            o.progress(
              `  ${label}: randread ${res.randreadIops} IOPS, randwrite ${res.randwriteIops} IOPS; guest interrupts ${res.randreadIrqs} / ${res.randwriteIrqs}; ` +
                `back-end CPU ${res.backendCpuSeconds?.toFixed(1)} s (${(res.durationMs / 1000).toFixed(0)} s)`,
            );
          else {
            o.progress(`  ${label} FAILED: ${res.error?.split('\n')[0]}`);
            r.errors.push(`guest round ${round} ${queues}q ${label}: ${res.error}`);
          }
        }
        sc.rounds.push(rr);
      }
    }
    for (const sc of g.scenarios) {
      const med = (c: GuestConfig, k: 'randreadIops' | 'randwriteIops'): number | undefined => median(sc.rounds.flatMap((x) => (x[c]?.ok ? [x[c][k]!] : [])));
      sc.oursRandreadIops = med('ours', 'randreadIops');
      sc.oursRandwriteIops = med('ours', 'randwriteIops');
      sc.groupedRandreadIops = med('oursGrouped', 'randreadIops');
      sc.groupedRandwriteIops = med('oursGrouped', 'randwriteIops');
      sc.qsdRandreadIops = med('qsd', 'randreadIops');
      sc.qsdRandwriteIops = med('qsd', 'randwriteIops');
      const ratio = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b ? a / b : undefined);
      sc.randreadRatio = ratio(sc.oursRandreadIops, sc.qsdRandreadIops);
      sc.randwriteRatio = ratio(sc.oursRandwriteIops, sc.qsdRandwriteIops);
      sc.groupedRandreadRatio = ratio(sc.groupedRandreadIops, sc.qsdRandreadIops);
      sc.groupedRandwriteRatio = ratio(sc.groupedRandwriteIops, sc.qsdRandwriteIops);
      if (sc.randreadRatio !== undefined && sc.randwriteRatio !== undefined) sc.pass = sc.randreadRatio >= BLK_GUEST_TARGET && sc.randwriteRatio >= BLK_GUEST_TARGET;
      if (sc.groupedRandreadRatio !== undefined && sc.groupedRandwriteRatio !== undefined)
        sc.groupedPass = sc.groupedRandreadRatio >= BLK_GUEST_TARGET && sc.groupedRandwriteRatio >= BLK_GUEST_TARGET;
    }
    g.ok = g.scenarios.every((s) => s.rounds.length === rounds && s.rounds.every((x) => x.ours?.ok && x.qsd?.ok && (s.queues === 1 || !x.oursGrouped || x.oursGrouped.ok)));
  } finally {
    fs.rmSync(initrd, { force: true });
  }
  return g;
}

// ---- rendering ----

const k = (x: number | undefined): string => (x === undefined ? '-' : (x / 1e3).toFixed(1));
const F = (x: number | undefined, d: number): string => (x === undefined ? '-' : x.toFixed(d));

function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  ').trimEnd(), ...rows.map(line)];
}

export function formatBlkResults(r: BlkBenchResults, jsonPath?: string): string {
  const out: string[] = [];
  const o = r.options;
  const aio = r.qsd.aio ? `aio=${r.qsd.aio}${r.qsd.aioFallback ? ' (io_uring failed)' : ''}${r.qsd.ioUringFds !== undefined ? `, ${r.qsd.ioUringFds} io_uring fd(s)` : ''}` : 'unavailable';
  out.push(
    `vhost-wasm blk benchmark: ours (vhost-wasm blk${o.oursWorkers ? `, ${o.oursWorkers} queue worker(s)` : ''}) vs qemu-storage-daemon (${r.qsd.version ?? 'missing'}, ${aio}), ` +
      `${o.imageBytes >> 20} MiB image on tmpfs, bs ${o.bs}, iodepth ${o.iodepth} per queue, ${r.host.cpus} CPU(s)`,
  );
  out.push('');
  out.push(`built-in front-end (drive --device blk), ${o.seconds} s per run, ${o.rounds} round(s) interleaved ours, QSD (k IOPS):`);
  const rows = r.frontend.map((s) => {
    const runs = (b: BlkBackendName): string =>
      s.runs
        .filter((x) => x.backend === b)
        .map((x) => (x.ok ? k(x.iops) : 'FAIL'))
        .join(' / ');
    const lat = (b: BlkBackendName): string => F(mean(s.runs.filter((x) => x.backend === b && x.ok).map((x) => x.p50Us!)), 0);
    return [
      s.name,
      k(s.oursIops),
      k(s.qsdIops),
      F(s.ratio, 2) + (s.headline ? ` (target >= ${s.target})` : ''),
      runs('ours'),
      runs('qsd'),
      `${lat('ours')} / ${lat('qsd')}`,
      s.runs.some((x) => x.errors) ? 'IO ERRORS' : '',
    ];
  });
  out.push(...table(['scenario', 'ours', 'QSD', 'ours/QSD', 'ours runs', 'QSD runs', 'p50 us ours/QSD', ''], rows).map((l) => '  ' + l));
  const verdict = (pass: boolean | undefined): string => (pass === undefined ? 'n/a' : pass ? 'MET' : 'NOT MET');
  out.push(`blk front-end headline (${r.headline.scenario}): ours/QSD ${F(r.headline.ratio, 2)} (target >= ${r.headline.target}) ${verdict(r.headline.pass)}`);
  if (r.guest) {
    out.push('');
    const g = r.guest;
    if (g.error && !g.scenarios.length) out.push(`guest fio: not run: ${g.error}`);
    else {
      out.push(
        `QEMU TCG guest, fio 4k iodepth 32, one job per queue, ${g.seconds} s per job, ${g.rounds} round(s) interleaved ours, QSD, ours grouped; ` +
          `medians (IOPS; ratio target >= ${BLK_GUEST_TARGET}):`,
      );
      out.push(`  ours = the default mapping (${g.scenarios[0]?.oursMapping ?? 'one worker per queue'}); grouped = every queue in one worker (--queue-map 0,0,0,0)`);
      const perRound = (s: BlkGuestScenario, c: GuestConfig, key: 'randreadIops' | 'randwriteIops'): string =>
        s.rounds.map((x) => (x[c] === undefined ? '-' : x[c].ok ? String(x[c][key]) : 'FAIL')).join(' / ');
      const grows = g.scenarios.flatMap((s) =>
        (['randread', 'randwrite'] as const).map((rw) => {
          const key = rw === 'randread' ? 'randreadIops' : 'randwriteIops';
          const R = rw === 'randread' ? 'Randread' : 'Randwrite';
          const ratio = s[`${rw}Ratio`];
          const gratio = s[`grouped${R}Ratio`];
          const grouped = s.queues > 1;
          return [
            `${s.queues}q ${rw}`,
            F(s[`ours${R}Iops`], 0),
            grouped ? F(s[`grouped${R}Iops`], 0) : '(= ours)',
            F(s[`qsd${R}Iops`], 0),
            ratio === undefined ? '-' : `${F(ratio, 2)} ${verdict(ratio >= BLK_GUEST_TARGET)}`,
            grouped ? (gratio === undefined ? '-' : `${F(gratio, 2)} ${verdict(gratio >= BLK_GUEST_TARGET)}`) : '',
            perRound(s, 'ours', key),
            grouped ? perRound(s, 'oursGrouped', key) : '',
            perRound(s, 'qsd', key),
          ];
        }),
      );
      out.push(
        ...table(['scenario', 'ours', 'ours grouped', 'QSD', 'ours/QSD', 'grouped/QSD', 'ours per round', 'grouped per round', 'QSD per round'], grows).map((l) => '  ' + l),
      );
      const cpu = (c: GuestConfig): string => F(median(g.scenarios.flatMap((s) => s.rounds.flatMap((x) => (x[c]?.ok && x[c].backendCpuSeconds !== undefined && s.queues > 1 ? [x[c].backendCpuSeconds] : [])))), 1);
      out.push(`  back-end CPU seconds per 4-queue boot (median): ours ${cpu('ours')}, ours grouped ${cpu('oursGrouped')}, QSD ${cpu('qsd')}`);
    }
  }
  if (r.errors.length) {
    out.push('');
    out.push(`blk errors (${r.errors.length}):`);
    for (const e of r.errors) out.push('  ' + e.split('\n')[0]);
  }
  if (jsonPath) out.push(`blk results: ${jsonPath}`);
  return out.join('\n');
}

export function writeBlkResults(r: BlkBenchResults, dir: string): string | undefined {
  return writeSectionJson(r, dir, 'blk.json');
}

/** --guest-rounds N: an integer 1..20, or undefined (the default). */
export function parseGuestRounds(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 20) throw new Error(`--guest-rounds must be an integer 1..20, got '${v}'`);
  return n;
}

/** --ours-workers W: an integer 1..32, or undefined. */
export function parseOursWorkers(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 32) throw new Error(`--ours-workers must be an integer 1..32, got '${v}'`);
  return n;
}

export function blkCleanup(signal: NodeJS.Signals = 'SIGKILL'): void {
  killAllBlkProcs(signal);
}
export { refuseNewBlkProcs };

// ---- standalone ----

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      quick: { type: 'boolean' },
      seconds: { type: 'string' },
      rounds: { type: 'string' },
      guest: { type: 'boolean' },
      'guest-only': { type: 'boolean' },
      'guest-seconds': { type: 'string' },
      'guest-rounds': { type: 'string' },
      'ours-workers': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node build/out/bench/blk.js [--quick] [--seconds S] [--rounds N] [--guest | --guest-only] [--guest-seconds S] [--guest-rounds N] [--ours-workers W] [--json]\n');
    return;
  }
  const quick = values.quick ?? false;
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-wasm-blk-bench-'));
  const progress = (s: string): void => void process.stderr.write(`[bench] ${s}\n`);
  const cleanup = (): void => {
    killAllBlkProcs('SIGKILL');
    fs.rmSync(tmpDir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      refuseNewBlkProcs();
      cleanup();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  const d = blkDefaults(quick);
  const seconds = Number(values.seconds ?? d.seconds);
  const rounds = Number(values.rounds ?? d.rounds);
  const guestSeconds = Number(values['guest-seconds'] ?? GUEST_SECONDS_DEFAULT);
  if (!(seconds > 0 && seconds <= 600)) throw new Error(`--seconds must be in (0, 600], got '${values.seconds}'`);
  if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new Error(`--rounds must be an integer 1..20, got '${values.rounds}'`);
  if (!(Number.isInteger(guestSeconds) && guestSeconds >= 1 && guestSeconds <= 120)) throw new Error(`--guest-seconds must be an integer 1..120, got '${values['guest-seconds']}'`);
  const oursWorkers = parseOursWorkers(values['ours-workers']);
  const guestRounds = parseGuestRounds(values['guest-rounds']);
  const r = await runBlkBench({
    guestRounds,
    seconds,
    rounds,
    oursWorkers,
    quick,
    guest: (values.guest || values['guest-only']) ?? false,
    frontend: !values['guest-only'],
    guestSeconds,
    tmpDir,
    progress,
  });
  const jsonPath = writeBlkResults(r, path.join(resultsRoot, r.startedAt.replace(/:/g, '-')));
  process.stdout.write((values.json ? JSON.stringify(r, null, 2) : formatBlkResults(r, jsonPath)) + '\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench blk: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      killAllBlkProcs('SIGKILL');
      process.exit(1);
    },
  );
}
