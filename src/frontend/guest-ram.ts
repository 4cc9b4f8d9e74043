/**
 * The built-in front-end's guest: memfd-backed RAM mapped into the front-end's own shared Memory (so the
 * driver runs in wasm on it, like the back-end's engine), and where each queue's rings and buffers sit.
 */
import { GuestMemory, type MappedRegion } from '../memory/guest-memory.js';
import { closeQuietly, dup, ftruncate, memfdCreate, MFD_ALLOW_SEALING, MFD_CLOEXEC } from '../sys/syscalls.js';

export interface RingPlacement {
  /** wasm addresses in the front-end's memory */
  desc: number;
  avail: number;
  used: number;
  buffers: number;
  /** front-end "user" addresses sent in SET_VRING_ADDR (host addresses, as QEMU sends) */
  descUva: bigint;
  availUva: bigint;
  usedUva: bigint;
}

const PAGE = 4096;
const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/** Bytes one queue needs: rings plus `bufferBytes` of buffers. */
export function queueFootprint(size: number, bufferBytes: number): number {
  const desc = alignUp(16 * size, PAGE);
  const avail = alignUp(6 + 2 * size, PAGE);
  const used = alignUp(6 + 8 * size, PAGE);
  return desc + avail + used + alignUp(bufferBytes, PAGE);
}

export class GuestRam {
  readonly mem = new GuestMemory();
  readonly fd: number;
  readonly region: MappedRegion;
  private next = 0;

  constructor(readonly bytes: number) {
    this.fd = memfdCreate('vhost-wasm-guest', MFD_CLOEXEC | MFD_ALLOW_SEALING);
    try {
      ftruncate(this.fd, bytes);
      // the mapping takes its own fd; ours is the one passed to the back-end
      this.region = this.mem.add({ gpa: 0n, size: BigInt(bytes), uaddr: 0n, mmapOffset: 0n }, dup(this.fd));
    } catch (e) {
      closeQuietly(this.fd);
      throw e;
    }
    // QEMU sends its own virtual address of the region; ours is where the front-end mapped it
    this.region.uaddr = this.mem.hostAddress(this.region.wasmAddr);
  }

  /** gpa = wasm address + delta (the driver writes gpas into descriptors) */
  get gpaDelta(): bigint {
    return -BigInt(this.region.wasmAddr) & 0xffff_ffff_ffff_ffffn;
  }

  uvaOf(wasmAddr: number): bigint {
    return this.mem.hostAddress(wasmAddr);
  }

  /** Carve the next queue's rings and `bufferBytes` of buffers out of guest RAM. */
  placeRing(size: number, bufferBytes: number): RingPlacement {
    const base = this.region.wasmAddr + this.next;
    const desc = base;
    const avail = desc + alignUp(16 * size, PAGE);
    const used = avail + alignUp(6 + 2 * size, PAGE);
    const buffers = used + alignUp(6 + 8 * size, PAGE);
    this.next += queueFootprint(size, bufferBytes);
    if (this.next > this.bytes) throw new Error(`guest RAM of ${this.bytes} bytes is too small for the rings`);
    return { desc, avail, used, buffers, descUva: this.uvaOf(desc), availUva: this.uvaOf(avail), usedUva: this.uvaOf(used) };
  }

  close(): void {
    this.mem.release();
    closeQuietly(this.fd);
  }
}
