/**
 * Runs one message sequence (protocol-model.ts) against a real back-end process and judges it:
 *   - after every step a GET_FEATURES probe: everything the back-end sends before the probe's reply is its
 *     answer to the step, and must be one the model allows (nothing / one ack / one reply / closing);
 *   - a message the back-end must reject gets a log line on its stderr naming the request;
 *   - no step goes unanswered (hang), the process stays alive;
 *   - after the sequence a fresh, well-behaved front-end connects and completes a chain on every queue;
 *   - the back-end's open fd count does not grow across the sequence.
 */
import fs from 'node:fs';
import { encodeRequest, HEADER_SIZE } from '../../src/vhost-user/codec.js';
import { FrontendRequest } from '../../src/vhost-user/constants.js';
import { eventfdSignal, ftruncate } from '../../src/sys/syscalls.js';
import type { RawMessage } from '../../src/vhost-user/transport.js';
import { checkServes, ConnFds, type FuzzBackend, RawConn, sleep } from './harness.js';
import { describeStep, msgWire, type Outcome, ProtocolModel, type GenContext, type Step } from './protocol-model.js';

export interface ProtocolTarget extends GenContext {
  device: 'null' | 'rng';
}

export interface SequenceResult {
  complaints: string[];
  transcript: string[];
  /** the back-end had to be restarted (crash or hang) */
  restarted: boolean;
}

const PROBE = encodeRequest('GET_FEATURES', undefined);
const PROBE_ID = FrontendRequest.GET_FEATURES;
const ANSWER_MS = 4000;
/** fds the back-end may hold beyond its count before a sequence (noise from asynchronous release) */
export const FD_SLACK = 0;

/** The fd count once it has stopped moving (two equal reads 40 ms apart, at most ~1 s). */
export async function stableFdCount(be: FuzzBackend): Promise<number> {
  let last = be.fdCount();
  for (let i = 0; i < 25; i++) {
    await sleep(40);
    const n = be.fdCount();
    if (n === last) return n;
    last = n;
  }
  return last;
}

function fmt(o: ReadonlySet<Outcome> | Outcome[]): string {
  return [...o].join('|');
}

export async function runSequence(
  be: FuzzBackend,
  t: ProtocolTarget,
  steps: readonly Step[],
  opts: { checkFds?: boolean; serveAfterHang?: boolean } = {},
): Promise<SequenceResult> {
  const complaints: string[] = [];
  const transcript: string[] = [];
  const checkFds = opts.checkFds ?? true;
  const fdsBefore = checkFds ? await stableFdCount(be) : 0;
  const model = new ProtocolModel(t.queues, t.offered, t.offeredProtocol);
  const fds = new ConnFds(t.queues);
  const conn = new RawConn(be.socketPath);
  let hung = false;
  try {
    for (let i = 0; i < steps.length && !conn.closed; i++) {
      const s = steps[i]!;
      const label = `step ${i}: ${describeStep(s)}`;
      if (s.op === 'kick') {
        eventfdSignal(fds.kicks[s.queue] ?? fds.kicks[0]!);
        transcript.push(label);
        continue;
      }
      if (s.op === 'scribble') {
        const b = Buffer.from(s.hex, 'hex');
        fs.writeSync(fds.guestA, b, 0, b.length, s.offset);
        transcript.push(label);
        continue;
      }
      if (s.op === 'truncate') {
        try {
          ftruncate(s.fd === 'guestA' ? fds.guestA : fds.guestB, s.size);
          model.truncated(s.fd, s.size);
          transcript.push(label);
        } catch (e) {
          // the back-end sealed the memfd against shrinking (F_SEAL_SHRINK): the right answer to this attack
          transcript.push(`${label} -> refused: ${(e as Error).message}`);
        }
        continue;
      }
      if (s.op === 'sleep') {
        await sleep(s.ms);
        transcript.push(label);
        continue;
      }
      if (s.op === 'expectMemory') {
        await sleep(s.afterMs ?? 100);
        const want = Buffer.from(s.hex, 'hex');
        const got = Buffer.alloc(want.length);
        fs.readSync(s.fd === 'guestA' ? fds.guestA : fds.guestB, got, 0, got.length, s.offset);
        if (!got.equals(want)) complaints.push(`${label}: found ${got.toString('hex')}${s.why ? ` (${s.why})` : ''}`);
        transcript.push(`${label} -> ${got.toString('hex')}`);
        continue;
      }
      if (s.op === 'abrupt') {
        const w = msgWire(s.step).subarray(0, s.cut);
        const o = fds.open(s.step.fds ?? []);
        conn.send(w, o.fds);
        o.release();
        transcript.push(label);
        break;
      }
      // a message: predict, send it and the probe, collect what comes back
      const wire = msgWire(s);
      const kinds = s.fds ?? [];
      const p = model.predict(wire, kinds);
      const logFrom = be.output().length;
      const o = fds.open(kinds);
      const sent = conn.send(wire, o.fds);
      o.release();
      if (!sent) {
        if (!p.outcomes.has('close')) complaints.push(`${label}: the back-end had closed the connection before it`);
        transcript.push(`${label} -> not sent (connection gone)`);
        break;
      }
      const expectsOwnProbeLike = p.request === PROBE_ID && p.outcomes.has('reply');
      conn.send(PROBE);
      const r = await conn.collect((got) => got.filter((x) => x.header.request === PROBE_ID).length >= (expectsOwnProbeLike ? 2 : 1), ANSWER_MS);
      let answers: RawMessage[] = r.got;
      if (!r.closed && !r.timedOut) answers = r.got.slice(0, -1); // the last one is the probe's reply
      let observed: Outcome;
      if (r.timedOut) {
        complaints.push(`${label}: no answer to it or to the GET_FEATURES probe after it within ${ANSWER_MS} ms (the back-end hangs)`);
        transcript.push(`${label} -> HANG`);
        hung = true;
        break;
      }
      if (answers.length > 1) {
        complaints.push(`${label}: ${answers.length} answers (${answers.map((a) => a.header.request).join(', ')}), at most one is allowed`);
      }
      if (answers.length >= 1) {
        const c = model.classify(p, answers[0]!);
        observed = c.outcome;
        if (c.complaint) complaints.push(`${label}: ${c.complaint}`);
      } else observed = r.closed ? 'close' : 'none';
      if (r.closed && !p.outcomes.has('close')) {
        complaints.push(`${label}: the back-end closed the connection (${conn.ended?.message ?? 'plain close'}); expected ${fmt(p.outcomes)}`);
      } else if (!p.outcomes.has(observed)) {
        complaints.push(`${label}: answered ${observed}, expected ${fmt(p.outcomes)}`);
      }
      transcript.push(`${label} -> ${observed} (model: ${fmt(p.outcomes)})`);
      if (p.mustLog && !(await be.waitOutput(new RegExp(`\\b${p.name.replace(/[()]/g, '\\$&')}`), logFrom, 1000))) {
        complaints.push(`${label}: rejected, but no log line names ${p.name}`);
      }
      if (r.closed) break;
    }
  } finally {
    conn.close();
    fds.close();
  }

  // the back-end is alive and serves the next front-end
  let restarted = false;
  try {
    if (hung && !opts.serveAfterHang) throw new Error('not tried: the back-end hung during the sequence');
    await checkServes(be, t.queues, t.device, hung ? 2500 : 6000);
  } catch (e) {
    complaints.push(`after the sequence: ${(e as Error).message}`);
    const tail = be.output().split('\n').slice(-12).join('\n');
    complaints.push(`back-end output (last lines):\n${tail}`);
    await be.restart();
    restarted = true;
  }
  if (!restarted && checkFds) {
    const after = await be.settleFds(fdsBefore + FD_SLACK, 3000);
    if (after > fdsBefore + FD_SLACK) {
      const kinds = new Map<string, number>();
      for (const f of fs.readdirSync(`/proc/${be.pid}/fd`)) {
        let k = '?';
        try {
          k = fs.readlinkSync(`/proc/${be.pid}/fd/${f}`).replace(/:\[\d+\]$/, '');
        } catch {
          // gone meanwhile
        }
        kinds.set(k, (kinds.get(k) ?? 0) + 1);
      }
      const now = [...kinds].map(([k, c]) => `${c} ${k}`).join(', ');
      complaints.push(`the back-end's open fds grew from ${fdsBefore} to ${after} over the sequence (now: ${now})`);
    }
  }
  return { complaints, transcript, restarted };
}

/** The header of a message step's wire form, for reports. */
export function headerOf(wire: Buffer): string {
  return wire.subarray(0, HEADER_SIZE).toString('hex');
}
