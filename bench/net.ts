/**
 * The net benchmark: DPDK's testpmd with the virtio-user PMD as the front-end (a vhost-user front-end that needs
 * no VM and no hugepages), against two back-ends in the same run:
 *   - DPDK's vhost PMD in a second testpmd (`--vdev net_vhost0,iface=SOCK,queues=1`): the reference;
 *   - ours: `vhost-wasm net` (the learning switch), pinned with `taskset -c 1`.
 * One queue pair, split rings of 256 descriptors (virtio-user's defaults), testpmd's own frames: 64 and 1500
 * bytes (Ethernet header included, no FCS), sent to ff:ff:ff:ff:ff:ff (`--eth-peer`), so our switch floods them.
 * Every forwarding lcore is on its own CPU where there are enough: the front-end's on CPU 0, the back-end's (the
 * vhost PMD's lcore, or our whole process) on CPU 1.
 *
 * Modes, named after the front-end's forwarding mode:
 *   txonly  front-end -> back-end. DPDK: the vhost PMD in rxonly. Rate: the front-end's TX-packets delta (testpmd
 *           counts what its TX ring accepted, which the back-end bounds: a full ring takes nothing).
 *           ours, 1 port: the frames have nowhere to go and are dropped after the TX ring is processed (what the
 *           back-end's TX path costs; no copy, where the vhost PMD copies every frame into an mbuf). Also run with
 *           `vhost-wasm net --poll-us 50` (labelled): the drained TX ring is polled 50 us before its kicks are
 *           re-armed, so the front-end stops paying an eventfd write per burst (the vhost PMD never asks for kicks).
 *           ours, 2 ports: one testpmd with two virtio-user ports on ports A and B in flowgen mode (each port
 *           sends, and frees what it receives), so the switch copies every frame into the other port's RX buffers
 *           and nothing else shares the CPUs. Rate: TX-packets of both ports; also shown: their RX-packets.
 *   rxonly  back-end -> front-end. DPDK: the vhost PMD in txonly generates the frames. Ours has no generator: a
 *           second virtio-user testpmd in txonly on port B sends them, the switch copies them into port A. The
 *           generator's lcore shares CPU 1 with our back-end (as the vhost PMD's generator shares its lcore),
 *           under SCHED_IDLE: it runs when the back-end waits for a kick, and the back-end preempts it when
 *           kicked. 3 busy threads on 2 CPUs: reported as oversubscribed. Rate: the front-end's RX-packets delta.
 *           (A receiver on port B for the txonly case was tried the same way: a back-end that always has frames
 *           to drop never leaves the CPU to it, and at equal priority the two trade 256-frame rings per
 *           scheduler time slice. Hence flowgen.)
 *   io      a loop of in-flight frames (`start tx_first 4`: 128 per port), each forwarded by the back-end and then
 *           by the front-end. DPDK: virtio-user io <-> vhost PMD io on one port. Ours: the flowgen testpmd in io
 *           mode, A->B and B->A (testpmd's paired topology), so a frame goes A's TX -> switch -> B's RX ->
 *           testpmd -> A's TX -> ...: per frame received, one back-end forward (one TX chain popped, one RX chain
 *           filled) and one front-end forward, as in the DPDK loop. Our back-end sleeps on the kick eventfds
 *           where the vhost PMD polls: every lap waits for a wake-up. Rate: RX-packets delta over the ports.
 * Every process starts once; a run configures (`set fwd`, `set txpkts`), starts forwarding, warms up, reads
 * `show port stats all` twice and stops: DPDK, ours, DPDK, ours, ... Medians over the rounds; ratio = median ours
 * / median DPDK, also per round. Headline: txonly, 64-byte frames, 1 queue pair, 1 port, target >= 0.5.
 * The CPU time of each spinning lcore is read over every window: on a shared machine, a run where one got under
 * 80% of its CPU is marked starved, and when some rounds were not, the headline's verdict is theirs.
 *
 * Runnable alone: node build/out/bench/net.js [--quick] [--seconds S] [--rounds N] [--warmup S] [--json]
 * (npm run bench runs it after the blk comparison; --no-net skips it, --net-only runs only it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resultsRoot, writeSectionJson } from './paths.js';
import {
  findNetTools,
  killAllNetProcs,
  NetBackend,
  netProcsRefused,
  refuseNewNetProcs,
  removeNetRuntimeDirs,
  Testpmd,
  type FwdMode,
  type NetTools,
  type PortStats,
} from './testpmd.js';

export const NET_HEADLINE_TARGET = 0.5;
export const NET_FRAME_LENS = [64, 1500] as const;
const TX_FIRST_BURSTS = 4;
/** below this share of a CPU, a spinning lcore was kept waiting by other work on the machine */
const STARVED_CPU = 0.8;
const BROADCAST = 'ff:ff:ff:ff:ff:ff';
/** CPU of the front-end's forwarding lcore, and of the back-end (vhost PMD lcore, or our process) */
const FE_CPU = 0;
const BE_CPU = 1;

export type NetMode = 'txonly' | 'rxonly' | 'io';
export type NetOursVariant = '1port' | '1port-poll' | '2port';
/** the polled variant of the headline: `vhost-wasm net --poll-us NET_POLL_US` (kicks stay off while frames keep coming) */
export const NET_POLL_US = 50;

/** Seconds per run, warm-up, rounds: short runs, several rounds, against a noisy machine. */
export function netDefaults(quick: boolean): { seconds: number; rounds: number; warmup: number } {
  return quick ? { seconds: 1, rounds: 1, warmup: 0.3 } : { seconds: 2, rounds: 3, warmup: 0.5 };
}

export interface NetBenchOptions {
  /** seconds per measured window */
  seconds: number;
  rounds: number;
  /** seconds of forwarding before the window opens */
  warmup?: number;
  quick: boolean;
  /** scratch directory for the sockets */
  tmpDir: string;
  progress: (s: string) => void;
}

export interface NetRun {
  backend: 'dpdk' | 'ours';
  round: number;
  ok: boolean;
  error?: string;
  /** the measured counter's packets per second */
  pps?: number;
  packets?: number;
  seconds?: number;
  /** ours, 2 ports: what reached the other side (txonly: port B's testpmd RX; rxonly: the generator's TX) */
  otherPps?: number;
  /** ours: the switch's counters (all ports) over the window, per second of their own window (SIGUSR1) */
  switch?: { seconds: number; txFramesPerSec: number; rxFramesPerSec: number; rxDropNoBufferPerSec: number; rxDropNoRingPerSec: number };
  /** CPU time of the back-end process (our process, or the vhost PMD's testpmd) over the window, in CPUs */
  backendCpu?: number;
  /** CPU time of the measured front-end testpmd over the window, in CPUs (its lcore spins: below 1, it waited for a CPU) */
  frontendCpu?: number;
  /** a DPDK lcore that spins during the run (the front-end's; the vhost PMD's) got under STARVED_CPU of a CPU */
  starved?: boolean;
  loadavg1?: number;
}

export interface NetScenario {
  /** e.g. 'txonly 64 1port' */
  name: string;
  mode: NetMode;
  frameLen: number;
  variant: NetOursVariant;
  /** what the DPDK side does, what ours does */
  dpdkSetup: string;
  oursSetup: string;
  /** busy threads of ours' side of the comparison, against os.cpus().length */
  oursBusyThreads: number;
  oversubscribed: boolean;
  /** the counter the rate is read from */
  counter: string;
  /** DPDK's runs are shared by the rows of one mode and frame length */
  dpdk: NetRun[];
  ours: NetRun[];
  dpdkMpps?: number;
  oursMpps?: number;
  /** ours 2 ports: median of otherPps, in Mpps */
  oursOtherMpps?: number;
  /** medians of the runs' CPU shares (see NetRun) */
  dpdkBackendCpu?: number;
  oursBackendCpu?: number;
  dpdkFrontendCpu?: number;
  oursFrontendCpu?: number;
  /** median ours / median DPDK */
  ratio?: number;
  roundRatios: number[];
  /** per round: a spinning lcore of either run got under STARVED_CPU of its CPU (the ratio is less telling) */
  roundStarved: boolean[];
  medianRoundRatio?: number;
  /** median of the per-round ratios of the rounds where nothing was starved */
  unstarvedRatio?: number;
}

export interface NetBenchResults {
  benchmark: 'net';
  startedAt: string;
  finishedAt?: string;
  host: { cpus: number; cpuModel: string; node: string; release: string; loadavgAtStart: number[]; loadavgAtEnd?: number[] };
  tools: { testpmd?: string; dpdkVersion?: string; stdbuf?: string; taskset?: string; chrt?: string };
  options: { seconds: number; warmup: number; rounds: number; quick: boolean; frameLens: number[]; queuePairs: 1; txFirstBursts: number; ethPeer: string };
  /** command lines of the processes (sockets under a temporary directory) */
  commands: Record<string, string>;
  skipped?: string;
  scenarios: NetScenario[];
  headline: { scenario: string; target: number; ratio?: number; dpdkMpps?: number; oursMpps?: number; pass?: boolean; roundRatios?: number[]; unstarvedRatio?: number;
    /** which rounds `pass` comes from: all; only those where no spinning lcore was starved of CPU; or every round was */
    verdictFrom?: 'all rounds' | 'unstarved rounds' | 'starved rounds only';
    /** the same scenario with the back-end started with --poll-us NET_POLL_US (a labelled second figure) */
    polled?: { scenario: string; pollUs: number; oursMpps?: number; ratio?: number; roundRatios?: number[]; pass?: boolean };
  };
  errors: string[];
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

/** Time on CPU of every thread of a process, in seconds (schedstat, ns; 0 when /proc cannot tell). */
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  let ns = 0;
  try {
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread exited meanwhile
      }
    }
  } catch {
    return 0;
  }
  return ns / 1e9;
}

const sum = (ports: PortStats[], k: 'rx' | 'tx', only?: number): number => ports.filter((p) => only === undefined || p.port === only).reduce((a, p) => a + p[k], 0);

interface SwitchSnapshot {
  at: number;
  txFrames: number;
  rxFrames: number;
  rxDropNoBuffer: number;
  rxDropNoRing: number;
}

async function switchSnapshot(be: NetBackend): Promise<SwitchSnapshot | undefined> {
  try {
    const ports = await be.portStats();
    const g = (k: string): number => ports.reduce((a, p) => a + (typeof p[k] === 'number' ? (p[k] as number) : 0), 0);
    return { at: performance.now(), txFrames: g('txFrames'), rxFrames: g('rxFrames'), rxDropNoBuffer: g('rxDropNoBuffer'), rxDropNoRing: g('rxDropNoRing') };
  } catch {
    return undefined;
  }
}

/**
 * One measured run: `start` (configure and start forwarding, receivers first), warm up, read the meter's counters
 * over the window, `stop`. `count` picks the measured counter from the meter's ports; `other` (optional) a second
 * testpmd's counter.
 */
async function measure(o: {
  round: number;
  start: () => Promise<void>;
  stop: () => Promise<void>;
  meter: Testpmd;
  count: (p: PortStats[]) => number;
  other?: { t: Testpmd; count: (p: PortStats[]) => number };
  /** the back-end's process: its CPU time over the window (and ours: the switch's counters) */
  backend: Testpmd | NetBackend;
  warmupMs: number;
  windowMs: number;
}): Promise<NetRun> {
  const run: NetRun = { backend: o.backend instanceof NetBackend ? 'ours' : 'dpdk', round: o.round, ok: false, loadavg1: os.loadavg()[0] };
  const ours = o.backend instanceof NetBackend ? o.backend : undefined;
  // every reading keeps its own clock: a helper testpmd may answer late on a busy machine
  const cpu = (pid: number | undefined): { v: number; at: number } => ({ v: cpuSeconds(pid), at: performance.now() });
  const perSec = (a: { v: number; at: number }, b: { v: number; at: number }): number | undefined => (a.v > 0 && b.v > 0 ? (b.v - a.v) / ((b.at - a.at) / 1000) : undefined);
  try {
    await o.start();
    await sleep(o.warmupMs);
    const sw0 = ours ? await switchSnapshot(ours) : undefined;
    const bc0 = cpu(o.backend.pid);
    const fc0 = cpu(o.meter.pid);
    const same = o.other?.t === o.meter;
    const x0 = o.other && !same ? await o.other.t.stats() : undefined;
    const s0 = await o.meter.stats();
    await sleep(o.windowMs);
    const s1 = await o.meter.stats();
    const x1 = o.other && !same ? await o.other.t.stats() : undefined;
    const fc1 = cpu(o.meter.pid);
    const bc1 = cpu(o.backend.pid);
    const sw1 = ours ? await switchSnapshot(ours) : undefined;
    const secs = (s1.at - s0.at) / 1000;
    run.packets = o.count(s1.ports) - o.count(s0.ports);
    run.seconds = secs;
    run.pps = run.packets / secs;
    const [y0, y1] = same ? [s0, s1] : [x0, x1];
    if (o.other && y0 && y1) run.otherPps = (o.other.count(y1.ports) - o.other.count(y0.ports)) / ((y1.at - y0.at) / 1000);
    if (sw0 && sw1) {
      const t = (sw1.at - sw0.at) / 1000;
      run.switch = {
        seconds: t,
        txFramesPerSec: (sw1.txFrames - sw0.txFrames) / t,
        rxFramesPerSec: (sw1.rxFrames - sw0.rxFrames) / t,
        rxDropNoBufferPerSec: (sw1.rxDropNoBuffer - sw0.rxDropNoBuffer) / t,
        rxDropNoRingPerSec: (sw1.rxDropNoRing - sw0.rxDropNoRing) / t,
      };
    }
    run.backendCpu = perSec(bc0, bc1);
    run.frontendCpu = perSec(fc0, fc1);
    run.starved =
      (run.frontendCpu !== undefined && run.frontendCpu < STARVED_CPU) || (run.backend === 'dpdk' && run.backendCpu !== undefined && run.backendCpu < STARVED_CPU);
    run.ok = run.packets > 0;
    if (!run.ok) run.error = 'no packets counted in the window';
  } catch (e) {
    run.error = errMsg(e);
  } finally {
    try {
      await o.stop();
    } catch (e) {
      run.ok = false;
      run.error ??= `stop: ${errMsg(e)}`;
    }
  }
  return run;
}

/** Both sides in rxonly for a moment: the rings give back the frames a previous io loop left in flight. */
async function drain(receivers: Testpmd[]): Promise<void> {
  for (const t of receivers) await t.configure('rxonly', 64);
  for (const t of receivers) await t.startFwd();
  await sleep(200);
  for (const t of receivers) await t.stopFwd();
}

interface Rigs {
  /** DPDK: vhost PMD back-end (lcore on BE_CPU), virtio-user front-end (lcore on FE_CPU) */
  vh: Testpmd;
  vu: Testpmd;
  /** ours, 1 port */
  be1: NetBackend;
  f1: Testpmd;
  /** ours, 1 port, --poll-us */
  be1p: NetBackend;
  f1p: Testpmd;
  /** ours, 2 ports, rxonly: front-end A (FE_CPU), generator B (lcore on BE_CPU under SCHED_IDLE, beside our back-end) */
  be2: NetBackend;
  fa: Testpmd;
  fb: Testpmd;
  /** ours, 2 ports, one testpmd with both (flowgen, io loop) */
  be3: NetBackend;
  fio: Testpmd;
}

type RigProc = Testpmd | NetBackend;

async function startRigs(tools: NetTools, dir: string, started: RigProc[], progress: (s: string) => void): Promise<Rigs> {
  const sock = (n: string): string => path.join(dir, `${n}.sock`);
  const track = <T extends RigProc>(p: Promise<T>): Promise<T> =>
    p.then((x) => {
      started.push(x);
      return x;
    });
  // every start settles before a failure is thrown, so that `started` holds all that has to be stopped
  const all = async <T extends unknown[]>(ps: { [K in keyof T]: Promise<T[K]> }): Promise<T> => {
    const rs = await Promise.allSettled(ps);
    const bad = rs.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (bad) throw bad.reason;
    return rs.map((x) => (x as PromiseFulfilledResult<unknown>).value) as T;
  };
  progress(`net: starting the back-ends (DPDK vhost PMD testpmd, 3x vhost-wasm net on CPU ${BE_CPU})`);
  const [vh, be1, be1p, be2, be3] = await all<[Testpmd, NetBackend, NetBackend, NetBackend, NetBackend]>([
    track(Testpmd.start(tools, { name: 'vhost-pmd', vdevs: [`net_vhost0,iface=${sock('dpdk')},queues=1`], fwdCpu: BE_CPU, mode: 'rxonly' })),
    track(NetBackend.start(tools, [sock('ours1-a')], BE_CPU)),
    track(NetBackend.start(tools, [sock('ours1p-a')], BE_CPU, ['--poll-us', String(NET_POLL_US)])),
    track(NetBackend.start(tools, [sock('ours2-a'), sock('ours2-b')], BE_CPU)),
    track(NetBackend.start(tools, [sock('ours3-a'), sock('ours3-b')], BE_CPU)),
  ]);
  const vu = (n: number, p: string): string => `net_virtio_user${n},path=${p},queues=1`;
  progress('net: starting the virtio-user front-ends (6 testpmd)');
  const [vu0, f1, f1p, fa, fb, fio] = await all<[Testpmd, Testpmd, Testpmd, Testpmd, Testpmd, Testpmd]>([
    track(Testpmd.start(tools, { name: 'vu-dpdk', vdevs: [vu(0, sock('dpdk'))], fwdCpu: FE_CPU, mode: 'txonly', ethPeer: BROADCAST })),
    track(Testpmd.start(tools, { name: 'vu-ours1', vdevs: [vu(0, sock('ours1-a'))], fwdCpu: FE_CPU, mode: 'txonly', ethPeer: BROADCAST })),
    track(Testpmd.start(tools, { name: 'vu-ours1p', vdevs: [vu(0, sock('ours1p-a'))], fwdCpu: FE_CPU, mode: 'txonly', ethPeer: BROADCAST })),
    track(Testpmd.start(tools, { name: 'vu-ours2a', vdevs: [vu(0, sock('ours2-a'))], fwdCpu: FE_CPU, mode: 'rxonly', ethPeer: BROADCAST })),
    track(Testpmd.start(tools, { name: 'vu-ours2b', vdevs: [vu(0, sock('ours2-b'))], fwdCpu: BE_CPU, mode: 'txonly', ethPeer: BROADCAST, sched: 'idle' })),
    track(Testpmd.start(tools, { name: 'vu-ours3', vdevs: [vu(0, sock('ours3-a')), vu(1, sock('ours3-b'))], fwdCpu: FE_CPU, mode: 'io', ethPeer: BROADCAST })),
  ]);
  return { vh, vu: vu0, be1, f1, be1p, f1p, be2, fa, fb, be3, fio };
}

function commandsOf(r: Rigs, tools: NetTools): Record<string, string> {
  const tp = (t: Testpmd): string => t.command.filter((x) => x !== tools.stdbuf && x !== '-oL').join(' ');
  return {
    dpdkBackend: tp(r.vh),
    dpdkFrontend: tp(r.vu),
    ours1Backend: r.be1.command.join(' '),
    ours1Frontend: tp(r.f1),
    ours1PollBackend: r.be1p.command.join(' '),
    ours1PollFrontend: tp(r.f1p),
    ours2Backend: r.be2.command.join(' '),
    ours2FrontendA: tp(r.fa),
    ours2FrontendB: `${tp(r.fb)}  (then: chrt --idle -p 0 on its forwarding lcore thread${r.fb.idleTids.length === 1 ? '' : 's'} ${r.fb.idleTids.join(', ')})`,
    ours3Backend: r.be3.command.join(' '),
    ours3Frontend: tp(r.fio),
  };
}

function newScenarios(frameLens: readonly number[], cpus: number, dpdkRuns: Map<string, NetRun[]>): NetScenario[] {
  const out: NetScenario[] = [];
  for (const len of frameLens) {
    const shared = (mode: NetMode): NetRun[] => {
      const k = `${mode} ${len}`;
      if (!dpdkRuns.has(k)) dpdkRuns.set(k, []);
      return dpdkRuns.get(k)!;
    };
    const row = (mode: NetMode, variant: NetOursVariant, dpdkSetup: string, oursSetup: string, busy: number, counter: string): NetScenario => ({
      name: `${mode} ${len} ${variant}`,
      mode,
      frameLen: len,
      variant,
      dpdkSetup,
      oursSetup,
      oursBusyThreads: busy,
      oversubscribed: busy > cpus,
      counter,
      dpdk: shared(mode),
      ours: [],
      roundRatios: [],
      roundStarved: [],
    });
    out.push(
      row('txonly', '1port', 'virtio-user txonly -> vhost PMD rxonly', 'virtio-user txonly -> port A; no other port: dropped after the TX ring', 2, 'front-end TX-packets'),
      row(
        'txonly',
        '1port-poll',
        'virtio-user txonly -> vhost PMD rxonly',
        `as 1port, the back-end started with --poll-us ${NET_POLL_US}: a drained TX ring is polled ${NET_POLL_US} us before kicks are re-armed`,
        2,
        'front-end TX-packets',
      ),
      row(
        'txonly',
        '2port',
        'virtio-user txonly -> vhost PMD rxonly',
        'one virtio-user testpmd in flowgen on ports A and B (each sends, and frees what it receives): the switch copies A->B and B->A',
        2,
        'front-end TX-packets, both ports',
      ),
      row(
        'rxonly',
        '2port',
        'vhost PMD txonly -> virtio-user rxonly',
        'virtio-user txonly on port B (lcore on the back-end CPU, SCHED_IDLE) -> copied to port A -> virtio-user rxonly',
        3,
        'front-end A RX-packets',
      ),
      row('io', '2port', 'virtio-user io <-> vhost PMD io, 1 port', 'one virtio-user testpmd, io A<->B through ports A and B of the switch', 2, 'front-end RX-packets, all ports'),
    );
  }
  return out;
}

/** Front-ends first (their quit closes the connections), then the back-ends. */
async function stopAll(started: RigProc[]): Promise<void> {
  const fronts = started.filter((p): p is Testpmd => p instanceof Testpmd);
  await Promise.allSettled(fronts.filter((t) => t.opts.name.startsWith('vu')).map((t) => t.quit()));
  await Promise.allSettled(fronts.filter((t) => !t.opts.name.startsWith('vu')).map((t) => t.quit()));
  await Promise.allSettled(started.filter((p): p is NetBackend => p instanceof NetBackend).map((b) => b.stop()));
}

/** Run the whole comparison; a failed run does not throw (its error lands in the results), an interrupt does. */
export async function runNetBench(o: NetBenchOptions): Promise<NetBenchResults> {
  const cpus = os.cpus().length;
  const warmup = o.warmup ?? netDefaults(o.quick).warmup;
  const tools = findNetTools();
  const r: NetBenchResults = {
    benchmark: 'net',
    startedAt: new Date().toISOString(),
    host: { cpus, cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version, release: os.release(), loadavgAtStart: os.loadavg() },
    tools: { testpmd: tools.testpmd, dpdkVersion: tools.dpdkVersion, stdbuf: tools.stdbuf, taskset: tools.taskset, chrt: tools.chrt },
    options: { seconds: o.seconds, warmup, rounds: o.rounds, quick: o.quick, frameLens: [...NET_FRAME_LENS], queuePairs: 1, txFirstBursts: TX_FIRST_BURSTS, ethPeer: BROADCAST },
    commands: {},
    scenarios: [],
    headline: { scenario: `txonly ${NET_FRAME_LENS[0]} 1port`, target: NET_HEADLINE_TARGET },
    errors: [],
  };
  const dpdkRuns = new Map<string, NetRun[]>();
  r.scenarios = newScenarios(NET_FRAME_LENS, cpus, dpdkRuns);
  if (tools.error || cpus < 2) {
    r.skipped = tools.error ?? `${cpus} CPU: the front-end and back-end forwarding lcores need two`;
    o.progress(`net: skipped: ${r.skipped}`);
    r.finishedAt = new Date().toISOString();
    return r;
  }
  const dir = fs.mkdtempSync(path.join(o.tmpDir, 'net-'));
  const started: RigProc[] = [];
  const windowMs = o.seconds * 1000;
  const warmupMs = warmup * 1000;
  try {
    let g: Rigs;
    try {
      g = await startRigs(tools, dir, started, o.progress);
    } catch (e) {
      // a loaded machine (or a build rewriting build/out under a starting worker) can make one start fail: once more
      o.progress(`net: starting the processes failed, once more: ${errMsg(e).split('\n')[0]}`);
      r.errors.push(`net: first start failed: ${errMsg(e).split('\n')[0]}`);
      await stopAll(started.splice(0));
      g = await startRigs(tools, dir, started, o.progress);
    }
    r.commands = commandsOf(g, tools);
    const find = (mode: NetMode, len: number, variant: NetOursVariant): NetScenario => r.scenarios.find((s) => s.mode === mode && s.frameLen === len && s.variant === variant)!;
    const note = (what: string, run: NetRun): void => {
      if (!run.ok) r.errors.push(`${what} round ${run.round}: ${run.error}`);
      const extra = [
        run.otherPps !== undefined ? `other side ${(run.otherPps / 1e6).toFixed(3)} Mpps` : '',
        run.backendCpu !== undefined ? `back-end ${(run.backendCpu * 100).toFixed(0)}% CPU` : '',
        run.frontendCpu !== undefined ? `front-end ${(run.frontendCpu * 100).toFixed(0)}% CPU` : '',
        (run.switch?.rxDropNoBufferPerSec ?? 0) >= 500 ? `switch dropped ${(run.switch!.rxDropNoBufferPerSec / 1e6).toFixed(3)} Mpps for lack of RX buffers` : '',
      ].filter(Boolean);
      o.progress(`  ${what}: ${run.ok ? `${(run.pps! / 1e6).toFixed(3)} Mpps` : `FAILED: ${run.error?.split('\n')[0]}`}${extra.length ? ` (${extra.join(', ')})` : ''}`);
    };
    const rx0 = (p: PortStats[]): number => sum(p, 'rx', 0);
    const tx0 = (p: PortStats[]): number => sum(p, 'tx', 0);
    const rxAll = (p: PortStats[]): number => sum(p, 'rx');
    const txAll = (p: PortStats[]): number => sum(p, 'tx');
    for (let round = 1; round <= o.rounds; round++) {
      o.progress(`net: round ${round}/${o.rounds}, ${o.seconds} s per run after ${warmup} s warm-up`);
      for (const len of NET_FRAME_LENS) {
        const base = { round, warmupMs, windowMs };
        // txonly: front-end -> back-end
        const dTx = await measure({
          ...base,
          backend: g.vh,
          meter: g.vu,
          count: tx0,
          start: async () => {
            await g.vh.configure('rxonly', len);
            await g.vu.configure('txonly', len);
            await g.vh.startFwd();
            await g.vu.startFwd();
          },
          stop: async () => {
            await g.vu.stopFwd();
            await g.vh.stopFwd();
          },
        });
        find('txonly', len, '1port').dpdk.push(dTx);
        note(`txonly ${len} DPDK vhost PMD`, dTx);
        const o1 = await measure({
          ...base,
          backend: g.be1,
          meter: g.f1,
          count: tx0,
          start: async () => {
            await g.f1.configure('txonly', len);
            await g.f1.startFwd();
          },
          stop: () => g.f1.stopFwd(),
        });
        find('txonly', len, '1port').ours.push(o1);
        note(`txonly ${len} ours, 1 port`, o1);
        const o1p = await measure({
          ...base,
          backend: g.be1p,
          meter: g.f1p,
          count: tx0,
          start: async () => {
            await g.f1p.configure('txonly', len);
            await g.f1p.startFwd();
          },
          stop: () => g.f1p.stopFwd(),
        });
        find('txonly', len, '1port-poll').ours.push(o1p);
        note(`txonly ${len} ours, 1 port, --poll-us ${NET_POLL_US}`, o1p);
        const o2 = await measure({
          ...base,
          backend: g.be3,
          meter: g.fio,
          count: txAll,
          other: { t: g.fio, count: rxAll },
          start: async () => {
            await g.fio.configure('flowgen', len);
            await g.fio.startFwd();
          },
          stop: () => g.fio.stopFwd(),
        });
        find('txonly', len, '2port').ours.push(o2);
        note(`txonly ${len} ours, 2 ports`, o2);

        // rxonly: back-end -> front-end
        const dRx = await measure({
          ...base,
          backend: g.vh,
          meter: g.vu,
          count: rx0,
          start: async () => {
            await g.vu.configure('rxonly', len);
            await g.vh.configure('txonly', len);
            await g.vu.startFwd();
            await g.vh.startFwd();
          },
          stop: async () => {
            await g.vh.stopFwd();
            await g.vu.stopFwd();
          },
        });
        find('rxonly', len, '2port').dpdk.push(dRx);
        note(`rxonly ${len} DPDK vhost PMD`, dRx);
        const oRx = await measure({
          ...base,
          backend: g.be2,
          meter: g.fa,
          count: rx0,
          other: { t: g.fb, count: tx0 },
          start: async () => {
            await g.fa.configure('rxonly', len);
            await g.fb.configure('txonly', len);
            await g.fa.startFwd();
            await g.fb.startFwd();
          },
          stop: async () => {
            await g.fb.stopFwd();
            await g.fa.stopFwd();
          },
        });
        find('rxonly', len, '2port').ours.push(oRx);
        note(`rxonly ${len} ours (generator on port B)`, oRx);

        // io: a loop through the back-end and the front-end
        const dIo = await measure({
          ...base,
          backend: g.vh,
          meter: g.vu,
          count: rxAll,
          start: async () => {
            await drain([g.vh, g.vu]);
            await g.vh.configure('io', len);
            await g.vu.configure('io', len);
            await g.vh.startFwd();
            await g.vu.startFwd(TX_FIRST_BURSTS);
          },
          stop: async () => {
            await g.vu.stopFwd();
            await g.vh.stopFwd();
          },
        });
        find('io', len, '2port').dpdk.push(dIo);
        note(`io ${len} DPDK vhost PMD`, dIo);
        const oIo = await measure({
          ...base,
          backend: g.be3,
          meter: g.fio,
          count: rxAll,
          start: async () => {
            await drain([g.fio]);
            await g.fio.configure('io', len);
            await g.fio.startFwd(TX_FIRST_BURSTS);
          },
          stop: () => g.fio.stopFwd(),
        });
        find('io', len, '2port').ours.push(oIo);
        note(`io ${len} ours (ports A<->B)`, oIo);
      }
      const dead = started.filter((p) => !p.alive);
      if (dead.length) throw new Error(`a process of the net rigs died: ${dead.map((p) => p.tail(800)).join('\n---\n')}`);
    }
  } catch (e) {
    r.errors.push(`net: ${errMsg(e)}`);
    o.progress(`net FAILED: ${errMsg(e)}`);
    for (const b of started) if (b instanceof NetBackend) o.progress(`  vhost-wasm net (${b.sockets.map((x) => path.basename(x)).join(', ')}): ${b.tail(1500)}`);
  } finally {
    await stopAll(started);
    removeNetRuntimeDirs();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // interrupted (SIGINT/SIGTERM): the processes were killed under the runs, whose results mean nothing
  if (netProcsRefused()) throw new Error('net: interrupted');
  summarize(r);
  r.finishedAt = new Date().toISOString();
  r.host.loadavgAtEnd = os.loadavg();
  return r;
}

function summarize(r: NetBenchResults): void {
  for (const s of r.scenarios) {
    const pps = (runs: NetRun[]): number[] => runs.filter((x) => x.ok).map((x) => x.pps!);
    const d = median(pps(s.dpdk));
    const ou = median(pps(s.ours));
    s.dpdkMpps = d === undefined ? undefined : d / 1e6;
    s.oursMpps = ou === undefined ? undefined : ou / 1e6;
    const other = median(s.ours.filter((x) => x.ok && x.otherPps !== undefined).map((x) => x.otherPps!));
    if (other !== undefined) s.oursOtherMpps = other / 1e6;
    const cpuOf = (runs: NetRun[], k: 'backendCpu' | 'frontendCpu'): number | undefined => median(runs.filter((x) => x.ok && x[k] !== undefined).map((x) => x[k]!));
    s.dpdkBackendCpu = cpuOf(s.dpdk, 'backendCpu');
    s.oursBackendCpu = cpuOf(s.ours, 'backendCpu');
    s.dpdkFrontendCpu = cpuOf(s.dpdk, 'frontendCpu');
    s.oursFrontendCpu = cpuOf(s.ours, 'frontendCpu');
    if (d && ou !== undefined) s.ratio = ou / d;
    s.roundRatios = [];
    s.roundStarved = [];
    for (const x of s.ours) {
      const y = s.dpdk.find((z) => z.round === x.round);
      if (x.ok && y?.ok && y.pps) {
        s.roundRatios.push(x.pps! / y.pps);
        s.roundStarved.push(!!(x.starved || y.starved));
      }
    }
    s.medianRoundRatio = median(s.roundRatios);
    s.unstarvedRatio = median(s.roundRatios.filter((_, i) => !s.roundStarved[i]));
  }
  const hp = r.scenarios.find((s) => s.name === `${r.headline.scenario}-poll`);
  if (hp)
    r.headline.polled = {
      scenario: hp.name,
      pollUs: NET_POLL_US,
      oursMpps: hp.oursMpps,
      ratio: hp.ratio,
      roundRatios: hp.roundRatios,
      pass: hp.ratio === undefined ? undefined : hp.ratio >= r.headline.target,
    };
  const h = r.scenarios.find((s) => s.name === r.headline.scenario);
  if (h) {
    r.headline.dpdkMpps = h.dpdkMpps;
    r.headline.oursMpps = h.oursMpps;
    r.headline.ratio = h.ratio;
    r.headline.roundRatios = h.roundRatios;
    r.headline.unstarvedRatio = h.unstarvedRatio;
    // a starved round says more about the machine than about the back-ends: when some rounds were not starved,
    // the verdict is theirs
    const clean = h.roundStarved.filter((x) => !x).length;
    if (clean > 0 && clean < h.roundStarved.length && h.unstarvedRatio !== undefined) {
      r.headline.verdictFrom = 'unstarved rounds';
      r.headline.pass = h.unstarvedRatio >= r.headline.target;
    } else if (h.ratio !== undefined) {
      r.headline.verdictFrom = clean === 0 && h.roundStarved.length > 0 ? 'starved rounds only' : 'all rounds';
      r.headline.pass = h.ratio >= r.headline.target;
    }
  }
}

function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i < 3 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  ').trimEnd(), ...rows.map(line)];
}

export function formatNetResults(r: NetBenchResults, jsonPath?: string): string {
  const out: string[] = [];
  const o = r.options;
  if (r.skipped) return `net (testpmd virtio-user vs DPDK vhost PMD): skipped: ${r.skipped}`;
  out.push(
    `net: dpdk-testpmd virtio-user front-end (1 queue pair, split rings) against DPDK's vhost PMD and against vhost-wasm net; ` +
      `${o.seconds} s per run after ${o.warmup} s warm-up, ${o.rounds} round(s) interleaved DPDK, ours${o.rounds > 1 ? ', medians' : ''}; ${r.host.cpus} CPU(s)`,
  );
  out.push(`  front-end forwarding lcore on CPU ${FE_CPU}; back-end (vhost PMD lcore / our process) on CPU ${BE_CPU}; frames to ${o.ethPeer}`);
  out.push('');
  const M = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(3));
  const label: Record<string, string> = {
    'txonly 1port': 'txonly (fe->be)',
    'txonly 1port-poll': 'txonly (fe->be)',
    'txonly 2port': 'txonly (fe->be)',
    'rxonly 2port': 'rxonly (be->fe)',
    'io 2port': 'io (loop)',
  };
  const oursLabel: Record<string, string> = {
    'txonly 1port': '1 port, dropped',
    'txonly 1port-poll': `1 port, --poll-us ${NET_POLL_US}`,
    'txonly 2port': 'A<->B flowgen',
    'rxonly 2port': 'fed from port B *',
    'io 2port': 'A<->B, 1 testpmd',
  };
  const pct = (x: number | undefined): string => (x === undefined ? '-' : `${Math.round(x * 100)}%`);
  const rows = r.scenarios.map((s) => {
    const k = `${s.mode} ${s.variant}`;
    const fail = (runs: NetRun[]): string => (runs.some((x) => !x.ok) ? ` (${runs.filter((x) => !x.ok).length} failed)` : '');
    return [
      label[k] ?? s.mode,
      String(s.frameLen),
      oursLabel[k] ?? s.variant,
      M(s.dpdkMpps) + fail(s.dpdk),
      M(s.oursMpps) + fail(s.ours),
      s.ratio === undefined ? '-' : s.ratio.toFixed(2),
      s.roundRatios.length > 1 ? s.roundRatios.map((x, i) => (s.roundStarved[i] ? '~' : '') + x.toFixed(2)).join(' ') : '',
      `${pct(s.dpdkFrontendCpu)} / ${pct(s.oursFrontendCpu)}`,
      `${pct(s.dpdkBackendCpu)} / ${pct(s.oursBackendCpu)}`,
      s.oursOtherMpps !== undefined ? `${s.mode === 'txonly' ? 'received' : 'B sent'} ${M(s.oursOtherMpps)}` : '',
    ];
  });
  out.push(
    ...table(['mode', 'frame', 'ours setup', 'DPDK vhost PMD Mpps', 'ours Mpps', 'ratio', 'per round', 'fe CPU D / ours', 'be CPU D / ours', 'ours, other side Mpps'], rows).map(
      (l) => '  ' + l,
    ),
  );
  out.push(
    `  * oversubscribed: 3 busy threads on ${r.host.cpus} CPUs: ours is fed by a second virtio-user testpmd on port B, its lcore on CPU ${BE_CPU} under SCHED_IDLE beside our back-end`,
  );
  out.push(`  flowgen: one testpmd with ports A and B sends on both and frees what it receives; ours Mpps = TX-packets of both ports, "received" = their RX-packets`);
  out.push(`  rates: txonly = front-end TX-packets delta (what the back-end consumed), rxonly and io = front-end RX-packets delta`);
  out.push(
    `  CPU: share of one CPU the measured front-end testpmd (fe) and the back-end process (be: the vhost PMD's testpmd, or ours) got over the window; ` +
      `a DPDK lcore spins, so below 100% it waited for the CPU`,
  );
  const runs = r.scenarios.flatMap((s) => [...s.ours, ...(s.variant === '1port' || s.mode !== 'txonly' ? s.dpdk : [])]);
  const starved = runs.filter((x) => x.starved).length;
  if (starved)
    out.push(
      `  warning: in ${starved} of ${runs.length} runs a spinning lcore (the front-end's, or the vhost PMD's) got under ${STARVED_CPU * 100}% of its CPU: other work on the machine took the rest`,
    );
  const loads = r.scenarios.flatMap((s) => [...s.dpdk, ...s.ours]).flatMap((x) => (x.loadavg1 === undefined ? [] : [x.loadavg1]));
  const load = median(loads);
  // our own spinning lcores keep the load average near the CPU count: it only tells more beside starved runs
  if (starved && load !== undefined) out.push(`  (median 1-minute load average during the runs: ${load.toFixed(1)} on ${r.host.cpus} CPUs, this benchmark's own threads included)`);
  out.push('');
  if (r.options.rounds > 1 && r.scenarios.some((s) => s.roundStarved.some(Boolean)))
    out.push(`  ~: a round where a spinning lcore of either side got under ${STARVED_CPU * 100}% of its CPU`);
  const h = r.headline;
  const verdict =
    (h.pass === undefined ? 'n/a' : h.pass ? 'MET' : 'NOT MET') +
    (h.verdictFrom === 'unstarved rounds' ? ' (judged on the rounds where no side was starved of CPU, below)' : '') +
    (h.verdictFrom === 'starved rounds only' ? ' (inconclusive: a side was starved of CPU in every round)' : '');
  out.push(
    `headline: txonly ${NET_FRAME_LENS[0]}-byte frames, 1 queue pair, front-end -> back-end: ours ${M(h.oursMpps)} Mpps, ` +
      `DPDK vhost PMD ${M(h.dpdkMpps)} Mpps, ratio ${h.ratio === undefined ? '-' : h.ratio.toFixed(2)} (target >= ${h.target}) ${verdict}`,
  );
  if (h.polled)
    out.push(
      `  the same with vhost-wasm net --poll-us ${h.polled.pollUs}: ours ${M(h.polled.oursMpps)} Mpps, ratio ${h.polled.ratio === undefined ? '-' : h.polled.ratio.toFixed(2)} ` +
        `(per round ${h.polled.roundRatios?.map((x) => x.toFixed(2)).join(' ') ?? '-'}) ${h.polled.pass === undefined ? 'n/a' : h.polled.pass ? 'MET' : 'NOT MET'}`,
    );
  const hs = r.scenarios.find((s) => s.name === h.scenario);
  if (hs && hs.roundStarved.some(Boolean))
    out.push(
      `  rounds where neither side was starved of CPU: ${hs.roundStarved.filter((x) => !x).length} of ${hs.roundStarved.length}` +
        (hs.unstarvedRatio === undefined ? '' : `, their median ratio ${hs.unstarvedRatio.toFixed(2)}`),
    );
  if (r.errors.length) {
    out.push('');
    out.push(`net errors (${r.errors.length}):`);
    for (const e of r.errors) out.push('  ' + e.split('\n')[0]!.slice(0, 300));
  }
  if (jsonPath) out.push(`net results: ${jsonPath}`);
  return out.join('\n');
}

export function writeNetResults(r: NetBenchResults, dir: string): string | undefined {
  return writeSectionJson(r, dir, 'net.json');
}

/** Kill every testpmd and back-end of the net bench still alive; SIGKILL also removes testpmd's runtime dirs. */
export function netCleanup(signal: NodeJS.Signals = 'SIGKILL'): void {
  killAllNetProcs(signal);
  if (signal === 'SIGKILL') removeNetRuntimeDirs();
}
export { refuseNewNetProcs };

// ---- standalone ----

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      quick: { type: 'boolean' },
      seconds: { type: 'string' },
      rounds: { type: 'string' },
      warmup: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node build/out/bench/net.js [--quick] [--seconds S] [--rounds N] [--warmup S] [--json]\n');
    return;
  }
  const quick = values.quick ?? false;
  const d = netDefaults(quick);
  const seconds = Number(values.seconds ?? d.seconds);
  const rounds = Number(values.rounds ?? d.rounds);
  const warmup = Number(values.warmup ?? d.warmup);
  if (!(seconds > 0 && seconds <= 60)) throw new Error(`--seconds must be in (0, 60], got '${values.seconds}'`);
  if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new Error(`--rounds must be an integer 1..20, got '${values.rounds}'`);
  if (!(warmup >= 0 && warmup <= 10)) throw new Error(`--warmup must be in [0, 10], got '${values.warmup}'`);
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-wasm-net-bench-'));
  const progress = (s: string): void => void process.stderr.write(`[bench] ${s}\n`);
  const cleanup = (): void => {
    netCleanup('SIGKILL');
    fs.rmSync(tmpDir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      progress(`${sig}: stopping testpmd and the back-ends`);
      refuseNewNetProcs();
      netCleanup('SIGTERM');
      setTimeout(() => {
        cleanup();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      }, 500).unref();
    });
  const started = Date.now();
  const r = await runNetBench({ seconds, rounds, warmup, quick, tmpDir, progress });
  const jsonPath = writeNetResults(r, path.join(resultsRoot, r.startedAt.replace(/:/g, '-')));
  process.stdout.write((values.json ? JSON.stringify(r, null, 2) : formatNetResults(r, jsonPath)) + '\n');
  progress(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench net: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      netCleanup('SIGKILL');
      process.exit(1);
    },
  );
}
