/**
 * vhost-user framing over a unix stream socket: a 12-byte header, then `size` payload bytes, with the fds
 * that arrived alongside. Reads are non-blocking and driven by libuv readiness; one callback drains at most
 * `maxPerWake` messages so that a flood cannot starve the event loop.
 */
import { closeQuietly } from '../sys/syscalls.js';
import { UnixConnection } from '../sys/unix-socket.js';
import { decodeHeader, HEADER_SIZE, MAX_PAYLOAD, type MessageHeader } from './codec.js';

export interface RawMessage {
  header: MessageHeader;
  payload: Buffer;
  fds: number[];
}

export class MessageChannel {
  readonly conn: UnixConnection;
  private readonly buf = Buffer.allocUnsafeSlow(HEADER_SIZE + MAX_PAYLOAD);
  private got = 0;
  private header: MessageHeader | undefined;
  private fds: number[] = [];
  private ended = false;

  constructor(
    fd: number,
    private readonly onMessage: (m: RawMessage) => void,
    private readonly onEnd: (why: Error | undefined) => void,
    private readonly maxPerWake = 64,
  ) {
    this.conn = new UnixConnection(fd);
  }

  start(): void {
    this.conn.watch(() => this.pump());
  }

  /** Stop reading and release the socket and any fds of a half-received message. */
  close(why?: Error): void {
    if (this.ended) return;
    this.ended = true;
    for (const fd of this.fds) closeQuietly(fd);
    this.fds = [];
    this.conn.close();
    this.onEnd(why);
  }

  send(data: Buffer, fds: readonly number[] = []): void {
    this.conn.send(data, fds);
  }

  private pump(): void {
    let delivered = 0;
    while (!this.ended && delivered < this.maxPerWake) {
      const want = this.header ? HEADER_SIZE + this.header.size : HEADER_SIZE;
      let r;
      try {
        r = this.conn.recv(this.buf, this.got, want - this.got);
      } catch (e) {
        this.close(e as Error);
        return;
      }
      this.fds.push(...r.fds);
      if (r.bytes < 0) return;
      if (r.bytes === 0) {
        this.close(this.got > 0 || this.fds.length ? new Error('peer closed the socket in the middle of a message') : undefined);
        return;
      }
      this.got += r.bytes;
      if (this.got < want) continue;
      if (!this.header) {
        try {
          this.header = decodeHeader(this.buf.subarray(0, HEADER_SIZE));
        } catch (e) {
          this.close(e as Error);
          return;
        }
        if (this.header.size > 0) continue;
      }
      const m: RawMessage = {
        header: this.header,
        payload: Buffer.from(this.buf.subarray(HEADER_SIZE, HEADER_SIZE + this.header.size)),
        fds: this.fds,
      };
      this.header = undefined;
      this.got = 0;
      this.fds = [];
      delivered++;
      this.onMessage(m);
    }
  }
}
