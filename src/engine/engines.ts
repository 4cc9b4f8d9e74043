/**
 * The ring engines a queue worker can run, by name (`--engine`). Every engine implements SplitEngineApi on the
 * connection's shared Memory with the layout of ./layout.ts, so the workers, devices and the back-end state never
 * know which one runs. Shipped:
 * - `wasm` (default): the AssemblyScript engine (assembly/split-ring.ts);
 * - `reference`: the plain-TypeScript model the property tests check the wasm engine against.
 * Anything else is taken as the path of an ES module whose `createEngine(memory, module)` returns a SplitEngineApi:
 * an experimental engine needs that one file and no change elsewhere (README: "Adding an engine").
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { instantiateEngine, type SplitEngineApi } from './engine.js';
import { ReferenceSplitEngine } from './reference-split.js';

export type EngineFactory = (memory: WebAssembly.Memory, module: WebAssembly.Module) => SplitEngineApi;

export const ENGINES: Readonly<Record<string, EngineFactory>> = {
  wasm: (memory, module) => instantiateEngine(module, memory),
  reference: (memory) => new ReferenceSplitEngine(memory),
};

export const DEFAULT_ENGINE = 'wasm';

/** The factory for `name`: a shipped engine, or an engine module at a path (relative to the working directory). */
export async function engineFactory(name: string): Promise<EngineFactory> {
  const shipped = ENGINES[name];
  if (shipped) return shipped;
  const url = pathToFileURL(path.resolve(name)).href;
  const mod = (await import(url)) as { createEngine?: EngineFactory; default?: EngineFactory };
  const f = mod.createEngine ?? mod.default;
  if (typeof f !== 'function') throw new Error(`engine module ${name} exports no createEngine(memory, module)`);
  return f;
}
