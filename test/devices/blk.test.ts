/**
 * virtio-blk end to end with the built-in front-end: the back-end in this process (real worker threads, real
 * io_uring on a real image file), requests built by hand in the front-end's guest memory.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BLK_MAX_DISCARD_SEG,
  blkDevice,
  type BlkDevice,
  CFG_BLK_SIZE,
  CFG_CAPACITY,
  CFG_MAX_DISCARD_SEG,
  CFG_NUM_QUEUES,
  CFG_SEG_MAX,
  CFG_WRITEBACK,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../src/devices/blk.js';
import { Frontend, type Segment } from '../../src/frontend/frontend.js';
import { spawnBackend, startBackend, type ChildBackend, type InProcessBackend } from '../helpers/backend.js';
import { BIN, waitExit } from '../helpers/proc.js';

const MiB = 1 << 20;
let backend: InProcessBackend | undefined;
let device: BlkDevice | undefined;
let child: ChildBackend | undefined;
const open: { close(): void }[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const fe of open.splice(0)) fe.close();
  await backend?.close();
  backend = undefined;
  device?.close();
  device = undefined;
  await child?.stop();
  child = undefined;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A sparse image of `bytes` in a fresh directory (tmpdir: ext4 here; /dev/shm: tmpfs). */
function makeImage(bytes: number, where = os.tmpdir()): string {
  const dir = fs.mkdtempSync(path.join(where, 'vw-blk-'));
  dirs.push(dir);
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  return file;
}

async function serve(
  opts: Parameters<typeof blkDevice>[0],
  queues = opts.queues ?? 1,
  feOpts: Partial<Parameters<typeof Frontend.connect>[0]> = {},
): Promise<Frontend> {
  device = blkDevice(opts);
  backend = startBackend(device);
  const fe = await Frontend.connect({ socketPath: backend.socketPath, queues, queueSize: 256, bufferBytes: 4 * MiB, ...feOpts });
  open.push(fe);
  return fe;
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

function preadImage(file: string, off: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    const n = fs.readSync(fd, b, 0, len, off);
    return b.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

function writeHeader(fe: Frontend, q: number, off: number, type: number, sector: number | bigint): void {
  const b = Buffer.from(fe.buffer(q, off, 16).buffer, fe.buffer(q, off, 16).byteOffset, 16);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(0, 4);
  b.writeBigUInt64LE(BigInt(sector), 8);
}

interface Req {
  segs: Segment[];
  /** offset of the data (IN: where it lands; OUT: what is written) */
  data: number;
  status: number;
}

/**
 * A request laid out at `base` in queue q's buffer area: header (16), data (`len`, split into `split` segments),
 * status (1). IN data is device-writable, OUT data device-readable.
 */
function request(fe: Frontend, q: number, base: number, type: number, sector: number | bigint, len: number, split = 1): Req {
  writeHeader(fe, q, base, type, sector);
  const data = base + 512;
  const write = type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_GET_ID;
  const segs: Segment[] = [{ offset: base, len: 16, write: false }];
  let at = 0;
  for (let i = 0; i < split && len > 0; i++) {
    const l = i === split - 1 ? len - at : Math.floor(len / split);
    segs.push({ offset: data + at, len: l, write });
    at += l;
  }
  const status = data + len;
  fe.buffer(q, status, 1)[0] = 0xee;
  segs.push({ offset: status, len: 1, write: true });
  return { segs, data, status };
}

async function run(fe: Frontend, q: number, r: Req): Promise<{ status: number; len: number }> {
  const u = await fe.roundTrip(q, r.segs);
  return { status: fe.buffer(q, r.status, 1)[0]!, len: u.len };
}

async function write(fe: Frontend, q: number, sector: number, data: Buffer, base = 0, split = 1): Promise<{ status: number; len: number }> {
  const r = request(fe, q, base, VIRTIO_BLK_T_OUT, sector, data.length, split);
  fe.buffer(q, r.data, data.length).set(data);
  return run(fe, q, r);
}

async function read(fe: Frontend, q: number, sector: number, len: number, base = 0, split = 1): Promise<{ status: number; len: number; data: Buffer }> {
  const r = request(fe, q, base, VIRTIO_BLK_T_IN, sector, len, split);
  fe.buffer(q, r.data, len).fill(0x5a);
  const res = await run(fe, q, r);
  return { ...res, data: Buffer.from(fe.buffer(q, r.data, len)) };
}

/** DISCARD / WRITE_ZEROES with the given ranges [sector, sectors, flags]. */
function dzRequest(fe: Frontend, q: number, base: number, type: number, ranges: [number | bigint, number, number][]): Req {
  writeHeader(fe, q, base, type, 0);
  const data = base + 512;
  const b = Buffer.alloc(16 * ranges.length);
  ranges.forEach(([s, n, f], i) => {
    b.writeBigUInt64LE(BigInt(s), i * 16);
    b.writeUInt32LE(n, i * 16 + 8);
    b.writeUInt32LE(f, i * 16 + 12);
  });
  fe.buffer(q, data, b.length).set(b);
  const status = data + b.length;
  fe.buffer(q, status, 1)[0] = 0xee;
  return {
    segs: [
      { offset: base, len: 16, write: false },
      { offset: data, len: b.length, write: false },
      { offset: status, len: 1, write: true },
    ],
    data,
    status,
  };
}

/** Records marked in flight in the inflight region (A.10) of queue 0: header of 16 bytes, then 16 per descriptor. */
function inflightRecords(fe: Frontend): number {
  const region = Buffer.alloc(16 + 16 * 256);
  fs.readSync(fe.inflightFd!, region, 0, region.length, 0);
  expect(region.readUInt16LE(8), 'inflight region version').toBe(1);
  const n = region.readUInt16LE(10);
  let held = 0;
  for (let i = 0; i < n; i++) if (region[16 + 16 * i] === 1) held++;
  return held;
}

interface BigWrites {
  /** head -> write number and where its status byte is */
  heads: Map<number, { i: number; status: number }>;
  /** requests the back-end held (inflight records) when this returned; 0 if it never held any within 5 s */
  held: number;
}

/**
 * `n` writes of `len` bytes on queue 0 of a front-end with inflight tracking (write i: pattern 300 + i at byte
 * i * len of the image), the data written first and then all the chains at once, so that the back-end gets them
 * faster than it can write them; returns as soon as its inflight records show some held.
 */
async function bigWritesInFlight(fe: Frontend, n: number, len: number): Promise<BigWrites> {
  const reqs = Array.from({ length: n }, (_, i) => {
    const r = request(fe, 0, i * (len + 2048), VIRTIO_BLK_T_OUT, (i * len) / 512, len, 2);
    fe.buffer(0, r.data, len).set(pattern(len, 300 + i));
    return r;
  });
  const heads = new Map<number, { i: number; status: number }>();
  reqs.forEach((r, i) => heads.set(fe.submit(0, r.segs), { i, status: r.status }));
  let held = 0;
  const until = Date.now() + 5_000;
  while ((held = inflightRecords(fe)) === 0 && Date.now() < until) await new Promise((r) => setImmediate(r));
  return { heads, held };
}

/** Every used element queue 0 has now (waiting up to 100 ms for each next one). */
async function reapAll(fe: Frontend, heads: BigWrites['heads']): Promise<{ i: number; status: number }[]> {
  const done: { i: number; status: number }[] = [];
  for (;;) {
    try {
      done.push(heads.get((await fe.waitUsed(0, 100)).id)!);
    } catch {
      return done;
    }
  }
}

function loopAvailable(): boolean {
  if (process.getuid?.() !== 0 || !fs.existsSync('/dev/loop-control')) return false;
  return spawnSync('losetup', ['--version'], { encoding: 'utf8' }).status === 0;
}

describe('virtio-blk back-end (io_uring) with the built-in front-end', () => {
  it('config space: capacity, seg_max, blk_size, num_queues; only the writeback byte is writable', async () => {
    const img = makeImage(64 * MiB);
    const fe = await serve({ image: img, queues: 2 });
    const cfg = (await fe.client.request('GET_CONFIG', { offset: 0, flags: 0, data: Buffer.alloc(60) }))!.data;
    expect(cfg.length).toBe(60);
    expect(cfg.readBigUInt64LE(CFG_CAPACITY)).toBe(BigInt((64 * MiB) / 512));
    expect(cfg.readUInt16LE(CFG_NUM_QUEUES)).toBe(2);
    expect(cfg.readUInt32LE(CFG_SEG_MAX)).toBeGreaterThanOrEqual(1);
    expect(cfg.readUInt32LE(CFG_BLK_SIZE)).toBe(512);
    expect(cfg.readUInt32LE(CFG_MAX_DISCARD_SEG)).toBe(BLK_MAX_DISCARD_SEG);
    expect(cfg[CFG_WRITEBACK]).toBe(1);
    // QEMU 7.2 reads sizeof(struct virtio_blk_config) = 72 bytes of its headers, 8.0+ 96: both must work
    expect((await fe.client.request('GET_CONFIG', { offset: 0, flags: 0, data: Buffer.alloc(96) }))!.data.length).toBe(96);
    await fe.client.request('SET_CONFIG', { offset: CFG_WRITEBACK, flags: 0, data: Buffer.from([0]) });
    expect((await fe.client.request('GET_CONFIG', { offset: CFG_WRITEBACK, flags: 0, data: Buffer.alloc(1) }))!.data[0]).toBe(0);
    expect(device!.writeback).toBe(0);
    await expect(fe.client.request('SET_CONFIG', { offset: CFG_CAPACITY, flags: 0, data: Buffer.alloc(8) })).rejects.toThrow();
    // writethrough mode: writes still land (with RWF_DSYNC)
    const p = pattern(4096, 7);
    expect(await write(fe, 0, 8, p)).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
    expect(preadImage(img, 8 * 512, 4096).equals(p)).toBe(true);
    // ... and write zeroes (then an fdatasync before it completes)
    expect(await run(fe, 0, dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[8, 4, 0]]))).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
    expect(preadImage(img, 8 * 512, 4096).equals(Buffer.concat([Buffer.alloc(2048), p.subarray(2048)]))).toBe(true);
    await fe.client.request('SET_CONFIG', { offset: CFG_WRITEBACK, flags: 0, data: Buffer.from([1]) });
    expect(device!.writeback).toBe(1);
    // features: RO only with --read-only
    expect((await fe.client.request('GET_FEATURES', undefined))! & (1n << BigInt(VIRTIO_BLK_F_RO))).toBe(0n);
  });

  it('OUT then IN: patterns round-trip through the image, multi-segment data and a header split across segments', async () => {
    const img = makeImage(16 * MiB);
    const fe = await serve({ image: img });
    const p1 = pattern(64 * 1024, 1);
    expect(await write(fe, 0, 100, p1, 0, 3)).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
    expect(preadImage(img, 100 * 512, p1.length).equals(p1)).toBe(true);
    const r = await read(fe, 0, 100, p1.length, 0, 5);
    expect(r.status).toBe(VIRTIO_BLK_S_OK);
    expect(r.len).toBe(p1.length + 1);
    expect(r.data.equals(p1)).toBe(true);
    // the last sector of the image, header in two pieces (8 + 8) and the data in one segment with the status byte
    const last = 16 * MiB / 512 - 1;
    const p2 = pattern(512, 2);
    writeHeader(fe, 0, 0, VIRTIO_BLK_T_OUT, last);
    fe.buffer(0, 512, 512).set(p2);
    fe.buffer(0, 1024, 1)[0] = 0xee;
    const u = await fe.roundTrip(0, [
      { offset: 0, len: 8, write: false },
      { offset: 8, len: 8, write: false },
      { offset: 512, len: 512, write: false },
      { offset: 1024, len: 1, write: true },
    ]);
    expect(fe.buffer(0, 1024, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    expect(u.len).toBe(1);
    expect(preadImage(img, last * 512, 512).equals(p2)).toBe(true);
    // IN whose data and status share one writable descriptor
    writeHeader(fe, 0, 0, VIRTIO_BLK_T_IN, last);
    fe.buffer(0, 2048, 513).fill(0);
    const u2 = await fe.roundTrip(0, [
      { offset: 0, len: 16, write: false },
      { offset: 2048, len: 513, write: true },
    ]);
    expect(u2.len).toBe(513);
    expect(fe.buffer(0, 2048 + 512, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(fe.buffer(0, 2048, 512)).equals(p2)).toBe(true);
  });

  it('FLUSH completes OK; GET_ID returns the serial (20 bytes, zero padded) and the default serial comes from the image', async () => {
    const img = makeImage(MiB);
    const fe = await serve({ image: img, serial: 'vw-serial-1' });
    const f = request(fe, 0, 0, VIRTIO_BLK_T_FLUSH, 0, 0);
    expect(await run(fe, 0, f)).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
    const g = request(fe, 0, 0, VIRTIO_BLK_T_GET_ID, 0, 20);
    fe.buffer(0, g.data, 20).fill(0xff);
    expect(await run(fe, 0, g)).toEqual({ status: VIRTIO_BLK_S_OK, len: 21 });
    const id = Buffer.from(fe.buffer(0, g.data, 20));
    expect(id.equals(Buffer.concat([Buffer.from('vw-serial-1'), Buffer.alloc(9)]))).toBe(true);
    expect(blkDevice({ image: img }).serial).toBe('disk.img');
    expect(() => blkDevice({ image: img, serial: 'x'.repeat(21) })).toThrow(/at most 20 bytes/);
  });

  for (const where of [os.tmpdir(), '/dev/shm']) {
    it(`DISCARD and WRITE_ZEROES (with and without UNMAP) zero their ranges in the image (${where})`, async () => {
      if (!fs.existsSync(where)) return;
      const img = makeImage(8 * MiB, where);
      const fe = await serve({ image: img });
      const fill = pattern(MiB, 3);
      expect((await write(fe, 0, 0, fill)).status).toBe(VIRTIO_BLK_S_OK);
      // discard two ranges: sectors 8..15 and 64..79
      const d = dzRequest(fe, 0, 0, VIRTIO_BLK_T_DISCARD, [
        [8, 8, 0],
        [64, 16, 0],
      ]);
      expect(await run(fe, 0, d)).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
      expect(preadImage(img, 8 * 512, 8 * 512).equals(Buffer.alloc(8 * 512))).toBe(true);
      expect(preadImage(img, 64 * 512, 16 * 512).equals(Buffer.alloc(16 * 512))).toBe(true);
      expect(preadImage(img, 16 * 512, 48 * 512).equals(fill.subarray(16 * 512, 64 * 512))).toBe(true);
      // write zeroes without unmap (ZERO_RANGE, or punch + allocate where the fs lacks it) and with unmap
      const z = dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[200, 24, 0]]);
      expect(await run(fe, 0, z)).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
      const zu = dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [
        [300, 3, 1],
        [1000, 1, 1],
      ]);
      expect(await run(fe, 0, zu)).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
      expect(preadImage(img, 200 * 512, 24 * 512).equals(Buffer.alloc(24 * 512))).toBe(true);
      expect(preadImage(img, 300 * 512, 3 * 512).equals(Buffer.alloc(3 * 512))).toBe(true);
      expect(preadImage(img, 1000 * 512, 512).equals(Buffer.alloc(512))).toBe(true);
      expect(preadImage(img, 224 * 512, 76 * 512).equals(fill.subarray(224 * 512, 300 * 512))).toBe(true);
      expect(preadImage(img, 303 * 512, 697 * 512).equals(fill.subarray(303 * 512, 1000 * 512))).toBe(true);
      expect(fs.statSync(img).size).toBe(8 * MiB);
      // and the guest reads zeros there too
      const r = await read(fe, 0, 200, 24 * 512);
      expect(r.data.equals(Buffer.alloc(24 * 512))).toBe(true);
    });
  }

  it('bad requests: beyond capacity, short header, missing status, unknown type, partial sectors, bad discard ranges', async () => {
    const img = makeImage(MiB);
    const sectors = MiB / 512;
    const fe = await serve({ image: img });
    const before = pattern(MiB, 9);
    fs.writeFileSync(img, before);
    const check = async (r: Req, status: number): Promise<void> => {
      expect((await run(fe, 0, r)).status).toBe(status);
    };
    // IN beyond capacity: nothing is read into the buffer
    let r = request(fe, 0, 0, VIRTIO_BLK_T_IN, sectors - 1, 1024);
    fe.buffer(0, r.data, 1024).fill(0xaa);
    await check(r, VIRTIO_BLK_S_IOERR);
    expect(fe.buffer(0, r.data, 1024).every((b) => b === 0xaa)).toBe(true);
    await check(request(fe, 0, 0, VIRTIO_BLK_T_IN, 1n << 60n, 512), VIRTIO_BLK_S_IOERR);
    await check(request(fe, 0, 0, VIRTIO_BLK_T_IN, (1n << 64n) - 1n, 512), VIRTIO_BLK_S_IOERR);
    // OUT beyond capacity: the image is unchanged
    r = request(fe, 0, 0, VIRTIO_BLK_T_OUT, sectors - 1, 1024);
    fe.buffer(0, r.data, 1024).fill(0x11);
    await check(r, VIRTIO_BLK_S_IOERR);
    // data not a whole number of sectors
    r = request(fe, 0, 0, VIRTIO_BLK_T_IN, 0, 700);
    fe.buffer(0, r.data, 700).fill(0xaa);
    await check(r, VIRTIO_BLK_S_IOERR);
    expect(fe.buffer(0, r.data, 700).every((b) => b === 0xaa)).toBe(true);
    r = request(fe, 0, 0, VIRTIO_BLK_T_OUT, 0, 513);
    fe.buffer(0, r.data, 513).fill(0x11);
    await check(r, VIRTIO_BLK_S_IOERR);
    // unknown type
    await check(request(fe, 0, 0, 99, 0, 0), VIRTIO_BLK_S_UNSUPP);
    await check(request(fe, 0, 0, 2, 0, 512), VIRTIO_BLK_S_UNSUPP);
    // header shorter than 16 bytes: IOERR in the status byte
    writeHeader(fe, 0, 0, VIRTIO_BLK_T_OUT, 0);
    fe.buffer(0, 100, 1)[0] = 0xee;
    let u = await fe.roundTrip(0, [
      { offset: 0, len: 12, write: false },
      { offset: 100, len: 1, write: true },
    ]);
    expect(fe.buffer(0, 100, 1)[0]).toBe(VIRTIO_BLK_S_IOERR);
    expect(u.len).toBe(1);
    // ... and without any writable byte: completed with length 0, nothing written
    u = await fe.roundTrip(0, [{ offset: 0, len: 12, write: false }]);
    expect(u.len).toBe(0);
    // a whole OUT request without a status byte: not carried out
    writeHeader(fe, 0, 0, VIRTIO_BLK_T_OUT, 0);
    fe.buffer(0, 512, 512).fill(0x22);
    u = await fe.roundTrip(0, [
      { offset: 0, len: 16, write: false },
      { offset: 512, len: 512, write: false },
    ]);
    expect(u.len).toBe(0);
    // discard / write zeroes: too many ranges, beyond capacity, too long, unknown flags, UNMAP on discard
    const many = Array.from({ length: BLK_MAX_DISCARD_SEG + 1 }, (_, i) => [i * 8, 8, 0] as [number, number, number]);
    await check(dzRequest(fe, 0, 0, VIRTIO_BLK_T_DISCARD, many), VIRTIO_BLK_S_IOERR);
    await check(dzRequest(fe, 0, 0, VIRTIO_BLK_T_DISCARD, [[0, 8, 0], [sectors - 4, 8, 0]]), VIRTIO_BLK_S_IOERR);
    await check(dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[sectors, 1, 0]]), VIRTIO_BLK_S_IOERR);
    await check(dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[0, 0xffff_ffff, 0]]), VIRTIO_BLK_S_IOERR);
    await check(dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[0, 8, 2]]), VIRTIO_BLK_S_UNSUPP);
    await check(dzRequest(fe, 0, 0, VIRTIO_BLK_T_DISCARD, [[0, 8, 1]]), VIRTIO_BLK_S_UNSUPP);
    // a payload that is not whole ranges
    writeHeader(fe, 0, 0, VIRTIO_BLK_T_DISCARD, 0);
    await check({ segs: [{ offset: 0, len: 16, write: false }, { offset: 512, len: 10, write: false }, { offset: 600, len: 1, write: true }], data: 512, status: 600 }, VIRTIO_BLK_S_IOERR);
    // nothing above touched the image
    expect(preadImage(img, 0, MiB).equals(before)).toBe(true);
    // and the queue still serves
    expect((await read(fe, 0, 0, 512)).data.equals(before.subarray(0, 512))).toBe(true);
  });

  it('read-only: OUT, DISCARD and WRITE_ZEROES fail with IOERR and leave the image alone; IN and FLUSH work', async () => {
    const img = makeImage(MiB);
    const content = pattern(MiB, 5);
    fs.writeFileSync(img, content);
    const fe = await serve({ image: img, readOnly: true });
    expect((await fe.client.request('GET_FEATURES', undefined))! & (1n << BigInt(VIRTIO_BLK_F_RO))).not.toBe(0n);
    expect((await write(fe, 0, 0, pattern(4096, 6))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await run(fe, 0, dzRequest(fe, 0, 0, VIRTIO_BLK_T_DISCARD, [[0, 8, 0]]))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await run(fe, 0, dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[0, 8, 1]]))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await run(fe, 0, request(fe, 0, 0, VIRTIO_BLK_T_FLUSH, 0, 0))).status).toBe(VIRTIO_BLK_S_OK);
    const r = await read(fe, 0, 0, 8192);
    expect(r.status).toBe(VIRTIO_BLK_S_OK);
    expect(r.data.equals(content.subarray(0, 8192))).toBe(true);
    expect(preadImage(img, 0, MiB).equals(content)).toBe(true);
  });

  it('an image that shrank under the back-end: reads past the new end fail with IOERR (short read, then no progress)', async () => {
    const img = makeImage(MiB);
    const content = pattern(MiB, 11);
    fs.writeFileSync(img, content);
    const fe = await serve({ image: img });
    fs.truncateSync(img, 512 * 1024 + 4096);
    // straddles the new end: the first part comes back short, the rest hits end of file
    const r = await read(fe, 0, 1024, 16 * 1024);
    expect(r.status).toBe(VIRTIO_BLK_S_IOERR);
    expect(r.data.subarray(0, 4096).equals(content.subarray(512 * 1024, 512 * 1024 + 4096))).toBe(true);
    expect(r.len).toBe(4096);
    const ok = await read(fe, 0, 0, 4096);
    expect(ok.status).toBe(VIRTIO_BLK_S_OK);
  });

  it('64 requests in flight on one queue complete (in any order) with the right data', async () => {
    const img = makeImage(32 * MiB);
    const fe = await serve({ image: img });
    const N = 64;
    const LEN = 16 * 1024;
    const slot = (i: number): number => i * (LEN + 1024);
    const writes = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const r = request(fe, 0, slot(i), VIRTIO_BLK_T_OUT, i * 64, LEN, 1 + (i % 2));
      fe.buffer(0, r.data, LEN).set(pattern(LEN, 100 + i));
      writes.set(fe.submit(0, r.segs), i);
    }
    const order: number[] = [];
    for (let i = 0; i < N; i++) {
      const u = await fe.waitUsed(0);
      order.push(writes.get(u.id)!);
      expect(u.len).toBe(1);
    }
    expect(new Set(order).size).toBe(N);
    for (let i = 0; i < N; i++) expect(fe.buffer(0, slot(i) + 512 + LEN, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    // a FLUSH among reads: all of them in flight together
    const reads = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const r = request(fe, 0, slot(i), i === N / 2 ? VIRTIO_BLK_T_FLUSH : VIRTIO_BLK_T_IN, i * 64, i === N / 2 ? 0 : LEN, 1 + (i % 2));
      reads.set(fe.submit(0, r.segs), i);
    }
    const readOrder: number[] = [];
    for (let i = 0; i < N; i++) readOrder.push(reads.get((await fe.waitUsed(0)).id)!);
    expect(new Set(readOrder).size).toBe(N);
    for (let i = 0; i < N; i++) {
      if (i === N / 2) continue;
      expect(fe.buffer(0, slot(i) + 512 + LEN, 1)[0]).toBe(VIRTIO_BLK_S_OK);
      expect(Buffer.from(fe.buffer(0, slot(i) + 512, LEN)).equals(pattern(LEN, 100 + i))).toBe(true);
    }
    console.log(`[blk] 64 in flight: writes completed ${order.some((v, i) => v !== i) ? 'out of' : 'in'} order, reads ${readOrder.some((v, i) => v !== i) ? 'out of' : 'in'} order`);
  });

  it('GET_VRING_BASE returns only after the in-flight requests of that ring are complete: every request popped is used before the index is reported', async () => {
    const img = makeImage(16 * MiB);
    const fe = await serve({ image: img }, 1, { inflight: true, bufferBytes: 20 * MiB });
    const N = 64;
    const LEN = 256 * 1024;
    const { heads, held } = await bigWritesInFlight(fe, N, LEN);
    const [base] = await fe.stop();
    expect(held, 'requests in flight when GET_VRING_BASE was sent').toBeGreaterThan(0);
    // at the reply nothing is in flight, and the used ring is exactly where the ring stopped
    expect(inflightRecords(fe)).toBe(0);
    const usedIdx = new DataView(fe.ram.mem.memory.buffer).getUint16(fe.queues[0]!.ring.used + 2, true);
    expect(usedIdx).toBe(base);
    const done = await reapAll(fe, heads);
    expect(done.length).toBe(base);
    console.log(`[blk] GET_VRING_BASE with ${N} submitted, ${held} in flight when asked: ${base} popped and completed before the reply`);
    for (const d of done) {
      expect(fe.buffer(0, d.status, 1)[0], `status of write ${d.i}`).toBe(VIRTIO_BLK_S_OK);
      expect(preadImage(img, d.i * LEN, LEN).equals(pattern(LEN, 300 + d.i)), `image contents of write ${d.i}`).toBe(true);
    }
  });

  it('a memory-table change with requests in flight: they complete first (drain), then the rings go on', async () => {
    const img = makeImage(16 * MiB);
    const fe = await serve({ image: img });
    const { dup } = await import('../../src/sys/syscalls.js');
    for (let round = 0; round < 3; round++) {
      const N = 32;
      for (let i = 0; i < N; i++) {
        const r = request(fe, 0, i * 66 * 1024, VIRTIO_BLK_T_OUT, (round * N + i) * 128, 64 * 1024, 2);
        fe.buffer(0, r.data, 64 * 1024).set(pattern(64 * 1024, round * 100 + i));
        fe.submit(0, r.segs);
      }
      const reg = fe.ram.region;
      await fe.client.request('SET_MEM_TABLE', { regions: [{ gpa: reg.gpa, size: reg.size, uaddr: reg.uaddr, mmapOffset: 0n }] }, [dup(fe.ram.fd)]);
      for (let i = 0; i < N; i++) expect((await fe.waitUsed(0)).len).toBe(1);
      for (let i = 0; i < N; i++) {
        expect(fe.buffer(0, i * 66 * 1024 + 512 + 64 * 1024, 1)[0]).toBe(VIRTIO_BLK_S_OK);
        expect(preadImage(img, (round * N + i) * 128 * 512, 64 * 1024).equals(pattern(64 * 1024, round * 100 + i))).toBe(true);
      }
    }
    expect(backend!.logs.join('\n')).not.toMatch(/queue \d: .*(outside|broken|stopped|still in flight)/);
  });

  it('4 queues at once: each writes and reads back its own region concurrently', async () => {
    const img = makeImage(64 * MiB);
    const fe = await serve({ image: img, queues: 4 });
    const LEN = 32 * 1024;
    const perQueue = async (q: number): Promise<void> => {
      for (let round = 0; round < 8; round++) {
        const heads: number[] = [];
        for (let i = 0; i < 16; i++) {
          const r = request(fe, q, i * (LEN + 1024), VIRTIO_BLK_T_OUT, q * 32768 + (round * 16 + i) * 64, LEN, 2);
          fe.buffer(q, r.data, LEN).set(pattern(LEN, q * 1000 + round * 16 + i));
          heads.push(fe.submit(q, r.segs));
        }
        for (let i = 0; i < 16; i++) await fe.waitUsed(q);
      }
      for (let k = 0; k < 128; k += 16) {
        for (let i = 0; i < 16; i++) fe.submit(q, request(fe, q, i * (LEN + 1024), VIRTIO_BLK_T_IN, q * 32768 + (k + i) * 64, LEN, 4).segs);
        for (let i = 0; i < 16; i++) await fe.waitUsed(q);
        for (let i = 0; i < 16; i++) {
          expect(fe.buffer(q, i * (LEN + 1024) + 512 + LEN, 1)[0]).toBe(VIRTIO_BLK_S_OK);
          expect(Buffer.from(fe.buffer(q, i * (LEN + 1024) + 512, LEN)).equals(pattern(LEN, q * 1000 + k + i))).toBe(true);
        }
      }
    };
    await Promise.all([0, 1, 2, 3].map(perQueue));
    // and on the host
    for (let q = 0; q < 4; q++) expect(preadImage(img, (q * 32768 + 5 * 64) * 512, LEN).equals(pattern(LEN, q * 1000 + 5))).toBe(true);
    // the front-end goes: every ring's io_uring, eventfd and mapping goes with it; the next one is served
    const fds = fs.readdirSync('/proc/self/fd').length;
    open.splice(0).forEach((f) => f.close());
    await new Promise((r) => setTimeout(r, 20));
    await backend!.server.idle();
    const released = fs.readdirSync('/proc/self/fd').length;
    expect(released).toBeLessThanOrEqual(fds - 4 * 2);
    const fe2 = await Frontend.connect({ socketPath: backend!.socketPath, queues: 4, queueSize: 64 });
    expect((await read(fe2, 3, 3 * 32768 + 5 * 64, LEN)).data.equals(pattern(LEN, 3000 + 5))).toBe(true);
    fe2.close();
    await new Promise((r) => setTimeout(r, 20));
    await backend!.server.idle();
    expect(fs.readdirSync('/proc/self/fd').length).toBe(released);
  });

  it.skipIf(!loopAvailable())('a block device (loop): size by BLKGETSIZE64, I/O, BLKDISCARD and BLKZEROOUT', async () => {
    const img = makeImage(8 * MiB);
    fs.writeFileSync(img, pattern(8 * MiB, 77));
    const dev = spawnSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).stdout.trim();
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    try {
      const fe = await serve({ image: dev });
      expect(device!.blockDevice).toBe(true);
      expect(device!.sizeBytes).toBe(8 * MiB);
      const cfg = (await fe.client.request('GET_CONFIG', { offset: 0, flags: 0, data: Buffer.alloc(60) }))!.data;
      expect(cfg.readBigUInt64LE(CFG_CAPACITY)).toBe(BigInt((8 * MiB) / 512));
      const p = pattern(8192, 78);
      expect((await write(fe, 0, 32, p)).status).toBe(VIRTIO_BLK_S_OK);
      expect((await read(fe, 0, 32, 8192)).data.equals(p)).toBe(true);
      expect(await run(fe, 0, dzRequest(fe, 0, 0, VIRTIO_BLK_T_WRITE_ZEROES, [[32, 8, 0]]))).toEqual({ status: VIRTIO_BLK_S_OK, len: 1 });
      expect((await run(fe, 0, dzRequest(fe, 0, 0, VIRTIO_BLK_T_DISCARD, [[1024, 64, 0]]))).status).toBe(VIRTIO_BLK_S_OK);
      const r = await read(fe, 0, 32, 8192);
      expect(r.data.subarray(0, 4096).equals(Buffer.alloc(4096))).toBe(true);
      expect(r.data.subarray(4096).equals(p.subarray(4096))).toBe(true);
      expect((await run(fe, 0, request(fe, 0, 0, VIRTIO_BLK_T_FLUSH, 0, 0))).status).toBe(VIRTIO_BLK_S_OK);
      expect((await read(fe, 0, 16384 - 8, 4096)).status).toBe(VIRTIO_BLK_S_OK);
      expect((await read(fe, 0, 16384 - 7, 4096)).status).toBe(VIRTIO_BLK_S_IOERR);
    } finally {
      for (const fe of open.splice(0)) fe.close();
      await backend?.close();
      backend = undefined;
      device?.close();
      device = undefined;
      spawnSync('losetup', ['-d', dev]);
    }
  });

  it('the CLI: blk as a child process serves, refuses images that are not whole sectors, and prints capabilities', async () => {
    const img = makeImage(4 * MiB);
    child = await spawnBackend(['blk', '--image', img, '--queues', '2', '--serial', 'cli-disk']);
    const fe = await Frontend.connect({ socketPath: child.socketPath, queues: 2, queueSize: 64 });
    open.push(fe);
    const p = pattern(4096, 42);
    expect((await write(fe, 1, 16, p)).status).toBe(VIRTIO_BLK_S_OK);
    expect((await read(fe, 0, 16, 4096)).data.equals(p)).toBe(true);
    const g = request(fe, 0, 0, VIRTIO_BLK_T_GET_ID, 0, 20);
    await run(fe, 0, g);
    expect(Buffer.from(fe.buffer(0, g.data, 8)).toString()).toBe('cli-disk');
    const bad = makeImage(1000);
    const r = spawnSync(process.execPath, [BIN, 'blk', '--socket-path', path.join(path.dirname(bad), 's'), '--image', bad], { encoding: 'utf8', timeout: 15_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/1000 bytes, not a multiple of 512/);
    const caps = spawnSync(process.execPath, [BIN, 'blk', '--print-capabilities'], { encoding: 'utf8', timeout: 15_000 });
    expect(JSON.parse(caps.stdout)).toEqual({ type: 'blk', features: ['read-only', 'blk-file'] });
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} with writes in flight: every write the back-end took completes OK and is in the image, none is left in flight, exit 0 within 5 s`, async () => {
      const img = makeImage(16 * MiB);
      child = await spawnBackend(['blk', '--image', img]);
      const fe = await Frontend.connect({ socketPath: child.socketPath, queues: 1, queueSize: 256, bufferBytes: 20 * MiB, inflight: true });
      open.push(fe);
      const N = 64;
      const LEN = 256 * 1024;
      const { heads, held } = await bigWritesInFlight(fe, N, LEN);
      const exit = waitExit(child.child, 5_000);
      child.child.kill(sig);
      expect(held, 'requests in flight when the signal was sent').toBeGreaterThan(0);
      const { code, ms } = await exit;
      expect(ms, `did not exit within 5 s:\n${child.output()}`).not.toBe(Infinity);
      expect(code, child.output()).toBe(0);
      // the used ring (in the front-end's memory) holds what the back-end completed before it exited ...
      const done = await reapAll(fe, heads);
      // ... and whatever it popped, it completed: no record is left in flight for a next back-end to resubmit
      expect(inflightRecords(fe)).toBe(0);
      expect(done.length).toBeGreaterThan(0);
      for (const d of done) {
        expect(fe.buffer(0, d.status, 1)[0], `status of write ${d.i}`).toBe(VIRTIO_BLK_S_OK);
        expect(preadImage(img, d.i * LEN, LEN).equals(pattern(LEN, 300 + d.i)), `image contents of write ${d.i}`).toBe(true);
      }
      console.log(`[blk] ${sig} with ${N} writes submitted, ${held} in flight at the signal: ${done.length} completed before the exit (${ms.toFixed(0)} ms after it)`);
    });
  }
});
