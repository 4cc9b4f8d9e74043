// virtio-rng over vhost-user: QEMU 7.2's vhost-user-rng-pci against our back-end
// (`node bin/vhost-wasm.js rng --socket-path SOCK`), with a real Linux guest
// reading >= 1 MiB from /dev/hwrng. rng-builtin.test.ts checks the guest side alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCliBackend, stopCliBackend, waitForSockets, type CliBackend } from './cli-backend.js';
import { bootGuest, describeResult, ensureGuestBuilt, qemuAvailable } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';

describe.skipIf(!qemu.ok && !required)('vhost-user-rng with a real QEMU guest', () => {
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

  it('guest reads >= 1 MiB from /dev/hwrng served by vhost-wasm rng', async () => {
    dir = mkdtempSync(join(tmpdir(), 'vw-rng-'));
    const sock = join(dir, 'rng.sock');
    be = startCliBackend(['rng', '--socket-path', sock]);
    await waitForSockets([sock], be, 15_000);

    const r = await bootGuest({
      test: 'rng',
      chardevs: [`socket,id=rng0,path=${sock}`],
      devices: ['vhost-user-rng-pci,chardev=rng0'],
      timeoutMs: 120_000,
    });
    console.log(`[qemu rng-vhost-user] boot-to-test ${r.bootMs} ms, total ${r.durationMs} ms, ${r.markerLine}`);
    const why = `${describeResult(r)}\n--- back-end output (tail) ---\n${be.output().slice(-4000)}`;
    if (!r.passed) console.error(why);
    expect(r.passed, why).toBe(true);
    expect(Number(r.markerFields.bytes), why).toBeGreaterThanOrEqual(1048576);
    expect(r.markerFields.current, why).toMatch(/^virtio_rng/);
  }, 240_000);
});
