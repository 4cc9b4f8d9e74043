/** The ring lab's knobs from the command line: --engine picks the engine the workers run, --stats shows it. */
import { describe, expect, it } from 'vitest';
import { drive } from '../../src/cli/drive.js';
import { builtPath } from '../../src/runtime/package-root.js';
import { spawnBackend } from '../helpers/backend.js';

async function statsWith(engine: string): Promise<{ lines: Record<string, number>[]; chains: number }> {
  const be = await spawnBackend(['null', '--queues', '1', '--engine', engine, '--stats', '0.2', '--stats-json', '-']);
  try {
    const r = await drive({ socketPath: be.socketPath, device: 'null', queues: 1, seconds: 1, mode: 'throughput', polling: false, queueSize: 256, descsPerChain: 1, eventIdx: true, bufLen: 64 });
    await new Promise((res) => setTimeout(res, 300));
    const lines = be
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, number>);
    return { lines, chains: r.queues[0]!.chains };
  } finally {
    await be.stop();
  }
}

describe('--engine and --stats', () => {
  it('the reference engine serves a null device as the wasm one does, and --stats-json reports it per queue', async () => {
    const { lines, chains } = await statsWith('reference');
    expect(chains).toBeGreaterThan(0);
    const busy = lines.filter((l) => l['chainsPerSec']! > 0);
    expect(busy.length).toBeGreaterThan(0);
    for (const l of busy) {
      expect(l['queue']).toBe(0);
      for (const k of ['bytesPerSec', 'kicksPerSec', 'callsPerSec', 'avgBatch', 'occupancy', 'suppressedShare', 'inflight']) expect(typeof l[k]).toBe('number');
      expect(l['avgBatch']).toBeGreaterThan(0);
    }
  });

  it('an engine module given by path runs in the workers (the example caps batches at 8 chains)', async () => {
    const { lines } = await statsWith(builtPath('src/engine/example-engine.js'));
    const busy = lines.filter((l) => l['chainsPerSec']! > 0);
    expect(busy.length).toBeGreaterThan(0);
    // the counters are sampled while the worker runs, so an interval may see one batch's chains without the batch
    // (skew of at most 8 chains over thousands of batches); uncapped, the wasm engine pops up to 128 per batch
    for (const l of busy) expect(l['avgBatch']).toBeLessThanOrEqual(8.01);
  });
});
