/** A `vhost-wasm` back-end as a child process for the QEMU tests: started, waited for, never left behind. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './guest.js';

const CLI = join(REPO_ROOT, 'bin', 'vhost-wasm.js');

export interface CliBackend {
  child: ChildProcess;
  /** stdout and stderr so far */
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node bin/vhost-wasm.js <args>`; killed with SIGKILL if the test process exits first. */
export function startCliBackend(args: string[]): CliBackend {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const onExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', onExit);
  child.once('close', () => process.off('exit', onExit));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => res({ code, signal }));
    child.once('error', (e) => {
      out += `\nspawn error: ${String(e)}`;
      res({ code: null, signal: null });
    });
  });
  return { child, output: () => out, exited };
}

/** Wait until every socket file exists; fails with the back-end's output if it exits or times out first. */
export async function waitForSockets(paths: string[], be: CliBackend, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void be.exited.then(() => (exited = true));
  while (!paths.every((p) => existsSync(p))) {
    if (exited) throw new Error(`back-end exited before creating ${paths.join(', ')}\n${be.output()}`);
    if (Date.now() > deadline) throw new Error(`no socket at ${paths.join(', ')} after ${timeoutMs} ms\n${be.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the back-end has exited (at once if it already had). */
export async function stopCliBackend(be: CliBackend | undefined, graceMs: number): Promise<void> {
  if (!be || be.child.exitCode !== null || be.child.signalCode !== null) return;
  be.child.kill('SIGTERM');
  const t = setTimeout(() => be.child.kill('SIGKILL'), graceMs);
  await be.exited;
  clearTimeout(t);
}
