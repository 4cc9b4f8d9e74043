/** The ring policy flags through the real command line: wired into the running back-end, and refused when wrong. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { drive } from '../../src/cli/drive.js';
import { spawnBackend, tempSocketPath } from '../helpers/backend.js';
import { BIN } from '../helpers/proc.js';

describe('--notify through the command line', () => {
  it('null --notify always: the live stats show one call per batch (calls/s = chains/s / average batch)', async () => {
    const be = await spawnBackend(['null', '--notify', 'always', '--stats', '0.25', '--stats-json', '-']);
    try {
      const r = await drive({ socketPath: be.socketPath, device: 'null', queues: 1, seconds: 1, mode: 'throughput', polling: false, queueSize: 256, descsPerChain: 1, eventIdx: true, bufLen: 64 });
      expect(r.chainsPerSec).toBeGreaterThan(0);
      await new Promise((res) => setTimeout(res, 400));
      const busy = be
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, number>)
        .filter((l) => l['chainsPerSec']! > 0 && l['avgBatch']! > 0);
      expect(busy.length).toBeGreaterThan(0);
      const calls = busy.reduce((s, l) => s + l['callsPerSec']!, 0);
      const batches = busy.reduce((s, l) => s + l['chainsPerSec']! / l['avgBatch']!, 0);
      // counters sampled mid-batch may differ by a call or two per interval
      expect(Math.abs(calls - batches) / batches).toBeLessThan(0.02);
    } finally {
      await be.stop();
    }
  });
});

describe('policy flags that are wrong exit 2 with a clear message', () => {
  const refuse = (args: string[], message: RegExp): void => {
    const r = spawnSync(process.execPath, [BIN, ...args, '--socket-path', tempSocketPath('x.sock')], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  };

  it('unknown policy names, --poll-us with a policy other than adaptive, a batch of 0', () => {
    refuse(['null', '--notify', 'sometimes'], /--notify must be one of always, event-idx, adaptive, got 'sometimes'/);
    refuse(['null', '--notify', 'event-idx', '--poll-us', '20'], /--poll-us is the busy-poll budget of --notify adaptive/);
    refuse(['rng', '--completion', 'random'], /--completion must be one of in-order, as-finished, got 'random'/);
    refuse(['null', '--batch', '0'], /--batch must be an integer in 1\.\.1024/);
    const d = spawnSync(process.execPath, [BIN, 'drive', '--socket-path', '/nonexistent', '--notify', 'always', '--poll-us', '5'], { encoding: 'utf8', timeout: 20_000 });
    expect(d.status).toBe(2);
    expect(d.stderr).toMatch(/--poll-us is the spin budget of --notify adaptive/);
  });
});
