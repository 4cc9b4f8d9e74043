/**
 * The protocol half of the built-in front-end: connects to a vhost-user back-end and exchanges requests and
 * replies with it through the shared codec. One request is in flight at a time, as in QEMU.
 */
import { closeQuietly } from '../sys/syscalls.js';
import { connectUnix } from '../sys/unix-socket.js';
import {
  decodeReply,
  encodeRequest,
  FRONTEND_MESSAGES,
  type EncodeRequestOptions,
  type FrontendReplyPayloads,
  type FrontendRequestPayloads,
} from '../vhost-user/codec.js';
import { FrontendRequest, type FrontendRequestName } from '../vhost-user/constants.js';
import { MessageChannel, type RawMessage } from '../vhost-user/transport.js';

export class BackendError extends Error {
  override name = 'BackendError';
}

export class VhostUserClient {
  private readonly channel: MessageChannel;
  private waiting: { resolve: (m: RawMessage) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  /** REPLY_ACK negotiated: every request without an explicit reply asks for an ack */
  replyAck = false;

  private constructor(fd: number, private readonly timeoutMs: number) {
    this.channel = new MessageChannel(
      fd,
      (m) => {
        const w = this.waiting;
        this.waiting = undefined;
        if (w) w.resolve(m);
        else for (const f of m.fds) closeQuietly(f); // unsolicited: nothing to do with it
      },
      (why) => {
        this.ended = why ?? new BackendError('back-end closed the connection');
        this.waiting?.reject(this.ended);
        this.waiting = undefined;
      },
    );
    this.channel.start();
  }

  static connect(path: string, timeoutMs = 10_000): VhostUserClient {
    return new VhostUserClient(connectUnix(path), timeoutMs);
  }

  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Send a request; resolve with its explicit reply, or (for the others) after the ack when REPLY_ACK is on. */
  request<K extends FrontendRequestName>(
    name: K,
    payload: FrontendRequestPayloads[K],
    fds: readonly number[] = [],
    opts: Omit<EncodeRequestOptions, 'fdCount'> = {},
  ): Promise<FrontendReplyPayloads[K] | undefined> {
    const run = this.chain.then(() => this.exchange(name, payload, fds, opts));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async exchange<K extends FrontendRequestName>(
    name: K,
    payload: FrontendRequestPayloads[K],
    fds: readonly number[],
    opts: Omit<EncodeRequestOptions, 'fdCount'>,
  ): Promise<FrontendReplyPayloads[K] | undefined> {
    if (this.ended) throw this.ended;
    const spec = FRONTEND_MESSAGES[FrontendRequest[name]]!;
    const explicit = spec.alwaysReplies;
    const ack = !explicit && (opts.needReply ?? this.replyAck);
    const wire = encodeRequest(name, payload, { ...opts, needReply: ack || opts.needReply === true });
    const reply = explicit || ack ? this.nextMessage() : undefined;
    this.channel.send(wire, fds);
    if (!reply) return undefined;
    const m = await reply;
    // replies of this kind carry no fds we want; never leak one a back-end attached anyway
    for (const f of m.fds) closeQuietly(f);
    if (explicit) return decodeReply(name, m.header, m.payload, m.fds.length, 'explicit') as FrontendReplyPayloads[K];
    const status = decodeReply(name, m.header, m.payload, m.fds.length, 'ack');
    if (status !== 0n) throw new BackendError(`${name} failed: the back-end answered ${status}`);
    return undefined;
  }

  /** A request whose explicit reply carries fds (GET_INFLIGHT_FD): the reply and the fds, now the caller's. */
  requestWithFds<K extends FrontendRequestName>(name: K, payload: FrontendRequestPayloads[K]): Promise<{ reply: FrontendReplyPayloads[K]; fds: number[] }> {
    const run = this.chain.then(async () => {
      if (this.ended) throw this.ended;
      const reply = this.nextMessage();
      this.channel.send(encodeRequest(name, payload));
      const m = await reply;
      try {
        return { reply: decodeReply(name, m.header, m.payload, m.fds.length, 'explicit') as FrontendReplyPayloads[K], fds: m.fds };
      } catch (e) {
        for (const f of m.fds) closeQuietly(f);
        throw e;
      }
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private nextMessage(): Promise<RawMessage> {
    return new Promise<RawMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new BackendError(`no reply from the back-end within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiting = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Send raw bytes (hostile-input tests). */
  sendRaw(data: Buffer, fds: readonly number[] = []): void {
    this.channel.send(data, fds);
  }

  /** Send raw bytes and resolve with whatever message the back-end sends next. */
  async exchangeRaw(data: Buffer, fds: readonly number[] = []): Promise<RawMessage> {
    const run = this.chain.then(() => {
      const reply = this.nextMessage();
      this.channel.send(data, fds);
      return reply;
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.channel.close();
  }
}
