/**
 * ivshmem doorbell round trip between two host-side peers of one server (all in this process): A rings B's
 * vector 0, B's vector worker sees it and posts to the main thread, which rings A back; A's worker sees that.
 * This is the peer library's event path (eventfd -> worker poll() -> postMessage -> main), not a guest's.
 *
 *   node build/out/bench/ivshmem-doorbell.js [--rounds N] [--trips N]
 */
import { parseArgs } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { IvshmemPeer } from '../src/ivshmem/peer.js';
import { IvshmemServer } from '../src/ivshmem/server.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, trips: { type: 'string' } } });
const rounds = Number(values.rounds ?? 5);
const trips = Number(values.trips ?? 2000);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-ivshmem-bench-'));
const server = new IvshmemServer({ socketPath: path.join(dir, 's'), backing: { kind: 'memfd' }, size: 1n << 20n, vectors: 1 }).start();
const a = await IvshmemPeer.connect({ socketPath: server.opts.socketPath });
const b = await IvshmemPeer.connect({ socketPath: server.opts.socketPath });
while (!a.peers().has(b.id)) await new Promise((r) => setTimeout(r, 1));

b.on((e) => e.type === 'interrupt' && b.ring(a.id, 0));
const medians: number[] = [];
for (let r = 0; r < rounds; r++) {
  const rtts: number[] = [];
  await new Promise<void>((done) => {
    let t0 = 0;
    const off = a.on((e) => {
      if (e.type !== 'interrupt') return;
      rtts.push(performance.now() - t0);
      if (rtts.length === trips) {
        off();
        return done();
      }
      t0 = performance.now();
      a.ring(b.id, 0);
    });
    t0 = performance.now();
    a.ring(b.id, 0);
  });
  rtts.sort((x, y) => x - y);
  const med = rtts[rtts.length >> 1]! * 1000;
  const p99 = rtts[Math.floor(rtts.length * 0.99)]! * 1000;
  medians.push(med);
  console.log(`round ${r + 1}: ${trips} round trips, median ${med.toFixed(1)} µs, p99 ${p99.toFixed(1)} µs`);
}
medians.sort((x, y) => x - y);
console.log(`median of round medians: ${medians[medians.length >> 1]!.toFixed(1)} µs per round trip (two doorbells)`);
await a.close();
await b.close();
server.close();
fs.rmSync(dir, { recursive: true, force: true });
