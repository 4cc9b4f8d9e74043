/**
 * The ivshmem server against bare clients over real unix sockets: every protocol message byte for byte, the
 * order of a join (spec §3.2), leaves, id allocation, joins and leaves in every order, 64 vectors, doorbells
 * reaching exactly the peer and vector they name, and clients that misbehave or vanish.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { IvshmemServer, validateServerOptions } from '../../src/ivshmem/server.js';
import { parseSize } from '../../src/ivshmem/protocol.js';
import { closeQuietly, fstat, write } from '../../src/sys/syscalls.js';
import { UnixListener } from '../../src/sys/unix-socket.js';
import { tempSocketPath } from '../helpers/backend.js';
import { RawClient, wire } from './raw-client.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function startServer(vectors: number, size = 1n << 20n): IvshmemServer {
  const s = new IvshmemServer({ socketPath: tempSocketPath('ivshmem.sock'), backing: { kind: 'memfd' }, size, vectors }).start();
  cleanup.push(() => s.close());
  return s;
}

function client(s: IvshmemServer): RawClient {
  const c = new RawClient(s.opts.socketPath);
  cleanup.push(() => c.close());
  return c;
}

async function eventually(pred: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Let the server's event loop accept and answer. */
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

function sameFile(a: number, b: number): boolean {
  const x = fstat(a);
  const y = fstat(b);
  return x.dev === y.dev && x.ino === y.ino;
}

describe('ivshmem server: messages on the wire', () => {
  it('on connect: version 0, the id, (-1, shm fd), then the own vectors, byte for byte', async () => {
    const s = startServer(3);
    const c = client(s);
    const msgs = [];
    for (let i = 0; i < 6; i++) msgs.push(await c.next());
    expect(msgs.map((m) => m.bytes)).toEqual([wire(0), wire(0), wire(-1), wire(0), wire(0), wire(0)]);
    expect(msgs.map((m) => m.fds.length)).toEqual([0, 0, 1, 1, 1, 1]);
    expect(sameFile(msgs[2]!.fds[0]!, s.shm.fd)).toBe(true);
    expect(fstat(msgs[2]!.fds[0]!).size).toBe(1n << 20n);
    for (const m of msgs.slice(3)) expect(fs.readlinkSync(`/proc/self/fd/${m.fds[0]}`)).toBe('anon_inode:[eventfd]');
    expect(new Set(msgs.slice(3).map((m) => m.fds[0])).size).toBe(3);
    msgs.forEach((m) => m.fds.forEach((fd) => fs.closeSync(fd)));
    expect(c.idle()).toBe(true);
  });

  it('join order: existing peers get the new id per vector; the new peer gets the existing peers in join order, then itself', async () => {
    const s = startServer(2);
    const a = client(s);
    await a.handshake(2);
    const b = client(s);
    await b.handshake(2);
    await a.until(() => a.peers.get(1)?.length === 2);
    const c = client(s);
    const seen = [];
    for (let i = 0; i < 3 + 2 * 3; i++) seen.push(await c.next());
    expect(seen.map((m) => m.bytes)).toEqual([wire(0), wire(2), wire(-1), wire(0), wire(0), wire(1), wire(1), wire(2), wire(2)]);
    expect(seen.map((m) => m.fds.length)).toEqual([0, 0, 1, 1, 1, 1, 1, 1, 1]);
    seen.slice(2).forEach((m) => c.apply(m));
    c.id = 2;
    // the existing peers were told, vector by vector, and nothing else
    for (const old of [a, b]) {
      const m0 = await old.next();
      const m1 = await old.next();
      expect([m0.bytes, m1.bytes]).toEqual([wire(2), wire(2)]);
      expect([m0.fds.length, m1.fds.length]).toEqual([1, 1]);
      old.apply(m0);
      old.apply(m1);
      expect(old.idle()).toBe(true);
    }
    // the same eventfd is "ring peer X on v" for the others and "my vector v" for X
    for (const [from, to] of [[a, c], [c, a], [b, c], [c, b], [a, b]] as const) {
      for (const v of [0, 1]) {
        from.ring(to.id, v);
        expect(to.drain(v)).toBe(1);
        expect(to.drain(1 - v)).toBe(0);
      }
    }
    expect(c.idle()).toBe(true);
  });

  it('leave: the id without an fd goes to every remaining peer, and the id is not reused at once', async () => {
    const s = startServer(1);
    const [a, b, c] = [client(s), client(s), client(s)];
    for (const x of [a, b, c]) await x.handshake(1);
    await a.until(() => a.peers.size === 3);
    await b.until(() => b.peers.size === 3);
    b.close();
    for (const x of [a, c]) {
      const m = await x.next();
      expect(m.bytes).toEqual(wire(1));
      expect(m.fds).toEqual([]);
      x.apply(m);
      expect([...x.peers.keys()].sort()).toEqual([0, 2]);
    }
    // ids: the lowest free one at or after a rolling counter (the reference's rule): 3 next, not 1
    const d = client(s);
    await d.handshake(1);
    expect(d.id).toBe(3);
    expect(s.peerList().map((p) => p.id)).toEqual([0, 2, 3]);
  });

  it('a peer that sends anything is dropped like one that left (reference behaviour), the others carry on', async () => {
    const s = startServer(1);
    const [a, b] = [client(s), client(s)];
    await a.handshake(1);
    await b.handshake(1);
    await a.until(() => a.peers.size === 2);
    write(b.conn.fd, Buffer.from('x'));
    const m = await a.next();
    expect(m.bytes).toEqual(wire(1));
    expect(m.fds).toEqual([]);
    const c = client(s);
    await c.handshake(1);
    expect(c.id).toBe(2);
  });

  it('64 vectors: 64 distinct eventfds per peer, each ringing only its own vector', async () => {
    const s = startServer(64);
    const a = client(s);
    await a.handshake(64);
    const b = client(s);
    await b.handshake(64);
    await a.until(() => a.peers.get(b.id)?.length === 64);
    expect(b.peers.get(a.id)!.length).toBe(64);
    expect(new Set(a.peers.get(a.id)).size).toBe(64);
    for (let v = 0; v < 64; v++) {
      a.ring(b.id, v);
      for (let w = 0; w < 64; w++) expect(b.drain(w)).toBe(w === v ? 1 : 0);
      b.ring(a.id, v);
      expect(a.drain(v)).toBe(1);
    }
  });
});

describe('ivshmem server: joins and leaves in every order', () => {
  const perms = (xs: number[]): number[][] => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => perms([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p])));

  it('3 peers, every join order x every leave order: each survivor sees exactly the live peers and can ring each', async () => {
    let scenarios = 0;
    for (const joinOrder of perms([0, 1, 2])) {
      for (const leaveOrder of perms([0, 1, 2])) {
        const s = startServer(2);
        const clients = new Map<number, RawClient>();
        // join in joinOrder (client k is the k-th in joinOrder; its id is its join position)
        const byName: RawClient[] = [];
        for (const name of joinOrder) {
          const c = client(s);
          await c.handshake(2);
          byName[name] = c;
          clients.set(c.id, c);
        }
        const live = new Set(clients.keys());
        const check = async (): Promise<void> => {
          for (const id of live) {
            const c = clients.get(id)!;
            await c.until(() => [...live].every((p) => c.peers.get(p)?.length === 2) && c.peers.size === live.size);
            expect(c.idle()).toBe(true);
            for (const other of live) {
              if (other === id) continue;
              c.ring(other, 1);
              expect(clients.get(other)!.drain(1)).toBe(1);
              expect(clients.get(other)!.drain(0)).toBe(0);
            }
          }
        };
        await check();
        for (const name of leaveOrder) {
          const c = byName[name]!;
          live.delete(c.id);
          c.close();
          await check();
        }
        await eventually(() => s.peerList().length === 0, 'the server forgets every peer');
        s.close();
        scenarios++;
      }
    }
    expect(scenarios).toBe(36);
  });
});

describe('ivshmem server: clients that vanish or stall', () => {
  it('a client gone before reading its set-up is announced as joined then left; ids stay consistent', async () => {
    const s = startServer(4);
    const a = client(s);
    await a.handshake(4);
    const ghost = new RawClient(s.opts.socketPath);
    await tick();
    ghost.close();
    await a.until(() => a.log.some((m) => m.value === 1n && m.fds.length === 0));
    expect(a.peers.has(1)).toBe(false);
    const b = client(s);
    await b.handshake(4);
    expect(b.id).toBe(2);
    expect([...b.peers.keys()].sort()).toEqual([0, 2]);
  });

  it('a client that never reads is dropped (announced as gone) once it owes too much; the server serves the others throughout', async () => {
    const s = startServer(64);
    const stalled = new RawClient(s.opts.socketPath);
    cleanup.push(() => stalled.close());
    const a = client(s);
    await a.handshake(64);
    let joins = 0;
    // each join owes the stalled client 64 messages with an fd; the bound is 8192 of them
    while (!a.log.slice(2).some((m) => m.value === 0n && m.fds.length === 0)) {
      const c = new RawClient(s.opts.socketPath);
      await c.handshake(64);
      c.close();
      joins++;
      // a reads everything up to c's leave, so it never owes anything for long
      await a.until(() => a.log.some((m) => m.value === BigInt(c.id) && m.fds.length === 0));
      if (joins > 200) throw new Error('the stalled client was never dropped');
    }
    expect(joins).toBeGreaterThan(100);
    expect(s.peerList().map((p) => p.id)).toEqual([a.id]);
    const b = client(s);
    await b.handshake(64);
    expect(b.peers.has(a.id)).toBe(true);
  });
});

describe('ivshmem server: configuration', () => {
  it('sizes: a power of two is required (QEMU asserts on anything else), with a suggestion', () => {
    expect(() => validateServerOptions({ size: 3n << 20n, vectors: 1 })).toThrow(/not a power of two.*use 4M or 2M/);
    expect(() => validateServerOptions({ size: 1000n, vectors: 1 })).toThrow(/not a power of two/);
    expect(() => validateServerOptions({ size: 1024n, vectors: 1 })).toThrow(/4K\.\./);
    expect(() => validateServerOptions({ size: 4n << 20n, vectors: 1 })).not.toThrow();
  });

  it('vectors: 1..64', () => {
    expect(() => validateServerOptions({ size: 1n << 20n, vectors: 0 })).toThrow(/1\.\.64/);
    expect(() => validateServerOptions({ size: 1n << 20n, vectors: 65 })).toThrow(/1\.\.64/);
    expect(() => validateServerOptions({ size: 1n << 20n, vectors: 64 })).not.toThrow();
  });

  it('size syntax as the reference takes it: bytes, K/M/G suffixes, fractions, hex', () => {
    expect(parseSize('4M')).toBe(4n << 20n);
    expect(parseSize('1G')).toBe(1n << 30n);
    expect(parseSize('64k')).toBe(64n << 10n);
    expect(parseSize('4194304')).toBe(4194304n);
    expect(parseSize('0.5M')).toBe(512n << 10n);
    expect(parseSize('0x100000')).toBe(1n << 20n);
    expect(() => parseSize('4Q')).toThrow(/invalid size/);
    expect(() => parseSize('')).toThrow(/invalid size/);
  });

  it('never takes over a socket another server listens on; a stale socket file is replaced', async () => {
    const s = startServer(1);
    expect(() => new IvshmemServer({ ...s.opts }).start()).toThrow(/another server is listening/);
    // a socket file nobody listens on any more, as a crashed server leaves it
    const stale = tempSocketPath('stale.sock');
    const l = UnixListener.listen(stale);
    closeQuietly(l.fd);
    expect(fs.statSync(stale).isSocket()).toBe(true);
    const second = new IvshmemServer({ ...s.opts, socketPath: stale }).start();
    cleanup.push(() => second.close());
    const c = client(second);
    await c.handshake(1);
    expect(c.id).toBe(0);
  });

  it('-M: a POSIX shm object under /dev/shm, removed at close; -m: an unlinked file in the directory', async () => {
    const name = `vw-ivshmem-test-${process.pid}`;
    const s = new IvshmemServer({ socketPath: tempSocketPath('s'), backing: { kind: 'shm', name }, size: 1n << 16n, vectors: 1 }).start();
    expect(fs.statSync(`/dev/shm/${name}`).size).toBe(1 << 16);
    const c = new RawClient(s.opts.socketPath);
    await c.handshake(1);
    expect(sameFile(c.shmFd, s.shm.fd)).toBe(true);
    c.close();
    s.close();
    expect(fs.existsSync(`/dev/shm/${name}`)).toBe(false);

    const dir = fs.mkdtempSync('/tmp/vw-ivshmem-dir-');
    const d = new IvshmemServer({ socketPath: tempSocketPath('s'), backing: { kind: 'dir', dir }, size: 1n << 16n, vectors: 1 }).start();
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(fstat(d.shm.fd).size).toBe(1n << 16n);
    d.close();
    fs.rmSync(dir, { recursive: true });
  });
});
