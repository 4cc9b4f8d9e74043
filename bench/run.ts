/**
 * `npm run bench`: the whole suite, written to bench/results/<date>/ (results.json, summary.md, SVG charts).
 * 1. the ring lab (bench/lab.ts): chains/s of the null device against the batch limit for every engine of the
 *    registry and every notification policy; then multi-queue scaling from 1 queue to the core count;
 * 2. the kick-to-call round trip beside the C eventfd ping-pong, built and run here, C bracketing each of our runs;
 * 3. blk (bench/blk.ts): our vhost-user-blk back-end against qemu-storage-daemon through the built-in front-end,
 *    and with --guest in a QEMU guest with fio;
 * 4. net (bench/net.ts): testpmd's virtio-user front-end against DPDK's vhost PMD and against ours.
 * Progress goes to stderr (a bar on a terminal, plain lines otherwise); the summary to stdout.
 *
 *   node build/out/bench/run.js [--quick] [--seconds S] [--rounds N] [--json] [--no-lab] [--no-blk | --blk-only] [--guest] [--no-net | --net-only]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { killAllBackends, refuseNewBackends } from './backend.js';
import { blkCleanup, blkDefaults, formatBlkResults, GUEST_SECONDS_DEFAULT, parseGuestRounds, parseOursWorkers, refuseNewBlkProcs, runBlkBench, writeBlkResults, type BlkBenchResults } from './blk.js';
import { buildPingPong, runPingPong } from './c-baseline.js';
import { driveNull, QUEUE_SIZE, type RingFormat, runScaling, runSweep, scalingPlan, scalingSteps, sweepSteps } from './lab.js';
import { formatNetResults, netCleanup, netDefaults, refuseNewNetProcs, runNetBench, writeNetResults, type NetBenchResults } from './net.js';
import { resultsRoot } from './paths.js';
import { Progress } from './progress.js';
import { type BenchResults, type CRun, LATENCY_RATIO_TARGET, type LatencyRound, type LatencyRun, median, PER_QUEUE_TARGET } from './report.js';
import { writeSummary } from './summary.js';

const BATCH = 128;

const USAGE = `usage: node build/out/bench/run.js [--quick] [--seconds S] [--rounds N] [--json] [--no-lab] [--no-blk | --blk-only] [--guest] [--ours-workers W] [--no-net | --net-only]
  --quick       short form (under two minutes): sweep batches 4 and 128, 0.5 s points, one scaling round,
                one latency round (C, ours, C); blk: 1 s per run, 2 rounds; net: one round
  --seconds S   seconds per latency run (default 3; 1 with --quick); sweep points take at most 1 s (0.5 quick),
                scaling runs at most 2 s
  --rounds N    latency rounds, C ping-pong before and after each (default 5; 1 with --quick); scaling rounds
                (3..5; 1 with --quick)
  --json        print the results JSON on stdout instead of the summary (progress goes to stderr)
  --no-lab      skip the engine/policy sweep and the scaling runs
  --engine PATH also sweep this engine module (createEngine, see README "Adding an engine"); repeatable
  --ring R      the virtqueue formats the shipped engines are swept on: split, packed or both (default both)
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

let bar: Progress | undefined;
const progress = (s: string): void => (bar ? bar.log(s) : void process.stderr.write(`[bench] ${s}\n`));
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
    const { report, backendArgs } = await driveNull(tmpDir!, '1q latency', { queues: 1, pollUs: 0, batch: BATCH, notify: 'event-idx' }, { mode: 'latency', polling: false, seconds });
    const lat = report.queues[0]?.latency;
    if (!lat) throw new Error('the driver reported no latency summary');
    progress(`  ours p50 ${lat.p50Us.toFixed(2)} us p90 ${lat.p90Us.toFixed(2)} us p99 ${lat.p99Us.toFixed(2)} us (${lat.samples} samples)`);
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
      'no-lab': { type: 'boolean' },
      engine: { type: 'string', multiple: true },
      ring: { type: 'string' },
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
  const runBlk = async (): Promise<BlkBenchResults> => {
    bar!.step('blk: ours vs qemu-storage-daemon');
    const b = await runBlkBench({ seconds: blkSeconds, rounds: blkRounds, quick, guest: values.guest ?? false, guestSeconds, guestRounds: parseGuestRounds(values['guest-rounds']), oursWorkers, tmpDir: tmpDir!, progress });
    bar!.tick();
    return b;
  };

  const cpus = os.cpus().length;
  const startedAt = new Date();
  const lab = !values['no-lab'] && !values['net-only'] && !values['blk-only'];
  const withBlk = !values['no-blk'] && !values['net-only'];
  const withNet = !values['no-net'] && !values['blk-only'];
  const latencySteps = values['net-only'] || values['blk-only'] ? 0 : 2 * rounds + 1;
  const extraEngines = (values.engine ?? []).map((e) => {
    if (!fs.existsSync(e)) throw new Error(`--engine ${e}: no such file`);
    return path.resolve(e);
  });
  const ringArg = values.ring ?? 'both';
  if (!['split', 'packed', 'both'].includes(ringArg)) throw new Error(`--ring must be split, packed or both, got '${ringArg}'`);
  const rings: RingFormat[] = ringArg === 'both' ? ['split', 'packed'] : [ringArg as RingFormat];
  bar = new Progress((lab ? sweepSteps(quick, extraEngines, rings) + scalingSteps(quick) : 0) + latencySteps + (withBlk ? 1 : 0) + (withNet ? 1 : 0));
  const labOpts = {
    tmpDir: '',
    quick,
    seconds,
    extraEngines,
    rings,
    step: (l: string) => bar!.step(l),
    done: () => bar!.tick(),
    log: progress,
  };
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-wasm-bench-'));
  const nd = netDefaults(quick);
  const runNet = async (): Promise<NetBenchResults> => {
    bar!.step('net: ours vs DPDK vhost PMD');
    const n = await runNetBench({ seconds: nd.seconds, rounds: nd.rounds, quick, tmpDir: tmpDir!, progress });
    bar!.tick();
    return n;
  };
  labOpts.tmpDir = tmpDir;
  if (values['net-only']) {
    const n = await runNet();
    const p = writeNetResults(n, path.join(resultsRoot, startedAt.toISOString().replace(/:/g, '-')));
    bar.finish();
    process.stdout.write((values.json ? JSON.stringify({ net: n }, null, 2) : formatNetResults(n, p)) + '\n');
    progress(`done in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)} s`);
    return;
  }
  if (values['blk-only']) {
    const b = await runBlk();
    const p = writeBlkResults(b, path.join(resultsRoot, startedAt.toISOString().replace(/:/g, '-')));
    bar.finish();
    process.stdout.write((values.json ? JSON.stringify({ blk: b }, null, 2) : formatBlkResults(b, p)) + '\n');
    progress(`done in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)} s`);
    return;
  }
  const r: BenchResults = {
    benchmark: 'vhost-wasm',
    startedAt: startedAt.toISOString(),
    host: {
      cpus,
      availableParallelism: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      node: process.version,
      platform: os.platform(),
      release: os.release(),
      loadavgAtStart: os.loadavg(),
    },
    options: { seconds, quick, rounds, queueSize: QUEUE_SIZE, batch: BATCH },
    cBaseline: {},
    latency: { backendArgs: [], rounds: [], target: LATENCY_RATIO_TARGET },
    best: { target: PER_QUEUE_TARGET },
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

  // 1. the ring lab: engines x policies x batch sizes, then 1..N queues
  if (lab) {
    r.lab = await runSweep(labOpts);
    for (const p of r.lab.points) if (!p.ok) r.errors.push(`sweep ${p.engine} ${p.policy} batch ${p.batch}: ${p.error}`);
    if (r.lab.best) progress(`sweep best: ${(r.lab.best.chainsPerSec / 1e6).toFixed(2)} M chains/s (${r.lab.best.engine}, ${r.lab.best.policy}, batch ${r.lab.best.batch})`);
    r.scaling = await runScaling({ ...labOpts, batch: BATCH });
    for (const row of r.scaling.rows)
      for (const run of row.runs) if (!run.ok) r.errors.push(`scaling ${row.queues}q ${row.policy} round ${run.round}: ${run.error}`);
    progress(`scaling efficiency (lowest over N = 2..${scalingPlan(quick).maxQueues}): ${Object.entries(r.scaling.minEfficiency).map(([p, v]) => `${p} ${v?.toFixed(2) ?? '-'}`).join(', ')}`);
  }

  // 2. kick-to-call round trip: C, ours, C, ours, ..., C
  progress(`latency: ${rounds} round(s), C ping-pong before and after each`);
  bar.step('latency: C ping-pong');
  let before = await cRun(seconds, cOk, r.cBaseline.error);
  bar.tick();
  for (let i = 1; i <= rounds; i++) {
    bar.step(`latency: ours, round ${i}/${rounds}`);
    const ours = await latencyRun(seconds);
    bar.tick();
    bar.step(`latency: C ping-pong, round ${i}/${rounds}`);
    const after = await cRun(seconds, cOk, r.cBaseline.error);
    bar.tick();
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

  // 3. the per-queue-worker target: the best one-queue sweep point or scaling row (median per queue)
  const cands: { v: number; scenario: string; oversubscribed: boolean }[] = [];
  if (r.lab?.best) cands.push({ v: r.lab.best.chainsPerSec, scenario: `sweep: ${r.lab.best.engine} ${r.lab.best.policy} batch ${r.lab.best.batch}, 1 queue`, oversubscribed: false });
  for (const row of r.scaling?.rows ?? [])
    if (row.medianPerQueue !== undefined) cands.push({ v: row.medianPerQueue, scenario: `scaling: ${row.queues}q ${row.policy} (median per queue)`, oversubscribed: row.oversubscribed });
  const best = cands.sort((a, b) => b.v - a.v)[0];
  if (best) r.best = { perQueueChainsPerSec: best.v, scenario: best.scenario, oversubscribed: best.oversubscribed, target: PER_QUEUE_TARGET, pass: best.v >= PER_QUEUE_TARGET };

  // 4. blk: ours vs qemu-storage-daemon (bench/blk.ts)
  const blk = withBlk ? await runBlk() : undefined;
  // 5. net: testpmd's virtio-user front-end, ours vs DPDK's vhost PMD (bench/net.ts)
  const net = withNet ? await runNet() : undefined;

  r.finishedAt = new Date().toISOString();
  r.host.loadavgAtEnd = os.loadavg();
  const dir = path.join(resultsRoot, startedAt.toISOString().replace(/:/g, '-'));
  const blkPath = blk ? writeBlkResults(blk, dir) : undefined;
  const netPath = net ? writeNetResults(net, dir) : undefined;
  const all = { ...r, ...(blk ? { blk } : {}), ...(net ? { net } : {}) };
  let summary: string | undefined;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'results.json'), JSON.stringify(all, null, 2) + '\n');
    const w = writeSummary(dir, all);
    summary = w.markdown;
    progress(`results: ${dir}/ (${w.files.join(', ')})`);
  } catch (e) {
    r.errors.push(`writing results: ${errMsg(e)}`);
    progress(`writing results FAILED: ${errMsg(e)}`);
  }
  bar.finish();
  if (values.json) process.stdout.write(JSON.stringify(all, null, 2) + '\n');
  else {
    if (summary) process.stdout.write(summary + '\n');
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
