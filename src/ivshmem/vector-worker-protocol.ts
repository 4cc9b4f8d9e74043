/** Messages between an ivshmem peer (main thread) and its vector worker (workers/ivshmem-vector-worker.ts). */

export interface VectorWorkerData {
  /** [vector, eventfd] pairs to wait on */
  vectors: [number, number][];
  /** written by the main thread to stop the worker */
  stopFd: number;
}

/** worker -> main */
export interface VectorWorkerEvent {
  ready?: boolean;
  stopped?: boolean;
  vector?: number;
  /** eventfd counter read: doorbells coalesce, so one event may stand for several rings */
  count?: number;
  error?: string;
}
