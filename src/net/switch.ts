/**
 * The built-in learning L2 switch behind `vhost-wasm net`: one NetSwitch per process, one port per socket. Each
 * port's DeviceModel brings the switch's RingWorkers (DeviceModel.workers), so the rings of every connection run
 * in the switch's own workers (workers/net-worker.ts) instead of a pool per connection: a frame goes from one
 * port's TX ring straight into another port's RX ring, copied once between the two guest memories.
 *
 * Main thread side: spawns the workers (lazily, on the first ring start), tells every worker about each
 * connection (its Memory and rings), routes their events back to the right connection, flushes a port's MACs
 * when its front-end goes away, and sums the workers' counters.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import * as Comlink from 'comlink/dist/esm/comlink.mjs';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { loadEngineModule } from '../engine/engine.js';
import { loadNetSwitchModule } from './net-engine.js';
import { MAX_QUEUES } from '../engine/layout.js';
import type { RingWorkers, RingWorkersContext, RingWorkersFactory } from '../queues/ring-workers.js';
import type { RingStart } from '../queues/worker-protocol.js';
import { builtPath } from '../runtime/package-root.js';
import { closeQuietly, eventfd, eventfdSignal } from '../sys/syscalls.js';
import { rarpFrame } from './frame.js';
import { MacTable } from './mac-table.js';
import {
  MAX_PAIRS,
  NET_STATS_NAMES,
  PORT_STATS_WORDS,
  ST_RX_PAIR,
  ST_TX_PAIR,
  type NetPortStats,
  type NetRingStart,
  type NetWorkerApi,
  type NetWorkerData,
  type NetWorkerEvent,
} from './protocol.js';

export interface NetSwitchOptions {
  /** number of ports (sockets) */
  ports: number;
  /** queue pairs per port, 1..16 */
  pairs: number;
  /** switch workers (default: one per queue pair) */
  workers?: number;
  /** initial MTU of every port (default 1500) */
  mtu?: number;
  log?: (line: string) => void;
}

interface LiveWorker {
  worker: Worker;
  api: Comlink.Remote<NetWorkerApi>;
  ctlFd: number;
  ctlWord: Int32Array;
  exited: Promise<void>;
}

const live = new Set<LiveWorker>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Node joins worker threads at exit; one blocked in poll() would hang it forever. Wake them all.
  process.on('exit', () => {
    for (const w of live) {
      Atomics.store(w.ctlWord, 0, 1);
      eventfdSignal(w.ctlFd);
    }
  });
}

export class NetSwitch {
  readonly ports: number;
  readonly pairs: number;
  readonly workerCount: number;
  readonly macTable = new MacTable();
  private readonly lockSab: SharedArrayBuffer;
  private readonly mtuSab: SharedArrayBuffer;
  private readonly statsSab: SharedArrayBuffer;
  private readonly mtus: Int32Array;
  private workers: LiveWorker[] | undefined;
  private readonly connections = new Map<number, NetPortWorkers>();
  private nextKey = 1;
  private closed = false;
  readonly log: (line: string) => void;

  constructor(opts: NetSwitchOptions) {
    if (!Number.isInteger(opts.ports) || opts.ports < 1 || opts.ports > 64) throw new RangeError(`a switch has 1..64 ports, not ${opts.ports}`);
    if (!Number.isInteger(opts.pairs) || opts.pairs < 1 || opts.pairs > MAX_PAIRS)
      throw new RangeError(`a port has 1..${MAX_PAIRS} queue pairs, not ${opts.pairs}`);
    this.ports = opts.ports;
    this.pairs = opts.pairs;
    this.workerCount = Math.max(1, Math.min(opts.workers ?? opts.pairs, opts.pairs));
    this.log = opts.log ?? ((l) => process.stderr.write(`vhost-wasm net: ${l}\n`));
    this.lockSab = new SharedArrayBuffer(4 * MAX_QUEUES * this.ports);
    this.mtuSab = new SharedArrayBuffer(4 * this.ports);
    this.mtus = new Int32Array(this.mtuSab);
    this.mtus.fill(opts.mtu ?? 1500);
    this.statsSab = new SharedArrayBuffer(8 * this.workerCount * this.ports * PORT_STATS_WORDS);
  }

  /** The RingWorkers factory for port `port` (its DeviceModel.workers). */
  workersFor(port: number): RingWorkersFactory {
    if (port < 0 || port >= this.ports) throw new RangeError(`port ${port} out of range`);
    return (ctx) => {
      const c = new NetPortWorkers(this, port, ctx, this.nextKey++);
      this.connections.set(c.key, c);
      return c;
    };
  }

  setMtu(port: number, mtu: number): void {
    Atomics.store(this.mtus, port, mtu);
  }

  mtu(port: number): number {
    return Atomics.load(this.mtus, port);
  }

  /** Put a frame (no virtio_net_hdr) into the switch as if `port` had sent it. */
  async inject(port: number, frame: Uint8Array, pair = 0): Promise<void> {
    if (this.closed) return;
    const w = this.pool();
    await this.call(w[0]!, (api) => api.inject(port, frame, pair));
  }

  /** SEND_RARP: announce `mac` on every other port (and learn it on `port`). */
  sendRarp(port: number, mac: Uint8Array): Promise<void> {
    return this.inject(port, rarpFrame(mac));
  }

  /** Counters of `port`, summed over the workers (they persist across the port's connections). */
  stats(port: number): NetPortStats {
    const f = new Float64Array(this.statsSab);
    const out = Object.fromEntries(NET_STATS_NAMES.map((n) => [n, 0])) as unknown as NetPortStats;
    out.txByPair = new Array<number>(this.pairs).fill(0);
    out.rxByPair = new Array<number>(this.pairs).fill(0);
    for (let w = 0; w < this.workerCount; w++) {
      const base = (w * this.ports + port) * PORT_STATS_WORDS;
      NET_STATS_NAMES.forEach((n, k) => (out[n] += f[base + k]!));
      for (let p = 0; p < this.pairs; p++) {
        out.txByPair[p]! += f[base + ST_TX_PAIR + p]!;
        out.rxByPair[p]! += f[base + ST_RX_PAIR + p]!;
      }
    }
    return out;
  }

  /** Connections currently attached (for tests and diagnostics). */
  get connectionCount(): number {
    return this.connections.size;
  }

  // ---- workers ----
  /** @internal */
  pool(): LiveWorker[] {
    if (this.closed) throw new Error('the switch is closed');
    if (!this.workers) {
      installExitHook();
      const module = loadEngineModule();
      this.workers = Array.from({ length: this.workerCount }, (_, i) => this.spawn(i, module));
    }
    return this.workers;
  }

  private spawn(index: number, module: WebAssembly.Module): LiveWorker {
    const ctlFd = eventfd();
    const ctlSab = new SharedArrayBuffer(4);
    const events = new MessageChannel();
    const control = new MessageChannel();
    const data: NetWorkerData = {
      index,
      workers: this.workerCount,
      ports: this.ports,
      pairs: this.pairs,
      module,
      netModule: loadNetSwitchModule(),
      ctlFd,
      ctlWord: ctlSab,
      macTable: this.macTable.sab,
      locks: this.lockSab,
      mtus: this.mtuSab,
      stats: this.statsSab,
      events: events.port2,
      control: control.port2,
    };
    const worker = new Worker(builtPath('workers/net-worker.js'), { workerData: data, transferList: [events.port2, control.port2] });
    events.port1.on('message', (m: NetWorkerEvent) => {
      const c = this.connections.get(m.key);
      if (c) c.ctx.onEvent(m.event);
      else if (m.event.type === 'log') this.log(m.event.message);
    });
    events.port1.unref();
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.on('error', (err) => this.log(`switch worker ${index} failed: ${err.stack ?? err}`));
    const lw: LiveWorker = { worker, api: Comlink.wrap<NetWorkerApi>(nodeEndpoint(control.port1)), ctlFd, ctlWord: new Int32Array(ctlSab), exited };
    live.add(lw);
    return lw;
  }

  private call<T>(w: LiveWorker, fn: (api: Comlink.Remote<NetWorkerApi>) => Promise<T>): Promise<T> {
    const p = fn(w.api); // posts the message first ...
    eventfdSignal(w.ctlFd); // ... then wakes the worker, which yields to its event loop and takes it
    return p;
  }

  /** @internal Run a control call on every worker; resolves when all have taken it. */
  async broadcast(fn: (api: Comlink.Remote<NetWorkerApi>) => Promise<void>): Promise<void> {
    if (this.closed) return; // the workers are gone, and with them every access to guest memory
    await Promise.all(this.pool().map((w) => this.call(w, fn)));
  }

  /** @internal */
  released(c: NetPortWorkers): void {
    this.connections.delete(c.key);
  }

  /** Stop every worker (the servers should be closed first: their connections are then gone). */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const ws = this.workers ?? [];
    this.workers = undefined;
    await Promise.all(
      ws.map(async (w) => {
        Atomics.store(w.ctlWord, 0, 1);
        eventfdSignal(w.ctlFd);
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
        if ((await Promise.race([w.exited.then(() => 'exited' as const), timer])) === 'timeout') await w.worker.terminate();
        w.api[Comlink.releaseProxy]();
        live.delete(w);
        closeQuietly(w.ctlFd);
      }),
    );
  }
}

/**
 * One connection of one port, as the back-end state sees its workers: every call is broadcast to all switch
 * workers (each keeps its own view of the connection's rings) and resolves when all have taken it, so that
 * "stopped", "paused" and "closed" hold for every worker that might otherwise write into this guest's memory.
 */
export class NetPortWorkers implements RingWorkers {
  private attaching: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly sw: NetSwitch,
    readonly port: number,
    readonly ctx: RingWorkersContext,
    readonly key: number,
  ) {}

  private attach(): Promise<void> {
    this.attaching ??= this.sw.broadcast((api) => api.attachPort({ key: this.key, port: this.port, memory: this.ctx.memory }));
    return this.attaching;
  }

  async start(s: RingStart): Promise<void> {
    await this.attach();
    const ns: NetRingStart = { ...s, features: s.features ?? 0n };
    await this.sw.broadcast((api) => api.startRing(this.key, ns));
  }

  async stop(queue: number): Promise<void> {
    if (this.attaching) await this.sw.broadcast((api) => api.stopRing(this.key, queue));
  }

  async setEnabled(queue: number, enabled: boolean): Promise<void> {
    if (this.attaching) await this.sw.broadcast((api) => api.setEnabled(this.key, queue, enabled));
  }

  async setFds(queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): Promise<void> {
    if (this.attaching) await this.sw.broadcast((api) => api.setFds(this.key, queue, fds));
  }

  async pause(): Promise<void> {
    if (this.attaching) await this.sw.broadcast((api) => api.pausePort(this.key));
  }

  async resume(): Promise<void> {
    if (this.attaching) await this.sw.broadcast((api) => api.resumePort(this.key));
  }

  /** The front-end went away: no worker touches its memory any more, and its MACs are forgotten. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.attaching) await this.sw.broadcast((api) => api.detachPort(this.key));
    } finally {
      const n = this.sw.macTable.flushPort(this.port);
      if (n > 0) this.sw.log(`port ${this.port}: forgot ${n} MAC address(es)`);
      this.sw.released(this);
    }
  }
}
