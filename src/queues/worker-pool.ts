/**
 * The queue workers of one back-end endpoint, kept warm across its connections. The endpoint's Memory lives as
 * long as the endpoint (one front-end at a time maps its guest RAM there), so a worker spawned once serves every
 * connection: each connection leases the pool, and on disconnect the lease resets every worker (rings stopped,
 * handlers closed, nothing left that points at the connection's fds or memory) and hands them back. Spawning a
 * worker costs hundreds of milliseconds and koffi keeps native state per thread it was loaded in, so a worker per
 * connection would make every reconnect slow and grow the process with the connection count.
 *
 * A worker that dies is replaced when a ring of it next starts; one that does not answer its reset is retired
 * (told to exit, then terminated) and the pool is marked tainted: that worker may still have had I/O in flight
 * into the Memory, so the endpoint discards Memory and pool together (server.ts).
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import * as Comlink from 'comlink/dist/esm/comlink.mjs';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { builtPath } from '../runtime/package-root.js';
import { ERR_DEVICE } from '../engine/layout.js';
import { closeQuietly, eventfd, eventfdSignal } from '../sys/syscalls.js';
import type { RingWorkers, RingWorkersContext } from './ring-workers.js';
import type { QueueWorkerApi, QueueWorkerData, RingStart, WorkerEvent } from './worker-protocol.js';

interface LiveWorker {
  index: number;
  dead: boolean;
  /** told to exit (close, or retired after a reset that did not come back) */
  leaving: boolean;
  worker: Worker;
  api: Comlink.Remote<QueueWorkerApi>;
  ctlFd: number;
  ctlWord: Int32Array;
  exited: Promise<void>;
  /** calls waiting for an answer: failed at once if the worker dies */
  waiting: Set<(e: Error) => void>;
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

/** What the workers of an endpoint share for its whole life. */
export type WorkerPoolOptions = Omit<RingWorkersContext, 'onEvent'> & {
  /** where worker events go while no connection holds the pool */
  log?: (line: string) => void;
  /** ms a worker gets to answer a reset or to exit before it is terminated (default 2000) */
  timeoutMs?: number;
};

/** Default mapping: one worker per queue, or `perWorker` consecutive queues per worker. */
export function queueMapping(queues: number, perWorker = 1): number[] {
  return Array.from({ length: queues }, (_, q) => Math.floor(q / Math.max(1, perWorker)));
}

function timeout(ms: number): Promise<'timeout'> {
  return new Promise((r) => setTimeout(() => r('timeout'), ms).unref());
}

export class QueueWorkerPool {
  private readonly workers: (LiveWorker | undefined)[] = [];
  private lease: PoolLease | undefined;
  private closed = false;
  private spawned = 0;
  private retired = false;

  constructor(private readonly opts: WorkerPoolOptions) {
    installExitHook();
  }

  /** Workers spawned over the pool's life (replacements included): flat across connections when warm. */
  get spawnCount(): number {
    return this.spawned;
  }

  /** A worker was terminated while it may still have touched the Memory: discard Memory and pool. */
  get tainted(): boolean {
    return this.retired;
  }

  /** The pool, as the rings of one connection see it; the previous lease must have been closed. */
  leaseFor(onEvent: (e: WorkerEvent) => void): RingWorkers {
    if (this.closed) throw new Error('the worker pool is closed');
    this.lease = new PoolLease(this, onEvent);
    return this.lease;
  }

  /** @internal the lease whose connection owns the workers now */
  released(l: PoolLease): void {
    if (this.lease === l) this.lease = undefined;
  }

  private emit(e: WorkerEvent): void {
    if (this.lease) this.lease.onEvent(e);
    else if (e.type === 'log') this.opts.log?.(e.message);
  }

  private spawn(index: number): LiveWorker {
    const ctlFd = eventfd();
    const ctlSab = new SharedArrayBuffer(4);
    const events = new MessageChannel();
    const control = new MessageChannel();
    const data: QueueWorkerData = {
      memory: this.opts.memory,
      module: this.opts.module,
      device: this.opts.device,
      options: this.opts.deviceOptions,
      engine: this.opts.engine,
      ctlFd,
      ctlWord: ctlSab,
      events: events.port2,
      control: control.port2,
    };
    const worker = new Worker(builtPath('workers/queue-worker.js'), {
      workerData: data,
      transferList: [events.port2, control.port2],
    });
    this.spawned++;
    events.port1.on('message', (e: WorkerEvent) => this.emit(e));
    events.port1.unref();
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const lw: LiveWorker = {
      index,
      dead: false,
      leaving: false,
      worker,
      api: Comlink.wrap<QueueWorkerApi>(nodeEndpoint(control.port1)),
      ctlFd,
      ctlWord: new Int32Array(ctlSab),
      exited,
      waiting: new Set(),
    };
    void exited.then(() => {
      lw.dead = true;
      for (const fail of lw.waiting) fail(new Error('its queue worker has exited'));
      lw.waiting.clear();
      live.delete(lw);
      try {
        lw.api[Comlink.releaseProxy]();
      } catch {
        // the port is already closed
      }
      closeQuietly(lw.ctlFd);
      if (this.workers[index] === lw) this.workers[index] = undefined;
      if (lw.leaving) return;
      // an unexpected exit: every ring of that worker is broken (the device needs a reset)
      this.opts.queueToWorker.forEach((wi, q) => {
        if (wi === index) this.emit({ type: 'ring-error', queue: q, code: ERR_DEVICE, detail: 0 });
      });
    });
    worker.on('error', (err) => this.emit({ type: 'log', message: `queue worker failed: ${err.stack ?? err}` }));
    live.add(lw);
    return lw;
  }

  private indexOf(queue: number): number {
    const i = this.opts.queueToWorker[queue];
    if (i === undefined) throw new Error(`queue ${queue} has no worker`);
    return i;
  }

  /** The worker that owns `queue`, spawned (or replaced, if it died) when `create`. */
  private workerOf(queue: number, create: boolean): LiveWorker | undefined {
    const i = this.indexOf(queue);
    let w = this.workers[i];
    if ((!w || w.dead) && create) {
      if (this.closed) throw new Error('the worker pool is closed');
      w = this.workers[i] = this.spawn(i);
    }
    return w && !w.dead ? w : undefined;
  }

  /** Run a control call on the worker that owns `queue` (spawning it if there is none yet). */
  call<T>(queue: number, fn: (api: Comlink.Remote<QueueWorkerApi>) => Promise<T>): Promise<T> {
    return this.callWorker(this.workerOf(queue, true)!, fn);
  }

  /** Run a control call on the owner of `queue` if it runs; a queue without a worker has nothing to change. */
  async callIfLive(queue: number, fn: (api: Comlink.Remote<QueueWorkerApi>) => Promise<unknown>): Promise<void> {
    const w = this.workerOf(queue, false);
    if (w) await this.callWorker(w, fn);
  }

  /** Run a control call on every running worker. */
  async callAll(fn: (api: Comlink.Remote<QueueWorkerApi>) => Promise<unknown>): Promise<void> {
    await Promise.all(this.running().map((w) => this.callWorker(w, fn)));
  }

  private running(): LiveWorker[] {
    return this.workers.filter((w): w is LiveWorker => w !== undefined && !w.dead);
  }

  private callWorker<T>(w: LiveWorker, fn: (api: Comlink.Remote<QueueWorkerApi>) => Promise<T>): Promise<T> {
    if (w.dead) return Promise.reject(new Error('its queue worker has exited'));
    const p = fn(w.api); // posts the message first ...
    eventfdSignal(w.ctlFd); // ... then wakes the worker, which yields to its event loop and takes it
    // a worker that died never answers: the call fails instead of hanging the connection. (Not a race with
    // `exited`: every call would leave a reaction on that promise for the worker's whole life.)
    return new Promise<T>((resolve, reject) => {
      w.waiting.add(reject);
      p.then(
        (v) => {
          w.waiting.delete(reject);
          resolve(v);
        },
        (e: unknown) => {
          w.waiting.delete(reject);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  /**
   * Take the workers back from a connection: each forgets every ring (in-flight requests complete first). One
   * that does not answer in time is retired; so is one whose reset failed.
   */
  async resetAll(): Promise<void> {
    const limit = this.opts.timeoutMs ?? 2000;
    await Promise.all(
      this.running().map(async (w) => {
        let ok = false;
        try {
          ok = (await Promise.race([this.callWorker(w, (api) => api.reset()).then(() => 'done' as const), timeout(limit)])) === 'done';
        } catch (e) {
          this.opts.log?.(`queue worker ${w.index}: reset failed: ${(e as Error).message}`);
        }
        if (!ok && !w.dead) {
          this.opts.log?.(`queue worker ${w.index} did not come back from its connection; retiring it`);
          this.retired = true;
          await this.stopWorker(w, limit);
        }
      }),
    );
  }

  private async stopWorker(w: LiveWorker, limit: number): Promise<void> {
    w.leaving = true;
    Atomics.store(w.ctlWord, 0, 1);
    eventfdSignal(w.ctlFd);
    if ((await Promise.race([w.exited.then(() => 'exited' as const), timeout(limit)])) === 'timeout') await w.worker.terminate();
    await w.exited;
  }

  /** Stop every worker and wait for it to exit (terminate() after the timeout). */
  async close(): Promise<void> {
    this.closed = true;
    const limit = this.opts.timeoutMs ?? 2000;
    await Promise.all(this.running().map((w) => this.stopWorker(w, limit)));
    this.workers.length = 0;
  }
}

/** One connection's use of the pool. */
class PoolLease implements RingWorkers {
  private closed = false;

  constructor(
    private readonly pool: QueueWorkerPool,
    readonly onEvent: (e: WorkerEvent) => void,
  ) {}

  private check(): void {
    if (this.closed) throw new Error('the connection has released its workers');
  }

  async start(s: RingStart): Promise<void> {
    this.check();
    await this.pool.call(s.queue, (api) => api.start(s));
  }

  async stop(queue: number): Promise<void> {
    if (!this.closed) await this.pool.callIfLive(queue, (api) => api.stop(queue));
  }

  async setEnabled(queue: number, enabled: boolean): Promise<void> {
    this.check();
    await this.pool.callIfLive(queue, (api) => api.setEnabled(queue, enabled));
  }

  async setFds(queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): Promise<void> {
    this.check();
    await this.pool.callIfLive(queue, (api) => api.setFds(queue, fds));
  }

  /** Quiesce every worker: when this resolves none of them touches guest memory until resume(). */
  async pause(): Promise<void> {
    this.check();
    await this.pool.callAll((api) => api.pause());
  }

  async resume(): Promise<void> {
    this.check();
    await this.pool.callAll((api) => api.resume());
  }

  /** Hand the workers back: when this resolves none of them knows a ring, fd or buffer of this connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.pool.resetAll();
    } finally {
      this.pool.released(this);
    }
  }
}
