/** Looking at other processes from tests: /proc counters, waiting for exit, scripts against the build. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export const REPO_ROOT = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '../..');
export const BIN = path.join(REPO_ROOT, 'bin/vhost-wasm.js');

/** file:// URL of a module of the compiled build, e.g. built('src/queues/worker-pool.js'). */
export function built(rel: string): string {
  return pathToFileURL(path.join(REPO_ROOT, 'build/out', rel)).href;
}

export function openFdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

export function threadCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/task`).length;
}

/** Threads of the process itself: io_uring's kernel workers (iou-wrk-*, iou-sqp-*) come and go on their own. */
export function ownThreadCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/task`).filter((t) => {
    try {
      return !fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').startsWith('iou-');
    } catch {
      return false; // gone meanwhile
    }
  }).length;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** ms from the call until exit, or Infinity when it did not exit within the limit */
  ms: number;
}

/** Wait up to `limitMs` for `child` to exit; kills it with SIGKILL when it does not (ms = Infinity). */
export function waitExit(child: ChildProcess, limitMs: number): Promise<Exit> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      return resolve({ code: child.exitCode, signal: child.signalCode, ms: 0 });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, signal: null, ms: Infinity });
    }, limitMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ms: performance.now() - t0 });
    });
  });
}

/** Write `source` to a temporary .mjs file and return its path (removed by the returned cleanup). */
export function tempScript(name: string, source: string): { file: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-script-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, source);
  return { file, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Run node on a script, collecting its output; resolves at exit or after `limitMs` (then killed). */
export function runNode(
  file: string,
  args: string[] = [],
  limitMs = 15_000,
): { child: ChildProcess; output(): string; exit: Promise<Exit> } {
  const child = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, output: () => out, exit: waitExit(child, limitMs) };
}

/** Resolve when `text()` matches `re`, reject after `limitMs`. */
export async function waitForOutput(text: () => string, re: RegExp, limitMs = 10_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const m = re.exec(text());
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no output matching ${re} within ${limitMs} ms; got:\n${text()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
