/**
 * A bare ivshmem client for the server tests: reads the server's messages exactly as they come off the socket
 * (8 raw bytes and the fds that came with them), with its own decoding, so the server is checked against the
 * wire format rather than against the library's own encoder.
 */
import { closeQuietly, eventfdDrain, eventfdSignal } from '../../src/sys/syscalls.js';
import { connectUnix, UnixConnection } from '../../src/sys/unix-socket.js';

export interface WireMessage {
  bytes: Buffer;
  value: bigint;
  fds: number[];
}

/** The 8 bytes a message with `value` must be on the wire: little-endian two's complement int64. */
export function wire(value: number): Buffer {
  const b = Buffer.alloc(8);
  let v = BigInt.asUintN(64, BigInt(value));
  for (let i = 0; i < 8; i++, v >>= 8n) b[i] = Number(v & 0xffn);
  return b;
}

export class RawClient {
  readonly conn: UnixConnection;
  /** what the messages told: own id, shm fd, peer -> vector fds */
  id = -1;
  shmFd = -1;
  readonly peers = new Map<number, number[]>();
  readonly log: WireMessage[] = [];

  constructor(path: string) {
    this.conn = new UnixConnection(connectUnix(path));
  }

  /** Next message; fails after `timeoutMs`. Reads exactly 8 bytes so fds stay with their message. */
  async next(timeoutMs = 15_000): Promise<WireMessage> {
    const buf = Buffer.allocUnsafeSlow(8);
    const fds: number[] = [];
    let got = 0;
    const deadline = Date.now() + timeoutMs;
    while (got < 8) {
      const r = this.conn.recv(buf, got, 8 - got);
      fds.push(...r.fds);
      if (r.bytes === 0) throw new Error(`EOF after ${got} bytes`);
      if (r.bytes < 0) {
        if (Date.now() > deadline) throw new Error(`no message within ${timeoutMs} ms (have ${got} bytes)`);
        await new Promise((res) => setTimeout(res, 1));
        continue;
      }
      got += r.bytes;
    }
    let value = 0n;
    for (let i = 7; i >= 0; i--) value = (value << 8n) | BigInt(buf[i]!);
    const m = { bytes: buf, value: BigInt.asIntN(64, value), fds };
    this.log.push(m);
    return m;
  }

  /** True when nothing is waiting on the socket right now. */
  idle(): boolean {
    const r = this.conn.recv(Buffer.allocUnsafeSlow(1), 0, 1);
    if (r.bytes > 0) throw new Error('unexpected data pending');
    return r.bytes < 0;
  }

  /** Apply a message to this client's view of the peers (after the set-up). */
  apply(m: WireMessage): void {
    const v = Number(m.value);
    if (v === -1) {
      this.shmFd = m.fds[0]!;
      return;
    }
    if (m.fds.length === 0) {
      const fds = this.peers.get(v);
      if (!fds) throw new Error(`leave for unknown peer ${v}`);
      fds.forEach(closeQuietly);
      this.peers.delete(v);
      return;
    }
    const list = this.peers.get(v) ?? [];
    list.push(m.fds[0]!);
    this.peers.set(v, list);
  }

  /** Read the set-up: version, id, shm, then until our own `vectors` vectors are in. */
  async handshake(vectors: number): Promise<void> {
    const ver = await this.next();
    if (ver.value !== 0n || ver.fds.length) throw new Error(`bad version message ${ver.value}`);
    const id = await this.next();
    if (id.fds.length) throw new Error('id with an fd');
    this.id = Number(id.value);
    while ((this.peers.get(this.id)?.length ?? 0) < vectors) this.apply(await this.next());
  }

  /** Read messages until `pred` holds for this client's view. */
  async until(pred: () => boolean, timeoutMs = 15_000): Promise<void> {
    while (!pred()) this.apply(await this.next(timeoutMs));
  }

  ring(peer: number, vector: number): void {
    eventfdSignal(this.peers.get(peer)![vector]!);
  }

  /** Drain own vector `v`: the counter (0 when nothing was rung). */
  drain(vector: number): number {
    return eventfdDrain(this.peers.get(this.id)![vector]!);
  }

  close(): void {
    this.conn.close();
    for (const fds of this.peers.values()) fds.forEach(closeQuietly);
    this.peers.clear();
    closeQuietly(this.shmFd);
  }
}
