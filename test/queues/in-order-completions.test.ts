/** The in-order completion policy on its own: whatever order requests finish in, heads leave in pop order. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InOrderCompletions } from '../../src/queues/in-order-completions.js';

describe('InOrderCompletions', () => {
  it('any finishing order: heads pass on in pop order, each with its own length, none before all earlier ones finished', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 32767 }), { minLength: 1, maxLength: 200 }), fc.integer(), (heads, seed) => {
        const out: [number, number][] = [];
        const o = new InOrderCompletions((h, l) => out.push([h, l]));
        for (const h of heads) o.popped(h);
        // a deterministic shuffle of the finishing order
        const order = heads.map((h, i) => ({ h, k: Math.imul(i + 1, seed | 1) >>> 0 })).sort((a, b) => a.k - b.k);
        const finished = new Set<number>();
        for (const { h } of order) {
          o.finished(h, h * 3);
          finished.add(h);
          // what went out is exactly the longest finished prefix of the pop order
          let prefix = 0;
          while (prefix < heads.length && finished.has(heads[prefix]!)) prefix++;
          expect(out.length).toBe(prefix);
        }
        expect(out).toEqual(heads.map((h) => [h, h * 3]));
      }),
      { numRuns: 200 },
    );
  });

  it('a head it never saw popped passes straight through (the engine judges it); the same head can be popped again once passed on', () => {
    const out: number[] = [];
    const o = new InOrderCompletions((h) => out.push(h));
    o.popped(5);
    o.finished(9, 0); // never popped: straight through
    expect(out).toEqual([9]);
    o.finished(5, 0);
    o.popped(5); // reused head
    o.popped(6);
    o.finished(6, 0);
    expect(out).toEqual([9, 5]);
    o.finished(5, 0);
    expect(out).toEqual([9, 5, 5, 6]);
  });

  it('wraps around its ring of heads', () => {
    const out: number[] = [];
    const o = new InOrderCompletions((h) => out.push(h));
    for (let i = 0; i < 100_000; i++) {
      const h = i % 1000;
      o.popped(h);
      o.finished(h, 0);
    }
    expect(out.length).toBe(100_000);
    expect(out[99_999]).toBe(999);
  });
});
