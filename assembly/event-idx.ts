// vring_need_event (B.4): with EVENT_IDX, the other side asked to be told when the index it watches
// moves past `eventIdx`. Going from `oldIdx` to `newIdx` (free-running u16 indices) crosses it iff
// oldIdx <= eventIdx < newIdx modulo 2^16, i.e. eventIdx is one of the entries just published.

// @ts-ignore: decorator
@inline
export function needEventInline(eventIdx: u32, newIdx: u32, oldIdx: u32): bool {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Exported form: arguments are taken modulo 2^16. Returns 1 to notify, else 0. */
export function needEvent(eventIdx: u32, newIdx: u32, oldIdx: u32): i32 {
  return needEventInline(eventIdx, newIdx, oldIdx) ? 1 : 0;
}

/**
 * Full barrier (B.5 rows 3 and 4). asc 0.28.20 emits `atomic.fence` with an ordering its bundled
 * Binaryen rejects ("Atomic fence cannot be unordered"), so this is the classic replacement: an
 * idempotent sequentially consistent read-modify-write (adds 0) on a word of our own state. It is a
 * locked instruction on x86 and orders the surrounding atomic accesses in every wasm engine.
 */
// @ts-ignore: decorator
@inline
export function fullFence(ownWord: u32): void {
  atomic.add<u32>(ownWord, 0);
}
