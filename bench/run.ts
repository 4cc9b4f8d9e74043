/**
 * `npm run bench`: the issue-2 benchmark. The null device in a separate back-end process, driven by the
 * built-in front-end from this process: 1 and 2 queues, eventfd and polling, chains/s per queue and
 * kicks/calls per chain; then the kick-to-call round trip beside the C eventfd ping-pong, built and run here,
 * C bracketing each of our runs. Then the blk benchmark (bench/blk.ts): our vhost-user-blk back-end against
 * qemu-storage-daemon through the built-in front-end, and with --guest in a QEMU guest with fio.
 *
 * Then the net benchmark (bench/net.ts): testpmd's virtio-user front-end against DPDK's vhost PMD and against ours.
 *
 *   node build/out/bench/run.js [--quick] [--seconds S] [--rounds N] [--json] [--no-blk | --blk-only] [--guest] [--no-net | --net-only]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { drive, type DriveReport } from '../src/cli/drive.js';
import { Backend, killAllBackends, refuseNewBackends, type BackendOptions } from './backend.js';
import { blkCleanup, blkDefaults, formatBlkResults, GUEST_SECONDS_DEFAULT, parseGuestRounds, parseOursWorkers, refuseNewBlkProcs, runBlkBench, writeBlkResults, type BlkBenchResults } from './blk.js';
import { buildPingPong, runPingPong } from './c-baseline.js';
import { formatNetResults, netCleanup, netDefaults, refuseNewNetProcs, runNetBench, writeNetResults } from './net.js';
import { resultsRoot } from './paths.js';
import {
  type BenchResults,
  type CRun,
  formatResults,
  LATENCY_RATIO_TARGET,
  type LatencyRound,
  type LatencyRun,
  median,
  PER_QUEUE_TARGET,
  type ThroughputScenario,
} from './report.js';

const QUEUE_SIZE = 256;
const BATCH = 128;
const POLL_US = 1_000_000;

const USAGE = `usage: node build/out/bench/run.js [--quick] [--seconds S] [--rounds N] [--json] [--no-blk | --blk-only] [--guest] [--ours-workers W] [--no-net | --net-only]
  --quick       1 s per run, one latency round (C, ours, C); blk: 1 s per run, 2 rounds
  --seconds S   seconds per run (default 3; 1 with --quick)
  --rounds N    latency rounds, C ping-pong before and after each (default 5; 1 with --quick)
  --json        print the results JSON on stdout instead of the table (progress goes to stderr)
  --no-blk      skip the blk comparison (ours vs qemu-storage-daemon)
  --blk-only    run only the blk comparison
  --blk-seconds S, --blk-rounds N
                blk front-end: seconds per run (default 2) and rounds of ours, QSD (default 3)
  --ours-workers W
                blk: spread our back-end's queues over W queue workers (default: one per queue)
  --guest       blk also in a QEMU TCG guest with fio (slow: four guest boots)
  --guest-seconds S
                fio seconds per job in the guest (default 15: steady state, not the back-ends' warm-up)
  --guest-rounds N
                guest rounds of ours, QSD, ours grouped (4 queues in one worker); medians (default 3; 1 with --quick)
  --no-net      skip the net comparison (testpmd virtio-user: ours vs DPDK's vhost PMD)
  --net-only    run only the net comparison (standalone with more options: node build/out/bench/net.js --help)
`;

const progress = (s: string): void => void process.stderr.write(`[bench] ${s}\n`);
const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));

let tmpDir: string | undefined;
function cleanup(): void {
  killAllBackends('SIGKILL');
  blkCleanup('SIGKILL');
  netCleanup('SIGKILL');
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  tmpDir = undefined;
}
process.once('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    progress(`${sig}: killing the back-ends`);
    refuseNewBackends();
    refuseNewBlkProcs();
    refuseNewNetProcs();
    killAllBackends('SIGTERM');
    blkCleanup('SIGTERM');
    netCleanup('SIGTERM');
    setTimeout(() => {
      cleanup();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }, 300).unref();
  });
}

/** Race p against a deadline; on timeout run onTimeout (kills the back-end so the front-end unblocks). */
async function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => Promise<void>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void onTimeout().finally(() => reject(new Error(`${what}: no result within ${Math.round(ms / 1000)} s`)));
    }, ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** One back-end process for one drive(): spawn, drive, SIGTERM. */
async function driveScenario(
  name: string,
  bopts: Omit<BackendOptions, 'socketPath'>,
  mode: 'throughput' | 'latency',
  polling: boolean,
  seconds: number,
): Promise<{ report: DriveReport; backendArgs: string[] }> {
  const socketPath = path.join(tmpDir!, `${name.replace(/[^a-z0-9]+/gi, '-')}.sock`);
  const be = await Backend.start({ ...bopts, socketPath });
  try {
    const report = await withTimeout(
      drive({ socketPath, device: 'null', queues: bopts.queues, seconds, mode, polling, queueSize: QUEUE_SIZE, descsPerChain: 1, eventIdx: true, bufLen: 64 }),
      (seconds * 3 + 20) * 1000,
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

async function throughputScenario(queues: number, notify: 'eventfd' | 'polling', seconds: number, cpus: number): Promise<ThroughputScenario> {
  const polling = notify === 'polling';
  const name = `${queues}q ${notify}`;
  const busyThreads = 2 * queues;
  const oversubscribed = busyThreads > cpus;
  const s: ThroughputScenario = {
    name,
    queues,
    notify,
    backendArgs: [],
    drivePolling: polling,
    busyThreads,
    oversubscribed,
    ...(oversubscribed
      ? { note: `${busyThreads} ${polling ? 'spinning' : 'busy'} threads (${queues} back-end workers + ${queues} drivers) on ${cpus} CPU(s)` }
      : {}),
    ok: false,
  };
  progress(`throughput ${name}: ${seconds} s${oversubscribed ? ' (oversubscribed)' : ''}`);
  try {
    const { report, backendArgs } = await driveScenario(name, { queues, pollUs: polling ? POLL_US : 0, batch: BATCH }, 'throughput', polling, seconds);
    Object.assign(s, {
      ok: true,
      backendArgs,
      perQueueChainsPerSec: report.queues.map((q) => q.chainsPerSec),
      totalChainsPerSec: report.chainsPerSec,
      kicksPerChain: report.kicksPerChain,
      callsPerChain: report.callsPerChain,
      driverErrors: report.errors,
      report,
    });
    progress(`  ${report.queues.map((q) => (q.chainsPerSec / 1e6).toFixed(3)).join(' / ')} M chains/s per queue`);
  } catch (e) {
    s.error = errMsg(e);
    progress(`  FAILED: ${s.error}`);
  }
  return s;
}

async function cRun(seconds: number, available: boolean, why: string | undefined): Promise<CRun> {
  if (!available) return { ok: false, error: why ?? 'C baseline unavailable' };
  try {
    const loadavg1 = os.loadavg()[0];
    const result = await runPingPong(seconds);
    progress(`  C ping-pong p50 ${result.p50Us.toFixed(2)} us (${result.samples} samples)`);
    return { ok: true, loadavg1, result };
  } catch (e) {
    progress(`  C ping-pong FAILED: ${errMsg(e)}`);
    return { ok: false, error: errMsg(e) };
  }
}

async function latencyRun(seconds: number): Promise<LatencyRun & { backendArgs?: string[] }> {
  const loadavg1 = os.loadavg()[0];
  try {
    const { report, backendArgs } = await driveScenario('1q latency', { queues: 1, pollUs: 0, batch: BATCH }, 'latency', false, seconds);
    const lat = report.queues[0]?.latency;
    if (!lat) throw new Error('the driver reported no latency summary');
    progress(`  ours p50 ${lat.p50Us.toFixed(2)} us p99 ${lat.p99Us.toFixed(2)} us (${lat.samples} samples)`);
    return { ok: true, loadavg1, ...lat, kicksPerChain: report.kicksPerChain, callsPerChain: report.callsPerChain, report, backendArgs };
  } catch (e) {
    progress(`  ours FAILED: ${errMsg(e)}`);
    return { ok: false, error: errMsg(e) };
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      quick: { type: 'boolean' },
      seconds: { type: 'string' },
      rounds: { type: 'string' },
      json: { type: 'boolean' },
      'no-blk': { type: 'boolean' },
      'blk-only': { type: 'boolean' },
      'blk-seconds': { type: 'string' },
      'blk-rounds': { type: 'string' },
      guest: { type: 'boolean' },
      'guest-seconds': { type: 'string' },
      'guest-rounds': { type: 'string' },
      'ours-workers': { type: 'string' },
      'no-net': { type: 'boolean' },
      'net-only': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const quick = values.quick ?? false;
  const seconds = Number(values.seconds ?? (quick ? 1 : 3));
  const rounds = Number(values.rounds ?? (quick ? 1 : 5));
  if (!(seconds > 0 && seconds <= 600)) throw new Error(`--seconds must be in (0, 600], got '${values.seconds}'`);
  if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new Error(`--rounds must be an integer 1..20, got '${values.rounds}'`);
  if (values['no-blk'] && values['blk-only']) throw new Error('--no-blk and --blk-only exclude each other');
  if (values['net-only'] && (values['no-net'] || values['blk-only'])) throw new Error('--net-only excludes --no-net and --blk-only');
  if (values['no-blk'] && values.guest) throw new Error('--guest is part of the blk comparison: drop --no-blk');
  const bd = blkDefaults(quick);
  const blkSeconds = Number(values['blk-seconds'] ?? bd.seconds);
  const blkRounds = Number(values['blk-rounds'] ?? bd.rounds);
  const guestSeconds = Number(values['guest-seconds'] ?? GUEST_SECONDS_DEFAULT);
  if (!(blkSeconds > 0 && blkSeconds <= 600)) throw new Error(`--blk-seconds must be in (0, 600], got '${values['blk-seconds']}'`);
  if (!(Number.isInteger(blkRounds) && blkRounds >= 1 && blkRounds <= 20)) throw new Error(`--blk-rounds must be an integer 1..20, got '${values['blk-rounds']}'`);
  if (!(Number.isInteger(guestSeconds) && guestSeconds >= 1 && guestSeconds <= 120)) throw new Error(`--guest-seconds must be an integer 1..120, got '${values['guest-seconds']}'`);
  const oursWorkers = parseOursWorkers(values['ours-workers']);
  const runBlk = async (): Promise<BlkBenchResults> =>
    runBlkBench({ seconds: blkSeconds, rounds: blkRounds, quick, guest: values.guest ?? false, guestSeconds, guestRounds: parseGuestRounds(values['guest-rounds']), oursWorkers, tmpDir: tmpDir!, progress });

  const cpus = os.cpus().length;
  const startedAt = new Date();
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-wasm-bench-'));
  const nd = netDefaults(quick);
  const runNet = () => runNetBench({ seconds: nd.seconds, rounds: nd.rounds, quick, tmpDir: tmpDir!, progress });
  if (values['net-only']) {
    const n = await runNet();
    const p = writeNetResults(n, path.join(resultsRoot, startedAt.toISOString().replace(/:/g, '-')));
    process.stdout.write((values.json ? JSON.stringify({ net: n }, null, 2) : formatNetResults(n, p)) + '\n');
    progress(`done in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)} s`);
    return;
  }
  if (values['blk-only']) {
    const b = await runBlk();
    const p = writeBlkResults(b, path.join(resultsRoot, startedAt.toISOString().replace(/:/g, '-')));
    process.stdout.write((values.json ? JSON.stringify({ blk: b }, null, 2) : formatBlkResults(b, p)) + '\n');
    progress(`done in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)} s`);
    return;
  }
  const r: BenchResults = {
    benchmark: 'issue2',
    startedAt: startedAt.toISOString(),
    host: { cpus, cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version, platform: os.platform(), release: os.release(), loadavgAtStart: os.loadavg() },
    options: { seconds, quick, rounds, queueSize: QUEUE_SIZE, batch: BATCH, pollUsPolling: POLL_US },
    cBaseline: {},
    throughput: [],
    latency: { backendArgs: [], rounds: [], target: LATENCY_RATIO_TARGET },
    best: { target: PER_QUEUE_TARGET },
    bestNotOversubscribed: {},
    errors: [],
  };

  // the C baseline is built first, so that a compile does not land between the runs it brackets
  let cOk = false;
  try {
    const b = await buildPingPong();
    r.cBaseline = { binary: b.binary, compiled: b.compiled };
    cOk = true;
    progress(`C ping-pong ${b.compiled ? 'built' : 'up to date'}: ${b.binary}`);
  } catch (e) {
    r.cBaseline = { error: errMsg(e) };
    r.errors.push(`C baseline: ${errMsg(e)}`);
    progress(`C baseline unavailable: ${errMsg(e)}`);
  }

  // 1. throughput
  for (const queues of [1, 2])
    for (const notify of ['eventfd', 'polling'] as const) {
      const s = await throughputScenario(queues, notify, seconds, cpus);
      r.throughput.push(s);
      if (!s.ok) r.errors.push(`${s.name}: ${s.error}`);
      else if (s.driverErrors) r.errors.push(`${s.name}: ${s.driverErrors} used elements named heads not outstanding`);
    }

  // 2. kick-to-call round trip: C, ours, C, ours, ..., C
  progress(`latency: ${rounds} round(s), C ping-pong before and after each`);
  let before = await cRun(seconds, cOk, r.cBaseline.error);
  for (let i = 1; i <= rounds; i++) {
    const ours = await latencyRun(seconds);
    const after = await cRun(seconds, cOk, r.cBaseline.error);
    if (ours.backendArgs) r.latency.backendArgs = ours.backendArgs;
    delete ours.backendArgs;
    const cP50s = [before, after].filter((c) => c.ok).map((c) => c.result!.p50Us);
    const round: LatencyRound = { round: i, cBefore: before, ours, cAfter: after };
    if (cP50s.length) round.cP50Us = cP50s.reduce((a, b) => a + b, 0) / cP50s.length;
    if (round.cP50Us && ours.ok) round.ratio = ours.p50Us! / round.cP50Us;
    r.latency.rounds.push(round);
    if (!ours.ok) r.errors.push(`latency round ${i}: ${ours.error}`);
    for (const [w, c] of [['before', before], ['after', after]] as const) if (!c.ok && cOk) r.errors.push(`C ping-pong ${w} round ${i}: ${c.error}`);
    before = after;
  }
  const L = r.latency;
  const oursOk = L.rounds.filter((x) => x.ours.ok).map((x) => x.ours);
  const cAll = [L.rounds[0]?.cBefore, ...L.rounds.map((x) => x.cAfter)].filter((c): c is CRun => !!c?.ok);
  L.oursP50Us = median(oursOk.map((x) => x.p50Us!));
  L.oursP99Us = median(oursOk.map((x) => x.p99Us!));
  L.cP50Us = median(L.rounds.flatMap((x) => (x.cP50Us === undefined ? [] : [x.cP50Us])));
  L.cP99Us = median(cAll.map((c) => c.result!.p99Us));
  if (L.oursP50Us !== undefined && L.cP50Us) {
    L.ratio = L.oursP50Us / L.cP50Us;
    L.medianRoundRatio = median(L.rounds.flatMap((x) => (x.ratio === undefined ? [] : [x.ratio])));
    L.pass = L.ratio <= LATENCY_RATIO_TARGET;
  }
  const cP50All = cAll.map((c) => c.result!.p50Us);
  if (oursOk.length && cP50All.length) {
    L.minOursP50Us = Math.min(...oursOk.map((x) => x.p50Us!));
    L.minCP50Us = Math.min(...cP50All);
    L.minRatio = L.minOursP50Us / L.minCP50Us;
  }
  if (cP50All.length > 1) {
    L.cP50Spread = Math.max(...cP50All) / Math.min(...cP50All);
    L.noisy = L.cP50Spread > 1.5;
  }

  // 3. the per-queue-worker target
  let best: { v: number; s: ThroughputScenario } | undefined;
  let bestFair: { v: number; s: ThroughputScenario } | undefined;
  for (const s of r.throughput)
    for (const v of s.perQueueChainsPerSec ?? []) {
      if (!best || v > best.v) best = { v, s };
      if (!s.oversubscribed && (!bestFair || v > bestFair.v)) bestFair = { v, s };
    }
  if (best) r.best = { perQueueChainsPerSec: best.v, scenario: best.s.name, oversubscribed: best.s.oversubscribed, target: PER_QUEUE_TARGET, pass: best.v >= PER_QUEUE_TARGET };
  if (bestFair) r.bestNotOversubscribed = { perQueueChainsPerSec: bestFair.v, scenario: bestFair.s.name };

  // 4. blk: ours vs qemu-storage-daemon (bench/blk.ts)
  const blk = values['no-blk'] ? undefined : await runBlk();
  // 5. net: testpmd's virtio-user front-end, ours vs DPDK's vhost PMD (bench/net.ts)
  const net = values['no-net'] ? undefined : await runNet();

  r.finishedAt = new Date().toISOString();
  r.host.loadavgAtEnd = os.loadavg();
  const dir = path.join(resultsRoot, startedAt.toISOString().replace(/:/g, '-'));
  const blkPath = blk ? writeBlkResults(blk, dir) : undefined;
  const netPath = net ? writeNetResults(net, dir) : undefined;
  let jsonPath: string | undefined;
  try {
    fs.mkdirSync(dir, { recursive: true });
    jsonPath = path.join(dir, 'issue2.json');
    fs.writeFileSync(jsonPath, JSON.stringify(r, null, 2) + '\n');
  } catch (e) {
    r.errors.push(`writing results: ${errMsg(e)}`);
    jsonPath = undefined;
  }
  if (values.json) {
    process.stdout.write(JSON.stringify({ ...r, ...(blk ? { blk } : {}), ...(net ? { net } : {}) }, null, 2) + '\n');
    if (jsonPath) progress(`results: ${jsonPath}`);
    if (blkPath) progress(`blk results: ${blkPath}`);
    if (netPath) progress(`net results: ${netPath}`);
  } else {
    process.stdout.write(formatResults(r, jsonPath) + '\n');
    if (blk) process.stdout.write('\n' + formatBlkResults(blk, blkPath) + '\n');
    if (net) process.stdout.write('\n' + formatNetResults(net, netPath) + '\n');
  }
  progress(`done in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)} s`);
}

main().then(
  () => {
    cleanup();
    // piscina pools of the front-ends may still be winding down; the results are out
    process.exit(0);
  },
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    cleanup();
    process.exit(1);
  },
);
