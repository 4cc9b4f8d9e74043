/**
 * SET_VRING_BASE / GET_VRING_BASE payloads (A.6). Split: bits 0-15 the next avail index, 16-31 reserved.
 * Packed: bits 0-14 the next avail index and bit 15 the driver (avail) wrap counter, bits 16-30 the used index
 * and bit 31 the device (used) wrap counter; each half is the engine's position encoding (index | wrap << 15).
 */

export interface PackedBase {
  lastAvail: number;
  nextUsed: number;
}

/**
 * The positions in a packed vring base. A front-end that leaves bits 16-31 zero (DPDK virtio-user sends only the
 * avail half) gets the used position equal to the avail one: nothing is in flight when a ring (re)starts that way.
 */
export function decodePackedBase(num: number): PackedBase {
  const lastAvail = num & 0xffff;
  const used = num >>> 16;
  return { lastAvail, nextUsed: used === 0 ? lastAvail : used };
}

export function encodePackedBase(lastAvail: number, nextUsed: number): number {
  return ((lastAvail & 0xffff) | ((nextUsed & 0xffff) << 16)) >>> 0;
}
