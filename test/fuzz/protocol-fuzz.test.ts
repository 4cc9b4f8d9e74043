/**
 * Model-based sequence fuzzing of the vhost-user message layer against a REAL back-end process
 * (`vhost-wasm null --queues 2` and `vhost-wasm rng`).
 *
 * fast-check generates sequences (protocol-model.ts) that mix the valid set-up messages in random order with
 * hostile ones: unknown ids, wrong flags (REPLY set, bad versions, reserved bits), payloads of the wrong size,
 * missing or extra fds (memfds, eventfds, /dev/null), out-of-range vring indices, bad queue sizes, absurd memory
 * regions, features never offered, GET_VRING_BASE on rings never started, kicks before memory, REM_MEM_REG of
 * unknown regions, SET_STATUS / RESET_DEVICE at any time, writes into the rings, and connections cut in the
 * middle of a message. protocol-runner.ts judges each sequence (answers, log lines, hangs, the process staying
 * alive, a fresh front-end being served afterwards, no fd growth).
 *
 * CI runs a few dozen sequences (< 60 s for the whole of test/fuzz). The long run:
 *
 *   FUZZ_RUNS=5000 npx vitest run test/fuzz
 *
 * and FUZZ_SEED / FUZZ_PATH replay a failure, FUZZ_SKIP_KNOWN=1 leaves out inputs of known bugs still open (corpus/README.md).
 * Requires `npm run build` (the back-end runs from build/out).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VhostUserClient } from '../../src/frontend/client.js';
import { checkServes, fcParams, FuzzBackend, runs, testTimeout, toJson, VERBOSE } from './harness.js';
import { knownBugOf, msgWire, ProtocolModel, sequenceArb, type Step } from './protocol-model.js';
import { FD_SLACK, runSequence, stableFdCount, type ProtocolTarget } from './protocol-runner.js';

const DEVICES: { name: 'null' | 'rng'; args: string[]; queues: number; ciRuns: number; ciBudgetMs: number }[] = [
  { name: 'null', args: ['null', '--queues', '2'], queues: 2, ciRuns: 25, ciBudgetMs: 12_000 },
  { name: 'rng', args: ['rng'], queues: 1, ciRuns: 8, ciBudgetMs: 5_000 },
];

async function offeredBy(socketPath: string): Promise<{ offered: bigint; offeredProtocol: bigint }> {
  const c = VhostUserClient.connect(socketPath, 5000);
  try {
    const offered = (await c.request('GET_FEATURES', undefined))!;
    const offeredProtocol = (await c.request('GET_PROTOCOL_FEATURES', undefined))!;
    return { offered, offeredProtocol };
  } finally {
    c.close();
  }
}

describe('message-layer fuzzing: generators and model (no back-end)', () => {
  it('every generated sequence encodes and the model predicts an answer for each message', () => {
    const g = { queues: 2, offered: 0x1_7000_0000n, offeredProtocol: 0x1_b009n };
    for (const steps of fc.sample(sequenceArb(g), { numRuns: 150, seed: 11 })) {
      const model = new ProtocolModel(g.queues, g.offered, g.offeredProtocol);
      for (const s of steps) {
        if (s.op === 'msg') expect(model.predict(msgWire(s), s.fds ?? []).outcomes.size).toBeGreaterThan(0);
        if (s.op === 'abrupt') expect(s.cut).toBeLessThan(msgWire(s.step).length);
      }
    }
  });
});

for (const dev of DEVICES) {
  describe(`message-layer fuzzing: ${dev.args.join(' ')} (real process)`, () => {
    const be = new FuzzBackend(dev.args);
    let target: ProtocolTarget;
    let baseline = 0;
    let restartsAtBaseline = 0;
    const numRuns = runs(dev.ciRuns);
    let sequences = 0;

    beforeAll(async () => {
      await be.start();
      const o = await offeredBy(be.socketPath);
      target = { device: dev.name, queues: dev.queues, ...o };
      await checkServes(be, dev.queues, dev.name); // warm-up: the first connection loads what stays loaded
      baseline = await stableFdCount(be);
      restartsAtBaseline = be.restarts;
    });

    afterAll(async () => {
      console.log(`${dev.name}: ${sequences} sequences run`);
      await be.stop();
    });

    it(
      `${numRuns} random sequences: every answer is allowed, no crash, no hang, the next front-end is served, no fd growth`,
      async () => {
        await fc.assert(
          fc.asyncProperty(sequenceArb(target), async (steps: Step[]) => {
            sequences++;
            const r = await runSequence(be, target, steps);
            if (VERBOSE) console.log(r.transcript.join('\n'));
            if (r.complaints.length) {
              const known = steps.flatMap((s, i) => {
                const b = knownBugOf(s, dev.queues);
                return b ? [`step ${i}: ${b}`] : [];
              });
              throw new Error(
                `${r.complaints.join('\n')}\n` +
                  (known.length ? `--- inputs of bugs found before (corpus/README.md) ---\n${known.join('\n')}\n` : '') +
                  `--- transcript ---\n${r.transcript.join('\n')}\n--- sequence (corpus form) ---\n${toJson(steps)}`,
              );
            }
          }),
          fcParams(numRuns, dev.ciBudgetMs),
        );
        expect(sequences).toBeGreaterThan(0);
      },
      testTimeout(numRuns, 15_000, dev.ciBudgetMs),
    );

    it('over all sequences the back-end did not accumulate fds', async () => {
      if (be.restarts !== restartsAtBaseline) {
        // a crash or hang already failed the property; a restarted process has a different baseline
        baseline = await stableFdCount(be);
        return;
      }
      const now = await be.settleFds(baseline + FD_SLACK + 2, 2000);
      expect(now, `open fds: ${baseline} after warm-up, ${now} after ${sequences} sequences`).toBeLessThanOrEqual(baseline + FD_SLACK + 2);
    });
  });
}
