/**
 * Surviving a back-end crash, without a VM: the built-in front-end (inflight tracking on, as QEMU's
 * vhost-user-blk does) keeps a stream of 4 KiB writes of known patterns in flight on two queues of a
 * `vhost-wasm blk` child, the child is SIGKILLed at a random moment, a new one is started on the same socket,
 * the front-end reconnects (SET_INFLIGHT_FD, rings resume at the used index) and every request must complete
 * exactly once with status OK. Then every block written so far is read back through the rings and compared
 * with the pattern of the last write to it. 20 kill cycles.
 *
 * A block never has two writes in flight at once (as a file system or fio would not), so "the last completed
 * write" is well defined. What a lost write, a write applied twice across a newer one, a completion reported
 * twice or a request that never completes would look like: a pattern mismatch, a completion for a head that is
 * not outstanding, a request still outstanding after the reconnect.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRV_SEG_ADDR, DRV_SEG_BYTES, DRV_SEG_F_WRITE, DRV_SEG_FLAGS, DRV_SEG_LEN, DRV_USED_BYTES, DS_ERRORS, deviceArea } from '../../src/engine/layout.js';
import { drvInitFlags } from '../../src/engine/engine.js';
import { Frontend } from '../../src/frontend/frontend.js';
import { eventfdDrain, eventfdSignal, POLLIN, pollFds } from '../../src/sys/syscalls.js';
import { rngDevice } from '../../src/devices/rng.js';
import { startBackend } from '../helpers/backend.js';
import { BIN } from '../helpers/proc.js';

const KIB4 = 4096;
const QUEUES = 2;
const QUEUE_SIZE = 256;
/** requests kept in flight per queue (3 descriptors each) */
const DEPTH = 32;
/** 4 KiB blocks per queue (each queue writes its own range of the image) */
const BLOCKS = 128;
const CYCLES = 20;
const IMAGE_BYTES = QUEUES * BLOCKS * KIB4;
// in the queue's buffer area: DEPTH data slots of 4 KiB, then DEPTH records (header at +0, status at +16)
const REC_BASE = DEPTH * KIB4;
const REC_BYTES = 32;
// in the queue's device area of the front-end's memory: segment records, then the reaped (id, len) pairs
const SEGS_AT = 0;
const OUT_AT = 4096;
const VIRTIO_BLK_T_IN = 0;
const VIRTIO_BLK_T_OUT = 1;
const VIRTIO_BLK_F_FLUSH = 9n;
const VIRTIO_BLK_F_MQ = 12n;

/** The 4 KiB pattern of write number `seq` (seq 0 = never written: zeros). */
function pattern(seq: number, into: Uint32Array): void {
  if (seq === 0) {
    into.fill(0);
    return;
  }
  let x = (seq * 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < into.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    into[i] = (x >>> 0) ^ seq;
  }
}

interface Req {
  q: number;
  slot: number;
  block: number;
  write: boolean;
  seq: number;
}

interface Child {
  proc: ChildProcess;
  out: () => string;
}

let dir: string;
let image: string;
let socketPath: string;
let allOutput = '';
const children: ChildProcess[] = [];

function startChild(): Promise<Child> {
  const proc = spawn(process.execPath, [BIN, 'blk', '--socket-path', socketPath, '--image', image, '--queues', String(QUEUES)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  const take = (d: Buffer): void => {
    out += d.toString();
    allOutput += d.toString();
  };
  proc.stdout!.on('data', take);
  proc.stderr!.on('data', take);
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 20_000;
    const check = (): void => {
      if (/listening on/.test(out)) return resolve({ proc, out: () => out });
      if (proc.exitCode !== null || proc.signalCode !== null) return reject(new Error(`back-end exited early: ${out}`));
      if (Date.now() > deadline) return reject(new Error(`back-end did not listen within 20 s: ${out}`));
      setTimeout(check, 5);
    };
    check();
  });
}

function killChild(c: Child): Promise<void> {
  return new Promise((resolve) => {
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
    c.proc.once('exit', () => resolve());
    c.proc.kill('SIGKILL');
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-reconnect-'));
  image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, IMAGE_BYTES);
  socketPath = path.join(dir, 'blk.sock');
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('back-end restart under load, built-in front-end with inflight tracking', () => {
  // packed: the same on packed virtqueues (packed inflight records, positions recovered from them)
  it.each([false, true])(`${CYCLES} SIGKILL-and-restart cycles of a blk back-end: every request completes once, every block reads back as last written (packed=%s)`, async (packed) => {
    const t0 = performance.now();
    let child = await startChild();
    const fe = await Frontend.connect({
      socketPath,
      queues: QUEUES,
      queueSize: QUEUE_SIZE,
      inflight: true,
      packed,
      extraFeatures: (1n << VIRTIO_BLK_F_FLUSH) | (1n << VIRTIO_BLK_F_MQ),
    });
    try {
      expect(fe.packed).toBe(packed);
      expect(fe.inflightFd, 'the front-end got an inflight region').toBeDefined();
      const dv = (): DataView => new DataView(fe.ram.mem.memory.buffer);
      const u8 = (): Uint8Array => new Uint8Array(fe.ram.mem.memory.buffer);

      // per queue: free slots, requests by head, blocks with a write in flight
      const free: number[][] = [];
      const byHead: Map<number, Req>[] = [];
      const busy: Set<number>[] = [];
      // the seq of the last completed write per block (0: never written)
      const expected = new Uint32Array(QUEUES * BLOCKS);
      let seq = 0;
      let submitted = 0;
      let completed = 0;
      const problems: string[] = [];
      for (let q = 0; q < QUEUES; q++) {
        free.push([...Array(DEPTH).keys()].reverse());
        byHead.push(new Map());
        busy.push(new Set());
      }
      const scratch = new Uint32Array(KIB4 / 4);
      for (let q = 0; q < QUEUES; q++) {
        const r = fe.queues[q]!.ring;
        expect(fe.engine.drvInit(fe.ds(q), QUEUE_SIZE, r.desc, r.avail, r.used, fe.ram.gpaDelta, drvInitFlags(fe.eventIdx, fe.packed))).toBe(0);
        fe.engine.drvSetInterrupts(fe.ds(q), 1);
      }

      /** Put one request on queue q (no kick yet); returns false when no slot is free. */
      const add = (q: number, block: number, write: boolean): boolean => {
        const slot = free[q]!.pop();
        if (slot === undefined) return false;
        const ring = fe.queues[q]!.ring;
        const data = ring.buffers + slot * KIB4;
        const rec = ring.buffers + REC_BASE + slot * REC_BYTES;
        const v = dv();
        const s = write ? ++seq : 0;
        if (write) {
          pattern(s, scratch);
          new Uint32Array(fe.ram.mem.memory.buffer, data, KIB4 / 4).set(scratch);
        } else {
          new Uint32Array(fe.ram.mem.memory.buffer, data, KIB4 / 4).fill(0xdeadbeef);
        }
        v.setUint32(rec, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, true);
        v.setUint32(rec + 4, 0, true);
        v.setBigUint64(rec + 8, BigInt(((q * BLOCKS + block) * KIB4) / 512), true);
        u8()[rec + 16] = 0xff;
        const segs = deviceArea(q) + SEGS_AT;
        const put = (i: number, addr: number, len: number, w: boolean): void => {
          v.setUint32(segs + i * DRV_SEG_BYTES + DRV_SEG_ADDR, addr, true);
          v.setUint32(segs + i * DRV_SEG_BYTES + DRV_SEG_LEN, len, true);
          v.setUint32(segs + i * DRV_SEG_BYTES + DRV_SEG_FLAGS, w ? DRV_SEG_F_WRITE : 0, true);
        };
        put(0, rec, 16, false);
        put(1, data, KIB4, !write);
        put(2, rec + 16, 1, true);
        const head = fe.engine.drvAddChain(fe.ds(q), segs, 3);
        if (head < 0) throw new Error(`queue ${q}: no free descriptors with ${byHead[q]!.size} requests outstanding`);
        if (byHead[q]!.has(head)) problems.push(`queue ${q}: head ${head} handed out twice by the driver`);
        byHead[q]!.set(head, { q, slot, block, write, seq: s });
        busy[q]!.add(block);
        submitted++;
        return true;
      };

      const kick = (q: number): void => {
        fe.engine.drvKickAvail(fe.ds(q));
        if (fe.engine.drvNeedKick(fe.ds(q))) eventfdSignal(fe.queues[q]!.kickFd);
      };

      /** Reap every used element of queue q; checks each against what is outstanding. */
      const reap = (q: number): number => {
        const out = deviceArea(q) + OUT_AT;
        const n = fe.engine.drvReapTo(fe.ds(q), out, QUEUE_SIZE);
        const v = dv();
        const ring = fe.queues[q]!.ring;
        for (let i = 0; i < n; i++) {
          const id = v.getUint32(out + i * DRV_USED_BYTES, true);
          const len = v.getUint32(out + i * DRV_USED_BYTES + 4, true);
          const r = byHead[q]!.get(id);
          if (!r) {
            problems.push(`queue ${q}: completion for head ${id}, which is not outstanding (completed twice?)`);
            continue;
          }
          byHead[q]!.delete(id);
          const status = u8()[ring.buffers + REC_BASE + r.slot * REC_BYTES + 16];
          if (status !== 0) problems.push(`queue ${q}: ${r.write ? 'write' : 'read'} of block ${r.block} completed with status ${status}`);
          const wantLen = r.write ? 1 : KIB4 + 1;
          if (len !== wantLen) problems.push(`queue ${q}: ${r.write ? 'write' : 'read'} of block ${r.block}: used length ${len}, ${wantLen} expected`);
          if (r.write) expected[q * BLOCKS + r.block] = r.seq;
          else {
            pattern(expected[q * BLOCKS + r.block]!, scratch);
            const got = new Uint32Array(fe.ram.mem.memory.buffer, ring.buffers + r.slot * KIB4, KIB4 / 4);
            for (let w = 0; w < scratch.length; w++) {
              if (got[w] !== scratch[w]) {
                problems.push(
                  `queue ${q}: block ${r.block} reads back wrong at word ${w} (last completed write seq ${expected[q * BLOCKS + r.block]}): ` +
                    `0x${got[w]!.toString(16)} != 0x${scratch[w]!.toString(16)}`,
                );
                break;
              }
            }
          }
          busy[q]!.delete(r.block);
          free[q]!.push(r.slot);
          completed++;
        }
        return n;
      };

      /** Fill every queue up to DEPTH with writes to random blocks that have nothing in flight. */
      const topUp = (): void => {
        for (let q = 0; q < QUEUES; q++) {
          let added = false;
          while (free[q]!.length > 0) {
            let block = Math.floor(Math.random() * BLOCKS);
            while (busy[q]!.has(block)) block = (block + 1) % BLOCKS;
            add(q, block, true);
            added = true;
          }
          if (added) kick(q);
        }
      };

      const outstanding = (): number => byHead.reduce((s, m) => s + m.size, 0);

      /** Wait until nothing is outstanding (or fail after limitMs, saying what is left). */
      const drain = async (limitMs: number, what: string): Promise<void> => {
        const deadline = Date.now() + limitMs;
        const pfd = Buffer.alloc(8 * QUEUES);
        for (;;) {
          for (let q = 0; q < QUEUES; q++) reap(q);
          if (outstanding() === 0) return;
          if (Date.now() > deadline) {
            const left = byHead.map((m, q) => `queue ${q}: ${[...m.entries()].map(([h, r]) => `head ${h} (${r.write ? 'write' : 'read'} block ${r.block})`).join(', ')}`);
            throw new Error(`${what}: ${outstanding()} request(s) never completed within ${limitMs} ms\n${left.join('\n')}\n--- back-end ---\n${child.out()}`);
          }
          for (let q = 0; q < QUEUES; q++) {
            pfd.writeInt32LE(fe.queues[q]!.callFd, q * 8);
            pfd.writeInt16LE(POLLIN, q * 8 + 4);
            pfd.writeInt16LE(0, q * 8 + 6);
          }
          if (pollFds(pfd, QUEUES, 0) > 0) for (let q = 0; q < QUEUES; q++) if (pfd.readInt16LE(q * 8 + 6)) eventfdDrain(fe.queues[q]!.callFd);
          await sleep(1);
        }
      };

      /** Read every block of every queue back through the rings and compare it with its last write. */
      const verifyAll = async (what: string): Promise<void> => {
        for (let b = 0; b < BLOCKS; ) {
          for (let q = 0; q < QUEUES; q++) {
            for (let k = 0; k < DEPTH && b + k < BLOCKS; k++) add(q, b + k, false);
            kick(q);
          }
          b += DEPTH;
          await drain(5_000, what);
        }
      };

      let kills = 0;
      let runMs = 0;
      let downMs = 0;
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        // a stream of writes, DEPTH per queue in flight, for a random while; then the kill, mid-stream
        const runFor = 20 + Math.random() * 120;
        const tr = performance.now();
        while (performance.now() - tr < runFor) {
          for (let q = 0; q < QUEUES; q++) reap(q);
          topUp();
          await turn();
        }
        runMs += performance.now() - tr;
        const td = performance.now();
        await killChild(child);
        kills++;
        // the "guest" goes on: what completed before the kill is reaped, the free slots get new writes that sit
        // in the avail ring until a back-end is there again
        for (let q = 0; q < QUEUES; q++) reap(q);
        topUp();
        child = await startChild();
        await fe.reconnect();
        downMs += performance.now() - td;
        await drain(10_000, `cycle ${cycle}: after the reconnect`);
        expect(problems, problems.join('\n')).toEqual([]);
        // every 4th cycle (and the last) read the whole range back through the new back-end
        if (cycle % 4 === 3 || cycle === CYCLES - 1) await verifyAll(`cycle ${cycle}: read-back`);
        expect(problems, problems.join('\n')).toEqual([]);
      }
      // nothing the driver saw was a stray used element, and the image file agrees with the last writes
      for (let q = 0; q < QUEUES; q++) expect(dv().getUint32(fe.ds(q) + DS_ERRORS, true), `queue ${q}: stray used elements`).toBe(0);
      const img = fs.readFileSync(image);
      for (let i = 0; i < QUEUES * BLOCKS; i++) {
        pattern(expected[i]!, scratch);
        const got = new Uint32Array(img.buffer, img.byteOffset + i * KIB4, KIB4 / 4);
        expect(Buffer.from(got.buffer, got.byteOffset, KIB4).equals(Buffer.from(scratch.buffer)), `image block ${i} (last write seq ${expected[i]})`).toBe(true);
      }
      expect(completed).toBe(submitted);
      expect(kills).toBe(CYCLES);
      const resubmitted = [...allOutput.matchAll(/resubmitting (\d+) request/g)].reduce((s, m) => s + Number(m[1]), 0);
      const resubmitLines = [...allOutput.matchAll(/resubmitting (\d+) request/g)].length;
      console.log(
        `[reconnect] ${kills} kills, ${submitted} requests (${seq} writes) each completed once; ` +
          `${resubmitted} request(s) resubmitted after restarts (${resubmitLines} ring recoveries); ` +
          `streaming ${(runMs / 1000).toFixed(1)} s, kill-to-reconnected ${(downMs / kills).toFixed(0)} ms on average, total ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    } finally {
      fe.close();
      await killChild(child);
    }
  }, 120_000);
});

describe('after a back-end restart the driver hears of completions the killed back-end published', () => {
  it('a used element published just before the kill (no call written) is signalled by the new back-end', async () => {
    // the killed back-end's last act: a used element written and used.idx stored, the inflight bookkeeping done,
    // and then SIGKILL before the call eventfd was written. Nothing else is in flight: without an interrupt
    // after the restart, a guest driver sleeping on that completion would wait forever.
    const be = startBackend(rngDevice());
    const fe = await Frontend.connect({ socketPath: be.socketPath, queues: 1, queueSize: 256, inflight: true });
    try {
      for (let i = 0; i < 3; i++) await fe.roundTrip(0, [{ offset: 0, len: 16, write: true }]);
      expect(await fe.stop()).toEqual([3]);
      const head = fe.submit(0, [{ offset: 512, len: 64, write: true }]);
      const ring = fe.queues[0]!.ring;
      const dv = new DataView(fe.ram.mem.memory.buffer);
      const idx = dv.getUint16(ring.used + 2, true);
      dv.setUint32(ring.used + 4 + (idx % 256) * 8, head, true);
      dv.setUint32(ring.used + 4 + (idx % 256) * 8 + 4, 64, true);
      Atomics.store(new Uint16Array(fe.ram.mem.memory.buffer), (ring.used + 2) >>> 1, idx + 1);
      // the inflight header's used_idx (offset 14) follows used.idx: that batch was fully committed
      const hdr = Buffer.alloc(2);
      hdr.writeUInt16LE((idx + 1) & 0xffff);
      fs.writeSync(fe.inflightFd!, hdr, 0, 2, 14);
      const callFd = fe.queues[0]!.callFd;
      const pfd = Buffer.alloc(8);
      pfd.writeInt32LE(callFd, 0);
      pfd.writeInt16LE(POLLIN, 4);
      if (pollFds(pfd, 1, 0) > 0) eventfdDrain(callFd);
      await fe.reconnect();
      let signalled = false;
      for (let i = 0; i < 200 && !signalled; i++) {
        pfd.writeInt16LE(0, 6);
        signalled = pollFds(pfd, 1, 0) > 0;
        if (!signalled) await sleep(5);
      }
      expect(signalled, 'an interrupt after the ring restarted').toBe(true);
      expect(await fe.waitUsed(0, 1000)).toEqual({ id: head, len: 64 });
      // and the ring goes on from there
      expect((await fe.roundTrip(0, [{ offset: 0, len: 8, write: true }])).len).toBe(8);
    } finally {
      fe.close();
      await be.close();
    }
  });
});
