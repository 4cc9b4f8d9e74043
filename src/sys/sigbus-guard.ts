/**
 * The SIGBUS guard (native/sigbus-guard.c, built at install into build/out/libvw-sigbus.so and loaded through
 * koffi): guest RAM that a front-end shrinks under us reads as zeros instead of killing the process. Without a C
 * compiler at install time the guard is absent and this says so once.
 */
import fs from 'node:fs';
import koffi from 'koffi';
import { builtPath } from '../runtime/package-root.js';

interface Guard {
  guard(start: bigint, end: bigint): number;
  unguard(slot: number): void;
  faults(): bigint;
}

let guard: Guard | null | undefined;

function load(): Guard | null {
  if (guard !== undefined) return guard;
  const lib = builtPath('libvw-sigbus.so');
  if (!fs.existsSync(lib)) {
    process.emitWarning(`${lib} is missing (no C compiler at install?): a front-end shrinking guest memory would crash the back-end`);
    return (guard = null);
  }
  const l = koffi.load(lib);
  const install = l.func('int vw_sigbus_install(void)') as () => number;
  if (install() !== 0) return (guard = null);
  guard = {
    guard: l.func('int vw_sigbus_guard(uint64_t start, uint64_t end)') as (s: bigint, e: bigint) => number,
    unguard: l.func('void vw_sigbus_unguard(int slot)') as (slot: number) => void,
    faults: l.func('uint64_t vw_sigbus_faults(void)') as () => bigint,
  };
  return guard;
}

/** True when the guard is loaded and installed. */
export function guardActive(): boolean {
  return load() !== null;
}

/** Guard host range [start, end); returns a handle for unguard (-1: not guarded). */
export function guardRange(start: bigint, end: bigint): number {
  return load()?.guard(start, end) ?? -1;
}

export function unguardRange(slot: number): void {
  if (slot >= 0) load()?.unguard(slot);
}

/** SIGBUS faults absorbed so far, process-wide. */
export function sigbusFaults(): number {
  return Number(load()?.faults() ?? 0n);
}
