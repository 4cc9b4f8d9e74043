/**
 * The message-layer fuzzer's vocabulary and its model of the back-end.
 *
 * A sequence is a list of JSON-friendly steps (the corpus files use the same form, see corpus/README.md):
 *   { op: 'msg', req, value?, payloadHex?, flags?, needReply?, trim?, extraHex?, fds? }  one message on the wire
 *   { op: 'kick', queue }                                                              signal a kick eventfd
 *   { op: 'scribble', offset, hex }                                    write bytes into guest memory A (pwrite)
 *   { op: 'abrupt', cut, step }        send the first `cut` bytes of message `step`, then close the connection
 *   { op: 'expectMemory', fd, offset, hex, afterMs? }   (corpus) guest memfd bytes that must hold
 *   { op: 'sleep', ms }
 *   { op: 'truncate', fd: 'guestA' | 'guestB', size }   ftruncate a guest memfd the back-end may have mapped
 *
 * The model predicts, from the bytes on the wire alone, what the back-end may answer (A.2, A.7 and the README's
 * rules): nothing, a REPLY_ACK success or failure, an explicit reply, or closing the connection; and whether
 * the message must be rejected with a log line naming it.
 */
import fc from 'fast-check';
import {
  checkGate,
  decodeReply,
  decodeRequest,
  FRONTEND_MESSAGES,
  HEADER_SIZE,
  MAX_PAYLOAD,
  type DecodedRequest,
  type FrontendRequestPayloads,
  type MemRegion,
} from '../../src/vhost-user/codec.js';
import {
  bit,
  FrontendRequest,
  hasBit,
  type FrontendRequestName,
  HeaderFlag,
  ProtocolFeature,
  requestName,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_RING_PACKED,
} from '../../src/vhost-user/constants.js';
import type { RawMessage } from '../../src/vhost-user/transport.js';
import { FRESH_FD_KINDS, fdKindSize, GUEST_BYTES, SKIP_KNOWN, type FdKind } from './harness.js';

// ---------------------------------------------------------------------------------------------------
// steps
// ---------------------------------------------------------------------------------------------------

export interface MsgStep {
  op: 'msg';
  /** request name or raw id (unknown ids included) */
  req: FrontendRequestName | number;
  /** typed payload, laid out with the request's codec `pack` (no validation); u64 fields as bigint / "0x.." */
  value?: unknown;
  /** raw payload bytes instead of `value` */
  payloadHex?: string;
  /** header flags; default VERSION (+ NEED_REPLY when needReply) */
  flags?: number;
  needReply?: boolean;
  /** drop this many bytes from the end of the payload (the header's size says the truncated length) */
  trim?: number;
  /** append these bytes to the payload */
  extraHex?: string;
  fds?: FdKind[];
}

export type Step =
  | MsgStep
  | { op: 'kick'; queue: number }
  | { op: 'scribble'; offset: number; hex: string }
  | { op: 'abrupt'; cut: number; step: MsgStep }
  /** corpus only: wait, then check bytes of a guest memfd (what the back-end may or may not have written) */
  | { op: 'expectMemory'; fd: 'guestA' | 'guestB'; offset: number; hex: string; afterMs?: number; why?: string }
  | { op: 'sleep'; ms: number }
  /** the front-end shrinks (or grows back) one of its guest memfds after handing it over */
  | { op: 'truncate'; fd: 'guestA' | 'guestB'; size: number };

/** Guest memory the sequences use: memfd A at gpa 0 (uaddr UA), memfd B at GPA_B (uaddr UB), 2 MiB each. */
export const UA = 0x7f12_0000_0000n;
export const UB = 0x7f34_0000_0000n;
export const GPA_B = 0x4000_0000n;
export const SIZE = BigInt(GUEST_BYTES);
export const REGION_A: MemRegion = { gpa: 0n, size: SIZE, uaddr: UA, mmapOffset: 0n };
export const REGION_B: MemRegion = { gpa: GPA_B, size: SIZE, uaddr: UB, mmapOffset: 0n };
/** Ring q lives at offset q * RING_STRIDE of region A (or B): desc, then avail at +0x8000, used at +0xa000. */
export const RING_STRIDE = 0x1_0000;
export const AVAIL_OFF = 0x8000;
export const USED_OFF = 0xa000;
export function ringAddr(q: number, inB = false): { desc: bigint; avail: bigint; used: bigint } {
  const base = (inB ? UB : UA) + BigInt(q * RING_STRIDE);
  return { desc: base, avail: base + BigInt(AVAIL_OFF), used: base + BigInt(USED_OFF) };
}

/** Turn "0x.." strings back into bigints (corpus files). */
export function revive(v: unknown): unknown {
  if (typeof v === 'string' && /^0x[0-9a-f]+$/i.test(v)) return BigInt(v);
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object' && !Buffer.isBuffer(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  return v;
}

export function requestId(req: FrontendRequestName | number): number {
  return typeof req === 'number' ? req : FrontendRequest[req];
}

/** The bytes of a message step: header + payload. */
export function msgWire(s: MsgStep): Buffer {
  const id = requestId(s.req);
  let payload: Buffer;
  if (s.payloadHex !== undefined) payload = Buffer.from(s.payloadHex, 'hex');
  else {
    const spec = FRONTEND_MESSAGES[id];
    if (!spec) payload = Buffer.alloc(0);
    else payload = (spec.request.pack as (v: unknown) => Buffer)(revive(s.value));
  }
  if (s.trim) payload = payload.subarray(0, Math.max(0, payload.length - s.trim));
  if (s.extraHex) payload = Buffer.concat([payload, Buffer.from(s.extraHex, 'hex')]);
  const flags = s.flags ?? HeaderFlag.VERSION | (s.needReply ? HeaderFlag.NEED_REPLY : 0);
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt32LE(id >>> 0, 0);
  h.writeUInt32LE(flags >>> 0, 4);
  h.writeUInt32LE(payload.length, 8);
  return Buffer.concat([h, payload]);
}

/** One line describing a step, for failure reports. */
export function describeStep(s: Step): string {
  switch (s.op) {
    case 'kick':
      return `kick queue ${s.queue}`;
    case 'scribble':
      return `write ${s.hex.length / 2} bytes at guest offset 0x${s.offset.toString(16)}`;
    case 'abrupt':
      return `first ${s.cut} bytes of [${describeStep(s.step)}], then close`;
    case 'expectMemory':
      return `expect ${s.fd} bytes at 0x${s.offset.toString(16)} to be ${s.hex}`;
    case 'sleep':
      return `sleep ${s.ms} ms`;
    case 'truncate':
      return `ftruncate ${s.fd} to ${s.size} bytes`;
    case 'msg': {
      const id = requestId(s.req);
      const w = msgWire(s);
      return `${requestName(id)} flags 0x${w.readUInt32LE(4).toString(16)} size ${w.length - HEADER_SIZE} fds [${(s.fds ?? []).join(',')}]`;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// the model
// ---------------------------------------------------------------------------------------------------

export type Outcome = 'close' | 'reply' | 'ack0' | 'ack1' | 'none';

export interface Prediction {
  name: string;
  request: number;
  outcomes: ReadonlySet<Outcome>;
  /** the back-end must log a line naming the request (it rejected it for certain) */
  mustLog: boolean;
  /** checks the explicit reply's content; returns a complaint or undefined */
  checkReply?(m: RawMessage): string | undefined;
}

interface RingState {
  /** no kick fd since the connection began / the last GET_VRING_BASE or reset: the ring cannot be started */
  fresh: boolean;
}

const REPLY_ACK = bit(ProtocolFeature.REPLY_ACK);

/** True when the (single) fd of a vring fd message is not an eventfd. */
function notEventfd(fds: readonly FdKind[]): boolean {
  const k = fds[0];
  return k !== undefined && k !== 'eventfd' && !k.startsWith('kick');
}

export class ProtocolModel {
  protocolAcked = 0n;
  /** SET_PROTOCOL_FEATURES succeeded once: from then on VHOST_USER_F_PROTOCOL_FEATURES counts as negotiated for
   * the feature gate (QEMU's vhost-user-net sends SET_VRING_ENABLE before SET_FEATURES; Session.gateFeatures) */
  protocolSet = false;
  acked = 0n;
  /** the back-end's memory table, or undefined once the model lost track */
  regions: MemRegion[] | undefined = [];
  rings: RingState[];
  closed = false;
  /** current sizes of the connection's guest memfds (truncate steps change them) */
  private readonly sizes = new Map<FdKind, bigint>();

  constructor(
    readonly queues: number,
    readonly offered: bigint,
    readonly offeredProtocol: bigint,
    readonly maxQueueSize = 32768,
  ) {
    this.rings = Array.from({ length: queues }, () => ({ fresh: true }));
  }

  truncated(kind: 'guestA' | 'guestB', size: number): void {
    this.sizes.set(kind, BigInt(size));
  }

  private fdSize(kind: FdKind): bigint {
    return this.sizes.get(kind) ?? fdKindSize(kind);
  }

  private reset(): void {
    this.acked = 0n;
    for (const r of this.rings) r.fresh = true;
  }

  /** Predict the answer to `wire` (with `fds`) and move the model on as if that prediction holds. */
  predict(wire: Buffer, fds: readonly FdKind[]): Prediction {
    const request = wire.readUInt32LE(0);
    const flags = wire.readUInt32LE(4);
    const size = wire.readUInt32LE(8);
    const name = requestName(request);
    const P = (outcomes: Outcome[], mustLog: boolean, checkReply?: Prediction['checkReply']): Prediction => {
      if (outcomes.includes('close')) this.closed = outcomes.length === 1;
      return { name, request, outcomes: new Set(outcomes), mustLog, ...(checkReply ? { checkReply } : {}) };
    };
    // A.2: a broken header ends the connection
    if ((flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION || (flags & HeaderFlag.RESERVED_MASK) >>> 0 !== 0 || size > MAX_PAYLOAD)
      return P(['close'], true);
    const spec = FRONTEND_MESSAGES[request];
    const wantsAck = (flags & HeaderFlag.NEED_REPLY) !== 0;
    const ack = (ok: boolean | 'either'): Outcome[] => {
      if (!wantsAck || (this.protocolAcked & REPLY_ACK) === 0n) return ['none'];
      return ok === 'either' ? ['ack0', 'ack1'] : [ok ? 'ack0' : 'ack1'];
    };
    const reject = (): Prediction => P(spec?.alwaysReplies ? ['close'] : ack(false), true);
    let req: DecodedRequest;
    try {
      req = decodeRequest({ request, flags, size }, wire.subarray(HEADER_SIZE), fds.length);
      const protoGate = req.name === 'GET_PROTOCOL_FEATURES' || req.name === 'SET_PROTOCOL_FEATURES' ? ~0n : this.protocolAcked;
      const gateFeatures = this.protocolSet ? this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES) : this.acked;
      checkGate(spec!, { features: gateFeatures, protocolFeatures: protoGate });
    } catch {
      return reject();
    }
    const Q = this.queues;
    const ring = (index: number): RingState | undefined => (index < Q ? this.rings[index] : undefined);
    const reply = (check?: Prediction['checkReply']): Prediction => P(['reply'], false, check);
    const u64Reply = (n: FrontendRequestName, want: bigint) => (m: RawMessage) => {
      const v = decodeReply(n, m.header, m.payload, m.fds.length, 'explicit') as unknown as bigint;
      return v === want ? undefined : `${n} answered 0x${v.toString(16)}, expected 0x${want.toString(16)}`;
    };
    switch (req.name) {
      case 'GET_FEATURES':
        return reply(u64Reply('GET_FEATURES', this.offered));
      case 'GET_PROTOCOL_FEATURES':
        return reply(u64Reply('GET_PROTOCOL_FEATURES', this.offeredProtocol));
      case 'GET_QUEUE_NUM':
        return reply(u64Reply('GET_QUEUE_NUM', BigInt(Q)));
      case 'GET_MAX_MEM_SLOTS':
      case 'GET_STATUS':
        return reply((m) => {
          decodeReply(req.name as 'GET_STATUS', m.header, m.payload, m.fds.length, 'explicit');
          return undefined;
        });
      case 'SET_FEATURES': {
        // dirty logging is refused on packed rings (session.ts: no record to log an out-of-order completion from)
        const ok = (req.payload & ~this.offered) === 0n && !(hasBit(req.payload, VHOST_F_LOG_ALL) && hasBit(req.payload, VIRTIO_F_RING_PACKED));
        if (ok) this.acked = req.payload;
        return P(ack(ok), !ok);
      }
      case 'SET_PROTOCOL_FEATURES': {
        const ok = (req.payload & ~this.offeredProtocol) === 0n;
        if (ok) {
          this.protocolAcked = req.payload;
          this.protocolSet = true;
        }
        return P(ack(ok), !ok);
      }
      case 'SET_OWNER':
      case 'SET_BACKEND_REQ_FD':
        return P(ack(true), false);
      case 'RESET_OWNER':
      case 'RESET_DEVICE':
        this.reset();
        return P(ack(true), false);
      case 'SET_STATUS':
        if (req.payload === 0n) this.reset();
        return P(ack(true), false);
      case 'SET_MEM_TABLE': {
        const ok = req.payload.regions.every((r, i) => r.mmapOffset + r.size <= this.fdSize(fds[i]!));
        this.regions = ok ? [...req.payload.regions] : [];
        return P(ack(ok), !ok);
      }
      case 'ADD_MEM_REG': {
        const r = req.payload;
        if (this.regions === undefined) return P(ack('either'), false);
        const ok =
          r.mmapOffset + r.size <= this.fdSize(fds[0]!) &&
          this.regions.length < 64 &&
          !this.regions.some((o) => r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size);
        if (ok) this.regions.push(r);
        return P(ack(ok), !ok);
      }
      case 'REM_MEM_REG': {
        const r = req.payload;
        if (this.regions === undefined) return P(ack('either'), false);
        const i = this.regions.findIndex((o) => o.gpa === r.gpa && o.size === r.size && o.uaddr === r.uaddr);
        if (i >= 0) this.regions.splice(i, 1);
        return P(ack(i >= 0), i < 0);
      }
      case 'SET_VRING_NUM': {
        const r = ring(req.payload.index);
        const n = req.payload.num;
        // packed rings (VIRTIO_F_RING_PACKED acked) may have any size
        if (!r || n < 1 || (!hasBit(this.acked, VIRTIO_F_RING_PACKED) && (n & (n - 1)) !== 0) || n > this.maxQueueSize) return P(ack(false), true);
        return P(ack(r.fresh ? true : 'either'), false);
      }
      case 'SET_VRING_BASE': {
        const r = ring(req.payload.index);
        // packed rings (VIRTIO_F_RING_PACKED acked) use bits 16-31 too
        if (!r || (!hasBit(this.acked, VIRTIO_F_RING_PACKED) && req.payload.num > 0xffff)) return P(ack(false), true);
        return P(ack(r.fresh ? true : 'either'), false);
      }
      case 'SET_VRING_ADDR': {
        const r = ring(req.payload.index);
        if (!r) return P(ack(false), true);
        return P(ack(r.fresh ? true : 'either'), false);
      }
      case 'SET_VRING_CALL':
      case 'SET_VRING_ERR': {
        const r = ring(req.payload.index);
        if (!r) return P(ack(false), true);
        // an fd that is no eventfd may be refused (or taken: a pipe or file is not forbidden by the spec)
        return P(ack(r.fresh && notEventfd(fds) === false ? true : 'either'), false);
      }
      case 'SET_VRING_KICK': {
        const r = ring(req.payload.index);
        if (!r) return P(ack(false), true);
        r.fresh = false;
        return P(ack('either'), false);
      }
      case 'SET_VRING_ENABLE': {
        const r = ring(req.payload.index);
        return r ? P(ack(true), false) : P(ack(false), true);
      }
      case 'GET_VRING_BASE': {
        const index = req.payload.index;
        const r = ring(index);
        if (!r) return P(['close'], true);
        r.fresh = true;
        return reply((m) => {
          const v = decodeReply('GET_VRING_BASE', m.header, m.payload, m.fds.length, 'explicit');
          if (v.index !== index) return `GET_VRING_BASE(${index}) answered for vring ${v.index}`;
          return v.num > 0xffff ? `GET_VRING_BASE(${index}) answered base 0x${v.num.toString(16)}, more than 16 bits` : undefined;
        });
      }
      default:
        // messages this model does not follow (unsupported ones, inflight, config): any well-formed answer
        return P(spec!.alwaysReplies ? ['reply', 'close'] : ack('either'), false);
    }
  }

  /** Classify an answer to `p` (a message that came before the probe's reply). */
  classify(p: Prediction, m: RawMessage): { outcome: Outcome; complaint?: string } {
    if (m.header.request !== p.request)
      return { outcome: 'reply', complaint: `answer to ${p.name} carries request id ${m.header.request}` };
    if ((m.header.flags & HeaderFlag.REPLY) === 0) return { outcome: 'reply', complaint: `answer to ${p.name} lacks the REPLY flag` };
    const spec = FRONTEND_MESSAGES[p.request];
    if (p.outcomes.has('reply') && spec?.alwaysReplies) {
      try {
        return { outcome: 'reply', ...(p.checkReply ? { complaint: p.checkReply(m) } : {}) };
      } catch (e) {
        return { outcome: 'reply', complaint: `malformed reply to ${p.name}: ${(e as Error).message}` };
      }
    }
    if (m.payload.length !== 8) return { outcome: 'ack1', complaint: `ack to ${p.name} is ${m.payload.length} bytes, not a u64` };
    return { outcome: m.payload.readBigUInt64LE(0) === 0n ? 'ack0' : 'ack1' };
  }
}

// ---------------------------------------------------------------------------------------------------
// known bugs (corpus/README.md): counterexamples are tagged with them; FUZZ_SKIP_KNOWN=1 leaves out the
// inputs of those still open, to hunt for others
// ---------------------------------------------------------------------------------------------------

export const KNOWN_BUGS: Record<string, { open: boolean; what: string }> = {
  'BUG-1': { open: false, what: 'worker died on a kick/call/err fd it could not read/write; later control calls hung' },
  'BUG-2': { open: false, what: 'the fd of SET_VRING_KICK/CALL/ERR for an out-of-range vring was leaked' },
  'BUG-4': { open: false, what: 'SIGBUS when the front-end shrinks a mapped memfd' },
};

/** The known bug a step triggers, if any. */
export function knownBugOf(s: Step, queues: number): string | undefined {
  const tag = (id: string): string => `${id} (${KNOWN_BUGS[id]!.open ? 'open' : 'fixed'}): ${KNOWN_BUGS[id]!.what}`;
  if (s.op === 'truncate' && s.size < GUEST_BYTES) return tag('BUG-4');
  if (s.op !== 'msg') return undefined;
  const m = s;
  const id = requestId(m.req);
  if (id !== FrontendRequest.SET_VRING_KICK && id !== FrontendRequest.SET_VRING_CALL && id !== FrontendRequest.SET_VRING_ERR) return undefined;
  const fds = m.fds ?? [];
  if (fds.some((k) => k === 'devnull-r' || k === 'devnull-w')) return tag('BUG-1');
  const w = msgWire(m);
  if (w.length === HEADER_SIZE + 8 && fds.length === 1) {
    const v = w.readBigUInt64LE(HEADER_SIZE);
    if ((v & 0x100n) === 0n && (v & ~0x1ffn) === 0n && Number(v & 0xffn) >= queues) return tag('BUG-2');
  }
  return undefined;
}

function skipKnown(s: Step, queues: number): boolean {
  const b = knownBugOf(s, queues);
  return b !== undefined && KNOWN_BUGS[b.slice(0, 5)]!.open;
}

// ---------------------------------------------------------------------------------------------------
// generators
// ---------------------------------------------------------------------------------------------------

type Arb<T> = fc.Arbitrary<T>;

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u16 = fc.integer({ min: 0, max: 0xffff });
const hexBytes = (min: number, max: number): Arb<string> => fc.uint8Array({ minLength: min, maxLength: max }).map((b) => Buffer.from(b).toString('hex'));
const freshFd: Arb<FdKind> = fc.constantFrom<FdKind>(...FRESH_FD_KINDS);
const anyFd: Arb<FdKind> = fc.oneof(freshFd, fc.constantFrom<FdKind>('guestA', 'guestB', 'kick0'));
const mostly = (p: number): Arb<boolean> => fc.integer({ min: 0, max: 99 }).map((x) => x < p);

function m<K extends FrontendRequestName>(req: K, value: FrontendRequestPayloads[K], needReply: boolean, fds?: FdKind[]): MsgStep {
  return { op: 'msg', req, value, needReply, ...(fds && fds.length ? { fds } : {}) };
}

export interface GenContext {
  queues: number;
  offered: bigint;
  offeredProtocol: bigint;
}

/** The well-behaved set-up messages, one at a time (any order; the sequence decides). */
function setupStep(g: GenContext): Arb<MsgStep> {
  const q = fc.integer({ min: 0, max: g.queues - 1 });
  const nr = mostly(80);
  const pow2 = fc.integer({ min: 0, max: 10 }).map((k) => 1 << k);
  const protoMask = g.offeredProtocol;
  return fc.oneof(
    { weight: 1, arbitrary: nr.map((r) => m('GET_FEATURES', undefined, r)) },
    { weight: 1, arbitrary: nr.map((r) => m('GET_PROTOCOL_FEATURES', undefined, r)) },
    {
      weight: 3,
      arbitrary: fc.tuple(u64, nr, mostly(85)).map(([mask, r, ackOn]) =>
        m('SET_PROTOCOL_FEATURES', (protoMask & mask) | (ackOn ? REPLY_ACK & protoMask : 0n), r),
      ),
    },
    {
      weight: 3,
      arbitrary: fc.tuple(u64, nr, mostly(85)).map(([mask, r, pf]) =>
        m('SET_FEATURES', (g.offered & mask) | (pf ? g.offered & bit(VHOST_USER_F_PROTOCOL_FEATURES) : 0n), r),
      ),
    },
    { weight: 1, arbitrary: nr.map((r) => m('SET_OWNER', undefined, r)) },
    { weight: 1, arbitrary: nr.map((r) => m('GET_QUEUE_NUM', undefined, r)) },
    { weight: 1, arbitrary: nr.map((r) => m('GET_MAX_MEM_SLOTS', undefined, r)) },
    { weight: 1, arbitrary: nr.map((r) => m('GET_STATUS', undefined, r)) },
    {
      weight: 4,
      arbitrary: fc.tuple(nr, mostly(25)).map(([r, two]) =>
        two ? m('SET_MEM_TABLE', { regions: [REGION_A, REGION_B] }, r, ['guestA', 'guestB']) : m('SET_MEM_TABLE', { regions: [REGION_A] }, r, ['guestA']),
      ),
    },
    { weight: 1, arbitrary: nr.map((r) => m('ADD_MEM_REG', REGION_B, r, ['guestB'])) },
    { weight: 1, arbitrary: fc.tuple(nr, fc.boolean()).map(([r, a]) => m('REM_MEM_REG', a ? REGION_A : REGION_B, r)) },
    { weight: 4, arbitrary: fc.tuple(q, pow2, nr).map(([index, num, r]) => m('SET_VRING_NUM', { index, num }, r)) },
    { weight: 2, arbitrary: fc.tuple(q, fc.oneof(fc.constant(0), u16), nr).map(([index, num, r]) => m('SET_VRING_BASE', { index, num }, r)) },
    {
      weight: 4,
      arbitrary: fc.tuple(q, mostly(15), nr).map(([index, inB, r]) => m('SET_VRING_ADDR', { index, flags: 0, ...ringAddr(index, inB), log: 0n }, r)),
    },
    {
      weight: 3,
      arbitrary: fc.tuple(q, mostly(10), nr).map(([index, noFd, r]) =>
        m('SET_VRING_KICK', { index, noFd }, r, noFd ? [] : [`kick${index}`]),
      ),
    },
    { weight: 2, arbitrary: fc.tuple(q, mostly(10), nr).map(([index, noFd, r]) => m('SET_VRING_CALL', { index, noFd }, r, noFd ? [] : ['eventfd'])) },
    { weight: 1, arbitrary: fc.tuple(q, mostly(10), nr).map(([index, noFd, r]) => m('SET_VRING_ERR', { index, noFd }, r, noFd ? [] : ['eventfd'])) },
    { weight: 3, arbitrary: fc.tuple(q, mostly(85), nr).map(([index, on, r]) => m('SET_VRING_ENABLE', { index, num: on ? 1 : 0 }, r)) },
    { weight: 1, arbitrary: fc.tuple(q, nr).map(([index, r]) => m('GET_VRING_BASE', { index, num: 0 }, r)) },
  );
}

const REGION_ARB: Arb<MemRegion> = fc.oneof(
  // size 0
  fc.constant<MemRegion>({ gpa: 0n, size: 0n, uaddr: UA, mmapOffset: 0n }),
  // gpa + size wraps 2^64
  fc.constant<MemRegion>({ gpa: (1n << 64n) - 0x1000n, size: SIZE, uaddr: UA, mmapOffset: 0n }),
  // uaddr + size wraps
  fc.constant<MemRegion>({ gpa: 0n, size: SIZE, uaddr: (1n << 64n) - 0x10n, mmapOffset: 0n }),
  // mmap_offset past the fd end / offset + size past it / offset + size overflows
  fc.constant<MemRegion>({ gpa: 0n, size: 0x1000n, uaddr: UA, mmapOffset: SIZE }),
  fc.constant<MemRegion>({ gpa: 0n, size: SIZE, uaddr: UA, mmapOffset: 0x1000n }),
  fc.constant<MemRegion>({ gpa: 0n, size: 0x1000n, uaddr: UA, mmapOffset: (1n << 64n) - 1n }),
  // bigger than the fd, bigger than the 4 GiB wasm memory
  fc.constant<MemRegion>({ gpa: 0n, size: 5n << 30n, uaddr: UA, mmapOffset: 0n }),
  // unaligned but legal: a window of the fd
  fc.constant<MemRegion>({ gpa: 0x10_0000n, size: 0x1234n, uaddr: UA + 0x10_0000n, mmapOffset: 0x1001n }),
  // anything
  fc.record({ gpa: u64, size: fc.oneof(u64, fc.bigInt({ min: 1n, max: SIZE })), uaddr: u64, mmapOffset: fc.oneof(fc.constant(0n), u64) }),
);

/** Messages that are wrong in the ways the brief lists. */
function hostileStep(g: GenContext): Arb<MsgStep> {
  const Q = g.queues;
  const nr = mostly(80);
  const badIndex = fc.constantFrom(Q, Q + 1, 31, 32, 255, 256, 0xffff, 0xffff_ffff);
  const anyIndex = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: Q - 1 }) }, { weight: 2, arbitrary: badIndex });
  const fdsArb = fc.array(anyFd, { maxLength: 3 });
  return fc.oneof(
    // unknown and known ids with random flags, payloads and fds
    {
      weight: 4,
      arbitrary: fc
        .tuple(
          fc.integer({ min: 0, max: 60 }),
          fc.oneof(fc.constantFrom(1, 1 | 8, 1 | 4, 1 | 8 | 4), fc.integer({ min: 0, max: 0xffff_ffff })),
          fc.oneof(hexBytes(0, 48), hexBytes(8, 8), hexBytes(40, 40)),
          fdsArb,
        )
        .map(([req, flags, payloadHex, fds]): MsgStep => ({ op: 'msg', req, flags, payloadHex, fds })),
    },
    // vring messages with out-of-range indices
    { weight: 2, arbitrary: fc.tuple(badIndex, nr).map(([index, r]) => m('SET_VRING_NUM', { index, num: 8 }, r)) },
    { weight: 1, arbitrary: fc.tuple(badIndex, nr).map(([index, r]) => m('SET_VRING_BASE', { index, num: 0 }, r)) },
    { weight: 1, arbitrary: fc.tuple(badIndex, nr).map(([index, r]) => m('SET_VRING_ADDR', { index, flags: 0, ...ringAddr(0), log: 0n }, r)) },
    { weight: 1, arbitrary: fc.tuple(badIndex, nr).map(([index, r]) => m('SET_VRING_ENABLE', { index, num: 1 }, r)) },
    { weight: 2, arbitrary: fc.tuple(anyIndex, nr).map(([index, r]) => m('GET_VRING_BASE', { index, num: 0 }, r)) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(
          fc.constantFrom('SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR') as Arb<'SET_VRING_KICK'>,
          fc.oneof({ weight: 3, arbitrary: anyIndex }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }).map((i) => i & 0xff),
          mostly(20),
          fc.oneof({ weight: 3, arbitrary: anyFd.map((k) => [k]) }, { weight: 1, arbitrary: fdsArb }),
          nr,
        )
        .map(([req, index, noFd, fds, r]) => m(req, { index, noFd }, r, fds)),
    },
    // vring fd u64 with reserved bits
    {
      weight: 1,
      arbitrary: fc.tuple(fc.integer({ min: 9, max: 63 }), fc.constantFrom(12, 13, 14), nr).map(([b, req, r]): MsgStep => {
        const p = Buffer.alloc(8);
        p.writeBigUInt64LE(1n << BigInt(b));
        return { op: 'msg', req, payloadHex: p.toString('hex'), needReply: r, fds: ['eventfd'] };
      }),
    },
    // queue sizes: 0, not a power of two, more than 32768
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: Q - 1 }), fc.constantFrom(0, 3, 100, 1000, 32768, 32769, 65535, 65536, 0xffff_ffff), nr)
        .map(([index, num, r]) => m('SET_VRING_NUM', { index, num }, r)),
    },
    // SET_VRING_BASE with reserved bits; SET_VRING_ADDR misaligned / outside memory / with bad flags
    { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: Q - 1 }), fc.integer({ min: 0x1_0000, max: 0xffff_ffff }), nr).map(([index, num, r]) => m('SET_VRING_BASE', { index, num }, r)) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: Q - 1 }), fc.record({ desc: u64, used: u64, avail: u64 }), fc.constantFrom(0, 1, 2, 0xffff_ffff), nr)
        .map(([index, a, flags, r]) => m('SET_VRING_ADDR', { index, flags, ...a, log: 0n }, r)),
    },
    // memory tables and regions
    {
      weight: 3,
      arbitrary: fc
        .tuple(fc.array(REGION_ARB, { minLength: 1, maxLength: 3 }), fc.array(fc.oneof(anyFd, fc.constant<FdKind>('guestA')), { minLength: 0, maxLength: 4 }), nr)
        .map(([regions, fds, r]) => m('SET_MEM_TABLE', { regions }, r, fds)),
    },
    // overlapping regions in one table
    { weight: 1, arbitrary: nr.map((r) => m('SET_MEM_TABLE', { regions: [REGION_A, { ...REGION_B, gpa: 0x1000n }] }, r, ['guestA', 'guestB'])) },
    // nregions 0 or 9, padding != 0
    {
      weight: 1,
      arbitrary: fc.tuple(fc.constantFrom(0, 9, 0xffff_ffff), fc.integer({ min: 0, max: 1 }), nr).map(([n, pad, r]): MsgStep => {
        const b = Buffer.alloc(8 + 32);
        b.writeUInt32LE(n, 0);
        b.writeUInt32LE(pad, 4);
        b.writeBigUInt64LE(SIZE, 16);
        return { op: 'msg', req: 'SET_MEM_TABLE', payloadHex: b.toString('hex'), needReply: r, fds: ['guestA'] };
      }),
    },
    { weight: 2, arbitrary: fc.tuple(REGION_ARB, fc.array(anyFd, { maxLength: 2 }), nr).map(([reg, fds, r]) => m('ADD_MEM_REG', reg, r, fds)) },
    { weight: 2, arbitrary: fc.tuple(REGION_ARB, fc.array(anyFd, { maxLength: 1 }), nr).map(([reg, fds, r]) => m('REM_MEM_REG', reg, r, fds)) },
    // features never offered
    { weight: 2, arbitrary: fc.tuple(u64, nr).map(([v, r]) => m('SET_FEATURES', v | (~g.offered & (1n << BigInt(Number(v % 64n)))), r)) },
    { weight: 2, arbitrary: fc.tuple(u64, nr).map(([v, r]) => m('SET_PROTOCOL_FEATURES', v, r)) },
    // inflight regions (INFLIGHT_SHMFD)
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom<'GET_INFLIGHT_FD' | 'SET_INFLIGHT_FD'>('GET_INFLIGHT_FD', 'SET_INFLIGHT_FD'),
          fc.record({
            mmapSize: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x10000n, SIZE, SIZE + 1n), u64),
            mmapOffset: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x123n, SIZE), u64),
            numQueues: fc.oneof(fc.integer({ min: 0, max: Q + 1 }), fc.constantFrom(33, 0xffff)),
            queueSize: fc.oneof(fc.constantFrom(0, 1, 8, 64, 100, 1024, 32768, 0xffff), u16),
          }),
          fc.array(fc.oneof(fc.constantFrom<FdKind>('memfd', 'guestB'), anyFd), { maxLength: 2 }),
          nr,
        )
        .map(([req, v, fds, r]) => m(req, v, r, req === 'SET_INFLIGHT_FD' && fds.length === 0 ? ['memfd'] : fds)),
    },
    // status and reset at any time
    { weight: 2, arbitrary: fc.tuple(fc.oneof(fc.constantFrom(0n, 1n, 3n, 0xfn, 0x40n, 0x80n, 0xffn), u64), nr).map(([v, r]) => m('SET_STATUS', v, r)) },
    { weight: 1, arbitrary: nr.map((r) => m('RESET_DEVICE', undefined, r)) },
    { weight: 1, arbitrary: nr.map((r) => m('RESET_OWNER', undefined, r)) },
  );
}

/** A well-formed message made wrong: flags, size, or fds. */
function mutated(base: Arb<MsgStep>): Arb<MsgStep> {
  return fc.tuple(base, fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 48 }), hexBytes(1, 16), fc.array(anyFd, { minLength: 1, maxLength: 2 }), fc.integer({ min: 4, max: 31 })).map(
    ([s, how, n, extra, fds, rb]): MsgStep => {
      const flags = HeaderFlag.VERSION | (s.needReply ? HeaderFlag.NEED_REPLY : 0);
      switch (how) {
        case 0:
          return { ...s, flags: flags | HeaderFlag.REPLY };
        case 1:
          return { ...s, flags: (flags & ~HeaderFlag.VERSION_MASK) | [0, 2, 3][n % 3]! };
        case 2:
          return { ...s, flags: (flags | (1 << rb)) >>> 0 };
        case 3:
          return { ...s, trim: n };
        case 4:
          return { ...s, extraHex: extra };
        default:
          return (s.fds?.length ?? 0) > 0 && n % 2 === 0 ? { ...s, fds: s.fds!.slice(1) } : { ...s, fds: [...(s.fds ?? []), ...fds] };
      }
    },
  );
}

export function stepArb(g: GenContext): Arb<Step> {
  const setup = setupStep(g);
  const q = fc.integer({ min: 0, max: g.queues - 1 });
  const arb: Arb<Step> = fc.oneof(
    { weight: 10, arbitrary: setup },
    { weight: 6, arbitrary: hostileStep(g) },
    { weight: 3, arbitrary: mutated(setup) },
    { weight: 2, arbitrary: q.map((queue): Step => ({ op: 'kick', queue })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom<'guestA' | 'guestB'>('guestA', 'guestB'), fc.constantFrom(0, 4096, 1 << 20, GUEST_BYTES, GUEST_BYTES))
        .map(([fd, size]): Step => ({ op: 'truncate', fd, size })),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(q, fc.constantFrom(0, AVAIL_OFF, AVAIL_OFF + 2, USED_OFF), fc.integer({ min: 0, max: 64 }), hexBytes(1, 32))
        .map(([qq, part, off, hex]): Step => ({ op: 'scribble', offset: qq * RING_STRIDE + part + off, hex })),
    },
  );
  return SKIP_KNOWN ? arb.filter((s) => !skipKnown(s, g.queues)) : arb;
}

/** A message cut short (half a header, or a header and half a payload): the last step of a sequence. */
export function abruptArb(g: GenContext): Arb<Step> {
  return fc.tuple(fc.oneof(setupStep(g), hostileStep(g)), fc.integer({ min: 1, max: 1 << 16 })).map(([s, r]): Step => {
    const len = msgWire(s).length;
    const cut = len > HEADER_SIZE && r % 2 === 0 ? HEADER_SIZE + (r % (len - HEADER_SIZE)) : 1 + (r % Math.min(len - 1, HEADER_SIZE - 1));
    return { op: 'abrupt', cut, step: s };
  });
}

/** The usual negotiation, as a prefix that takes sequences deeper into the state machine. */
export function negotiation(g: GenContext): Step[] {
  const pf = g.offeredProtocol & (REPLY_ACK | bit(ProtocolFeature.MQ) | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) | bit(ProtocolFeature.STATUS) | bit(ProtocolFeature.RESET_DEVICE));
  return [
    m('GET_FEATURES', undefined, false),
    m('GET_PROTOCOL_FEATURES', undefined, false),
    m('SET_PROTOCOL_FEATURES', pf, true),
    m('SET_OWNER', undefined, true),
    // split rings (the ring steps write split layouts): VIRTIO_F_RING_PACKED is left out like EVENT_IDX
    m('SET_FEATURES', g.offered & ~bit(29) & ~bit(VIRTIO_F_RING_PACKED), true),
  ];
}

/** Memory and every ring set up and enabled, as a VMM does before the guest runs. */
export function fullSetup(g: GenContext): Step[] {
  const out: Step[] = [m('SET_MEM_TABLE', { regions: [REGION_A] }, true, ['guestA'])];
  for (let index = 0; index < g.queues; index++) {
    out.push(
      m('SET_VRING_NUM', { index, num: 64 }, true),
      m('SET_VRING_BASE', { index, num: 0 }, true),
      m('SET_VRING_ADDR', { index, flags: 0, ...ringAddr(index), log: 0n }, true),
      m('SET_VRING_CALL', { index, noFd: false }, true, ['eventfd']),
      m('SET_VRING_KICK', { index, noFd: false }, true, [`kick${index}`]),
      m('SET_VRING_ENABLE', { index, num: 1 }, true),
    );
  }
  return out;
}

export function sequenceArb(g: GenContext, maxSteps = 24): Arb<Step[]> {
  const prefix = fc.integer({ min: 0, max: 9 }).map((x) => (x < 2 ? [] : x < 5 ? negotiation(g) : [...negotiation(g), ...fullSetup(g)]));
  const end = fc.oneof({ weight: 3, arbitrary: fc.constant<Step[]>([]) }, { weight: 1, arbitrary: abruptArb(g).map((s) => [s]) });
  return fc
    .tuple(prefix, fc.array(stepArb(g), { minLength: 1, maxLength: maxSteps, size: 'medium' }), end)
    .map(([pre, steps, last]) => [...pre, ...steps, ...last]);
}
