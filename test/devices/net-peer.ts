/**
 * A virtio-net "guest" for the switch tests, on the built-in front-end: posts RX buffers on rx queues, sends
 * frames (virtio_net_hdr + frame) on tx queues, and reassembles received frames (MRG_RXBUF included).
 */
import { Frontend } from '../../src/frontend/frontend.js';
import * as F from '../../src/net/frame.js';
import { bit } from '../../src/vhost-user/constants.js';

export interface Received {
  hdr: Buffer;
  frame: Buffer;
  /** RX buffers the frame took (num_buffers) */
  buffers: number;
  /** used lengths of those buffers */
  lens: number[];
}

export interface TxHdr {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}

const RX_AREA = 512 * 1024; // first half of each rx queue's buffer area
export class NetPeer {
  private readonly rxHeads: Map<number, number>[];
  private readonly rxNext: number[];
  readonly hdrLen: number;

  private constructor(
    readonly fe: Frontend,
    readonly pairs: number,
  ) {
    this.rxHeads = Array.from({ length: pairs }, () => new Map());
    this.rxNext = new Array<number>(pairs).fill(0);
    this.hdrLen = F.netHdrLen(fe.features);
  }

  static async connect(socketPath: string, pairs = 1, features: number[] = [], opts: { enableRings?: boolean } = {}): Promise<NetPeer> {
    let extra = 0n;
    for (const f of features) extra |= bit(f);
    const fe = await Frontend.connect({ socketPath, queues: 2 * pairs, queueSize: 256, extraFeatures: extra, enableRings: opts.enableRings });
    return new NetPeer(fe, pairs);
  }

  has(feature: number): boolean {
    return ((this.fe.features >> BigInt(feature)) & 1n) === 1n;
  }

  /** Make `count` RX buffers of `len` bytes available on pair `pair`. */
  postRx(pair: number, count: number, len = 2048): void {
    for (let i = 0; i < count; i++) {
      if (this.rxNext[pair]! + len > RX_AREA) this.rxNext[pair] = 0;
      const off = this.rxNext[pair]!;
      this.rxNext[pair]! += len;
      this.fe.buffer(2 * pair, off, len).fill(0xee);
      const head = this.fe.submit(2 * pair, [{ offset: off, len, write: true }]);
      this.rxHeads[pair]!.set(head, off);
    }
  }

  /** Send one frame on pair `pair` and wait until the switch has taken it (TX used element). */
  async send(pair: number, frame: Uint8Array, h: TxHdr = {}, splitAt?: number): Promise<void> {
    const q = 2 * pair + 1;
    const total = this.hdrLen + frame.length;
    const hdr = Buffer.alloc(this.hdrLen);
    hdr.writeUInt8(h.flags ?? 0, F.HDR_FLAGS);
    hdr.writeUInt8(h.gsoType ?? 0, F.HDR_GSO_TYPE);
    hdr.writeUInt16LE(h.hdrLen ?? 0, F.HDR_HDR_LEN);
    hdr.writeUInt16LE(h.gsoSize ?? 0, F.HDR_GSO_SIZE);
    hdr.writeUInt16LE(h.csumStart ?? 0, F.HDR_CSUM_START);
    hdr.writeUInt16LE(h.csumOffset ?? 0, F.HDR_CSUM_OFFSET);
    const buf = this.fe.buffer(q, 0, total);
    buf.set(hdr, 0);
    buf.set(frame, this.hdrLen);
    // the header in a descriptor of its own (as Linux without ANY_LAYOUT), the frame optionally split again
    // (splitAt 0: header and frame in one descriptor, as virtio-user and Linux with ANY_LAYOUT send them)
    const segs = [{ offset: 0, len: splitAt === 0 ? total : this.hdrLen, write: false }];
    if (splitAt === 0) {
      // one descriptor
    } else if (splitAt !== undefined && splitAt > 0 && splitAt < frame.length) {
      segs.push({ offset: this.hdrLen, len: splitAt, write: false });
      segs.push({ offset: this.hdrLen + splitAt, len: frame.length - splitAt, write: false });
    } else segs.push({ offset: this.hdrLen, len: frame.length, write: false });
    this.fe.submit(q, segs);
    const used = await this.fe.waitUsed(q);
    if (used.len !== 0) throw new Error(`TX used length ${used.len}, expected 0`);
  }

  /** The next frame delivered on pair `pair`. */
  async recv(pair: number, timeoutMs = 2000): Promise<Received> {
    const q = 2 * pair;
    const first = await this.fe.waitUsed(q, timeoutMs);
    const off = this.rxHeads[pair]!.get(first.id);
    if (off === undefined) throw new Error(`used id ${first.id} is not a posted RX buffer`);
    this.rxHeads[pair]!.delete(first.id);
    if (first.len < this.hdrLen) return { hdr: Buffer.alloc(0), frame: Buffer.alloc(0), buffers: 1, lens: [first.len] };
    const hdr = Buffer.from(this.fe.buffer(q, off, this.hdrLen));
    const parts = [Buffer.from(this.fe.buffer(q, off + this.hdrLen, first.len - this.hdrLen))];
    const lens = [first.len];
    const buffers = this.hdrLen === F.HDR_LEN ? hdr.readUInt16LE(F.HDR_NUM_BUFFERS) : 1;
    for (let i = 1; i < buffers; i++) {
      const u = await this.fe.waitUsed(q, timeoutMs);
      const o = this.rxHeads[pair]!.get(u.id);
      if (o === undefined) throw new Error(`used id ${u.id} is not a posted RX buffer`);
      this.rxHeads[pair]!.delete(u.id);
      parts.push(Buffer.from(this.fe.buffer(q, o, u.len)));
      lens.push(u.len);
    }
    return { hdr, frame: Buffer.concat(parts), buffers, lens };
  }

  /** Nothing arrives on pair `pair` within `ms`. */
  async expectNothing(pair: number, ms = 150): Promise<void> {
    let got: Received | undefined;
    try {
      got = await this.recv(pair, ms);
    } catch {
      return;
    }
    throw new Error(`pair ${pair} received an unexpected ${got.frame.length}-byte frame`);
  }

  close(): void {
    this.fe.close();
  }
}

/** An Ethernet frame: dst, src, ethertype, then `payload` (or `len` bytes of a pattern). */
export function ethFrame(dst: Uint8Array, src: Uint8Array, etherType: number, payload: Uint8Array | number): Buffer {
  const body = typeof payload === 'number' ? Buffer.from(Array.from({ length: payload }, (_, i) => (i * 7 + 3) & 0xff)) : Buffer.from(payload);
  const f = Buffer.alloc(F.ETH_HLEN + body.length);
  f.set(dst, 0);
  f.set(src, 6);
  f.writeUInt16BE(etherType, 12);
  f.set(body, F.ETH_HLEN);
  return f;
}

export const BROADCAST = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
export function mac(last: number): Uint8Array {
  return new Uint8Array([0x02, 0x00, 0x5e, 0x00, 0x00, last]);
}

/**
 * An IPv4/UDP frame whose UDP checksum field holds the pseudo-header sum, as a driver leaves it for
 * NEEDS_CSUM (csum_start = 34, csum_offset = 6).
 */
export function udpPartialFrame(dst: Uint8Array, src: Uint8Array, payloadLen: number): { frame: Buffer; csumStart: number; csumOffset: number } {
  const udpLen = 8 + payloadLen;
  const ip = Buffer.alloc(20);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(20 + udpLen, 2);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(17, 9);
  Buffer.from([10, 0, 0, 1]).copy(ip, 12);
  Buffer.from([10, 0, 0, 2]).copy(ip, 16);
  const ipc = F.internetChecksum(ip);
  ip.writeUInt16BE(ipc === 0xffff ? 0 : ipc, 10);
  const udp = Buffer.alloc(udpLen);
  udp.writeUInt16BE(4000, 0);
  udp.writeUInt16BE(5000, 2);
  udp.writeUInt16BE(udpLen, 4);
  for (let i = 0; i < payloadLen; i++) udp[8 + i] = (i * 13 + 1) & 0xff;
  // pseudo header: src, dst, 0, proto, udp length; folded, NOT complemented
  let sum = 0;
  for (let i = 12; i < 20; i += 2) sum += ip.readUInt16BE(i);
  sum += 17 + udpLen;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  udp.writeUInt16BE(sum, 6);
  return { frame: ethFrame(dst, src, 0x0800, Buffer.concat([ip, udp])), csumStart: 34, csumOffset: 6 };
}

/** True when the UDP checksum of an IPv4/UDP frame verifies. */
export function udpChecksumOk(frame: Buffer): boolean {
  const ip = frame.subarray(14, 34);
  const udp = frame.subarray(34);
  let sum = 0;
  for (let i = 12; i < 20; i += 2) sum += ip.readUInt16BE(i);
  sum += 17 + udp.length;
  for (let i = 0; i + 1 < udp.length; i += 2) sum += udp.readUInt16BE(i);
  if (udp.length & 1) sum += udp[udp.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}
