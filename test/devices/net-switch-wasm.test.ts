/**
 * assembly/net-switch.ts on its own: the switch's per-frame wasm (TX header scan, RX placement) on a split ring
 * built by hand in one memory, next to the engine that pops the chains.
 */
import { describe, expect, it } from 'vitest';
import { deviceArea, INFLIGHT_AREA, QF_INFLIGHT, QS_LAST_AVAIL, REGION_TABLE } from '../../src/engine/layout.js';
import { instantiateNetSwitch, loadNetSwitchModule, netLayout } from '../../src/net/net-engine.js';
import { builtPath } from '../../src/runtime/package-root.js';
import { F_NEXT, F_WRITE, QS0, Rig, TestRing, wasmOfGpa } from '../engine/helpers.js';

const N = 16;
const OUT = deviceArea(0);
const L = netLayout(loadNetSwitchModule(builtPath('net-switch.wasm')));

function rig(features = 0): { r: Rig; ring: TestRing; sw: ReturnType<typeof instantiateNetSwitch> } {
  const r = new Rig();
  r.setRegions();
  const ring = new TestRing(r, N);
  if (features & QF_INFLIGHT) r.e.inflightSplitInit(INFLIGHT_AREA, N);
  r.e.splitConfigure(QS0, N, features, ring.desc, ring.avail, ring.used, REGION_TABLE, features & QF_INFLIGHT ? INFLIGHT_AREA : 0, 0);
  return { r, ring, sw: instantiateNetSwitch(loadNetSwitchModule(), r.memory) };
}

/** RX buffers: one writable descriptor of `len` bytes each, at GPA 0x10000 + 0x1000 * i. */
function postRx(ring: TestRing, lens: number[]): void {
  lens.forEach((len, i) => ring.setDesc(i, { addr: BigInt(0x10000 + 0x1000 * i), len, flags: F_WRITE, next: 0 }));
  ring.publish(...lens.map((_, i) => i));
}

function spans(r: Rig, k: number): { addr: number; len: number }[] {
  return Array.from({ length: k }, (_, j) => ({ addr: r.r32(OUT + L.NRX_SPANS + 8 * j), len: r.r32(OUT + L.NRX_SPANS + 8 * j + 4) }));
}

describe('net-switch.wasm', () => {
  it('RX placement with MRG_RXBUF: header written across chains, num_buffers set, used elements pushed, spans hold exactly the frame', () => {
    const { r, ring, sw } = rig();
    postRx(ring, [8, 100, 100]); // the first buffer is shorter than the 12-byte header
    // too small for the header alone: the buffer goes back empty
    expect(sw.netRxPlace(QS0, 150, 12, 1, 1, 0, 0, 0, 34, 6, OUT)).toBe(L.NRX_TOO_SMALL);
    expect(r.e.splitPublish(QS0)).toBeGreaterThanOrEqual(0);
    expect(ring.usedElem(0)).toEqual({ id: 0, len: 0 });
    const k = sw.netRxPlace(QS0, 150, 12, 1, 1, 0, 0, 0, 34, 6, OUT);
    expect(k).toBe(2);
    const s = spans(r, k);
    expect(s.reduce((a, x) => a + x.len, 0)).toBe(150);
    expect(s[0]).toEqual({ addr: wasmOfGpa(0x11000n) + 12, len: 88 });
    expect(s[1]).toEqual({ addr: wasmOfGpa(0x12000n), len: 62 });
    const h = wasmOfGpa(0x11000n);
    expect(r.r8(h)).toBe(1); // flags
    expect(r.r16(h + 6)).toBe(34); // csum_start
    expect(r.r16(h + 8)).toBe(6); // csum_offset
    expect(r.r16(h + 10)).toBe(2); // num_buffers
    r.e.splitPublish(QS0);
    expect(ring.usedIdx).toBe(3);
    expect(ring.usedElem(1)).toEqual({ id: 1, len: 100 });
    expect(ring.usedElem(2)).toEqual({ id: 2, len: 62 });
  });

  it('not enough buffers: nothing is taken (last_avail rewound); with inflight tracking they go back empty instead', () => {
    for (const features of [0, QF_INFLIGHT]) {
      const { r, ring, sw } = rig(features);
      postRx(ring, [64, 64]);
      const res = sw.netRxPlace(QS0, 1000, 12, 1, 0, 0, 0, 0, 0, 0, OUT);
      if (features === 0) {
        expect(res).toBe(L.NRX_NO_BUFFER);
        expect(r.r16(QS0 + QS_LAST_AVAIL)).toBe(0);
        expect(r.e.splitPublish(QS0)).toBe(0);
        expect(ring.usedIdx).toBe(0);
      } else {
        expect(res).toBe(L.NRX_GAVE_BACK);
        r.e.splitPublish(QS0);
        expect(ring.usedIdx).toBe(2);
        expect([ring.usedElem(0).len, ring.usedElem(1).len]).toEqual([0, 0]);
      }
    }
  });

  it('without MRG_RXBUF a frame must fit one chain; a legacy 10-byte header has no num_buffers', () => {
    const { r, ring, sw } = rig();
    postRx(ring, [100, 2000]);
    expect(sw.netRxPlace(QS0, 100, 10, 0, 0, 0, 0, 0, 0, 0, OUT)).toBe(L.NRX_TOO_SMALL);
    const h = wasmOfGpa(0x11000n);
    r.u8.fill(0xee, h, h + 16);
    expect(sw.netRxPlace(QS0, 100, 10, 0, 0, 0, 0, 0, 0, 0, OUT)).toBe(1);
    expect(spans(r, 1)).toEqual([{ addr: h + 10, len: 100 }]);
    expect(r.r16(h + 8)).toBe(0);
    expect(r.r8(h + 10)).toBe(0xee); // the frame's first byte is the caller's to write: untouched
  });

  it('TX scan: header fields, frame length and MACs, whether the header shares a descriptor or not; short frames are invalid', () => {
    const { r, ring, sw } = rig();
    const frameAt = (gpa: bigint, hdr: number[], eth: number[]): void => {
      const a = wasmOfGpa(gpa);
      hdr.forEach((b, i) => r.w8(a + i, b));
      eth.forEach((b, i) => r.w8(a + hdr.length + i, b));
    };
    const hdr = [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 1, 0];
    const eth = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    // chain 0: header and frame (60 bytes) in one descriptor
    frameAt(0x10000n, hdr, eth);
    ring.setDesc(0, { addr: 0x10000n, len: 12 + 60, flags: 0, next: 0 });
    // chain 1: the header apart, the Ethernet header split over two more descriptors
    frameAt(0x11000n, hdr, []);
    frameAt(0x12000n, [], eth.slice(0, 5));
    frameAt(0x13000n, [], eth.slice(5));
    ring.setDesc(1, { addr: 0x11000n, len: 12, flags: F_NEXT, next: 2 });
    ring.setDesc(2, { addr: 0x12000n, len: 5, flags: F_NEXT, next: 3 });
    ring.setDesc(3, { addr: 0x13000n, len: 55, flags: 0, next: 0 });
    // chain 2: 13 bytes after the header: not an Ethernet frame
    ring.setDesc(4, { addr: 0x14000n, len: 12 + 13, flags: 0, next: 0 });
    ring.publish(0, 1, 4);
    expect(r.e.splitPopBatch(QS0, 8)).toBe(3);
    sw.netTxScan(QS0, 3, 12, 65600, OUT);
    for (const c of [0, 1]) {
      const at = OUT + c * L.NTX_BYTES;
      expect(r.r32(at + L.NTX_STATUS)).toBe(L.NTX_OK);
      expect(r.r32(at + L.NTX_FRAME_LEN)).toBe(60);
      expect(r.r8(at + L.NTX_FLAGS)).toBe(1);
      expect(r.r16(at + L.NTX_CSUM_START)).toBe(34);
      expect(r.r16(at + L.NTX_CSUM_OFFSET)).toBe(16);
      expect(r.r16(at + L.NTX_ETHERTYPE)).toBe(0x0800);
      expect(r.r32(at + L.NTX_DST0)).toBe(0x02000000);
      expect(r.r32(at + L.NTX_DST1)).toBe(0x00020000);
      expect(r.r32(at + L.NTX_SRC1)).toBe(0x00010000);
    }
    expect(r.r32(OUT + 2 * L.NTX_BYTES + L.NTX_STATUS)).toBe(L.NTX_INVALID);
    // a checksum field beyond the frame is invalid too
    frameAt(0x15000n, [1, 0, 0, 0, 0, 0, 50, 0, 16, 0, 1, 0], eth);
    ring.setDesc(5, { addr: 0x15000n, len: 12 + 60, flags: 0, next: 0 });
    ring.publish(5);
    expect(r.e.splitPopBatch(QS0, 8)).toBe(1);
    sw.netTxScan(QS0, 1, 12, 65600, OUT);
    expect(r.r32(OUT + L.NTX_STATUS)).toBe(L.NTX_INVALID);
  });
});
