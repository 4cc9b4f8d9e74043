/**
 * The built-in front-end's guest driver for one queue, run as a piscina task: keeps its ring supplied with
 * fixed chains for `seconds`, kicking and sleeping on the call eventfd as a guest driver would (or spinning
 * on the used ring in polling mode), and reports what it saw.
 */
import { drvInitFlags, instantiateEngine } from '../src/engine/engine.js';
import { DS_ERRORS, DS_STAT_KICKS, DS_STAT_USED_BYTES } from '../src/engine/layout.js';
import { eventfdDrain, eventfdSignal, POLLIN, pollFds, schedYield } from '../src/sys/syscalls.js';
import type { DriverResult, DriverTask, LatencySummary } from '../src/frontend/driver-protocol.js';

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export default function runDriver(t: DriverTask): DriverResult {
  const e = instantiateEngine(t.module, t.memory);
  if (e.drvInit(t.ds, t.size, t.desc, t.avail, t.used, t.gpaDelta, drvInitFlags(t.eventIdx, t.packed)) !== 0) throw new Error('drvInit refused the ring');
  const chains = e.drvSetupFixedChains(t.ds, t.buffers, t.bufLen, t.descsPerChain, t.writable);
  if (chains <= 0) throw new Error('drvSetupFixedChains failed');
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(t.callFd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  let calls = 0;
  let reaped = 0;
  const waitCall = (ms: number): void => {
    pfd.writeInt16LE(0, 6);
    if (pollFds(pfd, 1, ms) > 0 && eventfdDrain(t.callFd) > 0) calls++;
  };
  const always = t.notify === 'always';
  /** kicks the device did not ask for ('always'): the engine counts only those it asked for */
  let forcedKicks = 0;
  const spinMs = t.notify === 'adaptive' ? (t.pollUs ?? 0) / 1000 : 0;
  const kickIfWanted = (): void => {
    // drvNeedKick also moves the driver's notion of what it has kicked for: called either way
    if (e.drvNeedKick(t.ds)) eventfdSignal(t.kickFd);
    else if (always) {
      eventfdSignal(t.kickFd);
      forcedKicks++;
    }
  };
  /** 'adaptive': spin on the used ring up to the budget; true if something was used meanwhile */
  const spinForUsed = (): boolean => {
    if (spinMs <= 0) return false;
    const until = performance.now() + spinMs;
    do {
      if (e.drvUsedPending(t.ds) > 0) return true;
      schedYield();
    } while (performance.now() < until);
    return false;
  };
  const dv = (): DataView => new DataView(t.memory.buffer);
  let latency: LatencySummary | undefined;
  const start = performance.now();
  const deadline = start + t.seconds * 1000;

  if (t.mode === 'latency') {
    const samples = new Float64Array(Math.max(1, Math.min(2_000_000, t.seconds * 400_000)));
    let n = 0;
    e.drvSetInterrupts(t.ds, 1);
    while (n < samples.length) {
      const t0 = performance.now();
      if (t0 >= deadline) break;
      e.drvSubmit(t.ds, 1);
      kickIfWanted();
      let got = e.drvReap(t.ds, 1);
      while (got === 0) {
        if (!t.polling && !spinForUsed()) waitCall(100);
        got = e.drvReap(t.ds, 1);
        if (performance.now() > deadline + 1000) throw new Error(`queue ${t.queue}: no completion within 1 s`);
      }
      samples[n++] = (performance.now() - t0) * 1000;
      reaped += got;
    }
    const s = samples.subarray(0, n).sort();
    let sum = 0;
    for (let i = 0; i < n; i++) sum += s[i]!;
    latency = { samples: n, p50Us: percentile(s, 50), p90Us: percentile(s, 90), p99Us: percentile(s, 99), meanUs: n ? sum / n : 0 };
  } else {
    e.drvSetInterrupts(t.ds, 0);
    const batch = t.submitBatch > 0 ? t.submitBatch : chains;
    if (e.drvSubmit(t.ds, batch) > 0) kickIfWanted();
    let spins = 0;
    for (;;) {
      const got = e.drvReap(t.ds, chains);
      if (got > 0) {
        reaped += got;
        if (e.drvSubmit(t.ds, batch) > 0) kickIfWanted();
        if ((++spins & 63) === 0 && performance.now() >= deadline) break;
        continue;
      }
      if (performance.now() >= deadline) break;
      if (t.polling || spinForUsed()) continue;
      // nothing used: ask for an interrupt, re-check (the device may have raced us), then sleep
      if (e.drvSetInterrupts(t.ds, 1) === 0) waitCall(50);
      e.drvSetInterrupts(t.ds, 0);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const v = dv();
  const kicks = Number(v.getBigUint64(t.ds + DS_STAT_KICKS, true)) + forcedKicks;
  return {
    queue: t.queue,
    seconds,
    chains: reaped,
    chainsPerSec: reaped / seconds,
    usedBytes: Number(v.getBigUint64(t.ds + DS_STAT_USED_BYTES, true)),
    kicks,
    calls,
    kicksPerChain: reaped ? kicks / reaped : 0,
    callsPerChain: reaped ? calls / reaped : 0,
    errors: v.getUint32(t.ds + DS_ERRORS, true),
    latency,
  };
}
