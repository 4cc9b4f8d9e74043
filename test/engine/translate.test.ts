import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { REGION_TABLE, MAX_REGIONS, REGION_HDR_COUNT } from '../../src/engine/layout.js';
import { ReferenceSplitEngine } from '../../src/engine/reference-split.js';
import { Rig, type RegionSpec, G, REGION_A, REGION_B, REGION_C, DEFAULT_REGIONS } from './helpers.js';

const U64 = 1n << 64n;

/** Independent model: the first region (table order) containing addr must contain the whole range. */
function model(regions: RegionSpec[], key: 'gpa' | 'uva', addr: bigint, len: bigint): number {
  if (addr + len >= U64) return 0;
  for (const r of regions.slice(0, MAX_REGIONS)) {
    const start = r[key];
    if (addr >= start && addr < start + r.size) {
      if (addr + len > start + r.size) return 0;
      if (r.wasm + r.size > 1n << 32n) return 0;
      return Number(r.wasm + addr - start);
    }
  }
  return 0;
}

describe('region table translation (u64 range checks before narrowing)', () => {
  const rig = new Rig();
  const ref = new ReferenceSplitEngine(rig.memory);

  it('translates a range inside one region and refuses one spanning two (even GPA-adjacent ones)', () => {
    rig.setRegions();
    const t = rig.e.translateGpa.bind(rig.e);
    expect(t(REGION_TABLE, 0x1000n, 16n)).toBe(G + 0x1000);
    expect(t(REGION_TABLE, 0x1f_fff0n, 16n)).toBe(G + 0x1f_fff0);
    expect(t(REGION_TABLE, 0x1f_fff0n, 17n)).toBe(0); // crosses A -> B
    expect(t(REGION_TABLE, 0x20_0000n, 1n)).toBe(Number(REGION_B.wasm));
    expect(t(REGION_TABLE, 0x1_0000_0000n, 0x20_0000n)).toBe(Number(REGION_C.wasm));
    expect(t(REGION_TABLE, 0x1_0000_0000n, 0x20_0001n)).toBe(0);
    expect(t(REGION_TABLE, 0x40_0000n, 0n)).toBe(0); // len 0 must still be inside
    expect(t(REGION_TABLE, 0x3f_ffffn, 0n)).toBe(Number(REGION_B.wasm) + 0x1f_ffff);
    expect(t(REGION_TABLE, 0xffff_ffff_ffff_fff0n, 0x20n)).toBe(0); // wraps 2^64
    expect(rig.e.translateUva(REGION_TABLE, REGION_A.uva + 0x10n, 8n)).toBe(G + 0x10);
    expect(rig.e.translateUva(REGION_TABLE, 0x10n, 8n)).toBe(0);
  });

  it('returns wasm addresses >= 2 GiB as unsigned numbers', () => {
    rig.setRegions([{ gpa: 0n, size: 0x1000n, uva: 0n, wasm: 0xf000_0000n }]);
    expect(rig.e.translateGpa(REGION_TABLE, 0x10n, 1n)).toBe(0xf000_0010);
    rig.setRegions([{ gpa: 0n, size: 0x2000n, uva: 0n, wasm: 0xffff_f000n }]); // would pass 4 GiB
    expect(rig.e.translateGpa(REGION_TABLE, 0x10n, 1n)).toBe(0);
  });

  it('clamps the region count to MAX_REGIONS', () => {
    rig.setRegions(DEFAULT_REGIONS);
    rig.w32(REGION_TABLE + REGION_HDR_COUNT, 0xffff_ffff);
    expect(rig.e.translateGpa(REGION_TABLE, 0x1000n, 16n)).toBe(G + 0x1000);
    expect(rig.e.translateGpa(REGION_TABLE, 0x7777_0000_0000n, 16n)).toBe(0);
  });

  const regionArb = fc.record({
    gpa: fc.oneof(fc.bigInt({ min: 0n, max: 0x10_0000n }), fc.bigInt({ min: 0n, max: U64 - 1n })),
    size: fc.oneof(fc.bigInt({ min: 0n, max: 0x1_0000n }), fc.bigInt({ min: 0n, max: U64 - 1n })),
    uva: fc.bigInt({ min: 0n, max: U64 - 1n }),
    wasm: fc.oneof(fc.bigInt({ min: 0x10_0000n, max: 0xffff_0000n }), fc.bigInt({ min: 0n, max: U64 - 1n })),
  }).filter((r) => r.gpa + r.size <= U64 && r.uva + r.size <= U64);

  it('agrees with an independent u64 model on random tables, addresses and lengths (engine and reference)', () => {
    fc.assert(fc.property(
      fc.array(regionArb, { minLength: 0, maxLength: 5 }),
      fc.nat({ max: 4 }), fc.bigInt({ min: -0x100n, max: 0x2_0000n }), fc.bigInt({ min: 0n, max: U64 - 1n }),
      fc.oneof(fc.bigInt({ min: 0n, max: 0x2_0000n }), fc.bigInt({ min: 0n, max: U64 - 1n })),
      fc.boolean(),
      (regions, pick, rel, anyAddr, len, useRel) => {
        rig.setRegions(regions);
        const base = regions.length ? regions[pick % regions.length] : undefined;
        const gpa = base && useRel ? BigInt.asUintN(64, base.gpa + rel) : anyAddr;
        const uva = base && useRel ? BigInt.asUintN(64, base.uva + rel) : anyAddr;
        const wantG = model(regions, 'gpa', gpa, len);
        const wantU = model(regions, 'uva', uva, len);
        expect(rig.e.translateGpa(REGION_TABLE, gpa, len)).toBe(wantG);
        expect(ref.translateGpa(REGION_TABLE, gpa, len)).toBe(wantG);
        expect(rig.e.translateUva(REGION_TABLE, uva, len)).toBe(wantU);
        expect(ref.translateUva(REGION_TABLE, uva, len)).toBe(wantU);
      },
    ), { numRuns: 1500 });
  });
});
