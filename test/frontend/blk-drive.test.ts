/**
 * `vhost-wasm drive --device blk` (src/frontend/blk-load.ts, workers/blk-driver-worker.ts), run as a real child
 * process from the build, against vhost-user-blk back-ends in child processes: ours (`vhost-wasm blk`) and
 * qemu-storage-daemon's vhost-user-blk export on the same image. Every completion must have status OK.
 * qemu-storage-daemon comes with Debian's qemu-system-common; where it is missing the test says so, and fails
 * when CI is set.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnBackend, type ChildBackend } from '../helpers/backend.js';
import { BIN } from '../helpers/proc.js';

const MiB = 1 << 20;
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QSD === '1';
const QSD = process.env.VHOST_WASM_QSD || 'qemu-storage-daemon';
const qsdProbe = spawnSync(QSD, ['--version'], { encoding: 'utf8', timeout: 10_000 });
const qsdAvailable = !qsdProbe.error && qsdProbe.status === 0;

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children: ChildProcess[] = [];
const backends: ChildBackend[] = [];
let dir: string;
let image: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-blk-drive-'));
  image = path.join(dir, 'disk.img');
  const fd = fs.openSync(image, 'w');
  const chunk = Buffer.alloc(MiB, 0x5a);
  for (let i = 0; i < 16; i++) fs.writeSync(fd, chunk, 0, MiB, i * MiB);
  fs.closeSync(fd);
});

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const be of backends.splice(0)) {
    if (be.child.exitCode === null && be.child.signalCode === null) await be.stop();
    fs.rmSync(path.dirname(be.socketPath), { recursive: true, force: true });
  }
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function run(cmd: string, args: string[], limitMs: number): Promise<CliResult> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
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

const cli = (args: string[], limitMs = 30_000): Promise<CliResult> => run(process.execPath, [BIN, ...args], limitMs);

interface BlkJson {
  device: string;
  rw: string;
  bs: number;
  iodepth: number;
  queueCount: number;
  seconds: number;
  iops: number;
  mibPerSec: number;
  errors: number;
  capacityBytes: number;
  queues: { queue: number; iops: number; mibPerSec: number; completions: number; errors: number; leftInFlight: number; latency: { p50Us: number; p99Us: number } }[];
}

/** drive --device blk --json for 1 s; checks the report's shape and that nothing failed. */
async function driveBlk(socketPath: string, queues: number, rw: 'randread' | 'randwrite', bs = 4096, iodepth = 32): Promise<BlkJson> {
  const r = await cli([
    'drive', '--device', 'blk', '--socket-path', socketPath, '--queues', String(queues), '--iodepth', String(iodepth),
    '--bs', String(bs), '--rw', rw, '--seconds', '1', '--json',
  ]);
  expect(r.code, `exit ${r.code} signal ${r.signal}\n${r.stderr}`).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  const j = JSON.parse(lines[0]!) as BlkJson;
  expect(j.device).toBe('blk');
  expect(j.rw).toBe(rw);
  expect(j.bs).toBe(bs);
  expect(j.iodepth).toBe(iodepth);
  expect(j.queueCount).toBe(queues);
  expect(j.seconds).toBeGreaterThan(0.5);
  expect(j.capacityBytes).toBe(16 * MiB);
  expect(j.iops).toBeGreaterThan(0);
  expect(j.mibPerSec).toBeCloseTo((j.iops * bs) / MiB, 6);
  expect(j.errors).toBe(0);
  expect(j.queues.map((q) => q.queue)).toEqual([...Array(queues).keys()]);
  for (const q of j.queues) {
    expect(q.completions).toBeGreaterThan(0);
    expect(q.iops).toBeGreaterThan(0);
    expect(q.mibPerSec).toBeGreaterThan(0);
    expect(q.errors).toBe(0);
    expect(q.leftInFlight).toBe(0);
    expect(q.latency.p50Us).toBeGreaterThan(0);
    expect(q.latency.p99Us).toBeGreaterThanOrEqual(q.latency.p50Us);
  }
  expect(Math.abs(j.iops - j.queues.reduce((s, q) => s + q.iops, 0))).toBeLessThanOrEqual(j.iops * 1e-9 + 1e-6);
  return j;
}

describe('drive --device blk against our blk back-end', () => {
  it('2 queues randread and 1 queue randwrite: IOPS > 0, every status OK, the JSON fields present', async () => {
    const be = await spawnBackend(['blk', '--image', image, '--queues', '2']);
    backends.push(be);
    const rr = await driveBlk(be.socketPath, 2, 'randread');
    const rw = await driveBlk(be.socketPath, 1, 'randwrite', 8192, 8);
    console.log(`[blk-drive] ours: randread 2q ${(rr.iops / 1e3).toFixed(1)} k IOPS, randwrite 1q bs 8k qd 8 ${(rw.iops / 1e3).toFixed(1)} k IOPS`);
    expect(be.child.exitCode).toBeNull();
  });

  it('usage errors exit 2: a bad --rw, a --bs that is not whole sectors, --iodepth without --device blk', async () => {
    for (const [args, why] of [
      [['--device', 'blk', '--rw', 'seqread'], /--rw must be randread or randwrite/],
      [['--device', 'blk', '--bs', '1000'], /--bs must be a multiple of 512/],
      [['--device', 'null', '--iodepth', '4'], /--iodepth applies to --device blk only/],
    ] as const) {
      const r = await cli(['drive', '--socket-path', path.join(dir, 'none.sock'), ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(why);
    }
  });
});

describe('drive --device blk against qemu-storage-daemon', () => {
  it('the same load on the same image through its vhost-user-blk export: IOPS > 0, every status OK', async () => {
    if (!qsdAvailable) {
      const why = `${QSD} not runnable (${qsdProbe.error?.message ?? `exit ${qsdProbe.status}`}): apt-get install qemu-system-common`;
      if (required) throw new Error(why);
      console.warn(`[blk-drive] qemu-storage-daemon part skipped: ${why}`);
      return;
    }
    const sock = path.join(dir, 'qsd.sock');
    let qsd: ChildProcess | undefined;
    let out = '';
    // io_uring where the kernel and build have it, else the thread pool
    for (const aio of ['io_uring', 'threads']) {
      fs.rmSync(sock, { force: true });
      const c = spawn(
        QSD,
        [
          '--blockdev', `driver=file,node-name=f0,filename=${image},cache.direct=off,aio=${aio}`,
          '--export', `type=vhost-user-blk,id=e0,node-name=f0,writable=on,num-queues=2,addr.type=unix,addr.path=${sock}`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(c);
      c.stdout!.on('data', (d) => (out += d));
      c.stderr!.on('data', (d) => (out += d));
      const deadline = Date.now() + 10_000;
      while (!fs.existsSync(sock) && c.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (fs.existsSync(sock) && c.exitCode === null) {
        qsd = c;
        break;
      }
      c.kill('SIGKILL');
    }
    expect(qsd, `qemu-storage-daemon did not listen: ${out}`).toBeDefined();
    const rr = await driveBlk(sock, 2, 'randread');
    const rw = await driveBlk(sock, 1, 'randwrite', 8192, 8);
    console.log(`[blk-drive] qemu-storage-daemon: randread 2q ${(rr.iops / 1e3).toFixed(1)} k IOPS, randwrite 1q bs 8k qd 8 ${(rw.iops / 1e3).toFixed(1)} k IOPS`);
    expect(qsd!.exitCode, out).toBeNull();
  });
});
