/**
 * Connection churn: 1000 (VHOST_WASM_CHURN_CYCLES) connections of the built-in front-end to a
 * `vhost-wasm blk --queues 2` child, after 500 more of warm-up, each ending one of four ways, in turn:
 * - complete: full set-up, one write through the rings, disconnect;
 * - mid-setup: the front-end vanishes after the first k set-up requests (k = 0 .. all of them, in turn);
 * - mid-message: full set-up, writes in flight, then half a message (a header, or a header and part of its
 *   payload with an fd attached) and the front-end vanishes;
 * - mid-I/O: full set-up, 16 writes in flight on each queue, and the front-end vanishes without waiting.
 * Every connection maps guest memory, starts rings and io_uring instances, and must release all of it when the
 * front-end goes; whatever a connection leaves behind shows up as open fds, threads or resident memory that grow
 * with the cycle count. They are sampled from /proc every 50 cycles once the back-end has settled.
 *
 * Resident memory is judged by its floor: the JS heap of the main thread rises and falls with garbage collection
 * by tens of MiB, while a leak raises the lowest value the process comes back to. V8 sizes its heap up over the
 * first few hundred connections (about 30 MiB), hence the warm-up.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Frontend } from '../../src/frontend/frontend.js';
import { eventfd, closeQuietly } from '../../src/sys/syscalls.js';
import { spawnBackend, type ChildBackend } from '../helpers/backend.js';
import { openFdCount, ownThreadCount, rssKiB } from '../helpers/proc.js';

const CYCLES = Number(process.env.VHOST_WASM_CHURN_CYCLES ?? 1000);
const SAMPLE_EVERY = 50;
/** connections before the measured ones: code caches, V8 heap sizing, the workers of the pool */
const WARM_UP = Number(process.env.VHOST_WASM_CHURN_WARM_UP ?? 500);
const QUEUES = 2;
const QUEUE_SIZE = 64;
/** writes left in flight per queue by the mid-I/O and mid-message kinds (3 descriptors each) */
const DEPTH = 16;
/** requests of the full set-up of a 2-queue front-end without inflight: 7 + 6 per queue */
const SETUP_REQUESTS = 7 + 6 * QUEUES;
const VIRTIO_BLK_T_OUT = 1;
const KINDS = ['complete', 'mid-setup', 'mid-message', 'mid-I/O'] as const;

let dir: string;
let be: ChildBackend | undefined;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-churn-'));
  fs.writeFileSync(path.join(dir, 'disk.img'), Buffer.alloc(1 << 20));
});

afterAll(async () => {
  await be?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A write of 4 KiB to sector 8 * q; its header at 0, status at 16, data at 4096 of the queue's buffers. */
function submitWrite(fe: Frontend, q: number): number {
  const hdr = new DataView(new ArrayBuffer(16));
  hdr.setUint32(0, VIRTIO_BLK_T_OUT, true);
  hdr.setBigUint64(8, BigInt(8 * q), true);
  fe.buffer(q, 0, 16).set(new Uint8Array(hdr.buffer));
  fe.buffer(q, 16, 1)[0] = 0xff;
  return fe.submit(q, [
    { offset: 0, len: 16, write: false },
    { offset: 4096, len: 4096, write: false },
    { offset: 16, len: 1, write: true },
  ]);
}

/** Half a vhost-user message: header only, or header and part of a payload with an fd (SET_MEM_TABLE). */
function sendHalfMessage(fe: Frontend, i: number): void {
  const REQ_SET_MEM_TABLE = 5;
  const VERSION_1 = 1;
  const m = Buffer.alloc(12 + 20);
  m.writeUInt32LE(REQ_SET_MEM_TABLE, 0);
  m.writeUInt32LE(VERSION_1, 4);
  m.writeUInt32LE(8 + 32, 8); // a table with one region: 40 bytes announced
  if (i % 8 < 4) {
    fe.client.sendRaw(m.subarray(0, 6 + (i % 4)));
    return;
  }
  const fd = eventfd();
  try {
    fe.client.sendRaw(m, [fd]);
  } finally {
    closeQuietly(fd);
  }
}

describe('connection churn against a back-end child', () => {
  it(`${CYCLES} connections (after ${WARM_UP} of warm-up) that end complete, mid-setup, mid-message or mid-I/O: the back-end's open fds, threads and resident memory stay flat`, async () => {
    be = await spawnBackend(['blk', '--image', path.join(dir, 'disk.img'), '--queues', String(QUEUES)]);
    const pid = be.child.pid!;
    const selfFds = (): number => fs.readdirSync('/proc/self/fd').length;
    const samples: { cycle: number; fds: number; threads: number; rssKiB: number; selfFds: number; msPerCycle: number }[] = [];
    const t0 = performance.now();
    let tLast = t0;
    // the back-end releases a connection asynchronously after the front-end closed it: sample once its fd and
    // thread counts have been still for a while
    const settle = async (): Promise<void> => {
      const deadline = Date.now() + 5_000;
      let last = '';
      let still = 0;
      while (still < 3 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 30));
        const now = `${openFdCount(pid)}/${ownThreadCount(pid)}`;
        still = now === last ? still + 1 : 0;
        last = now;
      }
    };
    const sample = async (cycle: number): Promise<void> => {
      await settle();
      const now = performance.now();
      samples.push({
        cycle,
        fds: openFdCount(pid),
        threads: ownThreadCount(pid),
        rssKiB: rssKiB(pid),
        selfFds: selfFds(),
        msPerCycle: cycle === 0 ? 0 : (now - tLast) / SAMPLE_EVERY,
      });
      tLast = performance.now();
    };
    const counts = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<(typeof KINDS)[number], number>;
    await sample(0);
    for (let i = 1; i <= WARM_UP + CYCLES; i++) {
      const kind = KINDS[i % KINDS.length]!;
      let fe: Frontend | undefined;
      try {
        const setupSteps = kind === 'mid-setup' ? Math.floor(i / KINDS.length) % (SETUP_REQUESTS + 1) : undefined;
        fe = await Frontend.connect({ socketPath: be.socketPath, queues: QUEUES, queueSize: QUEUE_SIZE, bufferBytes: 64 * 1024, setupSteps });
        if (kind === 'complete') {
          submitWrite(fe, i % QUEUES);
          const r = await fe.waitUsed(i % QUEUES);
          expect(r.len).toBe(1);
          expect(fe.buffer(i % QUEUES, 16, 1)[0], 'status of the write').toBe(0);
        } else if (kind === 'mid-I/O' || kind === 'mid-message') {
          for (let q = 0; q < QUEUES; q++) for (let k = 0; k < DEPTH; k++) submitWrite(fe, q);
          if (kind === 'mid-message') sendHalfMessage(fe, i);
        }
        counts[kind]++;
      } catch (e) {
        throw new Error(`cycle ${i} (${kind}): ${(e as Error).message}\n--- back-end ---\n${be.output().slice(-4000)}`);
      } finally {
        fe?.close();
      }
      if (i % SAMPLE_EVERY === 0 && (i >= WARM_UP || i % 250 === 0)) await sample(i);
      if (be.child.exitCode !== null || be.child.signalCode !== null) throw new Error(`back-end exited at cycle ${i}:\n${be.output()}`);
    }
    const totalS = (performance.now() - t0) / 1000;
    const total = WARM_UP + CYCLES;
    const table = samples
      .map((s) => `${s.cycle}\t${s.fds}\t${s.threads}\t${(s.rssKiB / 1024).toFixed(1)}\t${s.selfFds}\t${s.msPerCycle.toFixed(1)}`)
      .join('\n');
    console.log(
      `[churn] ${total} cycles (${KINDS.map((k) => `${counts[k]} ${k}`).join(', ')}) in ${totalS.toFixed(1)} s ` +
        `(${((totalS * 1000) / total).toFixed(1)} ms per cycle)\ncycle\tbe-fds\tbe-thr\tbe-RSS(MiB)\tfe-fds\tms/cycle\n${table}`,
    );
    expect(counts['mid-setup'] + counts['mid-message'] + counts['mid-I/O']).toBe(total - counts.complete);

    const warm = samples.filter((s) => s.cycle >= WARM_UP);
    const first = warm[0]!;
    // fds and threads: flat from the first sample after warm-up on, on both sides of the socket
    for (const s of warm) {
      expect(Math.abs(s.fds - first.fds), `back-end fds at cycle ${s.cycle}\n${table}`).toBeLessThanOrEqual(2);
      expect(s.threads, `back-end threads at cycle ${s.cycle} (a worker spawned per connection?)\n${table}`).toBe(first.threads);
      expect(Math.abs(s.selfFds - first.selfFds), `front-end fds at cycle ${s.cycle}\n${table}`).toBeLessThanOrEqual(2);
    }
    // resident memory, by the floor of each third of the measured run: V8 may still size its heap up a little in
    // the first third (bounded), but from the middle third to the last the floor must not rise. A leak of 20 KiB
    // per connection raises it by 6.5 MiB per third; a worker spawned per connection (koffi keeps ~70 KiB per
    // thread) by tens of MiB.
    const third = Math.max(1, Math.floor(warm.length / 3));
    const floor = (xs: typeof warm): number => Math.min(...xs.map((s) => s.rssKiB));
    const [first3, middle3, last3] = [warm.slice(0, third), warm.slice(third, 2 * third), warm.slice(2 * third)];
    if (middle3.length > 0 && last3.length > 0)
      expect((floor(last3) - floor(middle3)) / 1024, `RSS floor, middle third to last third (MiB)\n${table}`).toBeLessThan(6);
    expect((floor(last3.length ? last3 : warm) - floor(first3)) / 1024, `RSS floor, first third to last third (MiB)\n${table}`).toBeLessThan(16);
    expect((Math.max(...warm.map((s) => s.rssKiB)) - floor(first3)) / 1024, `RSS peak above the first floor (MiB)\n${table}`).toBeLessThan(32);
    expect(be.output()).not.toMatch(/releasing the connection failed|cannot serve|retiring it|internal error/);
  }, 600_000);
});
