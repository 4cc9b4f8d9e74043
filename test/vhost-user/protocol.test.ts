/**
 * The back-end end to end: the built-in front-end over a real unix socket, real memfd guest memory, real
 * worker threads running the wasm engine.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { nullDevice } from '../../src/devices/null.js';
import { rngDevice } from '../../src/devices/rng.js';
import { VhostUserClient } from '../../src/frontend/client.js';
import { Frontend } from '../../src/frontend/frontend.js';
import { VIRTQ_DESC_F_WRITE } from '../../src/engine/layout.js';
import { encodeMessage, encodeRequest, u64 } from '../../src/vhost-user/codec.js';
import { HeaderFlag } from '../../src/vhost-user/constants.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../src/vhost-user/session.js';
import { closeQuietly, ftruncate, memfdCreate } from '../../src/sys/syscalls.js';
import { startBackend, type InProcessBackend } from '../helpers/backend.js';

let backend: InProcessBackend | undefined;
const open: { close(): void }[] = [];

afterEach(async () => {
  for (const fe of open.splice(0)) fe.close();
  await backend?.close();
  backend = undefined;
});

async function connect(be: InProcessBackend, queues = 1, extra: Partial<Parameters<typeof Frontend.connect>[0]> = {}): Promise<Frontend> {
  const fe = await Frontend.connect({ socketPath: be.socketPath, queues, queueSize: 256, ...extra });
  open.push(fe);
  return fe;
}

/** Wait until the back-end has released the current connection. */
/** Wait (up to 5 s) until every split ring's used.idx equals its avail.idx: the back-end took all it was given. */
async function usedCaughtUp(fe: Frontend): Promise<void> {
  const idx = (addr: number): number => Atomics.load(new Uint16Array(fe.ram.mem.memory.buffer), (addr + 2) >>> 1);
  const deadline = Date.now() + 5000;
  while (fe.queues.some((q) => idx(q.ring.used) !== idx(q.ring.avail)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

async function released(be: InProcessBackend): Promise<void> {
  await new Promise((r) => setTimeout(r, 20));
  await be.server.idle();
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('vhost-user back-end end to end', () => {
  it('rng fills device-writable buffers from the kernel random source and reports the length', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend);
    const a = fe.buffer(0, 0, 256);
    a.fill(0);
    const r1 = await fe.roundTrip(0, [{ offset: 0, len: 128, write: true }, { offset: 128, len: 128, write: true }]);
    expect(r1.len).toBe(256);
    const first = Buffer.from(a);
    expect(first.equals(Buffer.alloc(256))).toBe(false);
    const r2 = await fe.roundTrip(0, [{ offset: 0, len: 256, write: true }]);
    expect(r2.len).toBe(256);
    expect(Buffer.from(a).equals(first)).toBe(false);
  });

  it('device MUST NOT write device-readable buffers: rng leaves the readable part of a chain alone', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend);
    const readable = fe.buffer(0, 0, 64);
    readable.fill(0xab);
    const r = await fe.roundTrip(0, [{ offset: 0, len: 64, write: false }, { offset: 64, len: 32, write: true }]);
    expect(r.len).toBe(32);
    expect(readable.every((b) => b === 0xab)).toBe(true);
  });

  it('GET_VRING_BASE stops the ring and returns the next avail index', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend);
    for (let i = 0; i < 5; i++) await fe.roundTrip(0, [{ offset: 0, len: 16, write: true }]);
    expect(await fe.stop()).toEqual([5]);
  });

  it('null device: every chain of a throughput run on 2 queues completes with no bad used element', async () => {
    backend = startBackend(nullDevice({ queues: 2 }));
    const fe = await connect(backend, 2);
    const res = await fe.run({ mode: 'throughput', polling: false, seconds: 0.5 });
    for (const q of res) {
      expect(q.chains).toBeGreaterThan(1000);
      expect(q.errors).toBe(0);
    }
    // the run's last chains may still be on their way to the worker (its kick not yet read): GET_VRING_BASE may
    // stop a ring before it pops them, which loses nothing; wait until each used ring caught up with its avail ring
    await usedCaughtUp(fe);
    const bases = await fe.stop();
    // each ring stopped where its driver got to: every chain made available was popped (none is lost)
    res.forEach((q, i) => expect(bases[i]).toBe((q.chains + 256) % 65536));
  });

  it('memory-table changes while rings run quiesce, remap and resume without losing a chain', async () => {
    backend = startBackend(nullDevice({ queues: 2 }));
    const fe = await connect(backend, 2);
    const running = fe.run({ mode: 'throughput', polling: false, seconds: 1.5 });
    const extra = memfdCreate('extra');
    ftruncate(extra, 2 << 20);
    const region = { gpa: 1n << 32n, size: 2n << 20n, uaddr: 0x6000_0000_0000n, mmapOffset: 0n };
    const { dup } = await import('../../src/sys/syscalls.js');
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 50));
      await fe.client.request('ADD_MEM_REG', region, [dup(extra)]);
      await fe.client.request('REM_MEM_REG', region);
      const r = fe.ram.region;
      // the same RAM again, through a new fd: the back-end maps it afresh and re-translates the rings
      await fe.client.request('SET_MEM_TABLE', { regions: [{ gpa: r.gpa, size: r.size, uaddr: r.uaddr, mmapOffset: 0n }] }, [dup(fe.ram.fd)]);
    }
    closeQuietly(extra);
    const res = await running;
    await usedCaughtUp(fe);
    const bases = await fe.stop();
    res.forEach((q, i) => {
      expect(q.errors).toBe(0);
      expect(q.chains).toBeGreaterThan(0);
      expect(bases[i]).toBe((q.chains + 256) % 65536);
    });
    expect(backend.logs.join('\n')).not.toMatch(/queue \d: .*(outside|broken|stopped)/);
  });

  it('inflight tracking: after a reconnect the back-end resubmits what a previous back-end left in flight', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend, 1, { inflight: true });
    expect(fe.inflightFd).toBeDefined();
    for (let i = 0; i < 3; i++) await fe.roundTrip(0, [{ offset: 0, len: 16, write: true }]);
    expect(await fe.stop()).toEqual([3]);
    // a chain the "previous back-end" popped and never completed: available, recorded inflight, not used
    const head = fe.submit(0, [{ offset: 512, len: 64, write: true }]);
    fe.buffer(0, 512, 64).fill(0);
    const rec = Buffer.alloc(16);
    rec.writeUInt8(1, 0); // inflight
    rec.writeBigUInt64LE(7n, 8); // fetch counter
    fs.writeSync(fe.inflightFd!, rec, 0, 16, 16 + head * 16);
    await fe.reconnect();
    const used = await fe.waitUsed(0);
    expect(used).toEqual({ id: head, len: 64 });
    expect(Buffer.from(fe.buffer(0, 512, 64)).equals(Buffer.alloc(64))).toBe(false);
    expect(backend.logs.join('\n')).toMatch(/resubmitting 1 request/);
    // and the ring goes on from there
    expect((await fe.roundTrip(0, [{ offset: 0, len: 8, write: true }])).len).toBe(8);
    const after = Buffer.alloc(16);
    fs.readSync(fe.inflightFd!, after, 0, 16, 16 + head * 16);
    expect(after.readUInt8(0)).toBe(0); // completed: no longer inflight
  });

  it('a kick that came before SET_VRING_ENABLE is not lost (rust-vmm #247)', async () => {
    backend = startBackend(rngDevice());
    const fe = await connect(backend, 1, { enableRings: false });
    fe.submit(0, [{ offset: 0, len: 32, write: true }]);
    await expect(fe.waitUsed(0, 200)).rejects.toThrow(/no used element/);
    await fe.client.request('SET_VRING_ENABLE', { index: 0, num: 1 });
    expect((await fe.waitUsed(0)).len).toBe(32);
  });

  it('a malicious chain breaks only its own queue: NEEDS_RESET is reported, the other queue keeps serving', async () => {
    backend = startBackend(nullDevice({ queues: 2 }));
    const fe = await connect(backend, 2);
    await fe.roundTrip(0, [{ offset: 0, len: 8, write: false }]);
    // descriptor 255 points far outside guest memory; publish it by hand
    const ring = fe.queues[0]!.ring;
    const dv = new DataView(fe.ram.mem.memory.buffer);
    dv.setBigUint64(ring.desc + 255 * 16, 1n << 40n, true);
    dv.setUint32(ring.desc + 255 * 16 + 8, 64, true);
    dv.setUint16(ring.desc + 255 * 16 + 12, VIRTQ_DESC_F_WRITE, true);
    const idx = dv.getUint16(ring.avail + 2, true);
    dv.setUint16(ring.avail + 4 + (idx % 256) * 2, 255, true);
    Atomics.store(new Uint16Array(fe.ram.mem.memory.buffer), (ring.avail + 2) >>> 1, idx + 1);
    const { eventfdSignal } = await import('../../src/sys/syscalls.js');
    eventfdSignal(fe.queues[0]!.kickFd);
    let status = 0n;
    for (let i = 0; i < 100 && !(status & BigInt(VIRTIO_CONFIG_S_NEEDS_RESET)); i++) {
      await new Promise((r) => setTimeout(r, 10));
      status = (await fe.client.request('GET_STATUS', undefined))!;
    }
    expect(status & BigInt(VIRTIO_CONFIG_S_NEEDS_RESET)).not.toBe(0n);
    expect(backend.logs.join('\n')).toMatch(/queue 0: buffer outside the mapped guest memory/);
    expect((await fe.roundTrip(1, [{ offset: 0, len: 8, write: false }])).len).toBe(0);
  });

  it('the front-end going away releases the connection and the back-end listens again, with no fd left behind', async () => {
    backend = startBackend(nullDevice({ queues: 2 }));
    const warm = await connect(backend, 2);
    await warm.roundTrip(0, [{ offset: 0, len: 8, write: false }]);
    warm.close();
    open.length = 0;
    await released(backend);
    const before = openFds();
    for (let i = 0; i < 10; i++) {
      const fe = await connect(backend, 2);
      await fe.roundTrip(i % 2, [{ offset: 0, len: 8, write: false }]);
      fe.close();
      open.length = 0;
      await released(backend);
    }
    expect(openFds()).toBeLessThanOrEqual(before + 2);
    expect(backend.server.connectionCount).toBe(11);
  });
});

describe('bad input gets a clear error and loses nothing', () => {
  async function rawClient(be: InProcessBackend): Promise<VhostUserClient> {
    const c = VhostUserClient.connect(be.socketPath, 2000);
    open.push(c);
    await c.request('SET_PROTOCOL_FEATURES', (await c.request('GET_PROTOCOL_FEATURES', undefined))! & 0b1000n);
    c.replyAck = true;
    return c;
  }

  it('an unknown request with NEED_REPLY gets a failed REPLY_ACK and the connection stays up', async () => {
    backend = startBackend(rngDevice());
    const c = await rawClient(backend);
    const m = await c.exchangeRaw(encodeMessage(99, HeaderFlag.VERSION | HeaderFlag.NEED_REPLY, u64.encode(0n)));
    expect(m.header.request).toBe(99);
    expect(m.header.flags & HeaderFlag.REPLY).toBe(HeaderFlag.REPLY);
    expect(u64.decode(m.payload)).not.toBe(0n);
    expect(backend.logs.join('\n')).toMatch(/unknown front-end request id 99/);
    expect(typeof (await c.request('GET_FEATURES', undefined))).toBe('bigint');
    c.close();
  });

  it('SET_FEATURES acking bits never offered is refused', async () => {
    backend = startBackend(rngDevice());
    const c = await rawClient(backend);
    await expect(c.request('SET_FEATURES', 1n << 50n)).rejects.toThrow(/failed/);
    expect(backend.logs.join('\n')).toMatch(/never offered/);
    c.close();
  });

  it('a memory region that lies beyond the end of its fd is refused (it would SIGBUS on access)', async () => {
    backend = startBackend(rngDevice());
    const c = await rawClient(backend);
    const fd = memfdCreate('small');
    ftruncate(fd, 1 << 20);
    await expect(
      c.request('SET_MEM_TABLE', { regions: [{ gpa: 0n, size: 4n << 20n, uaddr: 0x7000_0000_0000n, mmapOffset: 0n }] }, [fd]),
    ).rejects.toThrow(/failed/);
    closeQuietly(fd);
    expect(backend.logs.join('\n')).toMatch(/beyond the end of its fd/);
    c.close();
  });

  it('guest RAM that does not fit the 4 GiB wasm memory is refused with a clear error', async () => {
    backend = startBackend(rngDevice());
    const c = await rawClient(backend);
    const fd = memfdCreate('huge');
    ftruncate(fd, 5n << 30n);
    await expect(
      c.request('SET_MEM_TABLE', { regions: [{ gpa: 0n, size: 5n << 30n, uaddr: 0x7000_0000_0000n, mmapOffset: 0n }] }, [fd]),
    ).rejects.toThrow(/failed/);
    closeQuietly(fd);
    expect(backend.logs.join('\n')).toMatch(/does not fit/);
    c.close();
  });

  it('a header with a bad version closes the connection, and the back-end serves the next front-end', async () => {
    backend = startBackend(rngDevice());
    const c = VhostUserClient.connect(backend.socketPath, 2000);
    open.push(c);
    c.sendRaw(Buffer.concat([Buffer.from([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])]));
    await released(backend);
    expect(backend.logs.join('\n')).toMatch(/version/);
    const fe = await connect(backend);
    expect((await fe.roundTrip(0, [{ offset: 0, len: 8, write: true }])).len).toBe(8);
    c.close();
  });

  it('SET_VRING_NUM that is not a power of two is refused', async () => {
    backend = startBackend(rngDevice());
    const c = await rawClient(backend);
    await expect(c.request('SET_VRING_NUM', { index: 0, num: 100 })).rejects.toThrow(/failed/);
    await expect(c.request('SET_VRING_NUM', { index: 7, num: 128 })).rejects.toThrow(/failed/);
    expect(backend.logs.join('\n')).toMatch(/out of range/);
    c.close();
  });

  it('a payload of the wrong size is refused with a log line naming the request', async () => {
    backend = startBackend(rngDevice());
    const c = await rawClient(backend);
    const bad = encodeRequest('SET_VRING_NUM', { index: 0, num: 8 }).subarray(0, 12 + 4);
    bad.writeUInt32LE(4, 8);
    bad.writeUInt32LE(HeaderFlag.VERSION | HeaderFlag.NEED_REPLY, 4);
    const m = await c.exchangeRaw(Buffer.from(bad));
    expect(m.header.request).toBe(8);
    expect(u64.decode(m.payload)).not.toBe(0n);
    expect(backend.logs.join('\n')).toMatch(/SET_VRING_NUM/);
    // and the connection still serves
    expect(typeof (await c.request('GET_FEATURES', undefined))).toBe('bigint');
    c.close();
  });
});
