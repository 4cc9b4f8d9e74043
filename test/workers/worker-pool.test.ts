/**
 * The queue workers of a back-end endpoint are kept across its connections (src/queues/worker-pool.ts): spawned
 * once, reset between connections, and every connection still gets working rings from a clean state.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { nullDevice } from '../../src/devices/null.js';
import { Frontend } from '../../src/frontend/frontend.js';
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
});
