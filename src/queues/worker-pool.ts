/**
 * The main thread's side of the queue workers of one connection: spawns them on the connection's Memory,
 * routes control calls to the worker that owns a queue (waking it through its control eventfd first), and
 * makes sure no worker blocked in poll() can hold the process at exit.
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
  dead: boolean;
  worker: Worker;
  api: Comlink.Remote<QueueWorkerApi>;
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

export type WorkerPoolOptions = RingWorkersContext;

/** Default mapping: one worker per queue, or `perWorker` consecutive queues per worker. */
export function queueMapping(queues: number, perWorker = 1): number[] {
  return Array.from({ length: queues }, (_, q) => Math.floor(q / Math.max(1, perWorker)));
}

export class QueueWorkerPool implements RingWorkers {
  private readonly workers: LiveWorker[] = [];

  constructor(private readonly opts: WorkerPoolOptions) {
    installExitHook();
    const count = Math.max(0, ...opts.queueToWorker) + 1;
    for (let i = 0; i < count; i++) this.workers.push(this.spawn());
  }

  private spawn(): LiveWorker {
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
    events.port1.on('message', (e: WorkerEvent) => this.opts.onEvent(e));
    events.port1.unref();
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const index = this.workers.length;
    void exited.then(() => {
      lw.dead = true;
      if (this.closing) return;
      // an unexpected exit: every ring of that worker is broken (the device needs a reset)
      this.opts.queueToWorker.forEach((wi, q) => {
        if (wi === index) this.opts.onEvent({ type: 'ring-error', queue: q, code: ERR_DEVICE, detail: 0 });
      });
    });
    worker.on('error', (err) => this.opts.onEvent({ type: 'log', message: `queue worker failed: ${err.stack ?? err}` }));
    const lw: LiveWorker = {
      dead: false,
      worker,
      api: Comlink.wrap<QueueWorkerApi>(nodeEndpoint(control.port1)),
      ctlFd,
      ctlWord: new Int32Array(ctlSab),
      exited,
    };
    live.add(lw);
    return lw;
  }

  private workerOf(queue: number): LiveWorker {
    const w = this.workers[this.opts.queueToWorker[queue] ?? -1];
    if (!w) throw new Error(`queue ${queue} has no worker`);
    return w;
  }

  /** Run a control call on the worker that owns `queue`. */
  call<T>(queue: number, fn: (api: Comlink.Remote<QueueWorkerApi>) => Promise<T>): Promise<T> {
    return this.callWorker(this.workerOf(queue), fn);
  }

  private callWorker<T>(w: LiveWorker, fn: (api: Comlink.Remote<QueueWorkerApi>) => Promise<T>): Promise<T> {
    if (w.dead) return Promise.reject(new Error('its queue worker has exited'));
    const p = fn(w.api); // posts the message first ...
    eventfdSignal(w.ctlFd); // ... then wakes the worker, which yields to its event loop and takes it
    // a worker that died never answers: the call fails instead of hanging the connection
    return Promise.race([p, w.exited.then(() => Promise.reject(new Error('its queue worker has exited')))]);
  }

  async start(s: RingStart): Promise<void> {
    await this.call(s.queue, (api) => api.start(s));
  }

  async stop(queue: number): Promise<void> {
    await this.call(queue, (api) => api.stop(queue));
  }

  async setEnabled(queue: number, enabled: boolean): Promise<void> {
    await this.call(queue, (api) => api.setEnabled(queue, enabled));
  }

  async setFds(queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): Promise<void> {
    await this.call(queue, (api) => api.setFds(queue, fds));
  }

  /** Quiesce every worker: when this resolves none of them touches guest memory until resume(). */
  async pause(): Promise<void> {
    await Promise.all(this.workers.map((w) => this.callWorker(w, (api) => api.pause())));
  }

  async resume(): Promise<void> {
    await Promise.all(this.workers.map((w) => this.callWorker(w, (api) => api.resume())));
  }

  private closing = false;

  /** Stop every worker and wait for it to exit (terminate() after `timeoutMs`). */
  async close(timeoutMs = 2000): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.workers.map(async (w) => {
        Atomics.store(w.ctlWord, 0, 1);
        eventfdSignal(w.ctlFd);
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
        if ((await Promise.race([w.exited.then(() => 'exited' as const), timer])) === 'timeout') await w.worker.terminate();
        try {
          w.api[Comlink.releaseProxy]();
        } catch {
          // the port is already closed
        }
        live.delete(w);
        closeQuietly(w.ctlFd);
      }),
    );
    this.workers.length = 0;
  }
}
