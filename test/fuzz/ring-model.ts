/**
 * Hostile split rings (B.1) for queue 0 of a built-in front-end, and an independent reference of what a
 * device must do with them.
 *
 * A RingCase is JSON-friendly (the corpus uses the same form, see corpus/README.md):
 *   queueSize   N (power of two)
 *   eventIdx    negotiate VIRTIO_F_EVENT_IDX
 *   base        the ring's first avail/used index (the ring is restarted there when it is not 0)
 *   descs       descriptor table entries 0.. (the rest stay zero)
 *   tables      indirect tables, table t at TABLE_AT + t * TABLE_STRIDE of queue 0's buffer area
 *   heads       avail ring entries, from slot base % N on
 *   publish     avail.idx - base that is published (may exceed N, or be less than heads.length)
 * with each descriptor { addr, len, flags, next } and addr one of
 *   { buf: off }              queue 0's buffer area + off
 *   { table: t, off? }        indirect table t (+ off)
 *   { ring: 'desc' | 'avail' | 'used', off }   queue 0's own rings
 *   { ramEnd: k }             guest RAM size + k (k < 0: inside, near the end)
 *   { gpa: "0x..." }          any guest-physical address
 */
import fc from 'fast-check';
import { SEG_CAP, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/engine/layout.js';

export type Addr = { buf: number } | { table: number; off?: number } | { ring: 'desc' | 'avail' | 'used'; off: number } | { ramEnd: number } | { gpa: string };

export interface DescSpec {
  addr: Addr;
  len: number;
  flags: number;
  next: number;
}

export interface RingCase {
  queueSize: number;
  eventIdx: boolean;
  base: number;
  descs: DescSpec[];
  tables: DescSpec[][];
  heads: number[];
  publish: number;
  /** what the generator did to the well-formed chains (for reports) */
  mutations?: string[];
}

export const BUFFER_BYTES = 0x1_0000;
export const TABLE_AT = 0x8000;
export const TABLE_STRIDE = 0x800; // 128 entries
export const MAX_TABLES = 8;

/** Where queue 0's parts lie, as guest-physical addresses (gpa = offset into guest RAM). */
export interface RingLayout {
  ramBytes: number;
  desc: number;
  avail: number;
  used: number;
  buffers: number;
}

const U64 = (1n << 64n) - 1n;

export function gpaOf(a: Addr, l: RingLayout): bigint {
  if ('buf' in a) return BigInt(l.buffers + a.buf);
  if ('table' in a) return BigInt(l.buffers + TABLE_AT + a.table * TABLE_STRIDE + (a.off ?? 0));
  if ('ring' in a) return BigInt(l[a.ring] + a.off);
  if ('ramEnd' in a) return (BigInt(l.ramBytes) + BigInt(a.ramEnd)) & U64;
  return BigInt(a.gpa) & U64;
}

/** Write the case's descriptors, tables and avail entries (not avail.idx) into guest RAM (`ram` = its bytes). */
export function writeCase(c: RingCase, l: RingLayout, ram: DataView): void {
  const put = (at: number, d: DescSpec): void => {
    ram.setBigUint64(at, gpaOf(d.addr, l), true);
    ram.setUint32(at + 8, d.len >>> 0, true);
    ram.setUint16(at + 12, d.flags & 0xffff, true);
    ram.setUint16(at + 14, d.next & 0xffff, true);
  };
  c.descs.slice(0, c.queueSize).forEach((d, i) => put(l.desc + 16 * i, d));
  c.tables.slice(0, MAX_TABLES).forEach((t, ti) =>
    t.slice(0, TABLE_STRIDE / 16).forEach((d, i) => put(l.buffers + TABLE_AT + ti * TABLE_STRIDE + 16 * i, d)),
  );
  c.heads.slice(0, c.queueSize).forEach((h, k) => ram.setUint16(l.avail + 4 + 2 * ((c.base + k) % c.queueSize), h & 0xffff, true));
}

// ---------------------------------------------------------------------------------------------------
// reference: B.1's device rules, written from the spec (not from the engine)
// ---------------------------------------------------------------------------------------------------

export interface ChainVerdict {
  ok: boolean;
  why?: string;
  writable: number;
}

/** Walk the chain at `head` in guest RAM `ram` (gpa = offset) the way B.1 allows a device to accept it. */
export function referenceChain(ram: DataView, l: RingLayout, n: number, head: number): ChainVerdict {
  const bad = (why: string): ChainVerdict => ({ ok: false, why, writable: 0 });
  if (head >= n) return bad(`head ${head} >= queue size ${n}`);
  const inRam = (addr: bigint, len: bigint): boolean => addr + len <= BigInt(l.ramBytes); // also rejects wrapping
  let table = l.desc;
  let limit = n;
  let indirect = false;
  let i = head;
  let count = 0;
  let sawWrite = false;
  let rd = 0n;
  let wr = 0n;
  let segs = 0;
  for (;;) {
    if (count >= limit) return bad(indirect ? 'indirect chain loops' : 'chain loops (more descriptors than the table)');
    count++;
    const at = table + 16 * i;
    const addr = ram.getBigUint64(at, true);
    const len = ram.getUint32(at + 8, true);
    const flags = ram.getUint16(at + 12, true);
    const next = ram.getUint16(at + 14, true);
    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (flags & VIRTQ_DESC_F_NEXT) return bad('INDIRECT together with NEXT');
      if (indirect) return bad('nested indirect table');
      if (len === 0 || len % 16 !== 0) return bad(`indirect table length ${len}`);
      if (!inRam(addr, BigInt(len))) return bad('indirect table outside guest memory');
      table = Number(addr);
      limit = len / 16;
      indirect = true;
      i = 0;
      count = 0;
      continue;
    }
    const write = (flags & VIRTQ_DESC_F_WRITE) !== 0;
    if (write) sawWrite = true;
    else if (sawWrite) return bad('readable descriptor after a writable one');
    if (len !== 0) {
      if (write) wr += BigInt(len);
      else rd += BigInt(len);
      if (rd > 0xffff_ffffn || wr > 0xffff_ffffn) return bad('chain longer than 4 GiB');
      if (!inRam(addr, BigInt(len))) return bad(`buffer 0x${addr.toString(16)}+${len} outside guest memory`);
      segs++;
    }
    if (!(flags & VIRTQ_DESC_F_NEXT)) break;
    if (next >= limit) return bad(`next ${next} >= ${limit}`);
    i = next;
  }
  if (segs > SEG_CAP) return bad('more segments than the engine hands out');
  return { ok: true, writable: Number(wr) };
}

export interface Expected {
  /** chains the device may complete: the valid prefix of what was published */
  complete: number;
  /** the device must stop the queue (NEEDS_RESET) */
  broken: boolean;
  why?: string;
  heads: number[];
}

export function expectedOutcome(c: RingCase, l: RingLayout, ram: DataView): Expected {
  const n = c.queueSize;
  const pending = c.publish & 0xffff;
  if (pending > n) return { complete: 0, broken: true, why: `avail.idx moved ${pending} > ${n}`, heads: [] };
  const heads: number[] = [];
  for (let k = 0; k < pending; k++) {
    const head = ram.getUint16(l.avail + 4 + 2 * ((c.base + k) % n), true);
    const v = referenceChain(ram, l, n, head);
    if (!v.ok) return { complete: k, broken: true, why: `chain ${k} (head ${head}): ${v.why}`, heads };
    heads.push(head);
  }
  return { complete: pending, broken: false, heads };
}

// ---------------------------------------------------------------------------------------------------
// generator: well-formed chains, then hostile mutations
// ---------------------------------------------------------------------------------------------------

interface ChainPlan {
  direct: number;
  indirect: number;
  readable: number;
  lens: number[];
}

interface Plan {
  n: number;
  eventIdx: boolean;
  base: number;
  perm: number[];
  chains: ChainPlan[];
  mutations: { kind: number; a: number; b: number; big: bigint }[];
}

const MUTATIONS = [
  'loop',
  'next out of range',
  'address outside memory',
  'address + len wraps 2^64',
  'huge length',
  'len 0 at a wild address',
  'nested indirect',
  'empty indirect',
  'indirect len not a multiple of 16',
  'indirect table outside memory',
  'INDIRECT with NEXT',
  'avail.idx jumps past the queue size',
  'head out of range',
  'readable after writable',
  'indirect table longer than the queue',
  'buffer on the rings themselves',
  'same head twice',
  'random descriptor',
  'random indirect entry',
  'publish fewer than written',
  'chain longer than the queue (direct)',
] as const;

function build(p: Plan): RingCase {
  const n = p.n;
  const descs: DescSpec[] = Array.from({ length: n }, () => ({ addr: { gpa: '0x0' }, len: 0, flags: 0, next: 0 }));
  const tables: DescSpec[][] = [];
  const heads: number[] = [];
  const chainDescs: { at: 'direct' | number; i: number }[][] = [];
  let free = 0;
  let buf = 0;
  for (const ch of p.chains) {
    const need = ch.direct + (ch.indirect > 0 ? 1 : 0);
    if (free + need > n || (ch.indirect > 0 && tables.length >= MAX_TABLES)) break;
    const idx = p.perm.slice(free, free + need);
    free += need;
    const total = ch.direct + ch.indirect;
    const readable = Math.min(ch.readable, total);
    const members: { at: 'direct' | number; i: number }[] = [];
    let pos = 0;
    const data = (): DescSpec => {
      const len = ch.lens[pos % ch.lens.length] ?? 16;
      const d: DescSpec = { addr: { buf }, len, flags: pos >= readable ? VIRTQ_DESC_F_WRITE : 0, next: 0 };
      buf += 64;
      pos++;
      return d;
    };
    for (let k = 0; k < ch.direct; k++) {
      const d = data();
      if (k < need - 1) {
        d.flags |= VIRTQ_DESC_F_NEXT;
        d.next = idx[k + 1]!;
      }
      descs[idx[k]!] = d;
      members.push({ at: 'direct', i: idx[k]! });
    }
    if (ch.indirect > 0) {
      const t = tables.length;
      const entries: DescSpec[] = [];
      for (let k = 0; k < ch.indirect; k++) {
        const d = data();
        if (k < ch.indirect - 1) {
          d.flags |= VIRTQ_DESC_F_NEXT;
          d.next = k + 1;
        }
        entries.push(d);
        members.push({ at: t, i: k });
      }
      tables.push(entries);
      descs[idx[need - 1]!] = { addr: { table: t }, len: 16 * ch.indirect, flags: VIRTQ_DESC_F_INDIRECT, next: 0 };
    }
    heads.push(idx[0]!);
    chainDescs.push(members);
  }
  const c: RingCase = { queueSize: n, eventIdx: p.eventIdx, base: p.base, descs, tables, heads, publish: heads.length, mutations: [] };
  for (const m of p.mutations) mutate(c, m, chainDescs);
  return c;
}

function pick<T>(xs: readonly T[], k: number): T | undefined {
  return xs.length ? xs[Math.abs(k) % xs.length] : undefined;
}

function mutate(c: RingCase, m: Plan['mutations'][number], chains: { at: 'direct' | number; i: number }[][]): void {
  const n = c.queueSize;
  const kind = MUTATIONS[m.kind % MUTATIONS.length]!;
  const all = chains.flat();
  // an earlier mutation may have replaced the table a member lived in: then it edits a throwaway descriptor
  const descOf = (x: { at: 'direct' | number; i: number }): DescSpec =>
    (x.at === 'direct' ? c.descs[x.i] : c.tables[x.at]?.[x.i]) ?? { addr: { buf: 0 }, len: 0, flags: 0, next: 0 };
  const dataDesc = pick(all, m.a);
  const chain = pick(chains, m.a);
  const pointer = c.descs.find((d) => (d.flags & VIRTQ_DESC_F_INDIRECT) !== 0 && 'table' in d.addr);
  c.mutations!.push(kind);
  switch (kind) {
    case 'loop': {
      if (!chain || !chain.length) break;
      const last = chain[chain.length - 1]!;
      const d = descOf(last);
      d.flags |= VIRTQ_DESC_F_NEXT;
      d.next = last.at === 'direct' ? chain[0]!.i : pick(chain.filter((x) => x.at === last.at), m.b)!.i;
      break;
    }
    case 'next out of range': {
      if (!dataDesc) break;
      const d = descOf(dataDesc);
      const limit = dataDesc.at === 'direct' ? n : (c.tables[dataDesc.at]?.length ?? 1);
      d.flags |= VIRTQ_DESC_F_NEXT;
      d.next = m.b % 2 ? 0xffff : limit + (Math.abs(m.b) % 4);
      break;
    }
    case 'address outside memory':
      if (dataDesc) Object.assign(descOf(dataDesc), { addr: { ramEnd: -(Math.abs(m.b) % 32) }, len: 64 });
      break;
    case 'address + len wraps 2^64':
      if (dataDesc) Object.assign(descOf(dataDesc), { addr: { gpa: `0x${(U64 - BigInt(Math.abs(m.b) % 64)).toString(16)}` }, len: 128 });
      break;
    case 'huge length':
      if (dataDesc) descOf(dataDesc).len = pick([0xffff_ffff, 0x8000_0000, 0x40_0000, 0x10_0001], m.b)!;
      break;
    case 'len 0 at a wild address':
      if (dataDesc) Object.assign(descOf(dataDesc), { addr: { gpa: `0x${(m.big & U64).toString(16)}` }, len: 0 });
      break;
    case 'nested indirect': {
      const inTable = all.filter((x) => x.at !== 'direct');
      const x = pick(inTable, m.b);
      if (x) Object.assign(descOf(x), { addr: { table: x.at as number }, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
      break;
    }
    case 'empty indirect':
      if (pointer) pointer.len = 0;
      break;
    case 'indirect len not a multiple of 16':
      if (pointer) pointer.len += 1 + (Math.abs(m.b) % 15);
      break;
    case 'indirect table outside memory':
      if (pointer) pointer.addr = pick<Addr>([{ ramEnd: -16 }, { ramEnd: 0 }, { gpa: '0x10000000000' }, { gpa: '0xfffffffffffffff0' }], m.b)!;
      break;
    case 'INDIRECT with NEXT':
      if (pointer) pointer.flags |= VIRTQ_DESC_F_NEXT;
      break;
    case 'avail.idx jumps past the queue size':
      c.publish = pick([n + 1, n + 2, 2 * n, 0x8000, 0xffff], m.b)!;
      break;
    case 'head out of range':
      if (c.heads.length) c.heads[Math.abs(m.b) % c.heads.length] = pick([n, n + 1, 0x7fff, 0xffff], m.a)!;
      break;
    case 'readable after writable':
      if (chain && chain.length >= 2) {
        descOf(chain[0]!).flags |= VIRTQ_DESC_F_WRITE;
        descOf(chain[chain.length - 1]!).flags &= ~VIRTQ_DESC_F_WRITE;
      }
      break;
    case 'indirect table longer than the queue': {
      if (c.tables.length >= MAX_TABLES || c.heads.length >= n) break;
      const free = c.descs.findIndex((d, i) => d.len === 0 && d.flags === 0 && !c.heads.includes(i));
      if (free < 0) break;
      const count = Math.min(2 * n + 1, TABLE_STRIDE / 16);
      const t = c.tables.length;
      c.tables.push(
        Array.from({ length: count }, (_, k) => ({ addr: { buf: 0x4000 + 8 * k }, len: 8, flags: k < count - 1 ? VIRTQ_DESC_F_NEXT : 0, next: k + 1 })),
      );
      c.descs[free] = { addr: { table: t }, len: 16 * count, flags: VIRTQ_DESC_F_INDIRECT, next: 0 };
      c.heads.push(free);
      c.publish = c.heads.length;
      break;
    }
    case 'buffer on the rings themselves':
      if (dataDesc) Object.assign(descOf(dataDesc), { addr: { ring: pick(['desc', 'avail', 'used'] as const, m.b)!, off: 0 }, len: 16 });
      break;
    case 'same head twice':
      if (c.heads.length && c.heads.length < n) {
        c.heads.push(c.heads[Math.abs(m.b) % c.heads.length]!);
        c.publish = c.heads.length;
      }
      break;
    case 'random descriptor': {
      const i = Math.abs(m.b) % n;
      c.descs[i] = { addr: { gpa: `0x${(m.big & U64).toString(16)}` }, len: Number(m.big >> 64n) >>> 0, flags: m.a & 0xffff, next: (m.a >>> 16) & 0xffff };
      break;
    }
    case 'random indirect entry': {
      const t = pick(c.tables, m.b);
      if (t && t.length) t[Math.abs(m.a) % t.length] = { addr: { buf: Number(m.big & 0x7fffn) }, len: Number(m.big >> 16n) & 0xffff, flags: m.b & 7, next: m.a & 0xff };
      break;
    }
    case 'publish fewer than written':
      c.publish = Math.max(0, c.publish - 1);
      break;
    case 'chain longer than the queue (direct)': {
      // every table entry in one chain, the last one back to the first: n + 1 descriptors
      for (let i = 0; i < n; i++) c.descs[i] = { addr: { buf: 0x4000 + 8 * i }, len: 8, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % n };
      c.heads = [0];
      c.publish = 1;
      c.tables = [];
      break;
    }
  }
}

const chainPlan: fc.Arbitrary<ChainPlan> = fc.record({
  direct: fc.integer({ min: 1, max: 3 }),
  indirect: fc.oneof({ weight: 2, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 6 }) }),
  readable: fc.integer({ min: 0, max: 9 }),
  lens: fc.array(fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 1, max: 64 }) }, { weight: 1, arbitrary: fc.constant(0) }), { minLength: 1, maxLength: 4 }),
});

export const ringCaseArb: fc.Arbitrary<RingCase> = fc
  .constantFrom(2, 4, 8, 16, 32)
  .chain((n) =>
    fc.record({
      n: fc.constant(n),
      eventIdx: fc.boolean(),
      base: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0xfff0, max: 0xffff }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
      perm: fc.shuffledSubarray(
        Array.from({ length: n }, (_, i) => i),
        { minLength: n, maxLength: n },
      ),
      chains: fc.array(chainPlan, { minLength: 1, maxLength: 6 }),
      mutations: fc.array(
        fc.record({ kind: fc.nat(), a: fc.integer(), b: fc.integer(), big: fc.bigInt({ min: 0n, max: (1n << 96n) - 1n }) }),
        { maxLength: 3 },
      ),
    }),
  )
  .map(build);

export function describeCase(c: RingCase): string {
  return `N=${c.queueSize} eventIdx=${c.eventIdx} base=${c.base} heads=[${c.heads.join(',')}] publish=${c.publish} mutations=[${(c.mutations ?? []).join('; ')}]`;
}
