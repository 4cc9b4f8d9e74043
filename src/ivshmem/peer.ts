/**
 * A host-side ivshmem peer: connects to an ivshmem server like QEMU's ivshmem-doorbell does, maps the shared
 * memory into a shared WebAssembly.Memory (the project's memory layer: MAP_FIXED inside the Memory, never a hole),
 * rings any peer's vector by writing its eventfd, and waits for its own vectors in a worker thread.
 *
 * Set-up follows QEMU 7.2: version, id, then messages in any order until the shared memory; connect() resolves
 * once the memory is mapped and the burst the server sent at join (existing peers, then our own vectors) is read.
 */
import { Worker } from 'node:worker_threads';
import { GuestMemory, type MappedRegion } from '../memory/guest-memory.js';
import { builtPath } from '../runtime/package-root.js';
import { closeQuietly, eventfd, eventfdSignal, fstat, isEventfd } from '../sys/syscalls.js';
import { connectUnix, UnixConnection } from '../sys/unix-socket.js';
import {
  bytesUntilMessageEnd,
  ClientProtocolState,
  decodeMessage,
  IVSHMEM_MAX_VECTORS,
  IVSHMEM_MESSAGE_BYTES,
  IvshmemProtocolError,
} from './protocol.js';
import type { VectorWorkerData, VectorWorkerEvent } from './vector-worker-protocol.js';

export type PeerEvent =
  | { type: 'peer-joined'; peer: number }
  | { type: 'peer-vector'; peer: number; vector: number }
  | { type: 'peer-left'; peer: number }
  /** one of our own vectors was rung (count: eventfd counter, rings coalesce) */
  | { type: 'interrupt'; vector: number; count: number }
  /** the server closed the connection or broke the protocol: existing peers stay reachable, no news any more */
  | { type: 'server-gone'; reason: string }
  | { type: 'warning'; message: string };

export interface IvshmemPeerOptions {
  socketPath: string;
  /** most vectors accepted per peer (QEMU: the device's `vectors`); extra fds are closed. Default 64 */
  maxVectors?: number;
  /** give up on the set-up after this long (default 10 s) */
  timeoutMs?: number;
  /** wait for own vectors in a worker (default true) */
  waitForInterrupts?: boolean;
}

const exitHooks = new Set<() => void>();
let exitHookInstalled = false;
function onProcessExit(f: () => void): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // a worker blocked in poll() would hold the process at exit: wake them
    process.on('exit', () => exitHooks.forEach((h) => h()));
  }
  exitHooks.add(f);
  return () => exitHooks.delete(f);
}

export class IvshmemPeer {
  readonly socketPath: string;
  private readonly conn: UnixConnection;
  private readonly state: ClientProtocolState;
  private readonly rx = Buffer.allocUnsafeSlow(IVSHMEM_MESSAGE_BYTES);
  private rxHave = 0;
  private rxFd: number | undefined;
  /** peer id -> eventfd per vector (own id: our vectors) */
  private readonly peerVectors = new Map<number, number[]>();
  private gm: GuestMemory | undefined;
  private region: MappedRegion | undefined;
  private worker: Worker | undefined;
  private workerStopFd = -1;
  private removeExitHook: (() => void) | undefined;
  private readonly listeners = new Set<(e: PeerEvent) => void>();
  private serverGone = false;
  private closed = false;

  private constructor(opts: IvshmemPeerOptions, fd: number) {
    this.socketPath = opts.socketPath;
    this.conn = new UnixConnection(fd);
    const max = opts.maxVectors ?? IVSHMEM_MAX_VECTORS;
    if (!Number.isInteger(max) || max < 1 || max > IVSHMEM_MAX_VECTORS) throw new RangeError(`maxVectors must be 1..${IVSHMEM_MAX_VECTORS}`);
    this.state = new ClientProtocolState(max, closeQuietly);
  }

  /** Connect, read the set-up, map the memory, start the vector worker. */
  static async connect(opts: IvshmemPeerOptions): Promise<IvshmemPeer> {
    const peer = new IvshmemPeer(opts, connectUnix(opts.socketPath));
    try {
      await peer.setup(opts.timeoutMs ?? 10_000);
      if (opts.waitForInterrupts ?? true) await peer.startWorker();
      return peer;
    } catch (e) {
      await peer.close();
      throw e;
    }
  }

  /** Our id (what others ring us by, and what a guest reads in IVPosition). */
  get id(): number {
    return this.state.id;
  }

  /** The shared WebAssembly.Memory the shared memory is mapped into. */
  get memory(): WebAssembly.Memory {
    return this.mapped().gm.memory;
  }

  /** Where the shared memory starts inside `memory` (a wasm address), and its size. */
  get shmOffset(): number {
    return this.mapped().region.wasmAddr;
  }

  get shmSize(): number {
    return Number(this.mapped().region.size);
  }

  /** The shared memory as bytes (a fresh view: valid until the Memory grows). */
  bytes(): Uint8Array {
    const { gm, region } = this.mapped();
    return new Uint8Array(gm.memory.buffer, region.wasmAddr, Number(region.size));
  }

  /** Peers we can ring, with how many vectors each (own id excluded). */
  peers(): Map<number, number> {
    const m = new Map<number, number>();
    for (const [id, fds] of this.peerVectors) if (id !== this.id) m.set(id, fds.length);
    return m;
  }

  /** Our own vectors (how many the server gave us). */
  get vectorCount(): number {
    return this.peerVectors.get(this.id)?.length ?? 0;
  }

  on(listener: (e: PeerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Raise `vector` on `peer` (our own id rings ourselves). */
  ring(peer: number, vector: number): void {
    const fds = this.peerVectors.get(peer);
    if (!fds) throw new RangeError(`no peer ${peer} (known: ${[...this.peerVectors.keys()].join(', ') || 'none'})`);
    const fd = fds[vector];
    if (fd === undefined) throw new RangeError(`peer ${peer} has vectors 0..${fds.length - 1}, not ${vector}`);
    eventfdSignal(fd);
  }

  /** Wait for the next event matching `pred` (e.g. an interrupt on a vector); rejects after `timeoutMs`. */
  waitFor<T extends PeerEvent>(pred: (e: PeerEvent) => e is T, timeoutMs: number): Promise<T>;
  waitFor(pred: (e: PeerEvent) => boolean, timeoutMs: number): Promise<PeerEvent>;
  waitFor(pred: (e: PeerEvent) => boolean, timeoutMs: number): Promise<PeerEvent> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        off();
        reject(new Error(`ivshmem peer ${this.id}: no matching event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on((e) => {
        if (!pred(e)) return;
        clearTimeout(t);
        off();
        resolve(e);
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.conn.close();
    if (this.worker) {
      const w = this.worker;
      this.worker = undefined;
      const exited = new Promise<void>((r) => w.once('exit', () => r()));
      eventfdSignal(this.workerStopFd);
      await exited;
    }
    this.removeExitHook?.();
    closeQuietly(this.workerStopFd);
    for (const fds of this.peerVectors.values()) fds.forEach(closeQuietly);
    this.peerVectors.clear();
    this.gm?.release();
  }

  private mapped(): { gm: GuestMemory; region: MappedRegion } {
    if (!this.gm || !this.region) throw new Error('ivshmem peer: no shared memory mapped');
    return { gm: this.gm, region: this.region };
  }

  private emit(e: PeerEvent): void {
    for (const l of [...this.listeners]) l(e);
  }

  /** Read what the socket has; returns the messages' effects through handle(). false at EOF. */
  private pump(): boolean {
    for (;;) {
      const r = this.conn.recv(this.rx, this.rxHave, bytesUntilMessageEnd(this.rxHave));
      for (const fd of r.fds) {
        // one fd per message, with its first byte; anything else is the server's mistake
        if (this.rxFd === undefined && this.rxHave === 0) this.rxFd = fd;
        else closeQuietly(fd);
      }
      if (r.bytes === 0) return false;
      if (r.bytes < 0) return true;
      this.rxHave += r.bytes;
      if (this.rxHave < IVSHMEM_MESSAGE_BYTES) continue;
      const msg = { value: decodeMessage(this.rx), fd: this.rxFd };
      this.rxHave = 0;
      this.rxFd = undefined;
      this.handle(msg);
    }
  }

  private handle(msg: { value: bigint; fd: number | undefined }): void {
    const e = this.state.accept(msg);
    if (!e) return;
    switch (e.kind) {
      case 'id':
        return;
      case 'too-many-vectors':
        return this.emit({ type: 'warning', message: `Too many eventfd received for peer ${e.peer}; closed the extra one` });
      case 'shm':
        return this.map(e.fd);
      case 'vector': {
        // anything but an eventfd would be written to by ring() or spin the worker's poll()
        if (!isEventfd(e.fd)) {
          closeQuietly(e.fd);
          return this.emit({ type: 'warning', message: `the server sent peer ${e.peer}'s vector ${e.vector} as something other than an eventfd; ignored it` });
        }
        let fds = this.peerVectors.get(e.peer);
        if (!fds) this.peerVectors.set(e.peer, (fds = []));
        fds.push(e.fd);
        if (e.peer === this.state.id) return;
        if (e.vector === 0) this.emit({ type: 'peer-joined', peer: e.peer });
        return this.emit({ type: 'peer-vector', peer: e.peer, vector: e.vector });
      }
      case 'peer-left': {
        this.peerVectors.get(e.peer)?.forEach(closeQuietly);
        this.peerVectors.delete(e.peer);
        return this.emit({ type: 'peer-left', peer: e.peer });
      }
    }
  }

  private map(fd: number): void {
    const size = fstat(fd).size;
    if (size <= 0n) {
      closeQuietly(fd);
      throw new IvshmemProtocolError('the shared memory the server sent is empty');
    }
    this.gm = new GuestMemory();
    this.region = this.gm.add({ gpa: 0n, size, uaddr: 0n, mmapOffset: 0n }, fd);
  }

  private setup(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => finish(new Error(`ivshmem server at ${this.socketPath} did not complete the set-up within ${timeoutMs} ms`)), timeoutMs);
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const step = (): void => {
        let open: boolean;
        try {
          open = this.pump();
        } catch (e) {
          if (!done) return finish(e as Error);
          return this.lostServer((e as Error).message);
        }
        if (!open) {
          if (!done) return finish(new Error(`ivshmem server at ${this.socketPath} closed the connection during set-up`));
          return this.lostServer('the server closed the connection');
        }
        // the server sends the whole join burst at once, ending with our own vectors
        if (!done && this.gm && this.vectorCount > 0) finish();
      };
      this.conn.watch(step);
      step();
    });
  }

  private lostServer(reason: string): void {
    if (this.serverGone) return;
    this.serverGone = true;
    this.conn.unwatch();
    this.emit({ type: 'server-gone', reason });
  }

  private async startWorker(): Promise<void> {
    const own = this.peerVectors.get(this.id) ?? [];
    this.workerStopFd = eventfd();
    const data: VectorWorkerData = { vectors: own.map((fd, v) => [v, fd]), stopFd: this.workerStopFd };
    const w = new Worker(builtPath('workers/ivshmem-vector-worker.js'), { workerData: data });
    this.worker = w;
    const stopFd = this.workerStopFd;
    this.removeExitHook = onProcessExit(() => eventfdSignal(stopFd));
    await new Promise<void>((resolve, reject) => {
      w.on('message', (m: VectorWorkerEvent) => {
        if (m.ready) resolve();
        else if (m.error) this.emit({ type: 'warning', message: m.error });
        else if (m.vector !== undefined && m.count !== undefined) this.emit({ type: 'interrupt', vector: m.vector, count: m.count });
      });
      w.once('error', reject);
      w.once('exit', () => reject(new Error('ivshmem vector worker exited during start')));
    });
    w.unref();
  }
}
