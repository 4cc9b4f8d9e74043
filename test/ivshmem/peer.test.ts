/**
 * The host-side peer library (src/ivshmem/peer.ts) against our server over real sockets: the shared memory
 * mapped into each peer's own WebAssembly.Memory (coherent between peers), doorbells both ways through the
 * vector worker, joins and leaves as events, and QEMU's client-side rules on what the server may send.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { IvshmemPeer, type PeerEvent } from '../../src/ivshmem/peer.js';
import { ClientProtocolState, encodeMessage, IvshmemProtocolError } from '../../src/ivshmem/protocol.js';
import { IvshmemServer } from '../../src/ivshmem/server.js';
import { closeQuietly, eventfd, ftruncate, memfdCreate } from '../../src/sys/syscalls.js';
import { UnixConnection, UnixListener } from '../../src/sys/unix-socket.js';
import { tempSocketPath } from '../helpers/backend.js';
import { RawClient } from './raw-client.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function startServer(vectors: number, size = 1n << 20n): IvshmemServer {
  const s = new IvshmemServer({ socketPath: tempSocketPath('ivshmem.sock'), backing: { kind: 'memfd' }, size, vectors }).start();
  cleanup.push(() => s.close());
  return s;
}

async function peer(s: IvshmemServer, maxVectors?: number): Promise<IvshmemPeer> {
  const p = await IvshmemPeer.connect({ socketPath: s.opts.socketPath, maxVectors });
  cleanup.push(() => p.close());
  return p;
}

async function eventually(pred: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const isInterrupt = (v: number) => (e: PeerEvent): e is Extract<PeerEvent, { type: 'interrupt' }> => e.type === 'interrupt' && e.vector === v;

describe('ivshmem host-side peer', () => {
  it('maps the shared memory into a shared WebAssembly.Memory; two peers see each other\'s writes', async () => {
    const s = startServer(2, 2n << 20n);
    const a = await peer(s);
    const b = await peer(s);
    expect(a.memory.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.shmSize).toBe(2 << 20);
    expect(a.shmOffset % 4096).toBe(0);
    a.bytes().set(Buffer.from('from a'), 100);
    expect(Buffer.from(b.bytes().subarray(100, 106)).toString()).toBe('from a');
    b.bytes().set(Buffer.from('end'), (2 << 20) - 3);
    expect(Buffer.from(a.bytes().subarray((2 << 20) - 3)).toString()).toBe('end');
  });

  it('rings a peer\'s vector; the peer\'s worker reports exactly that vector', async () => {
    const s = startServer(4);
    const a = await peer(s);
    const b = await peer(s);
    await eventually(() => a.peers().get(b.id) === 4, 'a knows all of b\'s vectors');
    expect(a.peers().get(b.id)).toBe(4);
    expect(b.peers().get(a.id)).toBe(4);
    for (const v of [0, 3, 1]) {
      const got = b.waitFor(isInterrupt(v), 15_000);
      a.ring(b.id, v);
      expect((await got).count).toBe(1);
      const back = a.waitFor(isInterrupt(v), 15_000);
      b.ring(a.id, v);
      await back;
    }
    expect(() => a.ring(b.id, 4)).toThrow(/vectors 0\.\.3/);
    expect(() => a.ring(999, 0)).toThrow(/no peer 999/);
  });

  it('reports joins and leaves of other peers (bare clients included)', async () => {
    const s = startServer(1);
    const a = await peer(s);
    const joined = a.waitFor((e) => e.type === 'peer-joined', 15_000);
    const raw = new RawClient(s.opts.socketPath);
    cleanup.push(() => raw.close());
    await raw.handshake(1);
    expect(await joined).toEqual({ type: 'peer-joined', peer: raw.id });
    const left = a.waitFor((e) => e.type === 'peer-left', 15_000);
    raw.close();
    expect(await left).toEqual({ type: 'peer-left', peer: raw.id });
    expect(a.peers().size).toBe(0);
  });

  it('keeps working with the peers it knows when the server goes away', async () => {
    const s = startServer(1);
    const a = await peer(s);
    const b = await peer(s);
    await eventually(() => a.peers().has(b.id), 'a knows b');
    const gone = a.waitFor((e) => e.type === 'server-gone', 15_000);
    s.close();
    // the server's close announces b leaving to a, or a leaving to b, first; whichever: a learns the server is gone
    await gone;
    if (a.peers().has(b.id)) {
      const got = b.waitFor(isInterrupt(0), 15_000);
      a.ring(b.id, 0);
      await got;
    }
  });

  it('accepts at most maxVectors per peer (QEMU: "Too many eventfd received")', async () => {
    const s = startServer(4);
    const warnings: string[] = [];
    const a = await IvshmemPeer.connect({ socketPath: s.opts.socketPath, maxVectors: 2 });
    cleanup.push(() => a.close());
    a.on((e) => e.type === 'warning' && warnings.push(e.message));
    expect(a.vectorCount).toBe(2);
    const b = await peer(s);
    await eventually(() => a.peers().get(b.id) === 2 && warnings.length > 0, 'a refused b\'s extra vectors');
    expect(warnings.join('\n')).toMatch(/Too many eventfd/);
  });
});

describe('ivshmem host-side peer: resources', () => {
  it('close() gives back every fd, the mapping and the worker', async () => {
    const s = startServer(8);
    const fds = (): number => fs.readdirSync('/proc/self/fd').length;
    const once = async (): Promise<void> => {
      const p = await IvshmemPeer.connect({ socketPath: s.opts.socketPath });
      p.bytes()[0] = 1;
      await p.close();
      // the server's side of the peer (socket, eventfds) lives in this process too
      await eventually(() => s.peerList().length === 0, 'the server lets the peer go');
    };
    await once();
    const before = fds();
    for (let i = 0; i < 5; i++) await once();
    expect(fds()).toBe(before);
  });
});

describe('ivshmem host-side peer against a hostile server', () => {
  /** A fake server: sends the given messages to the first client, keeps the connection open. */
  function fakeServer(messages: [number, number | undefined][]): { path: string; more: (m: [number, number | undefined][]) => void } {
    const path = tempSocketPath('fake.sock');
    const l = UnixListener.listen(path);
    cleanup.push(() => l.close());
    let conn: UnixConnection | undefined;
    const send = (m: [number, number | undefined][]): void => {
      for (const [v, f] of m) conn!.send(encodeMessage(BigInt(v)), f === undefined ? [] : [f]);
    };
    l.start((fd) => {
      conn = new UnixConnection(fd);
      cleanup.push(() => conn!.close());
      send(messages);
    });
    return { path, more: send };
  }

  it('refuses a server that sends version 1 ("expecting 0")', async () => {
    const { path } = fakeServer([[1, undefined]]);
    await expect(IvshmemPeer.connect({ socketPath: path, timeoutMs: 3000 })).rejects.toThrow(/version 1.*expecting 0/);
  });

  it('ignores a vector that is not an eventfd, and stops listening to a server that breaks the rules later', async () => {
    const shm = memfdCreate('fake-shm');
    ftruncate(shm, 65536);
    const notEventfd = memfdCreate('not-an-eventfd');
    const own = eventfd();
    cleanup.push(() => [shm, notEventfd, own].forEach(closeQuietly));
    const { path, more } = fakeServer([[0, undefined], [3, undefined], [-1, shm], [5, notEventfd], [3, own]]);
    const events: PeerEvent[] = [];
    const p = await IvshmemPeer.connect({ socketPath: path, timeoutMs: 3000 });
    cleanup.push(() => p.close());
    p.on((e) => events.push(e));
    more([[9, undefined]]);
    await eventually(() => events.some((e) => e.type === 'server-gone'), 'the bad leave ends the connection');
    expect(p.id).toBe(3);
    expect(p.peers().has(5)).toBe(false);
    expect(events.find((e) => e.type === 'server-gone')).toMatchObject({ reason: expect.stringMatching(/unknown peer ID 9/) });
  });
});

describe('ivshmem client rules (QEMU 7.2)', () => {
  const state = (): ClientProtocolState => new ClientProtocolState(2, closeQuietly);

  it('version must be 0 without fd', () => {
    expect(() => state().accept({ value: 1n, fd: undefined })).toThrow(IvshmemProtocolError);
    const fd = eventfd();
    expect(() => state().accept({ value: 0n, fd })).toThrow(/version/);
  });

  it('id must be 0..65535 without fd', () => {
    const s = state();
    s.accept({ value: 0n, fd: undefined });
    expect(() => s.accept({ value: 65536n, fd: undefined })).toThrow(/invalid ID/);
    const t = state();
    t.accept({ value: 0n, fd: undefined });
    expect(t.accept({ value: 65535n, fd: undefined })).toEqual({ kind: 'id', id: 65535 });
  });

  it('peer messages before the shm are accepted; a second shm, values < -1 or > 65535, a leave for self or an unknown peer are errors', () => {
    const s = state();
    s.accept({ value: 0n, fd: undefined });
    s.accept({ value: 7n, fd: undefined });
    const v = eventfd();
    expect(s.accept({ value: 3n, fd: v })).toEqual({ kind: 'vector', peer: 3, vector: 0, fd: v });
    const shm = eventfd();
    expect(s.accept({ value: -1n, fd: shm })).toEqual({ kind: 'shm', fd: shm });
    expect(() => s.accept({ value: -1n, fd: eventfd() })).toThrow(/second/);
    expect(() => s.accept({ value: -2n, fd: undefined })).toThrow(/invalid message/);
    expect(() => s.accept({ value: 65536n, fd: undefined })).toThrow(/invalid message/);
    expect(() => s.accept({ value: 7n, fd: undefined })).toThrow(/own ID/);
    expect(() => s.accept({ value: 9n, fd: undefined })).toThrow(/unknown peer/);
    expect(s.accept({ value: 3n, fd: undefined })).toEqual({ kind: 'peer-left', peer: 3 });
    [v, shm].forEach(closeQuietly);
  });
});
