/**
 * Turns framed messages into session calls, one at a time and in order: decode and validate (codec), check the
 * feature gate, run the handler, answer. REPLY_ACK is handled here and nowhere else. A request that fails gets
 * a log line that says what was wrong and a failed ack when the front-end asked for one; a request whose
 * explicit reply cannot be given ends the connection (the front-end would otherwise wait forever).
 */
import { closeQuietly } from '../sys/syscalls.js';
import {
  checkGate,
  decodeRequest,
  encodeMessage,
  encodeReply,
  u64,
  FRONTEND_MESSAGES,
  type DecodedRequest,
} from './codec.js';
import { HeaderFlag, ProtocolFeature, requestName } from './constants.js';
import type { Session } from './session.js';
import type { MessageChannel, RawMessage } from './transport.js';

/** What a handler answers: an explicit reply payload, with fds to pass, or nothing. */
type Answer = { reply: Buffer; fds?: number[] } | void;

export class Dispatcher {
  private channel: MessageChannel | undefined;
  private tail: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly session: Session,
    private readonly log: (line: string) => void,
  ) {}

  attach(channel: MessageChannel): void {
    this.channel = channel;
  }

  enqueue(m: RawMessage): void {
    this.tail = this.tail.then(() =>
      this.handle(m).catch((e: unknown) => {
        // a reply that cannot be sent (the peer is gone): the connection is over, the process is not
        this.log(`${requestName(m.header.request)}: ${(e as Error).message}; closing the connection`);
        this.channel?.close(e as Error);
      }),
    );
  }

  /** Resolves when every queued message has been handled (or dropped after the connection ended). */
  drain(): Promise<void> {
    this.stopped = true;
    return this.tail;
  }

  private send(data: Buffer, fds: readonly number[] = []): void {
    if (this.stopped || !this.channel) return;
    this.channel.send(data, fds);
  }

  private async handle(m: RawMessage): Promise<void> {
    if (this.stopped) {
      for (const fd of m.fds) closeQuietly(fd);
      return;
    }
    const name = requestName(m.header.request);
    const spec = FRONTEND_MESSAGES[m.header.request];
    const wantsAck = (m.header.flags & HeaderFlag.NEED_REPLY) !== 0;
    let req: DecodedRequest;
    try {
      req = decodeRequest(m.header, m.payload, m.fds.length);
      checkGate(FRONTEND_MESSAGES[req.request]!, {
        features: this.session.gateFeatures,
        protocolFeatures: this.protocolAcked(req.name),
      });
    } catch (e) {
      for (const fd of m.fds) closeQuietly(fd);
      this.fail(m.header.request, e as Error, wantsAck, spec?.alwaysReplies ?? false);
      return;
    }
    try {
      const answer = await this.run(req, m.fds);
      if (spec!.alwaysReplies) {
        if (!answer) throw new Error(`internal: ${name} produced no reply`);
        try {
          this.send(answer.reply, answer.fds);
        } finally {
          // fds travel as copies: ours are closed once sent (or once sending failed)
          for (const f of answer.fds ?? []) closeQuietly(f);
        }
      } else if (wantsAck && this.session.hasProtocolFeature(ProtocolFeature.REPLY_ACK)) {
        this.send(this.ack(req.request, 0n));
      }
    } catch (e) {
      this.fail(req.request, e as Error, wantsAck, spec!.alwaysReplies);
    }
  }

  /** SET_PROTOCOL_FEATURES and GET_PROTOCOL_FEATURES must work before anything was negotiated. */
  private protocolAcked(name: string): bigint {
    return name === 'GET_PROTOCOL_FEATURES' || name === 'SET_PROTOCOL_FEATURES' ? ~0n : this.session.acknowledgedProtocolFeatures;
  }

  private ack(request: number, status: bigint): Buffer {
    return encodeMessage(request, HeaderFlag.VERSION | HeaderFlag.REPLY, u64.encode(status));
  }

  private fail(request: number, e: Error, wantsAck: boolean, explicitReply: boolean): void {
    const name = requestName(request);
    this.log(`${name}: ${e.message}`);
    if (explicitReply) {
      this.log(`${name} has a reply that cannot be given; closing the connection`);
      this.channel?.close(e);
    } else if (wantsAck && this.session.hasProtocolFeature(ProtocolFeature.REPLY_ACK)) {
      this.send(this.ack(request, 1n));
    }
  }

  private async run(req: DecodedRequest, fds: number[]): Promise<Answer> {
    const s = this.session;
    const fd = fds[0];
    switch (req.name) {
      case 'GET_FEATURES':
        return { reply: encodeReply('GET_FEATURES', s.getFeatures()) };
      case 'SET_FEATURES':
        return s.setFeatures(req.payload);
      case 'GET_PROTOCOL_FEATURES':
        return { reply: encodeReply('GET_PROTOCOL_FEATURES', s.getProtocolFeatures()) };
      case 'SET_PROTOCOL_FEATURES':
        return s.setProtocolFeatures(req.payload);
      case 'SET_OWNER':
        return s.setOwner();
      case 'RESET_OWNER':
        this.log('RESET_OWNER is deprecated; treating it as RESET_DEVICE');
        return s.resetDevice();
      case 'GET_QUEUE_NUM':
        return { reply: encodeReply('GET_QUEUE_NUM', BigInt(s.queueCount())) };
      case 'GET_MAX_MEM_SLOTS':
        return { reply: encodeReply('GET_MAX_MEM_SLOTS', BigInt(s.maxMemSlots)) };
      case 'SET_MEM_TABLE':
        return s.setMemTable(req.payload.regions, fds);
      case 'ADD_MEM_REG':
        return s.addMemRegion(req.payload, fd!);
      case 'REM_MEM_REG':
        if (fd !== undefined) closeQuietly(fd); // allowed, unused
        return s.removeMemRegion(req.payload);
      case 'SET_LOG_BASE':
        return { reply: encodeReply('SET_LOG_BASE', await s.setLogBase(req.payload.mmapSize, req.payload.mmapOffset, fd!)) };
      case 'SET_LOG_FD':
        return s.setLogFd(fd!);
      case 'SET_VRING_NUM':
        return s.setVringNum(req.payload.index, req.payload.num);
      case 'SET_VRING_ADDR':
        return s.setVringAddr(req.payload.index, req.payload);
      case 'SET_VRING_BASE':
        return s.setVringBase(req.payload.index, req.payload.num);
      case 'GET_VRING_BASE': {
        const num = await s.getVringBase(req.payload.index);
        return { reply: encodeReply('GET_VRING_BASE', { index: req.payload.index, num }) };
      }
      case 'SET_VRING_KICK':
        return s.setVringKick(req.payload.index, req.payload.noFd ? undefined : fd);
      case 'SET_VRING_CALL':
        return s.setVringCall(req.payload.index, req.payload.noFd ? undefined : fd);
      case 'SET_VRING_ERR':
        return s.setVringErr(req.payload.index, req.payload.noFd ? undefined : fd);
      case 'SET_VRING_ENABLE':
        return s.setEnabled(req.payload.index, req.payload.num === 1);
      case 'GET_CONFIG':
        return {
          reply: encodeReply('GET_CONFIG', {
            offset: req.payload.offset,
            flags: req.payload.flags,
            data: s.getConfig(req.payload.offset, req.payload.data.length),
          }),
        };
      case 'SET_CONFIG':
        return s.setConfig(req.payload.offset, req.payload.data);
      case 'SEND_RARP':
        return s.sendRarp(req.payload);
      case 'NET_SET_MTU':
        return s.setMtu(req.payload);
      case 'SET_BACKEND_REQ_FD':
        return s.setBackendReqFd(fd!);
      case 'GET_INFLIGHT_FD': {
        const { numQueues, queueSize } = req.payload;
        const { size, fd: region } = s.getInflightFd(numQueues, queueSize);
        return { reply: encodeReply('GET_INFLIGHT_FD', { mmapSize: BigInt(size), mmapOffset: 0n, numQueues, queueSize }), fds: [region] };
      }
      case 'SET_INFLIGHT_FD': {
        const { numQueues, queueSize, mmapSize, mmapOffset } = req.payload;
        return s.setInflightFd(numQueues, queueSize, mmapSize, mmapOffset, fd!);
      }
      case 'RESET_DEVICE':
        return s.resetDevice();
      case 'SET_STATUS':
        return s.setStatus(Number(req.payload & 0xffn));
      case 'GET_STATUS':
        return { reply: encodeReply('GET_STATUS', BigInt(s.getStatus())) };
      default:
        for (const f of fds) closeQuietly(f);
        throw new Error(`${req.name} is not supported by this back-end`);
    }
  }
}
