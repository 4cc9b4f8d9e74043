import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { needEventRef } from '../../src/engine/reference-split.js';
import { Rig } from './helpers.js';

/** Brute force: walk the indices published by this step, old .. new-1 (mod 2^16), and look for eventIdx. */
function bruteForce(eventIdx: number, newIdx: number, oldIdx: number): number {
  for (let i = oldIdx; i !== newIdx; i = (i + 1) & 0xffff) if (i === eventIdx) return 1;
  return 0;
}

describe('vring_need_event (B.4)', () => {
  const rig = new Rig();
  const u16 = fc.integer({ min: 0, max: 0xffff });

  it('notifies iff event_idx is one of the indices moved past: old <= event < new modulo 2^16', () => {
    fc.assert(fc.property(u16, fc.integer({ min: 0, max: 600 }), fc.integer({ min: -300, max: 900 }), (oldIdx, step, rel) => {
      const newIdx = (oldIdx + step) & 0xffff;
      const eventIdx = (oldIdx + rel) & 0xffff;
      const want = bruteForce(eventIdx, newIdx, oldIdx);
      expect(rig.e.needEvent(eventIdx, newIdx, oldIdx)).toBe(want);
      expect(needEventRef(eventIdx, newIdx, oldIdx)).toBe(want);
    }), { numRuns: 2000 });
  });

  it('is the spec formula (u16)(new - event - 1) < (u16)(new - old) on arbitrary u16 triples', () => {
    fc.assert(fc.property(u16, u16, u16, (ev, nw, old) => {
      const formula = ((nw - ev - 1) & 0xffff) < ((nw - old) & 0xffff) ? 1 : 0;
      expect(rig.e.needEvent(ev, nw, old)).toBe(formula);
    }), { numRuns: 2000 });
  });

  it('handles wrap-around at 65535 and takes arguments modulo 2^16', () => {
    expect(rig.e.needEvent(0xffff, 1, 0xfffe)).toBe(1); // 0xfffe -> 1 passes 0xffff
    expect(rig.e.needEvent(0, 1, 0xffff)).toBe(1);
    expect(rig.e.needEvent(1, 1, 0xffff)).toBe(0); // new itself is not yet passed
    expect(rig.e.needEvent(0xfffd, 1, 0xfffe)).toBe(0);
    expect(rig.e.needEvent(5, 5, 5)).toBe(0); // nothing moved: never notify
    expect(rig.e.needEvent(0x1_0005, 0x2_0006, 0x3_0005)).toBe(rig.e.needEvent(5, 6, 5));
    expect(rig.e.needEvent(5, 6, 5)).toBe(1);
  });
});
