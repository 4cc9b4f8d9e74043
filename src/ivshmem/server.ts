/**
 * An ivshmem server, message for message what QEMU's contrib/ivshmem-server (7.2) sends, for ivshmem-doorbell
 * devices and host-side peers. Per connecting peer: a new id (the lowest free one at or after a rolling 16-bit
 * counter), N eventfds, then
 *   to it:            version, its id, (-1, shm fd)
 *   to every other:   (its id, eventfd v) for v in 0..N-1
 *   to it:            (other id, other's eventfd v) for every other peer in join order, then (its id, its eventfd v)
 * and when it goes (EOF or any byte from it, as the reference does): (its id, no fd) to every remaining peer.
 *
 * Unlike the reference, a peer that stops reading never blocks the server: what does not fit in its socket is
 * queued (the fds dup'ed, so a peer leaving meanwhile cannot turn them into someone else's) and sent as the
 * socket drains; a peer whose backlog grows past a bound, or whose socket fails, is dropped like one that left.
 */
import fs from 'node:fs';
import { nodePoll, type PollHandle } from '../sys/libc.js';
import { Errno, SysError } from '../sys/errors.js';
import { closeQuietly, dup, eventfd } from '../sys/syscalls.js';
import { connectUnix, UnixConnection, UnixListener } from '../sys/unix-socket.js';
import {
  encodeMessage,
  formatSize,
  isPowerOfTwo,
  IVSHMEM_MAX_PEER_ID,
  IVSHMEM_MAX_VECTORS,
  IVSHMEM_PROTOCOL_VERSION,
  IVSHMEM_SHM_MESSAGE,
} from './protocol.js';
import { openSharedMemory, type ShmBacking, type SharedMemoryFile } from './shared-memory.js';

export const IVSHMEM_MIN_SIZE = 4096n;
export const IVSHMEM_MAX_SIZE = 1n << 40n;
/**
 * Messages (most with a dup'ed fd) a peer may owe before it is considered gone: room for a new peer's whole join
 * burst (every other peer's vectors) twice over, and at least a hundred joins of 64 vectors, so only a peer that
 * really stopped reading gets there.
 */
const backlogLimit = (peers: number, vectors: number): number => Math.max(8192, 2 * (peers + 2) * vectors + 64);

export interface IvshmemServerOptions {
  socketPath: string;
  backing: ShmBacking;
  /** bytes; a power of two (QEMU asserts on anything else) */
  size: bigint;
  /** vectors per peer, 1..64 */
  vectors: number;
  /** verbose log lines (the reference's -v) */
  log?: (line: string) => void;
}

export class IvshmemConfigError extends Error {
  override name = 'IvshmemConfigError';
}

/** The checks the CLI runs before starting anything: each failure says what to use instead. */
export function validateServerOptions(o: Pick<IvshmemServerOptions, 'size' | 'vectors'>): void {
  if (!Number.isInteger(o.vectors) || o.vectors < 1 || o.vectors > IVSHMEM_MAX_VECTORS)
    throw new IvshmemConfigError(`the number of vectors must be 1..${IVSHMEM_MAX_VECTORS}, got ${o.vectors}`);
  if (!isPowerOfTwo(o.size)) {
    let up = 1n;
    while (up < o.size) up <<= 1n;
    throw new IvshmemConfigError(
      `shared memory size ${o.size} bytes is not a power of two: QEMU's ivshmem-doorbell refuses it (its BAR must be ` +
        `a power of two); use ${formatSize(up)}${up / 2n >= IVSHMEM_MIN_SIZE ? ` or ${formatSize(up / 2n)}` : ''}`,
    );
  }
  if (o.size < IVSHMEM_MIN_SIZE || o.size > IVSHMEM_MAX_SIZE)
    throw new IvshmemConfigError(`shared memory size must be ${formatSize(IVSHMEM_MIN_SIZE)}..${formatSize(IVSHMEM_MAX_SIZE)}, got ${o.size} bytes`);
}

/** A socket file someone still listens on is another server's: never take it over (a stale one is replaced). */
function refuseLiveSocket(path: string): void {
  try {
    if (!fs.lstatSync(path).isSocket()) return;
  } catch {
    return;
  }
  let fd = -1;
  try {
    fd = connectUnix(path);
  } catch {
    return;
  }
  closeQuietly(fd);
  throw new Error(`another server is listening on ${path}`);
}

interface Outgoing {
  msg: Buffer;
  /** a dup the queue owns, closed once sent */
  fd: number | undefined;
}

interface Peer {
  id: number;
  conn: UnixConnection;
  /** eventfd per vector: "ring this peer on vector v" for the others, "you are rung on v" for itself */
  vectors: number[];
  poll: PollHandle | undefined;
  backlog: Outgoing[];
  gone: boolean;
}

export interface PeerInfo {
  id: number;
  vectorFds: readonly number[];
  socketFd: number;
}

export class IvshmemServer {
  readonly opts: IvshmemServerOptions;
  private shmFile: SharedMemoryFile | undefined;
  private listener: UnixListener | undefined;
  /** insertion order = join order, which is the order the reference announces existing peers in */
  private readonly peers = new Map<number, Peer>();
  private curId = 0;
  private closed = false;
  /** peers found broken while sending, and why; removed once the current join or leave is fully sent */
  private readonly broken = new Map<Peer, string>();

  constructor(opts: IvshmemServerOptions) {
    validateServerOptions(opts);
    this.opts = opts;
  }

  get shm(): SharedMemoryFile {
    if (!this.shmFile) throw new Error('ivshmem server not started');
    return this.shmFile;
  }

  /** Open the shared memory, then listen (the socket appearing means "ready"). */
  start(): this {
    refuseLiveSocket(this.opts.socketPath);
    this.shmFile = openSharedMemory(this.opts.backing, this.opts.size);
    try {
      this.listener = UnixListener.listen(this.opts.socketPath, 10);
    } catch (e) {
      this.shmFile.release();
      this.shmFile = undefined;
      throw e;
    }
    this.log(`shared memory ${this.shmFile.where}, ${this.shmFile.size} bytes; ${this.opts.vectors} vector(s) per peer; listening on ${this.opts.socketPath}`);
    this.listener.start((fd) => this.onConnect(fd));
    return this;
  }

  /** Peers in join order. */
  peerList(): PeerInfo[] {
    return [...this.peers.values()].map((p) => ({ id: p.id, vectorFds: p.vectors, socketFd: p.conn.fd }));
  }

  /** Stop: every peer is let go (the remaining ones told, as the reference does), then socket and shm. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener?.close();
    for (const p of [...this.peers.values()]) this.removePeer(p);
    this.shmFile?.release();
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private allocateId(): number | undefined {
    for (let i = 0; i < IVSHMEM_MAX_PEER_ID; i++) {
      if (!this.peers.has(this.curId)) {
        const id = this.curId;
        this.curId = (this.curId + 1) & IVSHMEM_MAX_PEER_ID;
        return id;
      }
      this.curId = (this.curId + 1) & IVSHMEM_MAX_PEER_ID;
    }
    return undefined;
  }

  private onConnect(fd: number): void {
    const conn = new UnixConnection(fd);
    if (this.closed) return conn.close();
    const id = this.allocateId();
    if (id === undefined) {
      this.log('cannot allocate a new peer id (65535 peers connected); closing the connection');
      return conn.close();
    }
    const vectors: number[] = [];
    try {
      for (let v = 0; v < this.opts.vectors; v++) vectors.push(eventfd());
    } catch (e) {
      this.log(`cannot create eventfds for a new peer: ${(e as Error).message}`);
      vectors.forEach(closeQuietly);
      return conn.close();
    }
    const peer: Peer = { id, conn, vectors, poll: undefined, backlog: [], gone: false };
    // the initial info first: a peer that cannot take even that was never announced to anybody
    this.send(peer, IVSHMEM_PROTOCOL_VERSION, undefined);
    this.send(peer, BigInt(id), undefined);
    this.send(peer, IVSHMEM_SHM_MESSAGE, this.shm.fd);
    const why = this.broken.get(peer);
    if (why !== undefined) {
      this.broken.delete(peer);
      this.log(`cannot send the initial info to new peer ${id} (${why}); dropped it`);
      this.release(peer);
      return;
    }
    for (const other of this.peers.values()) for (const vfd of vectors) this.send(other, BigInt(id), vfd);
    for (const other of this.peers.values()) for (const vfd of other.vectors) this.send(peer, BigInt(other.id), vfd);
    for (const vfd of vectors) this.send(peer, BigInt(id), vfd);
    this.peers.set(id, peer);
    this.watch(peer);
    this.log(`new peer id = ${id}`);
    this.dropBroken();
  }

  /** Anything from a peer (data or EOF) means it is gone, as in the reference. */
  private watch(peer: Peer): void {
    const writable = peer.backlog.length > 0;
    // koffi calls back with (status, events), whatever its typings say
    const cb = ((status: number, ev: { readable: boolean; writable: boolean; disconnect: boolean } | undefined): void => {
      if (peer.gone) return;
      if (status < 0 || !ev || ev.readable || ev.disconnect) {
        this.log(`peer ${peer.id} left`);
        this.removePeer(peer);
        return;
      }
      if (ev.writable) this.flush(peer);
    }) as never;
    if (peer.poll) peer.poll.start({ readable: true, writable }, cb);
    else peer.poll = nodePoll(peer.conn.fd, { readable: true, writable }, cb);
  }

  private removePeer(peer: Peer): void {
    if (peer.gone) return;
    this.peers.delete(peer.id);
    this.release(peer);
    this.log(`free peer ${peer.id}`);
    for (const other of this.peers.values()) this.send(other, BigInt(peer.id), undefined);
    this.dropBroken();
  }

  private release(peer: Peer): void {
    peer.gone = true;
    peer.poll?.close();
    peer.poll = undefined;
    for (const o of peer.backlog) closeQuietly(o.fd);
    peer.backlog = [];
    peer.conn.close();
    peer.vectors.forEach(closeQuietly);
  }

  private dropBroken(): void {
    for (const [p, why] of this.broken) {
      this.broken.delete(p);
      if (!p.gone && this.peers.get(p.id) === p) {
        this.log(`peer ${p.id}: ${why}; dropped it`);
        this.removePeer(p);
      }
    }
  }

  /** One message to one peer: now if its socket takes it, else queued behind what it already owes. */
  private send(peer: Peer, value: bigint, fd: number | undefined): void {
    if (peer.gone || this.broken.has(peer)) return;
    const msg = encodeMessage(value);
    if (peer.backlog.length === 0) {
      const r = this.trySend(peer, msg, fd);
      if (r === 'sent') return;
      if (r !== 'full') return void this.broken.set(peer, r);
    }
    const limit = backlogLimit(this.peers.size, this.opts.vectors);
    if (peer.backlog.length >= limit) return void this.broken.set(peer, `not reading (${limit} messages queued)`);
    let owned: number | undefined;
    try {
      owned = fd === undefined ? undefined : dup(fd);
    } catch (e) {
      return void this.broken.set(peer, (e as Error).message);
    }
    peer.backlog.push({ msg, fd: owned });
    if (peer.backlog.length === 1 && peer.poll) this.watch(peer);
  }

  /** 'sent', 'full' (try again when writable), or why it failed */
  private trySend(peer: Peer, msg: Buffer, fd: number | undefined): string {
    try {
      peer.conn.send(msg, fd === undefined ? [] : [fd], 0);
      return 'sent';
    } catch (e) {
      if (e instanceof SysError && e.errno === Errno.EAGAIN) return 'full';
      return (e as Error).message;
    }
  }

  private flush(peer: Peer): void {
    while (peer.backlog.length > 0) {
      const o = peer.backlog[0]!;
      const r = this.trySend(peer, o.msg, o.fd);
      if (r === 'full') return;
      peer.backlog.shift();
      closeQuietly(o.fd);
      if (r !== 'sent') {
        this.log(`peer ${peer.id}: ${r}; dropped it`);
        this.removePeer(peer);
        return;
      }
    }
    this.watch(peer);
  }
}
