/**
 * `vhost-wasm drive --packed`: our built-in front-end driving packed virtqueues (VIRTIO_F_RING_PACKED) against our
 * back-ends in child processes, over real unix sockets and memfd guest RAM: null and rng (fixed chains, ring sizes
 * that are not powers of two), blk (requests with data checked by status). The report says the rings were packed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnBackend, type ChildBackend } from '../helpers/backend.js';
import { BIN } from '../helpers/proc.js';

const MiB = 1 << 20;
const children: ChildProcess[] = [];
const backends: ChildBackend[] = [];
let dir: string;
let image: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-packed-drive-'));
  image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, 16 * MiB);
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

function cli(args: string[], limitMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

interface DriveJson { device: string; packed: boolean; chainsPerSec: number; errors: number; queueSize: number; queues: { chains: number; errors: number }[] }

describe('drive --packed', () => {
  for (const [device, queues, size, mode] of [['null', 2, 100, 'throughput'], ['rng', 1, 37, 'throughput'], ['null', 2, 64, 'latency']] as const) {
    it(`${device}, ${queues} queue(s) of ${size} (${mode}): chains complete on packed rings, no errors`, async () => {
      const be = await spawnBackend(device === 'rng' ? [device] : [device, '--queues', String(queues)]);
      backends.push(be);
      const r = await cli(['drive', '--socket-path', be.socketPath, '--device', device, '--queues', String(queues), '--queue-size', String(size),
        '--mode', mode, '--seconds', '1', '--packed', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout.trim()) as DriveJson;
      expect(j.packed).toBe(true);
      expect(j.queueSize).toBe(size);
      expect(j.errors).toBe(0);
      expect(j.chainsPerSec).toBeGreaterThan(0);
      for (const q of j.queues) {
        expect(q.chains).toBeGreaterThan(0);
        expect(q.errors).toBe(0);
      }
      expect(be.output()).toContain('VIRTIO_F_RING_PACKED acked');
      expect(be.output()).not.toMatch(/needs a reset/);
      expect(be.child.exitCode).toBeNull();
    });
  }

  it('the reference engine (--engine reference) runs packed rings too (ReferenceSplitEngine hands them to the packed model)', async () => {
    const be = await spawnBackend(['null', '--queues', '1', '--engine', 'reference']);
    backends.push(be);
    const r = await cli(['drive', '--socket-path', be.socketPath, '--device', 'null', '--queues', '1', '--queue-size', '50', '--seconds', '1', '--packed', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout.trim()) as DriveJson;
    expect(j.packed).toBe(true);
    expect(j.errors).toBe(0);
    expect(j.queues[0]!.chains).toBeGreaterThan(0);
    expect(be.output()).not.toMatch(/needs a reset/);
  });

  it('blk, 2 queues: randwrite then randread on packed rings, every request status OK', async () => {
    const be = await spawnBackend(['blk', '--image', image, '--queues', '2']);
    backends.push(be);
    for (const rw of ['randwrite', 'randread']) {
      const r = await cli(['drive', '--device', 'blk', '--socket-path', be.socketPath, '--queues', '2', '--iodepth', '16', '--rw', rw,
        '--seconds', '1', '--packed', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout.trim()) as { packed: boolean; iops: number; errors: number; queues: { completions: number; leftInFlight: number }[] };
      expect(j.packed).toBe(true);
      expect(j.errors).toBe(0);
      expect(j.iops).toBeGreaterThan(0);
      for (const q of j.queues) {
        expect(q.completions).toBeGreaterThan(0);
        expect(q.leftInFlight).toBe(0);
      }
    }
    expect(be.output()).not.toMatch(/needs a reset/);
  });
});
