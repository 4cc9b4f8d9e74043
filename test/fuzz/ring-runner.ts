/**
 * Runs one hostile ring (ring-model.ts) end to end: a built-in front-end sets up a `null --queues 2` back-end,
 * the case is written straight into the front-end's guest memory for queue 0, avail.idx is published with an
 * atomic store and queue 0 is kicked. Then:
 *   - the device completed exactly the valid prefix of what was published, and reports NEEDS_RESET (0x40) iff
 *     a published chain is invalid (the reference in ring-model.ts, from B.1);
 *   - the used ring of queue 0 holds only what is legal: used.idx, the completed elements (id = head, len = 0
 *     for the null device), NO_NOTIFY / avail_event;
 *   - every other byte of guest memory is unchanged;
 *   - queue 1 still completes a chain; the back-end process is alive.
 */
import { Frontend } from '../../src/frontend/frontend.js';
import { eventfdSignal } from '../../src/sys/syscalls.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../src/vhost-user/session.js';
import { type FuzzBackend, sleep, withTimeout } from './harness.js';
import { BUFFER_BYTES, expectedOutcome, type RingCase, type RingLayout, writeCase } from './ring-model.js';

export interface RingResult {
  complaints: string[];
  notes: string[];
}

const NEEDS_RESET = BigInt(VIRTIO_CONFIG_S_NEEDS_RESET);

export async function runRingCase(be: FuzzBackend, c: RingCase): Promise<RingResult> {
  const complaints: string[] = [];
  const notes: string[] = [];
  const logFrom = be.output().length;
  const n = c.queueSize;
  const fe = await withTimeout(
    Frontend.connect({ socketPath: be.socketPath, queues: 2, queueSize: n, bufferBytes: BUFFER_BYTES, eventIdx: c.eventIdx }),
    8000,
    'front-end set-up',
  );
  try {
    const ram = fe.ram;
    const w0 = ram.region.wasmAddr;
    const ring = fe.queues[0]!.ring;
    const l: RingLayout = { ramBytes: ram.bytes, desc: ring.desc - w0, avail: ring.avail - w0, used: ring.used - w0, buffers: ring.buffers - w0 };
    const mem = (): DataView => new DataView(fe.ram.mem.memory.buffer, w0, ram.bytes);
    const status = async (): Promise<bigint> => (await withTimeout(fe.client.request('GET_STATUS', undefined), 4000, 'GET_STATUS'))!;

    if (c.base !== 0) {
      // restart queue 0 at `base`: stop it, set both indices, hand the kick fd back (the ring starts again)
      await fe.client.request('GET_VRING_BASE', { index: 0, num: 0 });
      mem().setUint16(l.avail + 2, c.base, true);
      mem().setUint16(l.used + 2, c.base, true);
      await fe.client.request('SET_VRING_BASE', { index: 0, num: c.base });
      await fe.client.request('SET_VRING_KICK', { index: 0, noFd: false }, [fe.queues[0]!.kickFd]);
    }
    // let the start settle (the worker looks at the ring once when it starts)
    await sleep(5);
    writeCase(c, l, mem());
    const availIdx = (c.base + c.publish) & 0xffff;
    const before = new Uint8Array(ram.bytes);
    before.set(new Uint8Array(fe.ram.mem.memory.buffer, w0, ram.bytes));
    const snap = new DataView(before.buffer);
    snap.setUint16(l.avail + 2, availIdx, true); // what the device will see
    const exp = expectedOutcome(c, l, snap);
    notes.push(`reference: ${exp.broken ? `breaks after ${exp.complete} chain(s): ${exp.why}` : `all ${exp.complete} chain(s) complete`}`);

    // publish and kick
    Atomics.store(new Uint16Array(fe.ram.mem.memory.buffer), (ring.avail + 2) >>> 1, availIdx);
    eventfdSignal(fe.queues[0]!.kickFd);

    const usedIdx = (): number => Atomics.load(new Uint16Array(fe.ram.mem.memory.buffer), (ring.used + 2) >>> 1);
    const target = (c.base + exp.complete) & 0xffff;
    const deadline = Date.now() + 3000;
    let st = 0n;
    for (;;) {
      if (exp.broken) {
        st = await status();
        if (st & NEEDS_RESET) break;
      } else if (usedIdx() === target) {
        await sleep(exp.complete === 0 ? 30 : 2);
        st = await status();
        break;
      }
      if (Date.now() > deadline) {
        st = await status();
        break;
      }
      await sleep(exp.broken ? 8 : 2);
    }
    const got = (usedIdx() - c.base) & 0xffff;
    const broken = (st & NEEDS_RESET) !== 0n;
    const log = be.since(logFrom).trim();
    if (broken !== exp.broken || got !== exp.complete) {
      complaints.push(
        `device completed ${got} chain(s)${broken ? ' and reported NEEDS_RESET' : ' without NEEDS_RESET'}; ` +
          `the reference expects ${exp.complete}${exp.broken ? ` and NEEDS_RESET (${exp.why})` : ' and no NEEDS_RESET'}` +
          (log ? `\nback-end log: ${log}` : ''),
      );
    }

    // the used ring: only what is legal
    const after = new DataView(fe.ram.mem.memory.buffer.slice(w0, w0 + ram.bytes));
    const usedEnd = l.used + 6 + 8 * n;
    const legalSlots = new Set<number>();
    for (let k = 0; k < Math.min(got, n); k++) legalSlots.add((c.base + k) % n);
    if (got > c.publish) complaints.push(`used.idx advanced by ${got}, but only ${c.publish} chain(s) were published`);
    for (let k = 0; k < Math.min(got, exp.complete, n); k++) {
      const slot = (c.base + k) % n;
      const id = after.getUint32(l.used + 4 + 8 * slot, true);
      const len = after.getUint32(l.used + 4 + 8 * slot + 4, true);
      if (id !== exp.heads[k]) complaints.push(`used element ${k}: id ${id}, expected head ${exp.heads[k]}`);
      if (len !== 0) complaints.push(`used element ${k}: len ${len}, but the null device writes nothing`);
    }
    const flagsBefore = snap.getUint16(l.used, true);
    const flagsAfter = after.getUint16(l.used, true);
    if ((flagsBefore & ~1) !== (flagsAfter & ~1)) complaints.push(`used.flags changed from 0x${flagsBefore.toString(16)} to 0x${flagsAfter.toString(16)}`);
    for (let slot = 0; slot < n; slot++) {
      if (legalSlots.has(slot)) continue;
      const at = l.used + 4 + 8 * slot;
      if (snap.getBigUint64(at, true) !== after.getBigUint64(at, true)) complaints.push(`used ring slot ${slot} was written, but no chain completed there`);
    }
    if (!c.eventIdx && snap.getUint16(usedEnd - 2, true) !== after.getUint16(usedEnd - 2, true))
      complaints.push('avail_event was written without VIRTIO_F_EVENT_IDX');

    // everything else: byte for byte unchanged
    const diffs: string[] = [];
    for (let i = 0; i < ram.bytes && diffs.length < 8; i++) {
      if (i >= l.used && i < usedEnd) continue;
      if (before[i] !== after.getUint8(i)) {
        let j = i;
        while (j < ram.bytes && before[j] !== after.getUint8(j) && !(j >= l.used && j < usedEnd)) j++;
        diffs.push(`gpa 0x${i.toString(16)}..0x${j.toString(16)} (${where(i, l, n)})`);
        i = j;
      }
    }
    if (diffs.length) complaints.push(`guest memory outside the used ring changed: ${diffs.join(', ')}`);

    // the other queue keeps serving
    try {
      const r = await fe.roundTrip(1, [{ offset: 0, len: 8, write: false }], 3000);
      if (r.len !== 0) complaints.push(`queue 1 used length ${r.len}, expected 0`);
    } catch (e) {
      complaints.push(`queue 1 did not complete a chain: ${(e as Error).message}`);
    }
  } finally {
    fe.close();
  }
  if (!be.alive()) complaints.push(`the back-end process died (${be.exitDescription()})`);
  return { complaints, notes };
}

function where(gpa: number, l: RingLayout, n: number): string {
  if (gpa >= l.desc && gpa < l.desc + 16 * n) return 'queue 0 descriptor table';
  if (gpa >= l.avail && gpa < l.avail + 6 + 2 * n) return 'queue 0 avail ring';
  if (gpa >= l.buffers && gpa < l.buffers + BUFFER_BYTES) return `queue 0 buffer area +0x${(gpa - l.buffers).toString(16)}`;
  return 'elsewhere';
}
