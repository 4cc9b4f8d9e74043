/**
 * The ivshmem server -> client wire protocol (QEMU contrib/ivshmem-server, ivshmem-doorbell in QEMU 7.2): every
 * message is one little-endian int64, optionally with one fd (SCM_RIGHTS). The client never sends anything.
 *
 *   0                    protocol version (no fd)
 *   own id               the client's id (no fd)
 *   -1 + fd              the shared memory
 *   peer id + eventfd    one per vector, in vector order: "ring peer on vector v" (own id: "I am rung on v")
 *   peer id, no fd       that peer left
 *
 * This module holds the encoding and the rules a client (QEMU) applies to what it receives; the server and the
 * host-side peer share them.
 */

export const IVSHMEM_PROTOCOL_VERSION = 0n;
/** the value of the shared-memory message */
export const IVSHMEM_SHM_MESSAGE = -1n;
/** peer ids are 16 bits (the doorbell register's upper half) */
export const IVSHMEM_MAX_PEER_ID = 65535;
/** the reference server's and client's limit on vectors per peer */
export const IVSHMEM_MAX_VECTORS = 64;
export const IVSHMEM_MESSAGE_BYTES = 8;

/** One message as it travels: 8 bytes, little-endian int64. */
export function encodeMessage(value: bigint): Buffer {
  const b = Buffer.allocUnsafeSlow(IVSHMEM_MESSAGE_BYTES);
  b.writeBigInt64LE(value, 0);
  return b;
}

export function decodeMessage(bytes: Uint8Array): bigint {
  return Buffer.from(bytes.buffer, bytes.byteOffset, IVSHMEM_MESSAGE_BYTES).readBigInt64LE(0);
}

/** A received message with the fd that came with it (undefined: none). */
export interface IvshmemMessage {
  value: bigint;
  fd: number | undefined;
}

/** What a server message means to the client that receives it, once its set-up (version, id) is done. */
export type IvshmemEvent =
  | { kind: 'shm'; fd: number }
  | { kind: 'vector'; peer: number; vector: number; fd: number }
  | { kind: 'peer-left'; peer: number };

export class IvshmemProtocolError extends Error {
  override name = 'IvshmemProtocolError';
}

/**
 * The client's view of the protocol, with QEMU 7.2's checks: version 0 without fd, then an id in 0..65535
 * without fd, then any order of shm / vector / leave messages; one shm only; a leave for itself or for an
 * unknown peer is an error; vectors beyond `maxVectors` are refused (QEMU: "Too many eventfd received").
 *
 * `accept` owns the message's fd: it returns it inside the event, or closes it through `closeFd` when the
 * message is refused, and throws IvshmemProtocolError for what QEMU treats as fatal.
 */
export class ClientProtocolState {
  phase: 'version' | 'id' | 'running' = 'version';
  id = -1;
  hasShm = false;
  /** vectors known per peer (own id included) */
  readonly vectors = new Map<number, number>();

  constructor(
    private readonly maxVectors: number,
    private readonly closeFd: (fd: number) => void,
  ) {}

  /** Returns the event, or undefined for a message that needs nothing more (version, id, refused extra fd). */
  accept(msg: IvshmemMessage): IvshmemEvent | { kind: 'id'; id: number } | { kind: 'too-many-vectors'; peer: number } | undefined {
    const { value, fd } = msg;
    const fail = (why: string): never => {
      if (fd !== undefined) this.closeFd(fd);
      throw new IvshmemProtocolError(why);
    };
    if (this.phase === 'version') {
      if (fd !== undefined || value !== IVSHMEM_PROTOCOL_VERSION)
        fail(`server sent version ${value}${fd !== undefined ? ' with an fd' : ''}, expecting ${IVSHMEM_PROTOCOL_VERSION} without fd`);
      this.phase = 'id';
      return undefined;
    }
    if (this.phase === 'id') {
      if (fd !== undefined || value < 0n || value > BigInt(IVSHMEM_MAX_PEER_ID)) fail(`server sent invalid ID message ${value}${fd !== undefined ? ' with an fd' : ''}`);
      this.id = Number(value);
      this.phase = 'running';
      return { kind: 'id', id: this.id };
    }
    if (value < -1n || value > BigInt(IVSHMEM_MAX_PEER_ID)) fail(`server sent invalid message ${value}`);
    if (value === IVSHMEM_SHM_MESSAGE) {
      if (fd === undefined) fail('server sent the shared-memory message without a file descriptor');
      if (this.hasShm) fail('server sent a second shared-memory message');
      this.hasShm = true;
      return { kind: 'shm', fd: fd! };
    }
    const peer = Number(value);
    if (fd === undefined) {
      if (peer === this.id) fail(`server sent a disconnect for our own ID ${peer}`);
      if (!this.vectors.has(peer)) fail(`server sent a disconnect for unknown peer ID ${peer}`);
      this.vectors.delete(peer);
      return { kind: 'peer-left', peer };
    }
    const vector = this.vectors.get(peer) ?? 0;
    if (vector >= this.maxVectors) {
      this.closeFd(fd);
      return { kind: 'too-many-vectors', peer };
    }
    this.vectors.set(peer, vector + 1);
    return { kind: 'vector', peer, vector, fd };
  }
}

/** Bytes to read next so that every recvmsg stays within one message (fds then belong to that message). */
export function bytesUntilMessageEnd(have: number): number {
  return IVSHMEM_MESSAGE_BYTES - (have % IVSHMEM_MESSAGE_BYTES);
}

// ---- sizes ----

const SIZE_SUFFIX: Record<string, number> = { '': 0, B: 0, K: 10, M: 20, G: 30, T: 40, P: 50, E: 60 };

/**
 * A size as the reference server's `-l` takes it (QEMU's size parser): a number, optionally with a fraction,
 * and a K/M/G/T/P/E suffix (powers of 1024, either case), or a 0x hex number of bytes. Returns bytes, or throws.
 */
export function parseSize(text: string): bigint {
  const t = text.trim();
  const hex = /^0x([0-9a-f]+)$/i.exec(t);
  if (hex) return BigInt(`0x${hex[1]}`);
  const m = /^(\d+)(?:\.(\d+))?\s*([bkmgtpe]?)$/i.exec(t);
  if (!m) throw new RangeError(`invalid size '${text}' (expected e.g. 4096, 4K, 4M, 1G)`);
  const shift = BigInt(SIZE_SUFFIX[m[3]!.toUpperCase()]!);
  const frac = m[2] ?? '';
  if (frac && shift === 0n) throw new RangeError(`invalid size '${text}': a fraction needs a K/M/G/... suffix`);
  const scale = 10n ** BigInt(frac.length);
  const num = BigInt(m[1]!) * scale + (frac ? BigInt(frac) : 0n);
  const bytes = (num << shift) / scale;
  if ((num << shift) % scale !== 0n) throw new RangeError(`invalid size '${text}': not a whole number of bytes`);
  return bytes;
}

export function isPowerOfTwo(n: bigint): boolean {
  return n > 0n && (n & (n - 1n)) === 0n;
}

/** Human form of a byte count, e.g. 4194304 -> "4M". */
export function formatSize(n: bigint): string {
  for (const [s, sh] of [['G', 30n], ['M', 20n], ['K', 10n]] as const) if (n >= 1n << sh && n % (1n << sh) === 0n) return `${n >> sh}${s}`;
  return `${n}`;
}
