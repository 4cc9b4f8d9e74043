// Boots the test guest with no extra devices: kernel, initramfs, /init, markers, poweroff.
import { beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, describeResult, ensureGuestBuilt, fioGuestAvailable, guestKernelVersion, qemuAvailable } from './guest.js';

const qemu = qemuAvailable();
// In CI the guest must run; elsewhere a machine without QEMU skips these tests.
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';

describe.skipIf(!qemu.ok && !required)('QEMU guest smoke', () => {
  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  it('boots, runs the smoke test and powers off', async () => {
    const r = await bootGuest({ test: 'smoke', timeoutMs: 120_000 });
    console.log(`[qemu smoke] boot-to-test ${r.bootMs} ms, boot-to-poweroff ${r.durationMs} ms, ${r.markerLine}`);
    expect(r.passed, describeResult(r)).toBe(true);
    expect(r.failed).toBe(false);
    expect(r.markerFields.kernel).toBe(guestKernelVersion());
    expect(r.exitCode, describeResult(r)).toBe(0); // poweroff -f, not a kill
  }, 180_000);

  it('reports VW-FAIL for a test that does not exist', async () => {
    const r = await bootGuest({ test: 'no-such-test', timeoutMs: 120_000 });
    expect(r.failed, describeResult(r)).toBe(true);
    expect(r.markerLine).toMatch(/no-such-test/);
    expect(r.exitCode).toBe(0);
  }, 180_000);

  it('kills QEMU when timeoutMs runs out', async () => {
    const r = await bootGuest({ test: 'smoke', timeoutMs: 1_000 });
    expect(r.timedOut, describeResult(r)).toBe(true);
    expect(r.passed).toBe(false);
    expect(r.signal).toBe('SIGKILL');
    expect(r.durationMs).toBeLessThan(10_000);
  }, 60_000);

  // fio rides in initrd-fio.img only when fio is installed on the host (.ci/run installs it).
  it.skipIf(!fioGuestAvailable() && !required)('runs the host fio inside the guest', async () => {
    const r = await bootGuest({ test: 'fio-tmpfs', fio: true, timeoutMs: 150_000 });
    console.log(`[qemu fio-tmpfs] ${r.durationMs} ms, ${r.markerLine}`);
    expect(r.passed, describeResult(r)).toBe(true);
  }, 240_000);
});
