/**
 * The 'in-order' completion policy for asynchronous devices: a request that finishes waits until every request
 * popped before it has finished, so the used ring lists heads in the order the avail ring gave them. It sits
 * between the device's pushUsed and the engine's; nothing is allocated per request.
 */

/** Split rings hold at most 2^15 descriptors: heads are below this. */
const MAX_HEADS = 32768;
const MASK = MAX_HEADS - 1;

export class InOrderCompletions {
  /** heads in pop order, from `first` to `next` (counters; the ring index is counter & MASK) */
  private readonly order = new Uint16Array(MAX_HEADS);
  /** per head: used length once finished, -1 while outstanding or not popped */
  private readonly doneLen = new Int32Array(MAX_HEADS).fill(-1);
  /** per head: 1 while popped and not passed on */
  private readonly outstanding = new Uint8Array(MAX_HEADS);
  private first = 0;
  private next = 0;

  constructor(private readonly push: (head: number, len: number) => void) {}

  /** Chain `head` was popped (in avail order). */
  popped(head: number): void {
    if (head >= MAX_HEADS || this.outstanding[head]) return; // the engine never hands these out; pass them through later
    this.outstanding[head] = 1;
    this.order[this.next & MASK] = head;
    this.next++;
  }

  /** The device finished `head`: pass on every finished head at the front of the order. */
  finished(head: number, len: number): void {
    if (head >= MAX_HEADS || !this.outstanding[head]) {
      // not one we saw popped: the engine validates it
      this.push(head, len);
      return;
    }
    this.doneLen[head] = len;
    while (this.first !== this.next) {
      const h = this.order[this.first & MASK]!;
      const l = this.doneLen[h]!;
      if (l < 0) break;
      this.doneLen[h] = -1;
      this.outstanding[h] = 0;
      this.first++;
      this.push(h, l);
    }
  }
}
