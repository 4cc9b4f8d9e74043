/**
 * RESET_DEVICE and SET_STATUS(0) return the device to its initial state (vhost-user: "the back-end must reset
 * the device"; virtio 2.1: writing 0 to device status resets it): every ring stopped and forgotten (a ring reports
 * base 0 (after SET_STATUS(0): where it stopped) and serves nothing until set up again), NEEDS_RESET cleared, and the same connection can set the device
 * up again and be served. Ownership, memory and protocol features stay.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { nullDevice } from '../../src/devices/null.js';
import { VIRTQ_DESC_F_WRITE } from '../../src/engine/layout.js';
import { Frontend } from '../../src/frontend/frontend.js';
import { eventfdSignal } from '../../src/sys/syscalls.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../src/vhost-user/session.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let backend: InProcessBackend | undefined;
let fe: Frontend | undefined;

afterEach(async () => {
  fe?.close();
  fe = undefined;
  await backend?.close();
  backend = undefined;
});

const NEEDS_RESET = BigInt(VIRTIO_CONFIG_S_NEEDS_RESET);

/** Make descriptor 255 (pointing far outside guest memory) available on queue q: the back-end breaks the ring. */
function publishBadChain(f: Frontend, q: number): void {
  const ring = f.queues[q]!.ring;
  const dv = new DataView(f.ram.mem.memory.buffer);
  dv.setBigUint64(ring.desc + 255 * 16, 1n << 40n, true);
  dv.setUint32(ring.desc + 255 * 16 + 8, 64, true);
  dv.setUint16(ring.desc + 255 * 16 + 12, VIRTQ_DESC_F_WRITE, true);
  const idx = dv.getUint16(ring.avail + 2, true);
  dv.setUint16(ring.avail + 4 + (idx % 256) * 2, 255, true);
  Atomics.store(new Uint16Array(f.ram.mem.memory.buffer), (ring.avail + 2) >>> 1, idx + 1);
  eventfdSignal(f.queues[q]!.kickFd);
}

async function status(f: Frontend): Promise<bigint> {
  return (await f.client.request('GET_STATUS', undefined))!;
}

describe('device reset', () => {
  for (const how of ['RESET_DEVICE', 'SET_STATUS(0)'] as const) {
    it(`${how} returns the device to its initial state: rings stopped and forgotten, NEEDS_RESET cleared, a new set-up is served`, async () => {
      backend = startBackend(nullDevice({ queues: 2 }));
      fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 2, queueSize: 256 });
      for (let i = 0; i < 3; i++) expect((await fe.roundTrip(0, [{ offset: 0, len: 8, write: true }])).len).toBe(0);
      await fe.client.request('SET_STATUS', 0xfn); // ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK
      publishBadChain(fe, 1);
      let s = 0n;
      for (let i = 0; i < 200 && !(s & NEEDS_RESET); i++) {
        await new Promise((r) => setTimeout(r, 10));
        s = await status(fe);
      }
      expect(s & NEEDS_RESET, 'queue 1 broken before the reset').not.toBe(0n);

      if (how === 'RESET_DEVICE') await fe.client.request('RESET_DEVICE', undefined);
      else await fe.client.request('SET_STATUS', 0n);

      expect(await status(fe), 'status after the reset: 0, NEEDS_RESET gone').toBe(0n);
      // ring 0 had used 3 chains; RESET_DEVICE leaves it no state: its base is 0. SET_STATUS(0) keeps where it
      // stopped: QEMU 7.2 sends it before the GET_VRING_BASEs it migrates (test/qemu/blk-migrate.test.ts) ...
      expect((await fe.client.request('GET_VRING_BASE', { index: 0, num: 0 }))!.num).toBe(how === 'RESET_DEVICE' ? 0 : 3);
      // ... and it does not run: a chain made available now is not served
      fe.submit(0, [{ offset: 0, len: 8, write: true }]);
      await expect(fe.waitUsed(0, 300)).rejects.toThrow(/no used element/);

      // the driver sets the device up again on the same connection: both rings serve from index 0
      await fe.restartDevice();
      for (let q = 0; q < 2; q++) for (let i = 0; i < 2; i++) expect((await fe.roundTrip(q, [{ offset: 0, len: 8, write: true }])).len).toBe(0);
      expect(await status(fe) & NEEDS_RESET).toBe(0n);
      expect(await fe.stop()).toEqual([2, 2]);
      expect(backend.logs.join('\n')).not.toMatch(/internal error|cannot start/);
    });
  }
});
