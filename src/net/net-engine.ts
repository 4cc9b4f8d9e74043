/**
 * Typed loader for the switch's wasm module (build/out/net-switch.wasm, from assembly/net-switch.ts): the per-frame
 * work that stays inside one guest's memory (TX header scan per batch, RX buffer placement per frame). Like the
 * engine it imports only env.memory and keeps no state, so every switch worker instantiates it on every port's
 * memory. Its record layout (NTX_*, NRX_*) is read from the module's exported constants: one source of truth.
 */
import { existsSync, readFileSync } from 'node:fs';
import { builtPath } from '../runtime/package-root.js';

export interface NetSwitchWasm {
  /** Frame records (NTX_*) at out for chain records 0..n-1 of TX queue qs. */
  netTxScan(qs: number, n: number, hdrLen: number, maxFrame: number, out: number): void;
  /** RX buffers for one frame: header written, used elements pushed; the number of spans at out + NRX_SPANS, or NRX_* < 0. */
  netRxPlace(
    qs: number, frameLen: number, hdrLen: number, mrg: number, flags: number, gsoType: number, hdrLenField: number,
    gsoSize: number, csumStart: number, csumOffset: number, out: number,
  ): number;
}

export const NET_LAYOUT_NAMES = [
  'NTX_BYTES', 'NTX_FRAME_LEN', 'NTX_STATUS', 'NTX_FLAGS', 'NTX_GSO_TYPE', 'NTX_ETHERTYPE', 'NTX_HDR_LEN', 'NTX_GSO_SIZE',
  'NTX_CSUM_START', 'NTX_CSUM_OFFSET', 'NTX_DST0', 'NTX_DST1', 'NTX_SRC0', 'NTX_SRC1', 'NTX_OK', 'NTX_INVALID',
  'NRX_SPANS', 'NRX_SPAN_CAP', 'NRX_BYTES', 'NRX_NO_BUFFER', 'NRX_TOO_SMALL', 'NRX_GAVE_BACK', 'NRX_BROKEN',
] as const;
export type NetLayout = Readonly<Record<(typeof NET_LAYOUT_NAMES)[number], number>>;

let cached: { module: WebAssembly.Module; layout: NetLayout } | undefined;

/** Compile once; the layout comes with it. */
export function loadNetSwitchModule(path: string = builtPath('net-switch.wasm')): WebAssembly.Module {
  if (cached) return cached.module;
  if (!existsSync(path)) throw new Error(`switch module not built: ${path} is missing (run npm run build:wasm)`);
  const module = new WebAssembly.Module(readFileSync(path));
  cached = { module, layout: layoutOf(module) };
  return module;
}

function layoutOf(module: WebAssembly.Module): NetLayout {
  // the constants are immutable globals: readable from an instance on a throwaway memory
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true });
  const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const out: Record<string, number> = {};
  for (const n of NET_LAYOUT_NAMES) {
    const g = ex[n];
    if (!(g instanceof WebAssembly.Global)) throw new Error(`net-switch.wasm lacks constant ${n}`);
    out[n] = Number(g.value) | 0;
  }
  return Object.freeze(out) as NetLayout;
}

/** The layout constants of a compiled module (workers get the module through workerData). */
export function netLayout(module: WebAssembly.Module): NetLayout {
  if (cached?.module === module) return cached.layout;
  return layoutOf(module);
}

export function instantiateNetSwitch(module: WebAssembly.Module, memory: WebAssembly.Memory): NetSwitchWasm {
  const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const tx = ex['netTxScan'];
  const rx = ex['netRxPlace'];
  if (typeof tx !== 'function' || typeof rx !== 'function') throw new Error('net-switch.wasm lacks netTxScan/netRxPlace');
  return { netTxScan: tx as NetSwitchWasm['netTxScan'], netRxPlace: rx as NetSwitchWasm['netRxPlace'] };
}
