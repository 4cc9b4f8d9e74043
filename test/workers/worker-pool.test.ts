/**
 * The queue workers of a back-end endpoint are kept across its connections (src/queues/worker-pool.ts): spawned
 * once, reset between connections, and every connection still gets working rings from a clean state.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { nullDevice } from '../../src/devices/null.js';
import { loadEngineModule } from '../../src/engine/engine.js';
import { ERR_DEVICE } from '../../src/engine/layout.js';
import { Frontend } from '../../src/frontend/frontend.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { QueueWorkerPool } from '../../src/queues/worker-pool.js';
import type { WorkerEvent } from '../../src/queues/worker-protocol.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let be: InProcessBackend | undefined;

afterEach(async () => {
  await be?.close();
  be = undefined;
});

describe('queue workers kept across connections', () => {
  it('20 connections to a 2-queue back-end spawn 2 queue workers in all, and every connection is served', async () => {
    be = startBackend(nullDevice({ queues: 2 }));
    for (let i = 0; i < 20; i++) {
      const fe = await Frontend.connect({ socketPath: be.socketPath, queues: 2, queueSize: 64, bufferBytes: 64 * 1024 });
      try {
        for (let q = 0; q < 2; q++) expect((await fe.roundTrip(q, [{ offset: 0, len: 64, write: true }])).len).toBe(0);
      } finally {
        fe.close();
      }
      await be.server.idle();
      // wait for the release of this connection before the next (idle() covers only a connection it saw)
      while (be.server.session) await new Promise((r) => setTimeout(r, 5));
    }
    expect(be.server.connectionCount).toBe(20);
    expect(be.server.workerSpawnCount).toBe(2);
    expect(be.logs.join('\n')).not.toMatch(/retiring|failed|broken|needs a reset/);
  });

  it("a ring left mid-way by one connection starts clean in the next: the new front-end's ring from index 0 is served", async () => {
    be = startBackend(nullDevice({ queues: 1 }));
    const a = await Frontend.connect({ socketPath: be.socketPath, queues: 1, queueSize: 64, bufferBytes: 64 * 1024 });
    // 10 chains through: the back-end's ring state of this connection is at index 10 when it goes
    for (let i = 0; i < 10; i++) await a.roundTrip(0, [{ offset: 0, len: 16, write: true }]);
    a.close();
    while (be.server.session) await new Promise((r) => setTimeout(r, 5));
    const b = await Frontend.connect({ socketPath: be.socketPath, queues: 1, queueSize: 64, bufferBytes: 64 * 1024 });
    try {
      const r = await b.roundTrip(0, [{ offset: 0, len: 16, write: true }]);
      expect(r.len).toBe(0);
      expect(await b.stop()).toEqual([1]);
    } finally {
      b.close();
    }
    expect(be.server.workerSpawnCount).toBe(1);
  });

  it('a queue worker that dies breaks its rings for the connection that has it, and the next start gets a new worker', async () => {
    const mem = new GuestMemory();
    const pool = new QueueWorkerPool({ device: 'null', deviceOptions: {}, memory: mem.memory, module: loadEngineModule(), queueToWorker: [0, 1] });
    try {
      const events: WorkerEvent[] = [];
      const lease = pool.leaseFor((e) => events.push(e));
      await pool.call(0, (api) => api.resume());
      await pool.call(1, (api) => api.resume());
      expect(pool.spawnCount).toBe(2);
      // worker 0 leaves its loop and its thread ends, as a crashed one would
      await pool.call(0, (api) => api.shutdown());
      for (let i = 0; i < 200 && !events.some((e) => e.type === 'ring-error'); i++) await new Promise((r) => setTimeout(r, 10));
      expect(events).toContainEqual({ type: 'ring-error', queue: 0, code: ERR_DEVICE, detail: 0 });
      expect(events.some((e) => e.type === 'ring-error' && e.queue === 1)).toBe(false);
      // the connection goes on with what is left: calls for the dead worker's queue do nothing, the other serves
      await lease.stop(0);
      await lease.pause();
      await lease.resume();
      await lease.close();
      expect(pool.tainted).toBe(false);
      // the next connection's ring on queue 0 gets a fresh worker; worker 1 is the same one
      pool.leaseFor(() => undefined);
      await pool.call(0, (api) => api.resume());
      await pool.call(1, (api) => api.resume());
      expect(pool.spawnCount).toBe(3);
    } finally {
      await pool.close();
      mem.release();
    }
  });
});
