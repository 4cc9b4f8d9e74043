/**
 * A queue worker: runs the WASM ring engine for one or more virtqueues on the back-end's shared Memory, for one
 * connection after another (reset() between them: worker-pool.ts).
 * It blocks in poll() on its control eventfd and the kick eventfds of its running queues; control calls
 * (comlink) are taken only between batches, after the main thread has written the control eventfd.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink/dist/esm/comlink.mjs';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import type { SplitEngineApi } from '../src/engine/engine.js';
import { DEFAULT_ENGINE, engineFactory } from '../src/engine/engines.js';
import {
  CH_HEAD,
  CHAIN_BYTES,
  CHAINS_OFFSET,
  deviceArea,
  ERR_DEVICE,
  MAX_QUEUES,
  QUEUE_AREA_SIZE,
  QUEUE_AREAS,
  QS_ERROR_DETAIL,
  QS_PENDING,
  QS_STAT_CALLS,
  QS_STAT_KICKS,
  QS_STAT_POLL_HITS,
  RESUBMIT_CAP,
  RESUBMIT_OFFSET,
  queueArea,
} from '../src/engine/layout.js';
import { QUEUE_HANDLERS } from '../src/devices/queue-handlers.js';
import type { QueueHandler } from '../src/devices/queue-handler.js';
import { memoryBaseAddress } from '../src/sys/libc.js';
import { eventfdDrain, eventfdSignal, POLLERR, POLLHUP, POLLIN, POLLNVAL, pollFds, schedYield } from '../src/sys/syscalls.js';
import { InOrderCompletions } from '../src/queues/in-order-completions.js';
import type { NotifyPolicy, QueueWorkerApi, QueueWorkerData, RingStart, StoppedRing, WorkerEvent } from '../src/queues/worker-protocol.js';

const data = workerData as QueueWorkerData;
const events: MessagePort = data.events;
const engine: SplitEngineApi = (await engineFactory(data.engine ?? DEFAULT_ENGINE))(data.memory, data.module);
const hostBase = memoryBaseAddress(data.memory);
const ctlWord = new Int32Array(data.ctlWord);

interface Ring {
  q: number;
  qs: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  handler: QueueHandler;
  notify: NotifyPolicy;
  /** 'adaptive': busy-poll budget in µs after the last work before notifications are re-armed (else 0) */
  pollUs: number;
  /** 'in-order' completion of an asynchronous handler (else undefined: as finished) */
  inOrder: InOrderCompletions | undefined;
  lastWork: number;
  polling: boolean;
  batch: number;
  broken: boolean;
}

const rings = new Map<number, Ring>();
let shuttingDown = false;
let paused = false;
// the worker's counters live in the queue state, as f64, for the main thread to read at any time
const statsWords = new Float64Array(data.memory.buffer, 0, (QUEUE_AREAS + MAX_QUEUES * QUEUE_AREA_SIZE) >>> 3);
const areaWords = new Uint32Array(statsWords.buffer, 0, statsWords.length * 2);

function bump(r: Ring, off: number, by = 1): void {
  statsWords[(r.qs + off) >>> 3] += by;
}

function post(e: WorkerEvent): void {
  events.postMessage(e);
}

function markBroken(r: Ring, code: number): void {
  r.broken = true;
  const detail = new DataView(data.memory.buffer).getUint32(r.qs + QS_ERROR_DETAIL, true);
  if (r.errFd >= 0) eventfdSignal(r.errFd);
  post({ type: 'ring-error', queue: r.q, code, detail });
}

/**
 * Publish what was pushed and signal the driver if it wants it (policy 'always': whenever something was
 * published); returns 1 if a call was written.
 */
function publish(r: Ring): number {
  const any = areaWords[(r.qs + QS_PENDING) >>> 2] !== 0;
  if ((engine.splitPublish(r.qs) || (any && r.notify === 'always')) && r.callFd >= 0) {
    eventfdSignal(r.callFd);
    return 1;
  }
  return 0;
}

/** Complete chain records 0..n-1 of a synchronous handler in order and publish; 1 if a call was written. */
function complete(r: Ring, n: number): number {
  if ((engine.splitComplete(r.qs, n) || r.notify === 'always') && r.callFd >= 0) {
    eventfdSignal(r.callFd);
    return 1;
  }
  return 0;
}

/** 'in-order': note the heads of chain records 0..n-1 (avail order) before the handler may finish any. */
function notePopped(r: Ring, n: number): void {
  const o = r.inOrder!;
  let w = (r.qs + CHAINS_OFFSET + CH_HEAD) >>> 2;
  for (let k = 0; k < n; k++, w += CHAIN_BYTES >>> 2) o.popped(areaWords[w]!);
}

/** Process a ring until it is empty (or, while busy-polling, until this round found nothing); true if it found work. */
function processRing(r: Ring, now: number): boolean {
  if (r.broken || !r.enabled || paused) return false;
  const qs = r.qs;
  const h = r.handler;
  const async = h.completionFd !== undefined;
  let calls = 0;
  let worked = false;
  engine.splitDisableNotify(qs);
  for (;;) {
    const room = async ? Math.min(r.batch, h.capacity!()) : r.batch;
    // an asynchronous handler that is full: its completions bring us back here (notifications stay off)
    if (room <= 0) break;
    const n = engine.splitPopBatch(qs, room);
    if (n < 0) {
      markBroken(r, -n);
      break;
    }
    if (n > 0) {
      worked = true;
      if (r.inOrder) notePopped(r, n);
      try {
        h.process(n);
      } catch (e) {
        // a device failure stops this ring (the device needs a reset); the worker and its other rings go on
        post({ type: 'log', message: `queue ${r.q}: ${(e as Error).message}` });
        markBroken(r, ERR_DEVICE);
        break;
      }
      // signal as soon as the driver wants it (one write per batch at most): latency matters more than a syscall
      calls += async ? publish(r) : complete(r, n);
      continue;
    }
    if (r.pollUs > 0 && (worked || now - r.lastWork < r.pollUs / 1000)) {
      // stay in busy-poll mode: notifications stay off, the loop comes back with poll(0)
      r.polling = true;
      break;
    }
    r.polling = false;
    if (engine.splitEnableNotify(qs) === 0) break;
    engine.splitDisableNotify(qs);
  }
  if (worked) {
    r.lastWork = now;
    if (r.polling) bump(r, QS_STAT_POLL_HITS);
  }
  if (calls > 0) bump(r, QS_STAT_CALLS, calls);
  return worked;
}

/** Completions of an asynchronous handler: push them, publish, and go on with what they made room for. */
function reapRing(r: Ring, now: number): void {
  try {
    r.handler.reap!();
  } catch (e) {
    post({ type: 'log', message: `queue ${r.q}: ${(e as Error).message}` });
    markBroken(r, ERR_DEVICE);
    return;
  }
  const c = publish(r);
  if (c) bump(r, QS_STAT_CALLS, c);
  if (!paused) processRing(r, now);
}

/** Block until an asynchronous handler has finished something (or `done` says to stop waiting). */
function awaitCompletions(r: Ring, done: () => boolean, what: string): void {
  const h = r.handler;
  if (h.completionFd === undefined) return;
  const one = Buffer.alloc(8);
  one.writeInt32LE(h.completionFd, 0);
  one.writeInt16LE(POLLIN, 4);
  const deadline = performance.now() + 30_000;
  while (!done()) {
    one.writeInt16LE(0, 6);
    pollFds(one, 1, 100);
    h.reap!();
    if (performance.now() > deadline) {
      post({ type: 'log', message: `queue ${r.q}: ${h.inflight!()} request(s) still in flight after 30 s (${what})` });
      break;
    }
  }
  const c = publish(r);
  if (c) bump(r, QS_STAT_CALLS, c);
}

/**
 * Requests a previous back-end left in flight (inflight recovery): processed again, in the order it fetched
 * them, before anything new is popped.
 */
function resubmit(r: Ring, heads: readonly number[]): void {
  const h = r.handler;
  const async = h.completionFd !== undefined;
  const at = r.qs + RESUBMIT_OFFSET;
  let i = 0;
  while (i < heads.length && !r.broken) {
    let room = Math.min(RESUBMIT_CAP, heads.length - i);
    if (async) {
      awaitCompletions(r, () => h.capacity!() > 0, 'resubmission');
      room = Math.min(room, h.capacity!());
    }
    const u16 = new Uint16Array(data.memory.buffer, at, room);
    for (let k = 0; k < room; k++) u16[k] = heads[i + k]!;
    const n = engine.splitPopHeads(r.qs, at, room);
    if (n < 0) {
      markBroken(r, -n);
      return;
    }
    if (n === 0) break;
    if (r.inOrder) notePopped(r, n);
    h.process(n);
    if (async) publish(r);
    else complete(r, n);
    i += n;
  }
}

/** Wait until an asynchronous handler has nothing in flight (ring stop, memory change): no I/O may outlive them. */
function drainRing(r: Ring): void {
  const h = r.handler;
  if (h.completionFd !== undefined) awaitCompletions(r, () => h.inflight!() === 0, 'draining');
}

const POLL_SLOT = 8;
const pfd = Buffer.alloc(POLL_SLOT * 64);
const slotRing: (Ring | undefined)[] = [];
const slotIsCompletion: boolean[] = [];

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function run(): Promise<void> {
  while (!shuttingDown) {
    let n = 0;
    pfd.writeInt32LE(data.ctlFd, 0);
    pfd.writeInt16LE(POLLIN, 4);
    pfd.writeInt16LE(0, 6);
    slotRing[n++] = undefined;
    let anyPolling = false;
    for (const r of paused ? [] : rings.values()) {
      if (r.broken) continue;
      const cfd = r.handler.completionFd;
      if (cfd !== undefined && n < 64) {
        pfd.writeInt32LE(cfd, n * POLL_SLOT);
        pfd.writeInt16LE(POLLIN, n * POLL_SLOT + 4);
        pfd.writeInt16LE(0, n * POLL_SLOT + 6);
        slotRing[n] = r;
        slotIsCompletion[n++] = true;
      }
      if (!r.enabled) continue;
      if (r.polling || r.kickFd < 0) anyPolling = true;
      if (r.kickFd < 0 || n >= 64) continue;
      pfd.writeInt32LE(r.kickFd, n * POLL_SLOT);
      pfd.writeInt16LE(POLLIN, n * POLL_SLOT + 4);
      pfd.writeInt16LE(0, n * POLL_SLOT + 6);
      slotRing[n] = r;
      slotIsCompletion[n++] = false;
    }
    const ready = pollFds(pfd, n, anyPolling ? 0 : -1);
    if (Atomics.load(ctlWord, 0) !== 0) break;
    if (ready > 0 && pfd.readInt16LE(6) !== 0) {
      eventfdDrain(data.ctlFd);
      // comlink calls were posted before the control eventfd was written: one loop turn delivers them
      await yieldToEventLoop();
      continue;
    }
    const now = performance.now();
    for (let i = 1; i < n; i++) {
      const rev = pfd.readInt16LE(i * POLL_SLOT + 6);
      if (rev === 0) continue;
      const r = slotRing[i]!;
      if (slotIsCompletion[i]) {
        reapRing(r, now);
        continue;
      }
      if (rev & (POLLERR | POLLHUP | POLLNVAL)) {
        post({ type: 'log', message: `queue ${r.q}: kick fd ${r.kickFd} reported poll error 0x${rev.toString(16)}` });
        r.kickFd = -1;
        continue;
      }
      if (eventfdDrain(r.kickFd) > 0) bump(r, QS_STAT_KICKS);
      processRing(r, now);
    }
    if (anyPolling) {
      let found = ready > 0;
      for (const r of rings.values()) if ((r.polling || r.kickFd < 0) && r.enabled && !r.broken && processRing(r, now)) found = true;
      // nothing to do this round: let a thread that shares our core (the driver, on a small machine) run
      if (!found) schedYield();
    }
  }
  for (const r of rings.values()) r.handler.close?.();
  rings.clear();
  events.close();
  data.control.close();
}

const api: QueueWorkerApi = {
  start(s: RingStart): void {
    const factory = QUEUE_HANDLERS[data.device];
    if (!factory) throw new Error(`no queue handler for device '${data.device}'`);
    const old = rings.get(s.queue);
    if (old) {
      drainRing(old);
      old.handler.close?.();
    }
    const qs = queueArea(s.queue);
    const notify = s.notify ?? (s.pollUs > 0 ? 'adaptive' : 'event-idx');
    const pushUsed = (head: number, len: number): void => {
      engine.splitPushUsed(qs, head, len);
    };
    const inOrder = s.completion === 'in-order' ? new InOrderCompletions(pushUsed) : undefined;
    const handler = factory({
      engine,
      memory: data.memory,
      hostBase,
      queue: s.queue,
      queueArea: qs,
      scratch: deviceArea(s.queue),
      options: data.options,
      pushUsed: inOrder ? (head, len) => inOrder.finished(head, len) : pushUsed,
    });
    const r: Ring = {
      q: s.queue,
      qs,
      kickFd: s.kickFd,
      callFd: s.callFd,
      errFd: s.errFd,
      enabled: s.enabled,
      handler,
      notify,
      pollUs: notify === 'adaptive' ? s.pollUs : 0,
      // synchronous handlers complete in order anyway
      inOrder: handler.completionFd !== undefined ? inOrder : undefined,
      batch: s.batch,
      lastWork: 0,
      polling: s.kickFd < 0,
      broken: false,
    };
    rings.set(s.queue, r);
    if (s.resubmit?.length) resubmit(r, s.resubmit);
    // a kick that came before the ring started (or was lost with a previous back-end) is not lost
    processRing(r, performance.now());
  },
  stop(queue: number): StoppedRing {
    const r = rings.get(queue);
    if (!r) return { queue, wasRunning: false };
    // GET_VRING_BASE: every request of the ring completes before its index is reported
    drainRing(r);
    r.handler.close?.();
    rings.delete(queue);
    return { queue, wasRunning: true };
  },
  setEnabled(queue: number, enabled: boolean): void {
    const r = rings.get(queue);
    if (!r) return;
    r.enabled = enabled;
    // a kick that came while the ring was disabled is not lost: look at the ring now
    if (enabled) processRing(r, performance.now());
  },
  setFds(queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): void {
    const r = rings.get(queue);
    if (!r) return;
    if (fds.kickFd !== undefined) {
      r.kickFd = fds.kickFd;
      r.polling = fds.kickFd < 0;
    }
    if (fds.callFd !== undefined) r.callFd = fds.callFd;
    if (fds.errFd !== undefined) r.errFd = fds.errFd;
    if (fds.kickFd !== undefined) processRing(r, performance.now());
  },
  pause(): number[] {
    // nothing may touch guest memory until resume(), in-flight I/O included
    for (const r of rings.values()) drainRing(r);
    paused = true;
    return [...rings.keys()];
  },
  resume(): void {
    paused = false;
    const now = performance.now();
    for (const r of rings.values()) processRing(r, now);
  },
  reset(): void {
    for (const r of rings.values()) {
      drainRing(r);
      r.handler.close?.();
    }
    rings.clear();
    slotRing.fill(undefined);
    paused = false;
  },
  shutdown(): void {
    shuttingDown = true;
  },
};

Comlink.expose(api, nodeEndpoint(data.control));
void run();
