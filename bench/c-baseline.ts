/** The C eventfd ping-pong baseline (bench/c/eventfd-pingpong.c): built with gcc on demand, run, parsed. */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { benchOutDir, cSourcePath } from './paths.js';

const run = promisify(execFile);

export interface PingPongResult {
  samples: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  meanUs: number;
}

export const pingPongBinary = path.join(benchOutDir, 'eventfd-pingpong');

function mtime(p: string): number | undefined {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Compile the ping-pong unless the binary is newer than its source. Returns the binary's path. */
export async function buildPingPong(): Promise<{ binary: string; compiled: boolean }> {
  const src = mtime(cSourcePath);
  if (src === undefined) throw new Error(`C baseline source missing: ${cSourcePath}`);
  const bin = mtime(pingPongBinary);
  if (bin !== undefined && bin >= src) return { binary: pingPongBinary, compiled: false };
  fs.mkdirSync(benchOutDir, { recursive: true });
  const cc = process.env['CC'] || 'gcc';
  try {
    await run(cc, ['-O2', '-pthread', '-Wall', '-o', pingPongBinary, cSourcePath], { timeout: 60_000 });
  } catch (e) {
    const err = e as Error & { stderr?: string; code?: string };
    if (err.code === 'ENOENT') throw new Error(`cannot build the C baseline: '${cc}' not found (set CC or install gcc)`);
    throw new Error(`building the C baseline failed: ${err.stderr?.trim() || err.message}`);
  }
  return { binary: pingPongBinary, compiled: true };
}

/** Run the ping-pong for `seconds`; parses the JSON line it prints. */
export async function runPingPong(seconds: number): Promise<PingPongResult> {
  const { stdout } = await run(pingPongBinary, [String(seconds)], { timeout: (seconds + 10) * 1000 });
  const line = stdout.trim().split('\n').pop() ?? '';
  let r: PingPongResult;
  try {
    r = JSON.parse(line) as PingPongResult;
  } catch {
    throw new Error(`C baseline printed no JSON: '${stdout.trim()}'`);
  }
  if (!(r.samples > 0)) throw new Error(`C baseline took no samples: ${line}`);
  return r;
}
