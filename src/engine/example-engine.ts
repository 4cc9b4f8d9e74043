/**
 * An example of an experimental ring engine (README: "Adding an engine"). It runs the wasm engine but pops at
 * most 8 chains at a time, whatever the worker asks for: a one-file experiment in batch sizing.
 *
 *   vhost-wasm null --socket-path /tmp/n.sock --engine build/out/src/engine/example-engine.js
 */
import { instantiateEngine, type SplitEngineApi } from './engine.js';

export function createEngine(memory: WebAssembly.Memory, module: WebAssembly.Module): SplitEngineApi {
  const wasm = instantiateEngine(module, memory);
  return Object.assign(Object.create(wasm) as SplitEngineApi, {
    splitPopBatch: (qs: number, maxChains: number): number => wasm.splitPopBatch(qs, Math.min(8, maxChains)),
  });
}
