/**
 * The ring policies as knobs (--notify, --poll-us, --completion, and the front-end's --notify): each one
 * changes what the rings see. Real back-end (in this process, real workers), built-in front-end, real blk image.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ringPolicies, UsageError } from '../../src/cli/main.js';
import { blkDevice, type BlkDevice, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/devices/blk.js';
import { nullDevice } from '../../src/devices/null.js';
import { DRV_FIXED_READ } from '../../src/engine/layout.js';
import type { DriverResult } from '../../src/frontend/driver-protocol.js';
import { Frontend, type Segment } from '../../src/frontend/frontend.js';
import type { CompletionOrder, NotifyPolicy } from '../../src/queues/worker-protocol.js';
import { bit, hasBit, VIRTIO_F_IN_ORDER } from '../../src/vhost-user/constants.js';
import { readCounters, type QueueCounters } from '../../src/vhost-user/stats.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let backend: InProcessBackend | undefined;
let device: BlkDevice | undefined;
const open: Frontend[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const fe of open.splice(0)) fe.close();
  await backend?.close();
  backend = undefined;
  device?.close();
  device = undefined;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Drive a null device with a back-end policy and a driver policy; the back-end's counters while still connected. */
async function nullRun(
  be: { notify: NotifyPolicy; pollUs?: number },
  drv: { notify: NotifyPolicy; pollUs?: number },
): Promise<{ counters: QueueCounters; driver: DriverResult }> {
  backend = startBackend(nullDevice({ queues: 1 }), { notify: be.notify, pollUs: be.pollUs ?? 0 });
  const fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 256 });
  open.push(fe);
  const [driver] = await fe.run({ mode: 'throughput', polling: false, seconds: 0.4, writable: DRV_FIXED_READ, notify: drv.notify, pollUs: drv.pollUs });
  const session = backend.server.session!;
  // the worker may still be on the driver's last chains: read once the counters stop moving
  let counters = readCounters(session.memory.memory, [0])[0]!;
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    const next = readCounters(session.memory.memory, [0])[0]!;
    if (next.batches === counters.batches && next.calls === counters.calls && next.occupancy === 0) break;
    counters = next;
  }
  await fe.stop();
  return { counters, driver: driver! };
}

describe('notification policy (--notify)', () => {
  it('always: one call per batch, also for batches the driver asked not to hear about; event-idx: calls only when asked', async () => {
    const always = await nullRun({ notify: 'always' }, { notify: 'event-idx' });
    const a = always.counters;
    expect(a.batches).toBeGreaterThan(0);
    // the engine still decides as EVENT_IDX says (notify + suppressed = batches); the policy calls anyway
    expect(a.notify + a.suppressed).toBe(a.batches);
    expect(a.suppressed).toBeGreaterThan(0);
    expect(a.calls).toBe(a.batches);
    await backend!.close();
    backend = undefined;
    const eventIdx = await nullRun({ notify: 'event-idx' }, { notify: 'event-idx' });
    const e = eventIdx.counters;
    expect(e.batches).toBeGreaterThan(0);
    expect(e.notify + e.suppressed).toBe(e.batches);
    expect(e.calls).toBe(e.notify);
    expect(always.driver.errors + eventIdx.driver.errors).toBe(0);
  });

  it('adaptive: kicks stay off while the worker busy-polls within its budget; event-idx re-arms them whenever the ring is empty', async () => {
    // budget 10 s > the run: avail_event never moves, so the driver kicks only when its index wraps past it
    const adaptive = await nullRun({ notify: 'adaptive', pollUs: 10_000_000 }, { notify: 'event-idx' });
    const c = adaptive.driver.chains;
    expect(c).toBeGreaterThan(0);
    expect(adaptive.driver.kicks).toBeLessThanOrEqual(Math.ceil(c / 65536) + 1);
    await backend!.close();
    backend = undefined;
    const eventIdx = await nullRun({ notify: 'event-idx' }, { notify: 'event-idx' });
    expect(eventIdx.driver.kicks).toBeGreaterThan(Math.ceil(eventIdx.driver.chains / 65536) + 1);
  });

  it("the driver's --notify always kicks after every submit, even when the device suppresses kicks", async () => {
    const r = await nullRun({ notify: 'adaptive', pollUs: 10_000_000 }, { notify: 'always' });
    // each submit makes at most queue-size chains available, and each one kicks
    expect(r.driver.chains).toBeGreaterThan(0);
    expect(r.driver.kicks).toBeGreaterThanOrEqual(Math.ceil(r.driver.chains / 256));
  });

  it('the command line: --poll-us alone means adaptive, belongs to adaptive only, and names are checked', () => {
    expect(ringPolicies({})).toEqual({ notify: 'event-idx', pollUs: 0, completion: 'as-finished', batch: 128 });
    expect(ringPolicies({ 'poll-us': '200' })).toMatchObject({ notify: 'adaptive', pollUs: 200 });
    expect(ringPolicies({ notify: 'adaptive' })).toMatchObject({ notify: 'adaptive', pollUs: 50 });
    expect(ringPolicies({ notify: 'always', completion: 'in-order', batch: '16' })).toEqual({ notify: 'always', pollUs: 0, completion: 'in-order', batch: 16 });
    expect(() => ringPolicies({ notify: 'always', 'poll-us': '10' })).toThrow(UsageError);
    expect(() => ringPolicies({ notify: 'sometimes' })).toThrow(UsageError);
    expect(() => ringPolicies({ completion: 'random' })).toThrow(UsageError);
    expect(() => ringPolicies({ batch: '0' })).toThrow(UsageError);
  });
});

describe('batch limit (--batch) and queue-to-worker mapping (--queue-map)', () => {
  it('--batch N: no engine call pops more than N chains', async () => {
    backend = startBackend(nullDevice({ queues: 1 }), { batch: 8 });
    const fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 256 });
    open.push(fe);
    const [d] = await fe.run({ mode: 'throughput', polling: false, seconds: 0.3, writable: DRV_FIXED_READ });
    const [c] = readCounters(backend.server.session!.memory.memory, [0]);
    expect(d!.chains).toBeGreaterThan(0);
    // the driver offers up to 256 at a time; at most 8 per batch means at least chains/8 batches
    expect(c!.batches).toBeGreaterThanOrEqual(Math.ceil(c!.chains / 8));
    await fe.stop();
  });

  /** Threads of this process (the in-process back-end's queue workers are threads of it). */
  const threads = (): number => fs.readdirSync('/proc/self/task').length;

  it('--queue-map: queues mapped to one worker share one thread; both are served', async () => {
    const counts: number[] = [];
    // the first pass only warms up (lazily created threads of the process: libuv's pool and the like)
    for (const map of [[0, 1], [0, 0], [0, 1]]) {
      const before = threads();
      backend = startBackend(nullDevice({ queues: 2 }), { queueToWorker: map });
      const fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 2, queueSize: 64 });
      open.push(fe);
      // one round trip per queue: both rings started and served
      for (const q of [0, 1]) expect((await fe.roundTrip(q, [{ offset: 0, len: 64, write: false }])).len).toBe(0);
      counts.push(threads() - before);
      await fe.stop();
      fe.close();
      open.length = 0;
      await backend.close();
      backend = undefined;
    }
    expect(counts[2]! - counts[1]!).toBe(1);
  });
});

describe('completion order (--completion)', () => {
  const MiB = 1 << 20;

  async function serveBlk(completion: CompletionOrder, extraFeatures = 0n): Promise<Frontend> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-order-'));
    dirs.push(dir);
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 8 * MiB);
    device = blkDevice({ image });
    backend = startBackend(device, { completion });
    const fe = await Frontend.connect({ socketPath: backend.socketPath, queues: 1, queueSize: 256, bufferBytes: 4 * MiB, extraFeatures });
    open.push(fe);
    return fe;
  }

  /** A request at `base`: header, `len` bytes of data, status. */
  function request(fe: Frontend, base: number, type: number, sector: number, len: number): { segs: Segment[]; status: number } {
    const h = Buffer.from(fe.buffer(0, base, 16));
    h.writeUInt32LE(type, 0);
    h.writeUInt32LE(0, 4);
    h.writeBigUInt64LE(BigInt(sector), 8);
    fe.buffer(0, base, 16).set(h);
    const write = type !== VIRTIO_BLK_T_OUT;
    const status = base + 512 + len;
    fe.buffer(0, status, 1)[0] = 0xee;
    return {
      segs: [{ offset: base, len: 16, write: false }, { offset: base + 512, len, write }, { offset: status, len: 1, write: true }],
      status,
    };
  }

  /**
   * One batch where requests finish out of order for sure: reads go to io_uring and complete after the batch's
   * submit, GET_ID completes inside the batch. Returns the used order as indexes into the batch.
   */
  async function mixedBatch(fe: Frontend): Promise<{ order: number[]; statuses: number[] }> {
    const types = [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN];
    const reqs = types.map((t, i) => request(fe, i * 8192, t, i * 16, t === VIRTIO_BLK_T_GET_ID ? 20 : 4096));
    const heads = fe.submitAll(0, reqs.map((r) => r.segs));
    const index = new Map(heads.map((h, i) => [h, i]));
    const order: number[] = [];
    for (let i = 0; i < reqs.length; i++) order.push(index.get((await fe.waitUsed(0)).id)!);
    return { order, statuses: reqs.map((r) => fe.buffer(0, r.status, 1)[0]!) };
  }

  it('as-finished: requests that finish first are used first (GET_ID overtakes the reads popped before it)', async () => {
    const fe = await serveBlk('as-finished');
    const { order, statuses } = await mixedBatch(fe);
    expect(new Set(order).size).toBe(order.length);
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
    expect(statuses.every((s) => s === VIRTIO_BLK_S_OK)).toBe(true);
  });

  it('in-order: the used ring lists heads in avail order, however the requests finished', async () => {
    const fe = await serveBlk('in-order');
    for (let round = 0; round < 3; round++) {
      const { order, statuses } = await mixedBatch(fe);
      expect(order).toEqual([0, 1, 2, 3, 4, 5, 6]);
      expect(statuses.every((s) => s === VIRTIO_BLK_S_OK)).toBe(true);
    }
    // and the ring stops cleanly: nothing held back is left behind
    await fe.stop();
  });

  it('IN_ORDER: blk offers VIRTIO_F_IN_ORDER only under --completion in-order (io_uring finishes requests in any order)', async () => {
    const fe = await serveBlk('as-finished', bit(VIRTIO_F_IN_ORDER));
    expect(hasBit((await fe.client.request('GET_FEATURES', undefined))!, VIRTIO_F_IN_ORDER)).toBe(false);
    expect(hasBit(fe.features, VIRTIO_F_IN_ORDER)).toBe(false);
  });

  it('IN_ORDER: buffers are used in the order they were made available (blk, --completion in-order, the bit acked)', async () => {
    const fe = await serveBlk('in-order', bit(VIRTIO_F_IN_ORDER));
    expect(hasBit(fe.features, VIRTIO_F_IN_ORDER)).toBe(true);
    expect(backend!.logs.join('\n')).toContain('VIRTIO_F_IN_ORDER acked');
    for (let round = 0; round < 3; round++) {
      const { order, statuses } = await mixedBatch(fe);
      expect(order).toEqual([0, 1, 2, 3, 4, 5, 6]);
      expect(statuses.every((s) => s === VIRTIO_BLK_S_OK)).toBe(true);
    }
    await fe.stop();
  });
});
