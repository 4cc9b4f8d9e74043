/**
 * Packed virtqueues at the protocol level: VIRTIO_F_RING_PACKED offered and acked, ring sizes that are not powers
 * of two, SET_VRING_ADDR's avail/used as the event suppression structures, and the packed vring base encoding of
 * SET_VRING_BASE / GET_VRING_BASE (A.6), against an in-process back-end with our front-end.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { nullDevice } from '../../src/devices/null.js';
import { Frontend } from '../../src/frontend/frontend.js';
import { bit, hasBit, VIRTIO_F_RING_PACKED } from '../../src/vhost-user/constants.js';
import { decodePackedBase, encodePackedBase } from '../../src/vhost-user/vring-base.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let backend: InProcessBackend | undefined;
let fe: Frontend | undefined;
afterEach(async () => {
  fe?.close();
  fe = undefined;
  await backend?.close();
  backend = undefined;
});

describe('vring indices, packed: bits 0-14 avail idx, bit 15 avail wrap, bits 16-30 used idx, bit 31 used wrap', () => {
  it('encodes and decodes both positions', () => {
    expect(encodePackedBase(3 | 0x8000, 7)).toBe(0x0007_8003);
    expect(encodePackedBase(0x7fff, 0xffff)).toBe(0xffff_7fff);
    expect(decodePackedBase(0x0007_8003)).toEqual({ lastAvail: 0x8003, nextUsed: 7 });
    expect(decodePackedBase(0x8000_8000)).toEqual({ lastAvail: 0x8000, nextUsed: 0x8000 });
  });

  it('a front-end that sends only the avail half (DPDK virtio-user) gets the used position equal to it', () => {
    expect(decodePackedBase(0x8000)).toEqual({ lastAvail: 0x8000, nextUsed: 0x8000 });
    expect(decodePackedBase(5)).toEqual({ lastAvail: 5, nextUsed: 5 });
  });
});

describe('packed rings over vhost-user', () => {
  it('VIRTIO_F_RING_PACKED is offered; with it acked a 5-slot ring runs, and GET_VRING_BASE reports both positions with their wrap counters', async () => {
    backend = startBackend(nullDevice({ queues: 1 }));
    fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 5, packed: true });
    expect(hasBit(fe.features, VIRTIO_F_RING_PACKED)).toBe(true);
    // 7 one-descriptor chains on a 5-slot ring: both positions at slot 2 of the second lap (wrap counter 0)
    for (let i = 0; i < 7; i++) {
      const u = await fe.roundTrip(0, [{ offset: 64 * i, len: 64, write: false }]);
      expect(u.len).toBe(0);
    }
    const [base] = await fe.stop();
    expect(base).toBe(encodePackedBase(2, 2));
    expect(backend.logs.join('\n')).toContain('VIRTIO_F_RING_PACKED acked');
  });

  it('without VIRTIO_F_RING_PACKED a ring size that is not a power of two is refused (split rings)', async () => {
    backend = startBackend(nullDevice({ queues: 1 }));
    await expect(Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 5 })).rejects.toThrow(/SET_VRING_NUM failed/);
    expect(backend.logs.join('\n')).toMatch(/size 5 is not a power of two/);
    expect(bit(VIRTIO_F_RING_PACKED)).toBe(1n << 34n);
  });
});

describe('--stats on a packed ring', () => {
  it('occupancy counts the descriptors made available and not popped, inflight the ring slots popped and not used', async () => {
    const { Rig, PackedTestRing, QS0 } = await import('../engine/helpers.js');
    const { readCounters } = await import('../../src/vhost-user/stats.js');
    const { REGION_TABLE, QF_INDIRECT } = await import('../../src/engine/layout.js');
    const rig = new Rig();
    rig.setRegions();
    const size = 6;
    const ring = new PackedTestRing(rig, size);
    rig.e.packedConfigure(QS0, size, QF_INDIRECT, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, 4 | 0x8000, 4 | 0x8000);
    ring.availPos = 4 | 0x8000;
    ring.usedPos = 4 | 0x8000;
    ring.add(0, [{ addr: 0x10_0000n, len: 8 }, { addr: 0x10_0000n, len: 8 }, { addr: 0x10_0000n, len: 8 }]); // slots 4, 5, 0'
    ring.add(1, [{ addr: 0x10_0000n, len: 8 }]); // slot 1'
    ring.add(2, [{ addr: 0x10_0000n, len: 8 }]); // slot 2'
    expect(rig.e.splitPopBatch(QS0, 1)).toBe(1);
    const [c] = readCounters(rig.memory, [0]);
    expect(c!.inflight).toBe(3);
    expect(c!.occupancy).toBe(2);
  });
});
