/**
 * Queue workers block in a native poll(); nothing may let them hold the process (feasibility.md §5): signals
 * shut a serving back-end down promptly, process.exit() does not hang, and connection churn leaks nothing.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Frontend } from '../../src/frontend/frontend.js';
import { spawnBackend, type ChildBackend } from '../helpers/backend.js';
import { BIN, built, openFdCount, rssKiB, runNode, tempScript, waitExit, waitForOutput } from '../helpers/proc.js';

const POLL_SYSCALLS = new Set(['7', '271']); // poll, ppoll (x86_64)

/** Threads of `pid` sitting in poll()/ppoll() right now. */
function threadsInPoll(pid: number): number {
  let n = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (POLL_SYSCALLS.has(fs.readFileSync(`/proc/${pid}/task/${t}/syscall`, 'utf8').split(' ')[0]!)) n++;
    } catch {
      // thread gone
    }
  }
  return n;
}

async function until(cond: () => boolean, limitMs: number, what: string): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const backends: ChildBackend[] = [];
const frontends: Frontend[] = [];
const scripts: { remove(): void }[] = [];

afterEach(async () => {
  for (const fe of frontends.splice(0)) fe.close();
  for (const be of backends.splice(0)) {
    // ChildBackend.stop() waits forever for a child that already died by a signal: skip those
    if (be.child.exitCode === null && be.child.signalCode === null) await be.stop();
    fs.rmSync(path.dirname(be.socketPath), { recursive: true, force: true });
  }
  for (const s of scripts.splice(0)) s.remove();
});

async function backend(): Promise<ChildBackend> {
  const be = await spawnBackend(['null', '--queues', '2']);
  backends.push(be);
  return be;
}

/** Connect, one round trip per queue: afterwards both queue workers sit in poll() on their kick fds. */
async function serve(be: ChildBackend): Promise<Frontend> {
  const fe = await Frontend.connect({ socketPath: be.socketPath, queues: 2, queueSize: 64 });
  frontends.push(fe);
  for (let q = 0; q < 2; q++) expect((await fe.roundTrip(q, [{ offset: 0, len: 8, write: false }])).len).toBe(0);
  return fe;
}

/** Connect, retrying while the back-end still releases the previous connection (it serves one at a time). */
async function connectWhenFree(be: ChildBackend): Promise<Frontend> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await Frontend.connect({ socketPath: be.socketPath, queues: 2, queueSize: 64 });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

describe('a serving back-end exits promptly on signals', () => {
  // the CLI has a 3 s fallback timer that also exits 0: a clean shutdown must finish well before it fires
  const CLEAN_MS = 2500;

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} with a connected front-end and both workers blocked in poll(): exit code 0 within 3 s (before the fallback timer)`, async () => {
      const be = await backend();
      await serve(be);
      const pid = be.child.pid!;
      await until(() => threadsInPoll(pid) >= 2, 3000, 'two worker threads in poll()');
      const exited = waitExit(be.child, 6000);
      be.child.kill(signal);
      const r = await exited;
      expect(r.ms, `did not exit within 6 s; output:\n${be.output()}`).toBeLessThan(CLEAN_MS);
      expect(r.signal).toBeNull();
      expect(r.code).toBe(0);
      expect(be.output()).toContain(`${signal}, shutting down`);
      // the socket file is removed on the way out
      expect(fs.existsSync(be.socketPath)).toBe(false);
    });
  }

  it('SIGTERM as soon as the socket file appears (the readiness signal) still exits 0 and removes the socket', async () => {
    // supervisors and QEMU take the socket file as "ready": the signal handlers must be in place by then
    for (let i = 0; i < 3; i++) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-ready-'));
      const sock = path.join(dir, 'be.sock');
      const watcher = fs.watch(dir);
      const child = spawn(process.execPath, [BIN, 'null', '--socket-path', sock], { stdio: 'ignore' });
      watcher.on('change', () => {
        if (fs.existsSync(sock)) {
          child.kill('SIGTERM');
          watcher.close();
        }
      });
      const r = await waitExit(child, 10_000);
      watcher.close();
      const left = fs.existsSync(sock);
      fs.rmSync(dir, { recursive: true, force: true });
      expect(r.ms, `run ${i}: no exit within 10 s`).not.toBe(Infinity);
      expect({ run: i, code: r.code, signal: r.signal, socketLeft: left }).toEqual({ run: i, code: 0, signal: null, socketLeft: false });
    }
  });

  it('SIGTERM with no front-end connected: exit code 0 at once', async () => {
    const be = await backend();
    // settled: the start-up window is the subject of the test above
    await new Promise((r) => setTimeout(r, 300));
    const exited = waitExit(be.child, 6000);
    be.child.kill('SIGTERM');
    const r = await exited;
    expect(r.ms).toBeLessThan(CLEAN_MS);
    expect(r.code).toBe(0);
  });
});

describe('process.exit() while queue workers are blocked in poll()', () => {
  function poolScript(removeExitHooks: boolean): string {
    return `
import fs from 'node:fs';
import { QueueWorkerPool } from '${built('src/queues/worker-pool.js')}';
import { loadEngineModule } from '${built('src/engine/engine.js')}';
import { GuestMemory } from '${built('src/memory/guest-memory.js')}';
const mem = new GuestMemory();
const pool = new QueueWorkerPool({
  device: 'null', deviceOptions: {}, memory: mem.memory, module: loadEngineModule(),
  queueToWorker: [0, 1], log: (l) => console.log(l),
});
// a control call per worker proves each one runs its loop; then they go back to poll(-1)
await pool.call(0, (api) => api.resume());
await pool.call(1, (api) => api.resume());
const inPoll = () => fs.readdirSync('/proc/self/task').filter((t) => {
  try { return ['7', '271'].includes(fs.readFileSync('/proc/self/task/' + t + '/syscall', 'utf8').split(' ')[0]); } catch { return false; }
}).length;
const deadline = Date.now() + 5000;
while (inPoll() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
${removeExitHooks ? "process.removeAllListeners('exit');" : ''}
console.log('READY in-poll=' + inPoll());
process.exit(0);
`;
  }

  it('exits promptly with code 0 (the pool wakes its workers at exit)', async () => {
    const s = tempScript('pool-exit.mjs', poolScript(false));
    scripts.push(s);
    const run = runNode(s.file, [], 15_000);
    await waitForOutput(run.output, /READY in-poll=(\d+)/, 12_000);
    const t0 = performance.now();
    const r = await run.exit;
    const afterReady = performance.now() - t0;
    expect(run.output()).toMatch(/READY in-poll=[2-9]/); // the precondition held: both workers in poll()
    expect(r.ms, `hung at exit; output:\n${run.output()}`).not.toBe(Infinity);
    expect(afterReady).toBeLessThan(2000);
    expect(r.code).toBe(0);
  });

  it('control: the same script with the exit hook removed does hang (so the test above can fail)', async () => {
    const s = tempScript('pool-hang.mjs', poolScript(true));
    scripts.push(s);
    const run = runNode(s.file, [], 15_000);
    await waitForOutput(run.output, /READY in-poll=(\d+)/, 12_000);
    const r = await waitExit(run.child, 1500);
    expect(run.output()).toMatch(/READY in-poll=[2-9]/);
    expect(r.ms).toBe(Infinity); // still there after 1.5 s: killed with SIGKILL
  });
});

describe('connection churn', () => {
  it('the back-end keeps serving after 50 connect/disconnect cycles with open fds flat and RSS growth < 30 MiB', async () => {
    const be = await backend();
    const pid = be.child.pid!;
    const cycle = async (i: number): Promise<void> => {
      const fe = await connectWhenFree(be);
      try {
        expect((await fe.roundTrip(i % 2, [{ offset: 0, len: 16, write: false }])).len).toBe(0);
        expect((await fe.roundTrip((i + 1) % 2, [{ offset: 0, len: 16, write: false }])).len).toBe(0);
      } finally {
        fe.close();
      }
    };
    /** open fds of the child once it has released the last connection (its count settles) */
    const settledFds = async (): Promise<number> => {
      let last = -1;
      let stable = 0;
      const deadline = Date.now() + 5000;
      while (stable < 5 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        const n = openFdCount(pid);
        stable = n === last ? stable + 1 : 0;
        last = n;
      }
      return last;
    };
    // warm up: first connection, code caches, heap growth
    for (let i = 0; i < 3; i++) await cycle(i);
    const fds0 = await settledFds();
    const rss0 = rssKiB(pid);
    for (let i = 0; i < 50; i++) {
      try {
        await cycle(i);
      } catch (e) {
        throw new Error(`cycle ${i} failed: ${(e as Error).message}\nback-end output (tail):\n${be.output().slice(-3000)}`);
      }
    }
    const fds1 = await settledFds();
    const rss1 = rssKiB(pid);
    expect(be.child.exitCode).toBeNull();
    expect(fds1, `open fds went from ${fds0} to ${fds1}`).toBeLessThanOrEqual(fds0);
    expect(rss1 - rss0, `VmRSS went from ${rss0} KiB to ${rss1} KiB`).toBeLessThan(30 * 1024);
    // and it still serves
    const fe = await connectWhenFree(be);
    frontends.push(fe);
    expect((await fe.roundTrip(1, [{ offset: 0, len: 8, write: false }])).len).toBe(0);
    expect(be.output()).not.toMatch(/queue worker failed|releasing the connection failed/);
  });
});
