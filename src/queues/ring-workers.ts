/**
 * How the back-end state drives the threads that run its rings. The default is one QueueWorkerPool per
 * connection (worker-pool.ts); a device whose queues must meet queues of other connections (a switch joining
 * net ports) brings its own.
 */
import type { RingStart, WorkerEvent } from './worker-protocol.js';

export interface RingWorkers {
  start(s: RingStart): Promise<void>;
  /** stop the ring; resolves once none of its requests is in flight */
  stop(queue: number): Promise<void>;
  setEnabled(queue: number, enabled: boolean): Promise<void>;
  setFds(queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): Promise<void>;
  /** resolves when no ring of this connection touches guest memory until resume() */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** stop everything of this connection */
  close(): Promise<void>;
}

export interface RingWorkersContext {
  /** queue handler key (the device name) */
  device: string;
  deviceOptions: Record<string, string | number | boolean>;
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  /** ring engine for the workers (engines.ts) */
  engine?: string;
  queueToWorker: readonly number[];
  onEvent: (e: WorkerEvent) => void;
}

export type RingWorkersFactory = (ctx: RingWorkersContext) => RingWorkers;
