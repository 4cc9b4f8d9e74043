// Validates the guest side of the rng test independently of our back-end: QEMU's
// own in-process virtio-rng-pci (fed from /dev/urandom), NOT vhost-user. If this
// fails, the problem is the guest/harness, not vhost-wasm.
import { beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, describeResult, ensureGuestBuilt, qemuAvailable } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';

describe.skipIf(!qemu.ok && !required)('guest rng test against QEMU built-in virtio-rng-pci', () => {
  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  it('reads >= 1 MiB of random data from /dev/hwrng', async () => {
    const r = await bootGuest({
      test: 'rng',
      objects: ['rng-random,id=rng0,filename=/dev/urandom'],
      devices: ['virtio-rng-pci,rng=rng0'],
      timeoutMs: 150_000,
    });
    console.log(`[qemu rng-builtin] boot-to-test ${r.bootMs} ms, total ${r.durationMs} ms, ${r.markerLine}`);
    expect(r.passed, describeResult(r)).toBe(true);
    expect(Number(r.markerFields.bytes)).toBeGreaterThanOrEqual(1048576);
    expect(r.markerFields.current).toMatch(/^virtio_rng/);
  }, 240_000);
});
