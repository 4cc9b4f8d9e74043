// virtio-blk over vhost-user: QEMU 7.2's vhost-user-blk-pci (4 queues) against our back-end
// (`node bin/vhost-wasm.js blk --socket-path SOCK --image IMG --queues 4`), with a real Linux guest that
// makes and checks an ext4 file system, runs fio with crc32c verification on 4 jobs, and writes a pattern
// that this side checks in the image file after QEMU has exited (build/guest/tests/blk.sh). Split rings, then
// the same guest work on packed rings (packed=on: VIRTIO_F_RING_PACKED end to end).
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCliBackend, stopCliBackend, waitForSockets, type CliBackend } from './cli-backend.js';
import { bootGuest, describeResult, ensureGuestBuilt, fioGuestAvailable, qemuAvailable } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';
const MiB = 1 << 20;
const SERIAL = 'vw-blk-test';

function readAt(file: string, off: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, off);
    return b;
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(!qemu.ok && !required)('vhost-user-blk with a real QEMU guest', () => {
  let dir: string | undefined;
  let be: CliBackend | undefined;

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    await stopCliBackend(be, 3_000);
    be = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it.each([false, true])('guest: 4 hardware queues, ext4 made and verified after remount, fio crc32c verify on 4 jobs, a pattern the host reads back (packed=%s)', async (packed) => {
    if (!fioGuestAvailable()) {
      if (required) throw new Error('initrd-fio.img not built (install fio on the host and rerun build/guest/build-guest.sh)');
      console.warn('[qemu blk-vhost-user] skipped: no initrd-fio.img (fio not installed on the host)');
      return;
    }
    dir = mkdtempSync(join(tmpdir(), packed ? 'vw-blk-packed-' : 'vw-blk-'));
    const img = join(dir, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, 64 * MiB);
    const sock = join(dir, 'blk.sock');
    be = startCliBackend(['blk', '--socket-path', sock, '--image', img, '--queues', '4', '--serial', SERIAL]);
    await waitForSockets([sock], be, 15_000);

    const r = await bootGuest({
      test: 'blk',
      fio: true,
      // virtio_blk uses min(num_queues, nr_cpu_ids) queues: 4 vCPUs for 4 hardware queues
      smp: 4,
      chardevs: [`socket,id=blk0,path=${sock}`],
      devices: [`vhost-user-blk-pci,chardev=blk0,num-queues=4${packed ? ',packed=on' : ''}`],
      kernelArgs: `vw.blk_queues=4 vw.blk_serial=${SERIAL} vw.blk_seconds=${packed ? 2 : 4} vw.timeout=500`,
      timeoutMs: 540_000,
    });
    console.log(`[qemu blk-vhost-user${packed ? ' packed' : ''}] boot-to-test ${r.bootMs} ms, total ${r.durationMs} ms, ${r.markerLine}`);
    console.log(`[qemu blk-vhost-user${packed ? ' packed' : ''}] guest log:\n${r.serial.split('\n').filter((l) => l.startsWith('[vw blk]')).join('\n')}`);
    console.log(`[qemu blk-vhost-user${packed ? ' packed' : ''}] back-end log (distinct lines):\n${[...new Set(be.output().split('\n'))].join('\n')}`);
    const why = `${describeResult(r, 8000)}\n--- back-end output (tail) ---\n${be.output().slice(-4000)}`;
    if (!r.passed) console.error(why);
    expect(r.passed, why).toBe(true);
    expect(r.markerFields.queues, why).toBe('4');
    expect(r.markerFields.serial, why).toBe(SERIAL);
    expect(r.markerFields.fio, why).toBe('verified');
    // the rings were what was asked for: QEMU acked VIRTIO_F_RING_PACKED (or not), and no ring broke
    if (packed) expect(be.output(), why).toContain('VIRTIO_F_RING_PACKED acked');
    else expect(be.output(), why).not.toContain('VIRTIO_F_RING_PACKED acked');
    expect(be.output(), why).not.toMatch(/device needs a reset/);

    // after QEMU is gone: the pattern the guest wrote is in the image, where it said
    const off = Number(r.markerFields.pattern_off);
    const len = Number(r.markerFields.pattern_len);
    expect(off, why).toBe(60 * MiB);
    const md5 = createHash('md5').update(readAt(img, off, len)).digest('hex');
    expect(md5, why).toBe(r.markerFields.pattern_md5);
    // the file system the guest made is there too (ext4/ext2 superblock magic 0xEF53 at 1024 + 56)
    expect(readAt(img, 1024 + 56, 2).readUInt16LE(0), why).toBe(0xef53);
    expect(statSync(img).size).toBe(64 * MiB);
    // and the back-end is still alive, waiting for the next front-end
    expect(be.child.exitCode, be.output()).toBe(null);
  }, 600_000);
});
