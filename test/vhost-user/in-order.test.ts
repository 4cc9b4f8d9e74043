/**
 * VIRTIO_F_IN_ORDER (bit 35) with synchronous devices (null, rng): offered, acked by our front-end, and the used
 * ring follows the avail ring. On split rings one used element per chain; on packed rings a run of chains gets one
 * used descriptor carrying the LAST chain's buffer id, written over the run's first slot.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { nullDevice } from '../../src/devices/null.js';
import { rngDevice } from '../../src/devices/rng.js';
import { Frontend, type Segment } from '../../src/frontend/frontend.js';
import { bit, hasBit, VIRTIO_F_IN_ORDER } from '../../src/vhost-user/constants.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let backend: InProcessBackend | undefined;
let fe: Frontend | undefined;
afterEach(async () => {
  fe?.close();
  fe = undefined;
  await backend?.close();
  backend = undefined;
});

const DEVICES = [
  ['null', () => nullDevice({ queues: 1 }), false],
  ['rng', () => rngDevice({}), true],
] as const;

/** n one-descriptor chains; writable ones (rng) get different sizes so each used length tells its chain. */
function chains(n: number, write: boolean): Segment[][] {
  return Array.from({ length: n }, (_, i) => [{ offset: i * 256, len: write ? 16 + i : 64, write }]);
}

describe('IN_ORDER: buffers are used in the order they were made available', () => {
  for (const [name, make, write] of DEVICES) {
    it(`${name}, split ring: VIRTIO_F_IN_ORDER is offered and acked; each batch's used elements follow avail order`, async () => {
      backend = startBackend(make());
      fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 64, extraFeatures: bit(VIRTIO_F_IN_ORDER) });
      expect(hasBit(fe.features, VIRTIO_F_IN_ORDER)).toBe(true);
      expect(backend.logs.join('\n')).toContain('VIRTIO_F_IN_ORDER acked');
      for (let round = 0; round < 5; round++) {
        const n = 3 + round * 7;
        const heads = fe.submitAll(0, chains(n, write));
        const used: { id: number; len: number }[] = [];
        for (let i = 0; i < n; i++) used.push(await fe.waitUsed(0));
        expect(used.map((u) => u.id)).toEqual(heads);
        if (write) expect(used.map((u) => u.len)).toEqual(heads.map((_, i) => 16 + i));
      }
      await fe.stop();
    });

    it(`${name}, packed ring: a run of chains is used as ONE descriptor with the last chain's id, over the run's first slot`, async () => {
      backend = startBackend(make());
      fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 64, packed: true, extraFeatures: bit(VIRTIO_F_IN_ORDER) });
      expect(hasBit(fe.features, VIRTIO_F_IN_ORDER)).toBe(true);
      const n = 16;
      const heads = fe.submitAll(0, chains(n, write));
      // our packed driver reaps one chain per used descriptor, so the batch form is read off the ring itself
      const desc = fe.queues[0]!.ring.desc;
      const view = (): DataView => new DataView(fe!.ram.mem.memory.buffer);
      const isUsed = (slot: number): boolean => {
        const f = view().getUint16(desc + slot * 16 + 14, true);
        return ((f >>> 7) & 1) === 1 && ((f >>> 15) & 1) === 1; // first lap: wrap counter 1
      };
      // each chain is one slot: used descriptors sit at slot 0 and right after each run; the last run ends at n
      const runs: { slot: number; id: number; len: number }[] = [];
      const deadline = Date.now() + 5000;
      let slot = 0;
      while (slot < n) {
        if (!isUsed(slot)) {
          if (Date.now() > deadline) throw new Error(`slot ${slot}: no used descriptor within 5 s`);
          await new Promise((r) => setTimeout(r, 2));
          continue;
        }
        const v = view();
        const id = v.getUint16(desc + slot * 16 + 12, true);
        const len = v.getUint32(desc + slot * 16 + 8, true);
        runs.push({ slot, id, len });
        const last = heads.indexOf(id);
        // the id is a chain of this run, at or after the run's first: the last of the run, in avail order
        expect(last, `slot ${slot}: id ${id} is not a chain made available`).toBeGreaterThanOrEqual(slot);
        slot = last + 1;
      }
      // null writes nothing: the whole submission is one run, used as one descriptor with the last id
      if (!write) {
        expect(runs).toEqual([{ slot: 0, id: heads[n - 1], len: 0 }]);
      } else {
        // rng writes every chain: a run ends at every chain that wrote, so each chain is its own run, in avail order
        expect(runs.map((r) => r.id)).toEqual(heads);
        expect(runs.map((r) => r.len)).toEqual(heads.map((_, i) => 16 + i));
      }
      expect(backend.logs.join('\n')).not.toMatch(/broken|needs a reset|error/i);
    });
  }

  it('without the bit acked a packed ring gets one used descriptor per chain (the engine batches only when negotiated)', async () => {
    backend = startBackend(nullDevice({ queues: 1 }));
    fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 64, packed: true });
    expect(hasBit(fe.features, VIRTIO_F_IN_ORDER)).toBe(false);
    const heads = fe.submitAll(0, chains(16, false));
    const used: number[] = [];
    for (let i = 0; i < heads.length; i++) used.push((await fe.waitUsed(0)).id);
    expect(used).toEqual(heads);
  });
});
