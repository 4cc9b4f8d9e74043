/**
 * Typed loader for the AssemblyScript virtqueue engine (build/out/engine.wasm, from assembly/).
 *
 * The module imports only `env.memory`: a shared WebAssembly.Memory with maximum 65536 pages laid out
 * per ./layout.ts. Instances keep no state of their own (no mutable globals, no data segments), so
 * any number of them, in any worker, may run on the same memory; a queue must be driven by one
 * thread at a time.
 *
 * Types: `u32` addresses and sizes are JS numbers (pass values >= 2^31 freely; wasm wraps them),
 * `u64` guest addresses are bigints. Exports that return an address (translateGpa/translateUva) are
 * wrapped so they return unsigned numbers.
 */
import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { builtPath } from '../runtime/package-root.js';
import { DRV_INIT_EVENT_IDX, DRV_INIT_PACKED } from './layout.js';

/** Device side of a split ring (assembly/split-ring.ts, region-table.ts, event-idx.ts, inflight-split.ts). */
export interface SplitEngineApi {
  /** vring_need_event (B.4), arguments modulo 2^16: 1 iff oldIdx <= eventIdx < newIdx (mod 2^16). */
  needEvent(eventIdx: number, newIdx: number, oldIdx: number): number;
  /** Wasm address of [gpa, gpa+len) if inside ONE region of the table, else 0. */
  translateGpa(regionTable: number, gpa: bigint, len: bigint): number;
  /** Same, by front-end virtual address. */
  translateUva(regionTable: number, uva: bigint, len: bigint): number;
  /**
   * Configure queue area `qs` (ring addresses already translated). Bad size/alignment leaves the
   * queue broken with ERR_TRANSLATE and QS_ERROR_DETAIL 0xffffffff.
   */
  splitConfigure(
    qs: number, size: number, features: number, descAddr: number, availAddr: number, usedAddr: number,
    regionTable: number, inflightAddr: number, lastAvail: number,
  ): void;
  /** Pop up to maxChains chains into the chain records/segments; count, or -ERR_*. */
  splitPopBatch(qs: number, maxChains: number): number;
  /** Chain records for `count` u16 heads at headsAddr (resubmission); count built, or -ERR_*. */
  splitPopHeads(qs: number, headsAddr: number, count: number): number;
  /** (u16)(avail.idx - last_avail), or -ERR_*. */
  splitAvailPending(qs: number): number;
  /** Queue one used element; 0 or -ERR_USED_ID. */
  splitPushUsed(qs: number, head: number, len: number): number;
  /** Publish pending used elements; 1 if the driver must be notified. */
  splitPublish(qs: number): number;
  /** Push chain records 0..n-1 (CH_HEAD, CH_USED_LEN) and publish; 1 if the driver must be notified. */
  splitComplete(qs: number, n: number): number;
  splitDisableNotify(qs: number): void;
  /** Re-enable kicks, fence, re-check: 1 if more buffers arrived meanwhile. */
  splitEnableNotify(qs: number): number;
  /** align64(16 * queueSize + 16). */
  inflightSplitQueueBytes(queueSize: number): number;
  inflightSplitInit(addr: number, queueSize: number): void;
  /** Repair the last batch, write still-inflight heads (u16, by counter) at outAddr; their count. */
  inflightSplitRecover(qs: number, outAddr: number): number;
}

/**
 * Packed rings (assembly/packed-ring.ts, inflight-packed.ts). Only set-up and recovery are packed-specific: a
 * queue configured here is driven through the SplitEngineApi entry points, which dispatch on the ring format.
 * Positions are `index | wrap << 15` (the vhost-user vring base encoding); a chain record's CH_HEAD is a token
 * (buffer id, or the inflight head entry, | ring slots << 16) to hand back to splitPushUsed unchanged.
 */
export interface PackedEngineApi {
  /**
   * Configure queue area `qs` as a packed ring: descriptor ring, driver and device event suppression
   * structures (wasm addresses), next avail and next used positions. Bad size (0 or > 32768), alignment or
   * positions leave the queue broken with ERR_TRANSLATE and QS_ERROR_DETAIL 0xffffffff.
   */
  packedConfigure(
    qs: number, size: number, features: number, descAddr: number, drvEventAddr: number, devEventAddr: number,
    regionTable: number, inflightAddr: number, lastAvail: number, nextUsed: number,
  ): void;
  /** align64(32 * queueSize + 32). */
  inflightPackedQueueBytes(queueSize: number): number;
  inflightPackedInit(addr: number, queueSize: number): void;
  /**
   * Repair the last batch, write the in-flight head entries (u16, by counter) at outAddr, set the queue's next
   * used / next avail positions from the region; their count.
   */
  inflightPackedRecover(qs: number, outAddr: number): number;
}

/** Guest/driver side of a split ring (assembly/split-driver.ts); `ds` is a DS_* block. */
export interface SplitDriverApi {
  /** 0, or -1 for a bad size / ring alignment. gpa = wasm address + gpaOfWasm0 (mod 2^64). */
  drvInit(
    ds: number, size: number, descAddr: number, availAddr: number, usedAddr: number, gpaOfWasm0: bigint,
    eventIdx: number,
  ): number;
  /** Fixed-chain (benchmark) mode; writable = DRV_FIXED_*. Number of chains, or -1. */
  drvSetupFixedChains(ds: number, bufAddr: number, bufLen: number, descsPerChain: number, writable: number): number;
  /** Fixed-chain mode: make up to max chains available (one avail.idx store); count. */
  drvSubmit(ds: number, max: number): number;
  /** Generic mode: chain from nSegs DRV_SEG_* records; the head, or -1 when out of descriptors. */
  drvAddChain(ds: number, segsAddr: number, nSegs: number): number;
  /** Generic mode: publish avail.idx. */
  drvKickAvail(ds: number): void;
  /** 1 if the device wants a kick for what was published since the last call. */
  drvNeedKick(ds: number): number;
  /** Reap up to max used elements, writing (id, len) u32 pairs at outAddr unless it is 0; count. */
  drvReapTo(ds: number, outAddr: number, max: number): number;
  /** drvReapTo(ds, 0, max). */
  drvReap(ds: number, max: number): number;
  /** Interrupts on/off; when turning on, the used elements already pending (reap before sleeping). */
  drvSetInterrupts(ds: number, on: number): number;
  /** Used elements published and not reaped yet. */
  drvUsedPending(ds: number): number;
}

export interface EngineExports extends SplitEngineApi, PackedEngineApi, SplitDriverApi {
  /** The memory the instance runs on (the one passed to instantiateEngine). */
  readonly memory: WebAssembly.Memory;
  /** The engine's copy of the layout constants (assembly/layout.ts), by name: checked against ./layout.ts. */
  readonly abi: Readonly<Record<string, number>>;
}

const FUNCTION_EXPORTS = [
  'needEvent', 'translateGpa', 'translateUva', 'splitConfigure', 'splitPopBatch', 'splitPopHeads',
  'splitAvailPending', 'splitPushUsed', 'splitPublish', 'splitComplete', 'splitDisableNotify',
  'splitEnableNotify', 'inflightSplitQueueBytes', 'inflightSplitInit', 'inflightSplitRecover',
  'packedConfigure', 'inflightPackedQueueBytes', 'inflightPackedInit', 'inflightPackedRecover',
  'drvInit', 'drvSetupFixedChains', 'drvSubmit', 'drvAddChain', 'drvKickAvail', 'drvNeedKick', 'drvReapTo',
  'drvReap', 'drvSetInterrupts', 'drvUsedPending',
] as const satisfies readonly (keyof SplitEngineApi | keyof PackedEngineApi | keyof SplitDriverApi)[];

/** drvInit's last argument for the negotiated features. */
export function drvInitFlags(eventIdx: boolean, packed = false): number {
  return (eventIdx ? DRV_INIT_EVENT_IDX : 0) | (packed ? DRV_INIT_PACKED : 0);
}

/** Default location of the built engine: <package root>/build/out/engine.wasm. */
export function defaultEnginePath(): string {
  return builtPath('engine.wasm');
}

const moduleCache = new Map<string, WebAssembly.Module>();

/** Compile the engine once per path (synchronously; the module is small). */
export function loadEngineModule(path: string = defaultEnginePath()): WebAssembly.Module {
  const key = resolve(path);
  let mod = moduleCache.get(key);
  if (mod === undefined) {
    if (!existsSync(key)) throw new Error(`engine not built: ${key} is missing (run npm run build:wasm)`);
    mod = new WebAssembly.Module(readFileSync(key));
    moduleCache.set(key, mod);
  }
  return mod;
}

type WasmFn = (...args: (number | bigint)[]) => number | undefined;

/** Instantiate on `memory` (shared, maximum 65536 pages) with `{ env: { memory } }`. */
export function instantiateEngine(module: WebAssembly.Module, memory: WebAssembly.Memory): EngineExports {
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  const raw = instance.exports;
  const abi: Record<string, number> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (value instanceof WebAssembly.Global) abi[name] = Number(value.value) >>> 0;
  }
  const fns: Record<string, WasmFn> = {};
  for (const name of FUNCTION_EXPORTS) {
    const f = raw[name];
    if (typeof f !== 'function') throw new Error(`engine.wasm lacks export ${name}`);
    fns[name] = f as WasmFn;
  }
  const tGpa = fns.translateGpa as (t: number, a: bigint, l: bigint) => number;
  const tUva = fns.translateUva as (t: number, a: bigint, l: bigint) => number;
  const qBytes = fns.inflightSplitQueueBytes as (n: number) => number;
  const pqBytes = fns.inflightPackedQueueBytes as (n: number) => number;
  return {
    ...(fns as unknown as Omit<EngineExports, 'memory' | 'abi'>),
    translateGpa: (t, a, l) => tGpa(t, a, l) >>> 0,
    translateUva: (t, a, l) => tUva(t, a, l) >>> 0,
    inflightSplitQueueBytes: (n) => qBytes(n) >>> 0,
    inflightPackedQueueBytes: (n) => pqBytes(n) >>> 0,
    memory,
    abi: Object.freeze(abi),
  };
}
