/**
 * Replays the seed corpus (test/fuzz/corpus/*.json, format in corpus/README.md): hand-written hostile message
 * sequences and rings, each judged exactly like a fuzzer-generated one. Files with `knownBug` reproduce a bug
 * the fuzzers found (corpus/README.md): they fail while it is there.
 *
 * Part of `npx vitest run test/fuzz` (the long run: `FUZZ_RUNS=5000 npx vitest run test/fuzz`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VhostUserClient } from '../../src/frontend/client.js';
import { checkServes, FuzzBackend } from './harness.js';
import { fullSetup, negotiation, revive, type GenContext, type Step } from './protocol-model.js';
import { runSequence, type ProtocolTarget } from './protocol-runner.js';
import type { RingCase } from './ring-model.js';
import { runRingCase } from './ring-runner.js';

const DIR = path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), 'corpus');

type IncludeStep = { op: 'include'; what: 'negotiation' | 'setup' };

interface CorpusEntry {
  name: string;
  kind: 'protocol' | 'ring';
  device?: 'null' | 'rng';
  description: string;
  knownBug?: string;
  expect?: { logs?: string[] };
  steps?: (Step | IncludeStep)[];
  case?: RingCase;
}

function load(): CorpusEntry[] {
  return fs
    .readdirSync(DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => {
      const e = JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')) as CorpusEntry;
      if (e.name !== f.slice(0, -5)) throw new Error(`${f}: name '${e.name}' does not match the file name`);
      if (e.kind === 'protocol' ? !Array.isArray(e.steps) : !e.case) throw new Error(`${f}: a ${e.kind} entry needs ${e.kind === 'protocol' ? 'steps' : 'case'}`);
      return e;
    });
}

function expand(steps: (Step | IncludeStep)[], g: GenContext): Step[] {
  return steps.flatMap((s): Step[] => {
    if (s.op !== 'include') return [revive(s) as Step];
    return s.what === 'negotiation' ? negotiation(g) : fullSetup(g);
  });
}

const DEVICES = {
  null: { args: ['null', '--queues', '2'], queues: 2 },
  rng: { args: ['rng'], queues: 1 },
} as const;

const backends = new Map<string, { be: FuzzBackend; target: ProtocolTarget }>();

async function backend(device: 'null' | 'rng'): Promise<{ be: FuzzBackend; target: ProtocolTarget }> {
  let b = backends.get(device);
  if (!b) {
    const d = DEVICES[device];
    const be = await new FuzzBackend([...d.args]).start();
    const c = VhostUserClient.connect(be.socketPath, 5000);
    const offered = (await c.request('GET_FEATURES', undefined))!;
    const offeredProtocol = (await c.request('GET_PROTOCOL_FEATURES', undefined))!;
    c.close();
    await checkServes(be, d.queues, device);
    b = { be, target: { device, queues: d.queues, offered, offeredProtocol } };
    backends.set(device, b);
  }
  if (!b.be.alive()) await b.be.restart();
  return b;
}

afterAll(async () => {
  for (const { be } of backends.values()) await be.stop();
});

describe('fuzz seed corpus (real back-end processes)', () => {
  for (const e of load()) {
    const title = `${e.name}${e.knownBug ? ` [${e.knownBug}]` : ''}`;
    it(title, async () => {
      if (e.kind === 'protocol') {
        const { be, target } = await backend(e.device ?? 'null');
        const from = be.output().length;
        const r = await runSequence(be, target, expand(e.steps!, target));
        const out = r.restarted ? '' : be.since(from);
        const missing = (e.expect?.logs ?? []).filter((re) => !new RegExp(re).test(out));
        const complaints = [...r.complaints, ...missing.map((re) => `no back-end log line matches /${re}/`)];
        expect(complaints, `${e.description}\n--- transcript ---\n${r.transcript.join('\n')}`).toEqual([]);
      } else {
        const { be } = await backend('null');
        const r = await runRingCase(be, e.case!);
        if (!be.alive()) await be.restart();
        expect(r.complaints, `${e.description}\n${r.notes.join('\n')}`).toEqual([]);
      }
    });
  }
});
