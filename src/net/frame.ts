/**
 * virtio-net on the wire: feature bits, the virtio_net_hdr in front of every frame, and the offload rules the
 * switch applies when a frame moves from one port's TX ring to another port's RX ring. Pure functions, shared by
 * the switch workers and the tests.
 *
 * The offload rule (why frames are never "fixed up" by segmentation):
 *   - a frame with gso_type NONE and NEEDS_CSUM goes to a receiver that negotiated GUEST_CSUM as is (the
 *     receiver's stack accepts a partial checksum, as from a tap device); to any other receiver the switch
 *     computes the checksum in software (from the sender's memory, written into the receiver's copy) and clears
 *     NEEDS_CSUM: the frame is still copied once.
 *   - a GSO frame (TSO4/TSO6/UFO, with or without ECN) goes only to a receiver that negotiated the matching
 *     GUEST_* bit (and GUEST_ECN for ECN); otherwise it is DROPPED and counted (rxDropOffload). Segmenting it
 *     would mean building new frames (new IP ids, lengths, sequence numbers, checksums) - not a copy. Senders
 *     only emit GSO frames when they negotiated HOST_TSO*, so a switch whose ports are all Linux guests never
 *     drops; where ports are mixed (a DPDK port without LRO), start the switch with offloads off
 *     (`vhost-wasm net --no-offloads`): then no port is offered CSUM/HOST_TSO and every sender segments and
 *     checksums itself.
 *   - UFO and ECN are not offered at all: Linux has not generated UFO since 4.14, and nothing here needs ECN
 *     inside GSO frames (Linux then segments CWR-marked frames itself).
 */

// ---- virtio-net feature bits (virtio 1.x 5.1.3) ----
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;

/** config space status bits */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

// ---- struct virtio_net_hdr (5.1.6) ----
export const HDR_FLAGS = 0; // u8
export const HDR_GSO_TYPE = 1; // u8
export const HDR_HDR_LEN = 2; // le16
export const HDR_GSO_SIZE = 4; // le16
export const HDR_CSUM_START = 6; // le16
export const HDR_CSUM_OFFSET = 8; // le16
export const HDR_NUM_BUFFERS = 10; // le16, present with VERSION_1 or MRG_RXBUF
/** header length without num_buffers (legacy, no MRG_RXBUF) */
export const HDR_LEN_LEGACY = 10;
/** header length with num_buffers (VERSION_1 or MRG_RXBUF) */
export const HDR_LEN = 12;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export const ETH_HLEN = 14;
export const ETH_ALEN = 6;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_RARP = 0x8035;
/** largest frame (after the virtio_net_hdr) the switch forwards: a 64 KiB GSO frame plus link headers */
export const MAX_FRAME = 65536 + 64;

// ---- what a receiver can take: a small bit set computed once per ring start from the acked features ----
export const CAP_CSUM = 1; // GUEST_CSUM
export const CAP_TSO4 = 2;
export const CAP_TSO6 = 4;
export const CAP_UFO = 8;
export const CAP_ECN = 16;
export const CAP_MRG = 32; // MRG_RXBUF: a frame may span several RX chains
export const CAP_MTU = 64; // F_MTU acked: frames above the MTU must not be delivered

const has = (f: bigint, b: number): boolean => ((f >> BigInt(b)) & 1n) === 1n;

/** Receiver capabilities from a port's negotiated virtio features. */
export function receiverCaps(features: bigint): number {
  let c = 0;
  if (has(features, VIRTIO_NET_F_GUEST_CSUM)) c |= CAP_CSUM;
  if (has(features, VIRTIO_NET_F_GUEST_TSO4)) c |= CAP_TSO4;
  if (has(features, VIRTIO_NET_F_GUEST_TSO6)) c |= CAP_TSO6;
  if (has(features, VIRTIO_NET_F_GUEST_UFO)) c |= CAP_UFO;
  if (has(features, VIRTIO_NET_F_GUEST_ECN)) c |= CAP_ECN;
  if (has(features, VIRTIO_NET_F_MRG_RXBUF)) c |= CAP_MRG;
  if (has(features, VIRTIO_NET_F_MTU)) c |= CAP_MTU;
  return c;
}

/** Length of the virtio_net_hdr on this port's rings (5.1.6: 12 with VERSION_1 or MRG_RXBUF, else 10). */
export function netHdrLen(features: bigint): number {
  return has(features, 32) || has(features, VIRTIO_NET_F_MRG_RXBUF) ? HDR_LEN : HDR_LEN_LEGACY;
}

export const OFFLOAD_PASS = 0;
/** deliver, with the checksum computed by the switch and NEEDS_CSUM cleared */
export const OFFLOAD_CSUM = 1;
export const OFFLOAD_DROP = 2;

/** What to do with a frame carrying (flags, gsoType) for a receiver with capabilities `caps` (see the top). */
export function offloadAction(flags: number, gsoType: number, caps: number): number {
  const gso = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  if (gso !== VIRTIO_NET_HDR_GSO_NONE) {
    const need =
      gso === VIRTIO_NET_HDR_GSO_TCPV4 ? CAP_TSO4 : gso === VIRTIO_NET_HDR_GSO_TCPV6 ? CAP_TSO6 : gso === VIRTIO_NET_HDR_GSO_UDP ? CAP_UFO : -1;
    if (need < 0 || (caps & need) === 0) return OFFLOAD_DROP;
    if (gsoType & VIRTIO_NET_HDR_GSO_ECN && (caps & CAP_ECN) === 0) return OFFLOAD_DROP;
    // GUEST_TSO*/UFO require GUEST_CSUM (5.1.3.1): the partial checksum goes along
    return (caps & CAP_CSUM) !== 0 || (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0 ? OFFLOAD_PASS : OFFLOAD_DROP;
  }
  if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM && (caps & CAP_CSUM) === 0) return OFFLOAD_CSUM;
  return OFFLOAD_PASS;
}

/** The Internet checksum (RFC 1071) of `data`, folded and complemented, 0 mapped to 0xffff (either is valid). */
export function internetChecksum(data: Uint8Array, start = 0, end = data.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += (i - start) & 1 ? data[i]! : data[i]! << 8;
  return foldChecksum(sum);
}

export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  const r = ~sum & 0xffff;
  return r === 0 ? 0xffff : r;
}

/** Apply a partial checksum in place (what a device does for NEEDS_CSUM): frame = bytes after the header. */
export function completeChecksum(frame: Uint8Array, csumStart: number, csumOffset: number): void {
  const at = csumStart + csumOffset;
  if (at + 2 > frame.length) throw new RangeError(`checksum field at ${at} beyond the ${frame.length}-byte frame`);
  const c = internetChecksum(frame, csumStart);
  frame[at] = c >>> 8;
  frame[at + 1] = c & 0xff;
}

// ---- MAC addresses ----
export function parseMac(s: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(s.trim());
  if (!m) throw new Error(`'${s}' is not a MAC address (xx:xx:xx:xx:xx:xx)`);
  return Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A random locally administered unicast MAC (02:xx:...). */
export function randomMac(rand: () => number = Math.random): Uint8Array {
  const m = Uint8Array.from({ length: 6 }, () => Math.floor(rand() * 256));
  m[0] = (m[0]! & 0xfc) | 0x02;
  return m;
}

export function isMulticast(mac: Uint8Array, at = 0): boolean {
  return (mac[at]! & 1) !== 0;
}

/**
 * The RARP announcement QEMU sends for a migrated NIC (net/announce.c): broadcast, ethertype 0x8035, reverse
 * request with sender = target = `mac`, padded to the 60-byte minimum.
 */
export function rarpFrame(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f.set(mac.subarray(0, 6), 6);
  const dv = new DataView(f.buffer);
  dv.setUint16(12, ETHERTYPE_RARP);
  dv.setUint16(14, 1); // htype ethernet
  dv.setUint16(16, 0x0800); // ptype IPv4
  f[18] = 6; // hlen
  f[19] = 4; // plen
  dv.setUint16(20, 3); // op: reverse request
  f.set(mac.subarray(0, 6), 22); // sha
  // spa 0.0.0.0
  f.set(mac.subarray(0, 6), 32); // tha
  // tpa 0.0.0.0
  return f;
}
