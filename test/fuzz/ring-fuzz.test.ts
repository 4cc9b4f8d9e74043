/**
 * Malicious rings end to end: fast-check builds descriptor tables, indirect tables and avail rings for queue 0
 * (well-formed chains, then hostile mutations: loops, next out of range, addresses outside guest memory or
 * wrapping 2^64, huge lengths, nested / empty / odd-length / out-of-memory indirect tables, avail.idx jumping
 * past the queue size, heads out of range, chains longer than the queue, readable after writable, ...), writes
 * them straight into a built-in front-end's guest memory, publishes avail.idx atomically and kicks a real
 * `vhost-wasm null --queues 2` process. ring-runner.ts judges the outcome against a reference written from the
 * spec (B.1): completed chains, NEEDS_RESET, the used ring, every other byte of guest memory, queue 1, the
 * process.
 *
 *   FUZZ_RUNS=5000 npx vitest run test/fuzz        the long run (all fuzz files)
 *   FUZZ_SEED=... FUZZ_PATH=...                     replay a failure
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkServes, fcParams, FuzzBackend, runs, testTimeout, toJson, VERBOSE } from './harness.js';
import { describeCase, expectedOutcome, ringCaseArb, writeCase, type RingCase } from './ring-model.js';
import { runRingCase } from './ring-runner.js';
import { stableFdCount } from './protocol-runner.js';

const CI_RUNS = 40;
const CI_BUDGET_MS = 12_000;

describe('malicious rings against vhost-wasm null --queues 2 (real process)', () => {
  const be = new FuzzBackend(['null', '--queues', '2']);
  const numRuns = runs(CI_RUNS);
  let cases = 0;
  let broken = 0;
  let baseline = 0;
  let restartsAtBaseline = 0;

  beforeAll(async () => {
    await be.start();
    await checkServes(be, 2, 'null');
    baseline = await stableFdCount(be);
    restartsAtBaseline = be.restarts;
  });

  afterAll(async () => {
    console.log(`ring fuzz: ${cases} cases, ${broken} expected to break the queue`);
    await be.stop();
  });

  it(
    `${numRuns} hostile rings: the valid prefix completes, NEEDS_RESET otherwise, nothing else in guest memory changes, queue 1 serves`,
    async () => {
      await fc.assert(
        fc.asyncProperty(ringCaseArb, async (c: RingCase) => {
          cases++;
          if (!be.alive()) await be.restart();
          let r;
          try {
            r = await runRingCase(be, c);
          } catch (e) {
            r = { complaints: [`the case did not run: ${(e as Error).message}`], notes: [] };
          }
          if (r.notes.some((x) => x.includes('breaks'))) broken++;
          if (VERBOSE) console.log(`${describeCase(c)}\n  ${r.notes.join('\n  ')}`);
          if (r.complaints.length) {
            const out = be.output().split('\n').slice(-6).join('\n');
            if (!be.alive()) await be.restart();
            throw new Error(`${r.complaints.join('\n')}\n${r.notes.join('\n')}\ncase: ${describeCase(c)}\nback-end output (last lines):\n${out}\n--- case (corpus form) ---\n${toJson(c)}`);
          }
        }),
        fcParams(numRuns, CI_BUDGET_MS),
      );
      expect(cases).toBeGreaterThan(0);
    },
    testTimeout(numRuns, 12_000, CI_BUDGET_MS),
  );

  it('the generator and the reference handle every case they make (no back-end)', () => {
    const l = { ramBytes: 2 << 20, desc: 0, avail: 0x1000, used: 0x2000, buffers: 0x10_0000 };
    const bytes = new Uint8Array(l.ramBytes);
    const ram = new DataView(bytes.buffer);
    for (const c of fc.sample(ringCaseArb, { numRuns: 800, seed: 7 })) {
      bytes.fill(0);
      writeCase(c, l, ram);
      const e = expectedOutcome(c, l, ram);
      expect(e.complete).toBeLessThanOrEqual(c.queueSize);
    }
  });

  it('the back-end did not accumulate fds over all cases', async () => {
    if (be.restarts !== restartsAtBaseline) return;
    const now = await be.settleFds(baseline + 2, 2000);
    expect(now, `open fds: ${baseline} after warm-up, ${now} after ${cases} cases`).toBeLessThanOrEqual(baseline + 2);
  });
});
