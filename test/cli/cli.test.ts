/**
 * The vhost-wasm command line (src/cli/main.ts, drive.ts), run as a real child process from the build:
 * capabilities, usage errors (exit 2), an inherited listening socket (--fd), and `drive --json`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Frontend } from '../../src/frontend/frontend.js';
import { closeQuietly } from '../../src/sys/syscalls.js';
import { UnixListener } from '../../src/sys/unix-socket.js';
import { spawnBackend, tempSocketPath, type ChildBackend } from '../helpers/backend.js';
import { BIN, waitExit } from '../helpers/proc.js';

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children: ChildProcess[] = [];
const backends: ChildBackend[] = [];
const cleanup: (() => void)[] = [];

afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) f();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const be of backends.splice(0)) {
    // ChildBackend.stop() waits forever for a child that already died by a signal: skip those
    if (be.child.exitCode === null && be.child.signalCode === null) await be.stop();
    fs.rmSync(path.dirname(be.socketPath), { recursive: true, force: true });
  }
});

/** Run the CLI to completion (killed after `limitMs`). */
function cli(args: string[], limitMs = 15_000, stdio3?: number): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: stdio3 === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe', stdio3],
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('--print-capabilities', () => {
  it('rng --print-capabilities prints {"type":"rng","features":[]} as one JSON line and exits 0', async () => {
    const r = await cli(['rng', '--print-capabilities']);
    expect(r.code).toBe(0);
    expect(r.stdout.endsWith('\n')).toBe(true);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.stdout)).toEqual({ type: 'rng', features: [] });
    expect(r.stderr).toBe('');
  });

  it('null --print-capabilities names the null device and exits 0 without needing a socket', async () => {
    const r = await cli(['null', '--print-capabilities']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ type: 'null', features: [] });
  });
});

describe('usage errors exit 2 with a clear message', () => {
  const usage = (r: CliResult): void => {
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^vhost-wasm: /);
    expect(r.stderr).toContain('usage:');
    expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
  };

  it('null --queues 0 → exit 2 naming --queues and its range', async () => {
    const r = await cli(['null', '--queues', '0', '--socket-path', tempSocketPath('q0.sock')]);
    usage(r);
    expect(r.stderr).toMatch(/--queues must be an integer in 1\.\.32, got '0'/);
  });

  it('null --queues abc and --queues 33 → exit 2', async () => {
    for (const q of ['abc', '33', '1.5']) {
      const r = await cli(['null', '--queues', q, '--socket-path', tempSocketPath('qx.sock')]);
      usage(r);
      expect(r.stderr).toContain(`got '${q}'`);
    }
  });

  it('neither --socket-path nor --fd → exit 2', async () => {
    const r = await cli(['rng']);
    usage(r);
    expect(r.stderr).toMatch(/exactly one of --socket-path and --fd is required/);
  });

  it('both --socket-path and --fd → exit 2, and nothing is created at the path', async () => {
    const p = tempSocketPath('both.sock');
    cleanup.push(() => fs.rmSync(path.dirname(p), { recursive: true, force: true }));
    const r = await cli(['null', '--socket-path', p, '--fd', '3']);
    usage(r);
    expect(r.stderr).toMatch(/exactly one of --socket-path and --fd/);
    expect(fs.existsSync(p)).toBe(false);
  });

  it('an unknown option, an unknown device command and drive without --socket-path → exit 2', async () => {
    const a = await cli(['rng', '--bogus', '--socket-path', tempSocketPath('b.sock')]);
    usage(a);
    expect(a.stderr).toMatch(/--bogus/);
    const b = await cli(['frobnicate']);
    usage(b);
    expect(b.stderr).toMatch(/unknown command 'frobnicate'/);
    const c = await cli(['drive', '--device', 'null']);
    usage(c);
    expect(c.stderr).toMatch(/drive needs --socket-path/);
  });

  it('--help prints the usage on stdout and exits 0', async () => {
    const r = await cli(['rng', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage:');
  });
});

describe('--fd N: an inherited listening socket', () => {
  it('rng --fd 3 serves a front-end that connects to the socket the parent created', async () => {
    const p = tempSocketPath('inherited.sock');
    cleanup.push(() => fs.rmSync(path.dirname(p), { recursive: true, force: true }));
    const listener = UnixListener.listen(p);
    let lfd = listener.fd;
    cleanup.push(() => closeQuietly(lfd));
    const child = spawn(process.execPath, [BIN, 'rng', '--fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', lfd] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    // the child holds its own copy now; drop ours (keeping the path) so only the child can accept
    closeQuietly(lfd);
    lfd = -1;
    const fe = await Frontend.connect({ socketPath: p, queues: 1, queueSize: 64 });
    cleanup.push(() => fe.close());
    const buf = fe.buffer(0, 0, 256);
    buf.fill(0);
    const r = await fe.roundTrip(0, [{ offset: 0, len: 256, write: true }]);
    expect(r.len).toBe(256);
    expect(buf.some((b) => b !== 0)).toBe(true);
    expect(out).toMatch(/listening on fd 3/);
    expect(child.exitCode).toBeNull();
    const exited = waitExit(child, 5000);
    child.kill('SIGTERM');
    expect((await exited).code).toBe(0);
  });

  it('--fd naming a closed descriptor, or one that is not a socket, fails with a clear error, not a native abort', async () => {
    // fd 99 is not open in the child; fd 0 is /dev/null (stdin 'ignore')
    for (const [fd, why] of [
      ['99', /fd 99|EBADF/i],
      ['0', /fd 0|ENOTSOCK|not a (listening )?socket/i],
    ] as const) {
      const r = await cli(['rng', '--fd', fd], 10_000);
      expect(r.signal, `--fd ${fd}: ${r.stderr.slice(0, 200)}`).toBeNull(); // SIGABRT: a FATAL ERROR in native code
      expect(r.code === 1 || r.code === 2, `--fd ${fd}: exit ${r.code}`).toBe(true);
      expect(r.stderr).not.toMatch(/FATAL ERROR/);
      expect(r.stderr).toMatch(why);
    }
  });
});

describe('drive --json', () => {
  it('drive against a 2-queue null back-end prints ONE JSON object whose chainsPerSec is the sum over its 2 queues', async () => {
    const be = await spawnBackend(['null', '--queues', '2']);
    backends.push(be);
    const r = await cli(['drive', '--socket-path', be.socketPath, '--device', 'null', '--queues', '2', '--seconds', '1', '--json'], 20_000);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const report = JSON.parse(lines[0]!) as {
      chainsPerSec: unknown;
      queues: { queue: number; chainsPerSec: number; chains: number; errors: number }[];
      errors: number;
      queueCount: number;
      device: string;
    };
    expect(report).toBeTypeOf('object');
    expect(Array.isArray(report)).toBe(false);
    expect(typeof report.chainsPerSec).toBe('number');
    const total = report.chainsPerSec as number;
    expect(Number.isFinite(total)).toBe(true);
    expect(total).toBeGreaterThan(0);
    expect(Array.isArray(report.queues)).toBe(true);
    expect(report.queues).toHaveLength(2);
    const sum = report.queues.reduce((s, q) => s + q.chainsPerSec, 0);
    expect(Math.abs(total - sum)).toBeLessThanOrEqual(Math.max(1, total * 1e-9));
    for (const q of report.queues) {
      expect(q.chainsPerSec).toBeGreaterThan(0);
      expect(q.chains).toBeGreaterThan(0);
      expect(q.errors).toBe(0);
    }
    expect(report.queues.map((q) => q.queue).sort()).toEqual([0, 1]);
    expect(report.errors).toBe(0);
    expect(report.queueCount).toBe(2);
    expect(report.device).toBe('null');
    // the back-end is still up and free for the next front-end
    expect(be.child.exitCode).toBeNull();
  });
});
