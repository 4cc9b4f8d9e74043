// virtio-net over vhost-user: two QEMU 7.2 guests, each with `-netdev vhost-user,queues=2` and
// `virtio-net-pci,mq=on`, on two ports of ONE `vhost-wasm net --queues 2` process. The guests ping each other
// (from both vCPUs, so both queue pairs carry traffic) and move a 4 MiB file over TCP with busybox nc; both print
// the file's md5 and the test compares them. build/guest/tests/net-pair.sh is the guest side.
//
// virtio-net-pci runs with `vectors=0` (INTx): QEMU 7.2 under TCG segfaults in vhost_net_start with MSI-X
// (shared/design/real-clients.md).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCliBackend, stopCliBackend, waitForSockets, type CliBackend } from './cli-backend.js';
import { bootGuest, describeResult, ensureGuestBuilt, qemuAvailable, type GuestResult } from './guest.js';

// Both guests must run at the same time: this process takes two boot slots (guest.ts reads this per boot).
process.env.VHOST_WASM_QEMU_SLOTS = '2';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';

function guestArgs(sock: string, mac: string, role: 'recv' | 'send', ip: string, peer: string, packed: boolean) {
  return {
    test: 'net-pair',
    chardevs: [`socket,id=c0,path=${sock}`],
    netdevs: ['vhost-user,id=n0,chardev=c0,queues=2'],
    devices: [`virtio-net-pci,netdev=n0,mac=${mac},mq=on,vectors=0${packed ? ',packed=on' : ''}`],
    kernelArgs: `vw.net_role=${role} vw.net_ip=${ip} vw.net_peer=${peer} vw.net_bytes=4194304 vw.timeout=400`,
    timeoutMs: 420_000,
  };
}

/** The per-port counters the switch prints when it shuts down. */
function portStats(out: string, port: number): Record<string, unknown> | undefined {
  const m = new RegExp(`port ${port} stats (\\{.*\\})`).exec(out);
  return m ? (JSON.parse(m[1]!) as Record<string, unknown>) : undefined;
}

describe.skipIf(!qemu.ok && !required)('vhost-user-net with two real QEMU guests on one switch', () => {
  let dir: string | undefined;
  let be: CliBackend | undefined;

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    await stopCliBackend(be, 5_000);
    be = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  // packed=on: the same traffic on packed virtqueues (VIRTIO_F_RING_PACKED)
  it.each([false, true])('two guests ping each other on both queue pairs and move a file over TCP with a matching md5 (packed=%s)', async (packed) => {
    dir = mkdtempSync(join(tmpdir(), 'vw-net-'));
    const a = join(dir, 'a.sock');
    const b = join(dir, 'b.sock');
    be = startCliBackend(['net', '--socket-path', a, '--socket-path', b, '--queues', '2']);
    await waitForSockets([a, b], be, 15_000);

    const t0 = Date.now();
    const [ra, rb]: GuestResult[] = await Promise.all([
      bootGuest(guestArgs(a, '52:54:00:00:0a:01', 'recv', '10.77.0.1', '10.77.0.2', packed)),
      bootGuest(guestArgs(b, '52:54:00:00:0a:02', 'send', '10.77.0.2', '10.77.0.1', packed)),
    ]);
    const wall = Date.now() - t0;
    be.child.kill('SIGTERM');
    await be.exited;
    const out = be.output();
    const why = `--- guest A (recv) ---\n${describeResult(ra!)}\n--- guest B (send) ---\n${describeResult(rb!)}\n--- vhost-wasm net ---\n${out.slice(-6000)}`;
    console.log(
      `[qemu net-vhost-user${packed ? ' packed' : ''}] wall ${wall} ms; A boot ${ra!.bootMs} ms total ${ra!.durationMs} ms: ${ra!.markerLine}; ` +
        `B boot ${rb!.bootMs} ms total ${rb!.durationMs} ms: ${rb!.markerLine}`,
    );
    console.log(`[qemu net-vhost-user] switch: port 0 ${JSON.stringify(portStats(out, 0))}\n  port 1 ${JSON.stringify(portStats(out, 1))}`);
    if (!ra!.passed || !rb!.passed) console.error(why);
    expect(ra!.passed, why).toBe(true);
    expect(rb!.passed, why).toBe(true);
    const fa = ra!.markerFields;
    const fb = rb!.markerFields;
    expect(fa.bytes, why).toBe('4194304');
    expect(fb.bytes, why).toBe('4194304');
    expect(fa.md5, why).toMatch(/^[0-9a-f]{32}$/);
    expect(fa.md5, why).toBe(fb.md5);
    expect(fa.queues, why).toBe('2');
    expect(fb.queues, why).toBe('2');
    // both queue pairs of both ports carried frames through the switch
    for (const port of [0, 1]) {
      const s = portStats(out, port) as { txByPair: number[]; rxByPair: number[]; txFrames: number } | undefined;
      expect(s, why).toBeDefined();
      expect(s!.txFrames, why).toBeGreaterThan(100);
      expect(s!.txByPair.every((n) => n > 0), why).toBe(true);
    }
    // no request of either QEMU was refused (SET_VRING_ENABLE before SET_FEATURES, the per-queue-pair memory
    // tables of multiqueue vhost-user-net) and nothing broke
    expect(out, why).not.toMatch(/needs virtio feature|needs protocol feature|overlaps|not supported|internal error|failed|broken|NEEDS_RESET/i);
    expect(`${ra!.stderr}${rb!.stderr}`, why).not.toMatch(/vhost_set_mem_table failed|unable to start vhost net|falling back/);
    // both guests' rings were packed exactly when asked
    const packedAcks = out.match(/VIRTIO_F_RING_PACKED acked/g)?.length ?? 0;
    if (packed) expect(packedAcks, why).toBeGreaterThanOrEqual(2);
    else expect(packedAcks, why).toBe(0);
  }, 600_000);
});
