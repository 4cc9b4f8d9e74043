import { describe, it, expect } from 'vitest';
import * as layout from '../../src/engine/layout.js';
import { instantiateEngine } from '../../src/engine/engine.js';
import { engineModule, newMemory, Rig, QS0 } from './helpers.js';

describe('engine ABI and module shape', () => {
  it('every numeric constant of src/engine/layout.ts has the same value in the engine (assembly/layout.ts)', () => {
    const rig = new Rig();
    const numeric = Object.entries(layout).filter((kv): kv is [string, number] => typeof kv[1] === 'number');
    expect(numeric.length).toBeGreaterThan(100);
    const missing = numeric.filter(([k]) => !(k in rig.e.abi)).map(([k]) => k);
    expect(missing).toEqual([]);
    for (const [k, v] of numeric) expect([k, rig.e.abi[k]]).toEqual([k, v]);
  });

  it('the per-queue arrays and the driver state fit into one queue area', () => {
    expect(layout.SEGS_OFFSET + layout.SEG_CAP * layout.SEG_BYTES).toBeLessThanOrEqual(layout.QUEUE_AREA_SIZE);
    expect(layout.CHAINS_OFFSET).toBeGreaterThanOrEqual(layout.QS_BYTES);
    expect(layout.DS_BYTES).toBeLessThanOrEqual(layout.QUEUE_AREA_SIZE);
    // packed resubmission's descriptor copies: after the segments, before the resubmit heads
    expect(layout.PK_RESUB_DESCS_OFFSET).toBeGreaterThanOrEqual(layout.SEGS_OFFSET + layout.SEG_CAP * layout.SEG_BYTES);
    expect(layout.PK_RESUB_DESCS_OFFSET + layout.PK_RESUB_DESCS_CAP * 16).toBeLessThanOrEqual(layout.RESUBMIT_OFFSET);
  });

  it('imports only env.memory and has no mutable globals (instances share the memory)', () => {
    const mod = engineModule();
    expect(WebAssembly.Module.imports(mod)).toEqual([{ module: 'env', name: 'memory', kind: 'memory' }]);
    const rig = new Rig();
    for (const [name, v] of Object.entries(layout)) {
      if (typeof v === 'number') expect(rig.e.abi[name]).toBe(v);
    }
    // a global export that is mutable would make `value` assignable
    const inst = new WebAssembly.Instance(mod, { env: { memory: rig.memory } });
    for (const v of Object.values(inst.exports)) {
      if (v instanceof WebAssembly.Global) expect(() => { v.value = 1; }).toThrow();
    }
  });

  it('a second instance on the same memory leaves queue state alone (no data segments re-applied)', () => {
    const memory = newMemory();
    const rig = new Rig(memory);
    const before = rig.copy(0, 0x40_0000); // null page, region table and the first queue areas
    rig.u8.fill(0xa5, QS0, QS0 + 4096);
    rig.u8.fill(0x5a, 0x1_0000, 0x2_0000); // where asc would put static data (memoryBase)
    instantiateEngine(engineModule(), memory);
    expect(rig.r32(QS0)).toBe(0xa5a5a5a5);
    expect(rig.r32(0x1_0000)).toBe(0x5a5a5a5a);
    expect(before.length).toBe(0x40_0000);
  });
});
