/**
 * Dirty-page logging end to end (A.9): the built-in front-end plays QEMU during a live migration (LOG_SHMFD,
 * SET_LOG_BASE with a memfd log, VHOST_F_LOG_ALL, VHOST_VRING_F_LOG), the back-end runs in this process with
 * real workers over a real unix socket; the log must hold exactly the pages the device wrote.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { blkDevice, type BlkDevice, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN } from '../../src/devices/blk.js';
import { nullDevice } from '../../src/devices/null.js';
import { rngDevice } from '../../src/devices/rng.js';
import { Frontend } from '../../src/frontend/frontend.js';
import { VhostUserClient } from '../../src/frontend/client.js';
import { closeQuietly, ftruncate, memfdCreate, MFD_CLOEXEC } from '../../src/sys/syscalls.js';
import { bit, ProtocolFeature, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from '../../src/vhost-user/constants.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let backend: InProcessBackend | undefined;
let device: BlkDevice | undefined;
const open: { close(): void }[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const fe of open.splice(0)) fe.close();
  await backend?.close();
  backend = undefined;
  device?.close();
  device = undefined;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function connect(be: InProcessBackend, extra: Partial<Parameters<typeof Frontend.connect>[0]> = {}): Promise<Frontend> {
  const fe = await Frontend.connect({ socketPath: be.socketPath, queues: 1, queueSize: 64, bufferBytes: 64 * 4096, log: true, ...extra });
  open.push(fe);
  return fe;
}

/** Pages of [offset, offset+len) of queue 0's buffer area. */
function pages(fe: Frontend, offset: number, len: number): number[] {
  if (len === 0) return [];
  const first = fe.bufferPage(0, offset);
  const last = fe.bufferPage(0, offset + len - 1);
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

const sorted = (a: Iterable<number>): number[] => [...new Set(a)].sort((x, y) => x - y);

describe('dirty log with the built-in front-end', () => {
  it('rng: after a request the log holds exactly the pages of the bytes written and the used ring', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend);
    // until now the device wrote at most its used ring (notification settings)
    for (const p of fe.dirtyPages(true)) expect(fe.usedRingPages(0)).toContain(p);
    // a readable page, then a writable buffer crossing two page boundaries at an odd offset
    const r = await fe.roundTrip(0, [{ offset: 0, len: 64, write: false }, { offset: 4096 - 100, len: 8192 + 200, write: true }]);
    expect(r.len).toBe(8192 + 200);
    expect(fe.dirtyPages(true)).toEqual(sorted([...pages(fe, 4096 - 100, r.len), ...fe.usedRingPages(0)]));
  });

  it('VHOST_F_LOG_ALL toggled while the ring runs: nothing logged while off, logging again once on', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend);
    await fe.setLogging(false);
    fe.dirtyPages(true);
    await fe.roundTrip(0, [{ offset: 3 * 4096, len: 4096, write: true }]);
    expect(fe.dirtyPages(true)).toEqual([]);
    await fe.setLogging(true);
    await fe.roundTrip(0, [{ offset: 5 * 4096 + 10, len: 20, write: true }]);
    expect(fe.dirtyPages(true)).toEqual(sorted([...pages(fe, 5 * 4096 + 10, 20), ...fe.usedRingPages(0)]));
  });

  it('null: a device that writes nothing logs only its used ring', async () => {
    backend = startBackend(nullDevice());
    const fe = await connect(backend);
    const r = await fe.roundTrip(0, [{ offset: 0, len: 4096, write: true }]);
    expect(r.len).toBe(0);
    expect(fe.dirtyPages(true)).toEqual(fe.usedRingPages(0));
  });

  it('blk: an io_uring read completed out of order (pushUsed) logs the data and status pages it wrote', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-log-'));
    dirs.push(dir);
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(1 << 20, 0x5a));
    device = blkDevice({ image });
    backend = startBackend(device);
    const fe = await connect(backend);
    // header (readable), 3 pages of data from mid-page, status byte two pages further on
    const hdr = Buffer.from(fe.buffer(0, 0, 16));
    hdr.writeUInt32LE(VIRTIO_BLK_T_IN, 0);
    hdr.writeBigUInt64LE(8n, 8);
    fe.buffer(0, 0, 16).set(hdr);
    const data = 4096 + 512;
    const status = data + 3 * 4096 + 2 * 4096;
    const r = await fe.roundTrip(0, [
      { offset: 0, len: 16, write: false },
      { offset: data, len: 3 * 4096, write: true },
      { offset: status, len: 1, write: true },
    ]);
    expect(r.len).toBe(3 * 4096 + 1);
    expect(fe.buffer(0, status, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(fe.buffer(0, data, 3 * 4096)).equals(Buffer.alloc(3 * 4096, 0x5a))).toBe(true);
    expect(fe.dirtyPages(true)).toEqual(sorted([...pages(fe, data, 3 * 4096), ...pages(fe, status, 1), ...fe.usedRingPages(0)]));
  });
});

describe('SET_LOG_BASE and VHOST_F_LOG_ALL at the session', () => {
  /** A raw connection that negotiated LOG_SHMFD (and REPLY_ACK). */
  async function raw(be: InProcessBackend): Promise<VhostUserClient> {
    const c = VhostUserClient.connect(be.socketPath);
    open.push(c);
    await c.request('SET_PROTOCOL_FEATURES', bit(ProtocolFeature.LOG_SHMFD) | bit(ProtocolFeature.REPLY_ACK));
    c.replyAck = true;
    await c.request('SET_OWNER', undefined);
    return c;
  }
  function logFd(bytes: number): number {
    const fd = memfdCreate('test-log', MFD_CLOEXEC);
    ftruncate(fd, bytes);
    return fd;
  }

  it('LOG_SHMFD and VHOST_F_LOG_ALL are offered; SET_LOG_BASE replies a u64 0 and a second log replaces the first', async () => {
    backend = startBackend(rngDevice());
    const c = await raw(backend);
    expect((await c.request('GET_FEATURES', undefined))! & bit(VHOST_F_LOG_ALL)).toBe(bit(VHOST_F_LOG_ALL));
    expect((await c.request('GET_PROTOCOL_FEATURES', undefined))! & bit(ProtocolFeature.LOG_SHMFD)).toBe(bit(ProtocolFeature.LOG_SHMFD));
    for (const bytes of [4096, 3 * 4096 + 8]) {
      const fd = logFd(bytes);
      try {
        expect(await c.request('SET_LOG_BASE', { mmapSize: BigInt(bytes), mmapOffset: 0n }, [fd])).toBe(0n);
      } finally {
        closeQuietly(fd);
      }
    }
    const fd = logFd(4096);
    await c.request('SET_LOG_FD', undefined, [fd]); // taken and closed: we poll nothing
    closeQuietly(fd);
    expect((await c.request('GET_FEATURES', undefined))! & bit(VHOST_F_LOG_ALL)).toBe(bit(VHOST_F_LOG_ALL)); // still served
  });

  for (const [what, size, offset, fileBytes] of [
    ['larger than the log area (8 MiB)', (8 << 20) + 8, 0, (8 << 20) + 8],
    ['at an offset that is not page-aligned', 4096, 100, 8192],
    ['beyond the end of its fd (a SIGBUS waiting to happen)', 8192, 4096, 8192],
  ] as const) {
    it(`SET_LOG_BASE with a log ${what} is refused: the connection ends (its reply would say success to QEMU)`, async () => {
      backend = startBackend(rngDevice());
      const c = await raw(backend);
      const fd = logFd(fileBytes);
      try {
        await expect(c.request('SET_LOG_BASE', { mmapSize: BigInt(size), mmapOffset: BigInt(offset) }, [fd])).rejects.toThrow();
      } finally {
        closeQuietly(fd);
      }
      expect(backend.logs.join('\n')).toMatch(/SET_LOG_BASE: dirty log/);
    });
  }

  it('VHOST_F_LOG_ALL together with VIRTIO_F_RING_PACKED is refused (out-of-order packed completions cannot be logged)', async () => {
    backend = startBackend(rngDevice());
    const c = await raw(backend);
    const f = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_F_RING_PACKED);
    await expect(c.request('SET_FEATURES', f | bit(VHOST_F_LOG_ALL))).rejects.toThrow();
    await c.request('SET_FEATURES', f);
    expect(backend.logs.join('\n')).toMatch(/VHOST_F_LOG_ALL on packed rings is not supported/);
  });

  it('a log too small for the guest keeps its bits inside, and the back-end says so once', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend);
    // the front-end's log is replaced by one of 8 bytes: guest pages 0..63 (the rings are there, the last
    // buffer pages are not)
    const small = logFd(4096);
    try {
      await fe.client.request('SET_LOG_BASE', { mmapSize: 8n, mmapOffset: 0n }, [small]);
    } finally {
      closeQuietly(small);
    }
    const off = 61 * 4096;
    expect(fe.bufferPage(0, off)).toBe(64);
    for (const p of fe.usedRingPages(0)) expect(p).toBeLessThan(64);
    await fe.roundTrip(0, [{ offset: off, len: 4096, write: true }]);
    await fe.roundTrip(0, [{ offset: off, len: 4096, write: true }]);
    await fe.stop(); // the ring stops: the back-end reports what it could not log
    const lines = backend.logs.filter((l) => /too small for the guest/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/2 written page\(s\)/);
  });
});
