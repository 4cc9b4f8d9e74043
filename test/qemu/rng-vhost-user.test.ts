// virtio-rng over vhost-user: QEMU 7.2's vhost-user-rng-pci against our back-end
// (`node bin/vhost-wasm.js rng --socket-path SOCK`), with a real Linux guest
// reading >= 1 MiB from /dev/hwrng. rng-builtin.test.ts checks the guest side alone.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, bootGuest, describeResult, ensureGuestBuilt, qemuAvailable } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';
const CLI = join(REPO_ROOT, 'bin', 'vhost-wasm.js');

interface Backend {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startBackend(sock: string): Backend {
  const child = spawn(process.execPath, [CLI, 'rng', '--socket-path', sock], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // Never leave a back-end behind, even if this worker exits abruptly.
  const onExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', onExit);
  child.once('close', () => process.off('exit', onExit));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('close', (code, signal) => res({ code, signal }));
    child.once('error', (e) => {
      err += `\nspawn error: ${String(e)}`;
      res({ code: null, signal: null });
    });
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function waitForSocket(path: string, be: Backend, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void be.exited.then(() => (exited = true));
  while (!existsSync(path)) {
    if (exited) throw new Error(`back-end exited before creating ${path}\nstderr:\n${be.stderr()}\nstdout:\n${be.stdout()}`);
    if (Date.now() > deadline) throw new Error(`no socket at ${path} after ${timeoutMs} ms\nstderr:\n${be.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!qemu.ok && !required)('vhost-user-rng with a real QEMU guest', () => {
  let dir: string | undefined;
  let be: Backend | undefined;

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    if (be && be.child.exitCode === null && be.child.signalCode === null) {
      be.child.kill('SIGTERM');
      const t = setTimeout(() => be?.child.kill('SIGKILL'), 3_000);
      await be.exited;
      clearTimeout(t);
    }
    be = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('guest reads >= 1 MiB from /dev/hwrng served by vhost-wasm rng', async () => {
    dir = mkdtempSync(join(tmpdir(), 'vw-rng-'));
    const sock = join(dir, 'rng.sock');
    be = startBackend(sock);
    await waitForSocket(sock, be, 15_000);

    const r = await bootGuest({
      test: 'rng',
      chardevs: [`socket,id=rng0,path=${sock}`],
      devices: ['vhost-user-rng-pci,chardev=rng0'],
      timeoutMs: 120_000,
    });
    console.log(`[qemu rng-vhost-user] boot-to-test ${r.bootMs} ms, total ${r.durationMs} ms, ${r.markerLine}`);
    const why = `${describeResult(r)}\n--- back-end stderr ---\n${be.stderr()}\n--- back-end stdout (tail) ---\n${be.stdout().slice(-2000)}`;
    if (!r.passed) console.error(why);
    expect(r.passed, why).toBe(true);
    expect(Number(r.markerFields.bytes), why).toBeGreaterThanOrEqual(1048576);
    expect(r.markerFields.current, why).toMatch(/^virtio_rng/);
  }, 240_000);
});
