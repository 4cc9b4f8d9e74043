/**
 * Typed views over a shared Memory that follow its growth: after memory.grow the old SharedArrayBuffer keeps
 * its old length, so views are re-taken whenever the length changed.
 */
export class LinearViews {
  private len = -1;
  u8!: Uint8Array;
  u32!: Uint32Array;
  u64!: BigUint64Array;
  dv!: DataView;

  constructor(private readonly memory: WebAssembly.Memory) {
    this.refresh();
  }

  refresh(): this {
    const buf = this.memory.buffer;
    if (buf.byteLength !== this.len) {
      this.len = buf.byteLength;
      this.u8 = new Uint8Array(buf);
      this.u32 = new Uint32Array(buf);
      this.u64 = new BigUint64Array(buf);
      this.dv = new DataView(buf);
    }
    return this;
  }
}
