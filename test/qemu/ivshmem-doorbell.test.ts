// ivshmem-doorbell in QEMU 7.2 against `vhost-wasm ivshmem-server`: two Linux guests ring each other, and a guest
// and the host-side peer library ring each other both ways. In the guest, /usr/bin/vw-ivshmem
// (build/guest/helpers/vw-ivshmem.c) drives the device through vfio-pci behind a virtual IOMMU and takes the
// doorbell as a real MSI-X interrupt; build/guest/tests/ivshmem.sh runs it. Mailbox layout: see that helper.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IvshmemPeer, type PeerEvent } from '../../src/ivshmem/peer.js';
import { startCliBackend, stopCliBackend, waitForSockets, type CliBackend } from './cli-backend.js';
import { bootGuest, describeResult, ensureGuestBuilt, qemuAvailable, type BootOptions, type GuestResult } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';
// two guests at once: the harness's cross-process slot limit must allow it
if (!(Number(process.env.VHOST_WASM_QEMU_SLOTS) >= 2)) process.env.VHOST_WASM_QEMU_SLOTS = '2';

const VECTORS = 4;
const SLOT = 4096;
const MAGIC_READY = 0x59444552;
const MAGIC_MSG = 0x2147534d;

function guest(sock: string, kernelArgs: string): BootOptions {
  return {
    test: 'ivshmem',
    memMiB: 256,
    smp: 1,
    chardevs: [`socket,path=${sock},id=ivs`],
    // the IOMMU first: devices created after it get their DMA (and MSI) through it
    devices: ['intel-iommu,intremap=off', `ivshmem-doorbell,chardev=ivs,vectors=${VECTORS}`],
    // generous waits: the other guest may sit in the harness's queue for a boot slot meanwhile
    kernelArgs: `intel_iommu=on vw.timeout=280 vw.ivshmem_wait=240 ${kernelArgs}`,
    timeoutMs: 320_000,
  };
}

/** The host side of the mailbox protocol, on the peer's mapping of the shared memory. */
function mailbox(peer: IvshmemPeer, slot: number): { view: DataView; text: (off: number, len: number) => string; put: (off: number, s: string) => void } {
  const bytes = peer.bytes();
  const base = slot * SLOT;
  return {
    view: new DataView(bytes.buffer, bytes.byteOffset + base, SLOT),
    text: (off, len) => Buffer.from(bytes.subarray(base + off, base + off + len)).toString(),
    put: (off, s) => bytes.set(Buffer.from(s), base + off),
  };
}

async function until(pred: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!qemu.ok && !required)('ivshmem-doorbell (QEMU 7.2) with vhost-wasm ivshmem-server', () => {
  let dir: string | undefined;
  let server: CliBackend | undefined;
  let host: IvshmemPeer | undefined;

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    await host?.close();
    host = undefined;
    await stopCliBackend(server, 3_000);
    server = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  /** backing: ['--memfd'], or ['-M', name] for a POSIX shm object as the reference server's default */
  async function startServer(backing: string[]): Promise<string> {
    dir = mkdtempSync(join(tmpdir(), 'vw-ivshmem-'));
    const sock = join(dir, 'ivshmem.sock');
    server = startCliBackend(['ivshmem-server', '-F', '-v', '-S', sock, ...backing, '-l', '1M', '-n', String(VECTORS)]);
    await waitForSockets([sock], server, 15_000);
    return sock;
  }

  const why = (r: GuestResult): string => `${describeResult(r)}\n--- server output (tail) ---\n${server?.output().slice(-3000)}`;

  it('guest A writes into BAR2 and rings guest B; B takes the MSI-X interrupt on that vector and reads the message', async () => {
    const sock = await startServer(['--memfd']);
    const [b, a] = await Promise.all([
      bootGuest(guest(sock, 'vw.ivshmem_role=recv vw.ivshmem_slot=0')),
      bootGuest(guest(sock, 'vw.ivshmem_role=send vw.ivshmem_slot=0 vw.ivshmem_vector=2 vw.ivshmem_text=hello-from-guest-A')),
    ]);
    console.log(`[qemu ivshmem] B: ${b.markerLine} (${b.durationMs} ms); A: ${a.markerLine} (${a.durationMs} ms)`);
    expect(a.passed, why(a)).toBe(true);
    expect(b.passed, why(b)).toBe(true);
    expect(b.markerFields.text, why(b)).toBe('hello-from-guest-A');
    expect(b.markerFields.vector, why(b)).toBe('2');
    expect(Number(b.markerFields.irqs), why(b)).toBeGreaterThanOrEqual(1);
    expect(a.markerFields.to, why(a)).toBe(b.markerFields.id);
    expect(a.markerFields.id, why(a)).not.toBe(b.markerFields.id);
  }, 700_000);

  it('host peer -> guest and guest -> host peer: doorbells both ways, messages through the shared memory', async () => {
    const shmName = `vw-ivshmem-qemu-${process.pid}`;
    const sock = await startServer(['-M', shmName]);
    host = await IvshmemPeer.connect({ socketPath: sock });
    const interrupts: number[] = [];
    const left: number[] = [];
    host.on((e: PeerEvent) => {
      if (e.type === 'interrupt') interrupts.push(e.vector);
      if (e.type === 'peer-left') left.push(e.peer);
    });
    // slot 1: the guest will send to us; publish our id and "ready" before it boots
    const inbox = mailbox(host, 1);
    inbox.view.setUint32(4, host.id, true);
    inbox.view.setUint32(0, MAGIC_READY, true);

    const booted = bootGuest(guest(sock, 'vw.ivshmem_role=recv-send vw.ivshmem_slot=0 vw.ivshmem_vector=3 vw.ivshmem_text=hello-from-guest'));
    // slot 0: wait for the guest to be ready, leave a message, ring its vector 1
    const outbox = mailbox(host, 0);
    let guestId = -1;
    let done = false;
    void booted.then(() => (done = true));
    await until(() => done || outbox.view.getUint32(0, true) === MAGIC_READY, 'the guest to publish ready', 300_000);
    if (!done) {
      guestId = outbox.view.getUint32(4, true);
      expect(host.peers().get(guestId)).toBe(VECTORS);
      const msg = 'hello-from-host';
      outbox.put(64, msg);
      outbox.view.setUint32(12, msg.length, true);
      outbox.view.setUint32(8, MAGIC_MSG, true);
      host.ring(guestId, 1);
    }
    const r = await booted;
    console.log(`[qemu ivshmem] guest: ${r.markerLine} (${r.durationMs} ms); host interrupts ${interrupts.join(',')}`);
    expect(r.passed, why(r)).toBe(true);
    expect(r.markerFields.text, why(r)).toBe('hello-from-host');
    expect(r.markerFields.vector, why(r)).toBe('1');
    expect(Number(r.markerFields.irqs), why(r)).toBeGreaterThanOrEqual(1);
    // and the other way: the guest's doorbell reached our vector 3 through the worker
    await until(() => interrupts.includes(3), 'the guest\'s doorbell on host vector 3', 10_000);
    expect(inbox.view.getUint32(8, true)).toBe(MAGIC_MSG);
    expect(inbox.text(64, inbox.view.getUint32(12, true))).toBe('hello-from-guest');
    expect(r.markerFields.sent_to, why(r)).toBe(String(host.id));
    expect(r.markerFields.id, why(r)).toBe(String(guestId));
    // QEMU gone: the server tells us the guest left
    await until(() => left.includes(guestId), `the server announcing guest ${guestId} left`, 10_000);
    expect(host.peers().has(guestId)).toBe(false);
  }, 700_000);
});
