/**
 * Processes of the net benchmark (bench/net.ts): DPDK's dpdk-testpmd driven over its interactive prompt (stdin
 * commands, `show port stats all` parsed from stdout), and our `vhost-wasm net` back-end pinned to one CPU.
 *
 * testpmd launch lines follow shared/design/real-clients.md: --no-huge -m 1024 --no-pci, --total-num-mbufs=16384
 * (the default pool does not fit in --no-huge memory), --single-file-segments for virtio-user (its memory must be
 * shareable with the back-end), `-l 0,1 --main-lcore M`: the forwarding lcore is the other one. stdout goes
 * through `stdbuf -oL`, or testpmd's answers sit in its stdio buffer while it waits on the pipe.
 *
 * Every process started here is tracked; killAllNetProcs() signals whatever is still alive (SIGINT path), and each
 * testpmd's runtime directory (/var/run/dpdk/<file-prefix>, unique per process) is removed once it has exited.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath } from './paths.js';

const live = new Set<ChildProcess>();
let refusing = false;
let seq = 0;

/** After an interrupt: start no more processes. */
export function refuseNewNetProcs(): void {
  refusing = true;
}

/** refuseNewNetProcs() was called: the run is being interrupted. */
export function netProcsRefused(): boolean {
  return refusing;
}

export function killAllNetProcs(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const c of live) {
    try {
      c.kill(signal);
    } catch {
      // already gone
    }
  }
}

function which(bin: string): string | undefined {
  if (bin.includes('/')) return fs.existsSync(bin) ? bin : undefined;
  for (const d of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!d) continue;
    const p = path.join(d, bin);
    try {
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface NetTools {
  testpmd?: string;
  stdbuf?: string;
  taskset?: string;
  chrt?: string;
  /** the DPDK package version, when dpkg knows it */
  dpdkVersion?: string;
  error?: string;
}

/** dpdk-testpmd (or VHOST_WASM_TESTPMD), stdbuf and taskset on PATH. */
export function findNetTools(): NetTools {
  const t: NetTools = {
    testpmd: which(process.env['VHOST_WASM_TESTPMD'] || 'dpdk-testpmd'),
    stdbuf: which('stdbuf'),
    taskset: which('taskset'),
    chrt: which('chrt'),
  };
  if (!t.testpmd) t.error = 'dpdk-testpmd not found (apt-get install dpdk)';
  else if (!t.taskset) t.error = 'taskset not found (util-linux): the back-end must be pinned to one CPU';
  const v = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'dpdk'], { encoding: 'utf8', timeout: 5000 });
  if (v.status === 0 && v.stdout.trim()) t.dpdkVersion = v.stdout.trim();
  return t;
}

/** Output of a child kept as text: the tail, and everything since a mark. */
class TextBuf {
  private buf = '';
  /** characters dropped from the front of buf */
  private dropped = 0;

  append(d: string): void {
    this.buf += d;
    // keep what a pending wait may still scan; long runs print little
    if (this.buf.length > 1 << 20) {
      const cut = this.buf.length - (1 << 19);
      this.buf = this.buf.slice(cut);
      this.dropped += cut;
    }
  }

  /** absolute position now */
  mark(): number {
    return this.dropped + this.buf.length;
  }

  since(mark: number): string {
    return this.buf.slice(Math.max(0, mark - this.dropped));
  }

  tail(n: number): string {
    return this.buf.slice(-n).trim();
  }
}

/**
 * A child process with its output kept: stdout alone (testpmd's prompt and answers, in order) and stdout and stderr
 * together (what testpmd reports on stderr can land in the middle of a prompt on a shared buffer).
 */
class Proc {
  readonly out = new TextBuf();
  readonly all = new TextBuf();
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** called on every chunk of output and at exit */
  private readonly watchers = new Set<() => void>();
  readonly exited: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    readonly command: string[],
  ) {
    live.add(child);
    const wake = (): void => {
      for (const w of [...this.watchers]) w();
    };
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      this.out.append(d);
      this.all.append(d);
      wake();
    });
    child.stderr?.on('data', (d: string) => {
      this.all.append(d);
      wake();
    });
    child.stdin?.on('error', () => {
      // EPIPE once it has gone: the exit is reported through `exited`
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exitInfo ??= { code, signal };
        live.delete(child);
        resolve();
        wake();
      });
      child.once('error', (e) => {
        this.exitInfo ??= { code: -1, signal: null };
        this.all.append(`\nspawn error: ${e.message}`);
        live.delete(child);
        resolve();
        wake();
      });
    });
  }

  get alive(): boolean {
    return this.exitInfo === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  describeExit(): string {
    const e = this.exitInfo ?? { code: this.child.exitCode, signal: this.child.signalCode };
    if (e.code === null && e.signal === null) return 'running';
    return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`;
  }

  tail(n = 3000): string {
    return this.all.tail(n);
  }

  /** Resolves, as soon as `check` returns something, with that. */
  waitFor<T>(what: string, check: () => T | undefined, ms: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const finish = (err?: Error, v?: T): void => {
        this.watchers.delete(look);
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(v!);
      };
      const look = (): void => {
        const v = check();
        if (v !== undefined) finish(undefined, v);
        else if (!this.alive) finish(new Error(`${what}: ${path.basename(this.command[0]!)} exited (${this.describeExit()}): ${this.tail(2000)}`));
      };
      const timer = setTimeout(() => finish(new Error(`${what}: nothing within ${ms} ms: ${this.tail(2000)}`)), ms);
      this.watchers.add(look);
      look();
    });
  }

  /** `signal`, then SIGKILL if it has not gone within graceMs. */
  async kill(signal: NodeJS.Signals, graceMs: number): Promise<void> {
    if (!this.alive) return;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

export interface PortStats {
  port: number;
  rx: number;
  tx: number;
}

export type FwdMode = 'io' | 'txonly' | 'rxonly' | 'flowgen';

export interface TestpmdOptions {
  /** short name, for messages and the file prefix */
  name: string;
  /** --vdev arguments, one port each */
  vdevs: string[];
  /** CPU of the forwarding lcore (the main lcore, which only reads commands, gets the other of 0 and 1) */
  fwdCpu: 0 | 1;
  /** initial forwarding mode (forwarding is not started) */
  mode: FwdMode;
  /** destination MAC of generated frames (txonly, tx_first) on every port */
  ethPeer?: string;
  /**
   * 'idle': its forwarding lcore under SCHED_IDLE (chrt --idle), so that it takes only the CPU time nothing else
   * wants: for a helper testpmd that has to share the back-end's CPU (a polling lcore would starve the back-end).
   */
  sched?: 'idle';
  startTimeoutMs?: number;
}

const PROMPT = 'testpmd> ';

/** One dpdk-testpmd in interactive mode. */
export class Testpmd {
  private constructor(
    private readonly p: Proc,
    readonly opts: TestpmdOptions,
    /** the whole command line (stdbuf, testpmd and its arguments) */
    readonly command: string[],
    readonly filePrefix: string,
  ) {}

  static async start(tools: NetTools, o: TestpmdOptions): Promise<Testpmd> {
    if (refusing) throw new Error('interrupted');
    if (!tools.testpmd) throw new Error(tools.error ?? 'dpdk-testpmd not found');
    const filePrefix = `vwbench${process.pid}-${++seq}-${o.name.replace(/[^a-z0-9]/gi, '')}`;
    const virtioUser = o.vdevs.some((v) => v.startsWith('net_virtio_user'));
    const ports = o.vdevs.length;
    const args = [
      '-l', '0,1', '--main-lcore', String(1 - o.fwdCpu), '--no-huge', '-m', '1024', '--no-pci',
      `--file-prefix=${filePrefix}`,
      ...(virtioUser ? ['--single-file-segments'] : []),
      ...o.vdevs.flatMap((v) => ['--vdev', v]),
      '--', '--no-mlockall', '--total-num-mbufs=16384', '-i', `--forward-mode=${o.mode}`,
      ...(o.ethPeer ? Array.from({ length: ports }, (_, i) => `--eth-peer=${i},${o.ethPeer}`) : []),
    ];
    if (o.sched === 'idle' && !tools.chrt) throw new Error(`${o.name}: chrt not found (util-linux): needed for SCHED_IDLE`);
    const cmd = [...(tools.stdbuf ? [tools.stdbuf, '-oL'] : []), tools.testpmd, ...args];
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const t = new Testpmd(new Proc(child, cmd), o, cmd, filePrefix);
    try {
      await t.p.waitFor(`${o.name}: the testpmd prompt`, () => (t.p.out.since(0).includes(PROMPT) ? true : undefined), o.startTimeoutMs ?? 30_000);
      if (o.sched === 'idle') t.idleTids = t.setForwardingIdle(tools.chrt!);
    } catch (e) {
      await t.quit();
      throw e;
    }
    return t;
  }

  /** the forwarding lcore threads put under SCHED_IDLE (sched: 'idle') */
  idleTids: number[] = [];
  private forwarding = false;

  get alive(): boolean {
    return this.p.alive;
  }

  get pid(): number | undefined {
    return this.p.child.pid;
  }

  tail(n = 3000): string {
    return this.p.tail(n);
  }

  /**
   * SCHED_IDLE for the forwarding lcore threads only (EAL names them rte-worker-N, lcore-worker-N in newer
   * releases): the main lcore, which answers the commands, keeps its normal priority.
   */
  private setForwardingIdle(chrt: string): number[] {
    const pid = this.p.child.pid;
    const tids: number[] = [];
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      let comm = '';
      try {
        comm = fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
      } catch {
        continue;
      }
      if (!/^(rte|lcore)-worker-\d+$/.test(comm)) continue;
      const r = spawnSync(chrt, ['--idle', '-p', '0', t], { encoding: 'utf8', timeout: 5000 });
      if (r.status !== 0) throw new Error(`${this.opts.name}: chrt --idle -p 0 ${t} (${comm}): ${r.stderr || r.error?.message}`);
      tids.push(Number(t));
    }
    if (tids.length === 0) throw new Error(`${this.opts.name}: no forwarding lcore thread (rte-worker-N) found to put under SCHED_IDLE`);
    return tids;
  }

  /**
   * Send one command line and wait for its answer: a fresh prompt after the echo of the line, and `until` if given
   * (matched on `stream`: stdout and stderr, or stdout alone). Returns what it printed there.
   */
  async cmd(line: string, until?: RegExp, stream: 'all' | 'stdout' = 'all', timeoutMs = 15_000): Promise<string> {
    if (!this.p.alive) throw new Error(`${this.opts.name}: testpmd is gone (${this.p.describeExit()}): ${this.p.tail(1500)}`);
    const outMark = this.p.out.mark();
    const allMark = this.p.all.mark();
    this.p.child.stdin!.write(line + '\n');
    // the echo, the answer and the next prompt come in order on stdout; what testpmd prints on stderr may come
    // after the prompt (or in the middle of it, were the two read as one stream)
    const done = (): string | undefined => {
      const out = this.p.out.since(outMark);
      const text = stream === 'all' ? this.p.all.since(allMark) : out;
      if (until && !until.test(text)) return undefined;
      const echo = out.indexOf(line);
      return out.indexOf(PROMPT, echo < 0 ? 0 : echo + line.length) >= 0 ? text : undefined;
    };
    return this.p.waitFor(`${this.opts.name}: '${line}'`, done, timeoutMs);
  }

  /** RX-packets and TX-packets of every port (`show port stats all`), and when the answer came. */
  async stats(): Promise<{ at: number; ports: PortStats[] }> {
    const n = this.opts.vdevs.length;
    const block = String.raw`NIC statistics for port \d+[\s\S]*?TX-packets:[^\n]*\n[\s\S]*?#{20,}`;
    const out = await this.cmd('show port stats all', new RegExp(`(?:${block}[\\s\\S]*?){${n}}`), 'stdout');
    const at = performance.now();
    const ports: PortStats[] = [];
    const re = /NIC statistics for port (\d+)[\s\S]*?RX-packets:\s+(\d+)[\s\S]*?TX-packets:\s+(\d+)/g;
    for (let m = re.exec(out); m; m = re.exec(out)) ports.push({ port: Number(m[1]), rx: Number(m[2]), tx: Number(m[3]) });
    if (ports.length !== n) throw new Error(`${this.opts.name}: expected stats of ${n} port(s), got: ${out.slice(-1500)}`);
    return { at, ports };
  }

  /** Stop forwarding, set the mode and the generated frame length; forwarding stays stopped. */
  async configure(mode: FwdMode, frameLen: number): Promise<void> {
    await this.stopFwd();
    const f = await this.cmd(`set fwd ${mode}`, /Set \w+ packet forwarding mode|[Ii]nvalid[^\n]*/);
    if (!f.includes(`Set ${mode} packet forwarding mode`)) throw new Error(`${this.opts.name}: set fwd ${mode}: ${f}`);
    const o = await this.cmd(`set txpkts ${frameLen}`);
    if (/invalid|error|fail/i.test(o)) throw new Error(`${this.opts.name}: set txpkts ${frameLen}: ${o}`);
  }

  async startFwd(txFirstBursts = 0): Promise<void> {
    // set first: should the start fail halfway, the next stopFwd still sends `stop`
    this.forwarding = true;
    const o = await this.cmd(txFirstBursts > 0 ? `start tx_first ${txFirstBursts}` : 'start', /packet forwarding - ports=|already started|not started|[Ee]rror[^\n]*/);
    if (!/packet forwarding/.test(o) || /already started/i.test(o)) throw new Error(`${this.opts.name}: start: ${o.slice(-1500)}`);
  }

  /** `stop`, unless forwarding was never started since the last stop (testpmd would complain on stderr). */
  async stopFwd(): Promise<void> {
    if (!this.forwarding) return;
    await this.cmd('stop', /Done\.|not started/);
    this.forwarding = false;
  }

  /** `quit` on stdin, then SIGTERM, then SIGKILL; removes its runtime directory. */
  async quit(graceMs = 8000): Promise<void> {
    if (this.p.alive) {
      try {
        this.p.child.stdin!.write('quit\n');
      } catch {
        // stdin gone: the signals below
      }
      const end = Date.now() + graceMs;
      while (this.p.alive && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      await this.p.kill('SIGTERM', 2000);
    }
    removeRuntimeDir(this.filePrefix);
  }
}

/** /var/run/dpdk/<prefix> (root) or $XDG_RUNTIME_DIR/dpdk/<prefix>: config files testpmd leaves behind. */
function removeRuntimeDir(prefix: string): void {
  const bases = ['/var/run/dpdk', '/run/dpdk', ...(process.env['XDG_RUNTIME_DIR'] ? [path.join(process.env['XDG_RUNTIME_DIR'], 'dpdk')] : [])];
  for (const b of bases) {
    try {
      fs.rmSync(path.join(b, prefix), { recursive: true, force: true });
    } catch {
      // not ours to remove, or not there
    }
  }
}

/** Runtime directories of testpmd processes of this bench process that were SIGKILLed (exit path). */
export function removeNetRuntimeDirs(): void {
  for (const b of ['/var/run/dpdk', '/run/dpdk']) {
    let names: string[];
    try {
      names = fs.readdirSync(b);
    } catch {
      continue;
    }
    for (const n of names) if (n.startsWith(`vwbench${process.pid}-`)) removeRuntimeDir(n);
  }
}

/** Our `vhost-wasm net` back-end, one switch port per socket, pinned to one CPU with taskset. */
export class NetBackend {
  private constructor(
    private readonly p: Proc,
    readonly sockets: string[],
    readonly command: string[],
  ) {}

  static async start(tools: NetTools, sockets: string[], cpu: number, extraArgs: readonly string[] = [], timeoutMs = 15_000): Promise<NetBackend> {
    if (refusing) throw new Error('interrupted');
    if (!tools.taskset) throw new Error(tools.error ?? 'taskset not found');
    for (const s of sockets) fs.rmSync(s, { force: true });
    const cmd = [tools.taskset, '-c', String(cpu), process.execPath, cliPath, 'net', ...sockets.flatMap((s) => ['--socket-path', s]), ...extraArgs];
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const b = new NetBackend(new Proc(child, cmd), sockets, cmd);
    const end = Date.now() + timeoutMs;
    while (!sockets.every((s) => fs.existsSync(s))) {
      if (!b.p.alive) throw new Error(`vhost-wasm net exited before listening (${b.p.describeExit()}): ${b.p.tail()}`);
      if (Date.now() > end) {
        await b.stop();
        throw new Error(`vhost-wasm net did not create ${sockets.join(', ')} within ${timeoutMs} ms: ${b.p.tail()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return b;
  }

  get alive(): boolean {
    return this.p.alive;
  }

  get pid(): number | undefined {
    return this.p.child.pid;
  }

  tail(n = 3000): string {
    return this.p.tail(n);
  }

  /** The switch's counters of every port (SIGUSR1 makes it log them). */
  async portStats(timeoutMs = 5000): Promise<Record<string, number | number[]>[]> {
    if (!this.p.alive) throw new Error(`vhost-wasm net is gone (${this.p.describeExit()}): ${this.p.tail(1500)}`);
    const n = this.sockets.length;
    const m = this.p.all.mark();
    this.p.child.kill('SIGUSR1');
    const last = new RegExp(`port ${n - 1} stats \\{.*\\}\\n`);
    const out = await this.p.waitFor('vhost-wasm net: port stats', () => (last.test(this.p.all.since(m)) ? this.p.all.since(m) : undefined), timeoutMs);
    return Array.from({ length: n }, (_, i) => JSON.parse(new RegExp(`port ${i} stats (\\{.*\\})`).exec(out)?.[1] ?? '{}') as Record<string, number | number[]>);
  }

  /** SIGTERM (it closes the connections and prints its counters), SIGKILL after graceMs. */
  async stop(graceMs = 5000): Promise<void> {
    await this.p.kill('SIGTERM', graceMs);
    for (const s of this.sockets) fs.rmSync(s, { force: true });
  }
}
