/**
 * The switch's learning table, MAC -> port, in a SharedArrayBuffer that every switch worker (and the main thread,
 * which flushes a port when its front-end goes) uses at once.
 *
 * Reads are lock-free (a sequence counter: readers retry when a write overlapped them); writes take a spin lock
 * and are rare: a worker writes only when a source MAC is new or moved to another port. Open addressing with
 * linear probing and no deletions: a flush rebuilds the table without the flushed port's entries.
 *
 * Layout (Int32 words): [0] lock, [1] sequence (odd while a write is in progress), [2] entries, [3] spare,
 * then SLOTS slots of two words: w0 = MAC bytes 0-3, w1 = MAC bytes 4-5 << 16 | (port + 1) (0 = empty slot).
 */
export const MAC_TABLE_SLOTS = 4096;
const HDR_WORDS = 4;
const LOCK = 0;
const SEQ = 1;
const COUNT = 2;
/** at most this share of the slots is filled (probe sequences stay short); beyond it nothing new is learnt */
const MAX_FILL = (MAC_TABLE_SLOTS * 3) >> 2;

export function macTableBytes(): number {
  return (HDR_WORDS + 2 * MAC_TABLE_SLOTS) * 4;
}

export class MacTable {
  readonly words: Int32Array;

  constructor(readonly sab: SharedArrayBuffer = new SharedArrayBuffer(macTableBytes())) {
    this.words = new Int32Array(sab);
  }

  /** key words of the MAC at mac[at..at+6) */
  static key0(mac: Uint8Array, at = 0): number {
    return ((mac[at]! << 24) | (mac[at + 1]! << 16) | (mac[at + 2]! << 8) | mac[at + 3]!) | 0;
  }

  static key1(mac: Uint8Array, at = 0): number {
    return ((mac[at + 4]! << 24) | (mac[at + 5]! << 16)) | 0;
  }

  private static slotOf(k0: number, k1: number): number {
    const h = Math.imul(k0 ^ Math.imul(k1 >>> 16, 0x9e3779b1), 0x85ebca6b);
    return (h ^ (h >>> 15)) & (MAC_TABLE_SLOTS - 1);
  }

  /** Port of the MAC, or -1. */
  lookup(k0: number, k1: number): number {
    const w = this.words;
    for (;;) {
      const s1 = Atomics.load(w, SEQ);
      if (s1 & 1) continue; // a write is in progress
      const r = this.probe(k0, k1);
      if (Atomics.load(w, SEQ) === s1) return r;
    }
  }

  private probe(k0: number, k1: number): number {
    const w = this.words;
    let s = MacTable.slotOf(k0, k1);
    for (let i = 0; i < MAC_TABLE_SLOTS; i++) {
      const at = HDR_WORDS + 2 * s;
      const w1 = w[at + 1]!;
      const pf = w1 & 0xffff;
      if (pf === 0) return -1;
      if (w[at] === k0 && (w1 & 0xffff0000) === (k1 & 0xffff0000)) return pf - 1;
      s = (s + 1) & (MAC_TABLE_SLOTS - 1);
    }
    return -1;
  }

  /** Record that the MAC was seen on `port` (no-op when already known there). Returns true if the table changed. */
  learn(k0: number, k1: number, port: number): boolean {
    if (this.lookup(k0, k1) === port) return false;
    this.lock();
    try {
      return this.insertLocked(k0, k1, port);
    } finally {
      this.unlock();
    }
  }

  private insertLocked(k0: number, k1: number, port: number): boolean {
    const w = this.words;
    let s = MacTable.slotOf(k0, k1);
    for (let i = 0; i < MAC_TABLE_SLOTS; i++) {
      const at = HDR_WORDS + 2 * s;
      const w1 = w[at + 1]!;
      if ((w1 & 0xffff) === 0) {
        if (w[COUNT]! >= MAX_FILL) return false; // full: unknown MACs are flooded
        this.beginWrite();
        w[at] = k0;
        w[at + 1] = (k1 & 0xffff0000) | (port + 1);
        w[COUNT]!++;
        this.endWrite();
        return true;
      }
      if (w[at] === k0 && (w1 & 0xffff0000) === (k1 & 0xffff0000)) {
        if ((w1 & 0xffff) === port + 1) return false;
        this.beginWrite();
        w[at + 1] = (k1 & 0xffff0000) | (port + 1); // the MAC moved
        this.endWrite();
        return true;
      }
      s = (s + 1) & (MAC_TABLE_SLOTS - 1);
    }
    return false;
  }

  /** Forget every MAC learnt on `port` (its front-end went away). Returns how many. */
  flushPort(port: number): number {
    this.lock();
    try {
      const entries = this.rawEntries();
      const keep = entries.filter((e) => e[2] !== port);
      if (keep.length === entries.length) return 0;
      // rebuild aside, then swap it in inside one write section: readers never see a half table
      const next = new MacTable(new SharedArrayBuffer(macTableBytes()));
      for (const [k0, k1, p] of keep) next.insertLocked(k0, k1, p);
      this.beginWrite();
      this.words.set(next.words.subarray(COUNT), COUNT);
      this.endWrite();
      return entries.length - keep.length;
    } finally {
      this.unlock();
    }
  }

  private rawEntries(): [number, number, number][] {
    const w = this.words;
    const out: [number, number, number][] = [];
    for (let s = 0; s < MAC_TABLE_SLOTS; s++) {
      const at = HDR_WORDS + 2 * s;
      const pf = w[at + 1]! & 0xffff;
      if (pf !== 0) out.push([w[at]!, w[at + 1]! & 0xffff0000, pf - 1]);
    }
    return out;
  }

  /** Every (MAC, port) pair: diagnostics and tests. */
  entries(): { mac: string; port: number }[] {
    return this.rawEntries().map(([k0, k1, port]) => {
      const b = [k0 >>> 24, (k0 >>> 16) & 0xff, (k0 >>> 8) & 0xff, k0 & 0xff, k1 >>> 24, (k1 >>> 16) & 0xff];
      return { mac: b.map((x) => x.toString(16).padStart(2, '0')).join(':'), port };
    });
  }

  /** Changes whenever an entry is written (readers may cache a lookup while it holds). */
  get generation(): number {
    return Atomics.load(this.words, SEQ);
  }

  get size(): number {
    return Atomics.load(this.words, COUNT);
  }

  private lock(): void {
    while (Atomics.compareExchange(this.words, LOCK, 0, 1) !== 0) {
      /* spin: holders keep it for a few stores */
    }
  }

  private unlock(): void {
    Atomics.store(this.words, LOCK, 0);
  }

  private beginWrite(): void {
    Atomics.add(this.words, SEQ, 1);
  }

  private endWrite(): void {
    Atomics.add(this.words, SEQ, 1);
  }
}
