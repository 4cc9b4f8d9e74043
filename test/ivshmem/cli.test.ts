/**
 * `vhost-wasm ivshmem-server` and `ivshmem-client` as processes: option checks, daemon mode with its pid file,
 * 100 peers joining and leaving (some vanishing mid set-up) while doorbells ring, with no fd leak in the server,
 * and two scripted clients exchanging a message and a doorbell.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, openFdCount, runNode, waitExit, waitForOutput } from '../helpers/proc.js';
import { RawClient } from './raw-client.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-ivs-cli-'));
  cleanup.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function cli(args: string[], limitMs = 120_000): ReturnType<typeof runNode> {
  const r = runNode(BIN, args, limitMs);
  cleanup.push(() => {
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  });
  return r;
}

async function waitFor(pred: () => boolean, what: string, limitMs = 60_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`not within ${limitMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function foregroundServer(vectors: number): Promise<{ sock: string; pid: number; output: () => string }> {
  const sock = path.join(tempDir(), 'ivshmem.sock');
  const s = cli(['ivshmem-server', '-F', '-S', sock, '--memfd', '-l', '64K', '-n', String(vectors)], 120_000);
  await waitFor(() => fs.existsSync(sock), `socket ${sock}\n${s.output()}`);
  return { sock, pid: s.child.pid!, output: s.output };
}

describe('ivshmem-server command line', () => {
  it('refuses a size that is not a power of two, and vectors outside 1..64, before creating anything', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 's');
    for (const [args, re] of [
      [['-l', '3M'], /3145728 bytes is not a power of two.*use 4M or 2M/],
      [['-l', '4X'], /invalid size/],
      [['-n', '65'], /vectors must be 1\.\.64, got 65/],
      [['-n', '0'], /vectors must be 1\.\.64, got 0/],
      [['-n', 'two'], /cannot parse the number of vectors/],
    ] as const) {
      const r = cli(['ivshmem-server', '-F', '-S', sock, '--memfd', ...args]);
      const e = await r.exit;
      expect(e.code, r.output()).toBe(2);
      expect(r.output()).toMatch(re);
      expect(fs.existsSync(sock)).toBe(false);
    }
    const v = cli(['ivshmem-server', '-v', '-S', sock]);
    expect((await v.exit).code).toBe(2);
    expect(v.output()).toMatch(/cannot use verbose in daemon mode/);
  });

  it('without -F: returns once a detached server is serving, writes the pid file; SIGTERM removes socket and pid file', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'ivshmem.sock');
    const pidFile = path.join(dir, 'ivshmem.pid');
    const r = cli(['ivshmem-server', '-S', sock, '--memfd', '-l', '64K', '-n', '2', '-p', pidFile]);
    expect((await r.exit).code, r.output()).toBe(0);
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    expect(pid).not.toBe(r.child.pid);
    cleanup.push(() => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    });
    const c = new RawClient(sock);
    cleanup.push(() => c.close());
    await c.handshake(2);
    expect(c.id).toBe(0);
    process.kill(pid, 'SIGTERM');
    await waitFor(() => !fs.existsSync(pidFile) && !fs.existsSync(sock), 'pid file and socket removed');
  });

  it('a start failure in daemon mode is reported by the command itself', async () => {
    const r = cli(['ivshmem-server', '-S', '/nonexistent-dir/ivshmem.sock', '--memfd', '-l', '64K', '-p', path.join(tempDir(), 'pid')]);
    expect((await r.exit).code).toBe(1);
    expect(r.output()).toMatch(/bind.*ENOENT/);
  });
});

describe('ivshmem-server under churn', () => {
  it('100 peers join and leave (some vanish mid set-up) while doorbells ring: right peer, right vector, no fd leak', async () => {
    const VECTORS = 4;
    const s = await foregroundServer(VECTORS);
    const observer = new RawClient(s.sock);
    cleanup.push(() => observer.close());
    await observer.handshake(VECTORS);
    // warm-up join and leave, then the baseline: the observer seeing the leave means the server is done with it
    const warm = new RawClient(s.sock);
    await warm.handshake(VECTORS);
    warm.close();
    await observer.until(() => observer.log.some((m) => m.value === 1n && m.fds.length === 0));
    const baseline = openFdCount(s.pid);

    const live: RawClient[] = [];
    let joined = 0;
    let vanished = 0;
    let rings = 0;
    let seed = 12345;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    while (joined < 100) {
      if (live.length < 2 || (live.length < 12 && rand(3) !== 0)) {
        const c = new RawClient(s.sock);
        joined++;
        if (joined % 10 === 0) {
          // connects and vanishes without reading a byte
          c.close();
          vanished++;
          continue;
        }
        await c.handshake(VECTORS);
        // it can ring everybody already there, each on the vector it names
        for (const other of [...live, observer]) {
          const v = rand(VECTORS);
          c.ring(other.id, v);
          for (let w = 0; w < VECTORS; w++) expect(other.drain(w), `peer ${other.id} vector ${w}`).toBe(w === v ? 1 : 0);
          rings++;
        }
        live.push(c);
      } else {
        const c = live.splice(rand(live.length), 1)[0]!;
        c.close();
      }
      // everybody left catches up with the joins and leaves so far, then rings the newest one back
      const ids = new Set([observer.id, ...live.map((c) => c.id)]);
      for (const c of [observer, ...live]) {
        await c.until(() => [...ids].every((id) => c.peers.get(id)?.length === VECTORS) && [...c.peers.keys()].every((id) => ids.has(id)));
      }
      const newest = live[live.length - 1];
      if (newest) {
        for (const c of [observer, ...live]) {
          if (c === newest) continue;
          const v = rand(VECTORS);
          c.ring(newest.id, v);
          expect(newest.drain(v)).toBe(1);
          rings++;
        }
      }
    }
    for (const c of live.splice(0)) c.close();
    await observer.until(() => observer.peers.size === 1);
    await waitFor(() => openFdCount(s.pid) === baseline, `server fds back to ${baseline} (now ${openFdCount(s.pid)})`);
    expect(openFdCount(s.pid)).toBe(baseline);
    expect(vanished).toBe(10);
    expect(rings).toBeGreaterThan(200);
    // still serving: a new peer gets an id and the observer
    const last = new RawClient(s.sock);
    cleanup.push(() => last.close());
    await last.handshake(VECTORS);
    expect(last.peers.get(observer.id)?.length).toBe(VECTORS);
  }, 120_000);
});

describe('ivshmem-client command line', () => {
  it('two scripted clients: a message through the shared memory and a doorbell on a chosen vector (JSON lines)', async () => {
    const s = await foregroundServer(4);
    const a = cli(['ivshmem-client', '-S', s.sock, '--json', '--write', '0:ping', '--wait', '--read', '100:8', '--timeout', '90']);
    await waitForOutput(a.output, /"event":"connected"/, 60_000);
    const b = cli(['ivshmem-client', '-S', s.sock, '--json', '--wait-peer', '0', '--read', '0:8', '--write', '100:pong', '--ring', '0:2', '--timeout', '90']);
    const [ea, eb] = await Promise.all([a.exit, b.exit]);
    expect(ea.code, a.output()).toBe(0);
    expect(eb.code, b.output()).toBe(0);
    const lines = (out: string): Record<string, unknown>[] => out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const la = lines(a.output());
    const lb = lines(b.output());
    expect(la[0]).toMatchObject({ event: 'connected', id: 0, size: 65536, vectors: 4 });
    expect(lb[0]).toMatchObject({ event: 'connected', id: 1, peers: { '0': 4 } });
    expect(lb).toContainEqual(expect.objectContaining({ event: 'read', offset: 0, text: 'ping' }));
    expect(lb).toContainEqual({ event: 'rang', peer: 0, vector: 2 });
    expect(la).toContainEqual({ event: 'interrupt', vector: 2, count: 1 });
    expect(la).toContainEqual(expect.objectContaining({ event: 'read', offset: 100, text: 'pong' }));
  }, 200_000);

  it('stdin commands like the reference client: dump, int PEER VECTOR, int all', async () => {
    const s = await foregroundServer(2);
    // rings of one vector may coalesce (one eventfd counter): two rings on v1 and one on v0 are >= 2 events
    const a = cli(['ivshmem-client', '-S', s.sock, '--json', '--wait', '--wait', '--timeout', '90']);
    await waitForOutput(a.output, /"event":"connected"/, 60_000);
    const b = spawn(process.execPath, [BIN, 'ivshmem-client', '-S', s.sock], { stdio: ['pipe', 'pipe', 'pipe'] });
    cleanup.push(() => b.kill('SIGKILL'));
    let out = '';
    b.stdout.on('data', (d) => (out += d));
    b.stderr.on('data', (d) => (out += d));
    const exit = waitExit(b, 120_000);
    await waitForOutput(() => out, /connected: id 1/, 60_000);
    b.stdin.write('dump\nint 0 1\nint 0 all\nbogus\nquit\n');
    expect((await exit).code, out).toBe(0);
    expect(out).toMatch(/peers: 0\(2\)/);
    expect(out).toMatch(/rang peer 0 vector 1/);
    expect(out).toMatch(/rang peer 0 vector 0/);
    expect(out).toMatch(/unknown command 'bogus'/);
    expect((await a.exit).code, a.output()).toBe(0);
    expect(a.output()).toMatch(/"event":"interrupt","vector":1/);
  }, 200_000);
});
