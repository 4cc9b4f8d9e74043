/** The switch's pure parts: the offload rule, checksums, the RARP frame, the shared learning table. */
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as F from '../../src/net/frame.js';
import { MAC_TABLE_SLOTS, MacTable } from '../../src/net/mac-table.js';
import { netFeatures } from '../../src/devices/net/net.js';
import { bit } from '../../src/vhost-user/constants.js';

const key = (m: Uint8Array): [number, number] => [MacTable.key0(m), MacTable.key1(m)];

describe('net frames', () => {
  it('header length: 12 with VERSION_1 or MRG_RXBUF, 10 for a legacy driver without MRG_RXBUF', () => {
    expect(F.netHdrLen(bit(32))).toBe(12);
    expect(F.netHdrLen(bit(F.VIRTIO_NET_F_MRG_RXBUF))).toBe(12);
    expect(F.netHdrLen(0n)).toBe(10);
  });

  it('offload rule: pass what the receiver negotiated, complete checksums, drop GSO it cannot take', () => {
    const caps = F.receiverCaps;
    const csum = caps(bit(F.VIRTIO_NET_F_GUEST_CSUM));
    const tso4 = caps(bit(F.VIRTIO_NET_F_GUEST_CSUM) | bit(F.VIRTIO_NET_F_GUEST_TSO4));
    const all = caps(bit(F.VIRTIO_NET_F_GUEST_CSUM) | bit(F.VIRTIO_NET_F_GUEST_TSO4) | bit(F.VIRTIO_NET_F_GUEST_TSO6) | bit(F.VIRTIO_NET_F_GUEST_UFO) | bit(F.VIRTIO_NET_F_GUEST_ECN));
    const N = F.VIRTIO_NET_HDR_F_NEEDS_CSUM;
    expect(F.offloadAction(0, 0, 0)).toBe(F.OFFLOAD_PASS);
    expect(F.offloadAction(N, 0, 0)).toBe(F.OFFLOAD_CSUM);
    expect(F.offloadAction(N, 0, csum)).toBe(F.OFFLOAD_PASS);
    expect(F.offloadAction(N, F.VIRTIO_NET_HDR_GSO_TCPV4, csum)).toBe(F.OFFLOAD_DROP);
    expect(F.offloadAction(N, F.VIRTIO_NET_HDR_GSO_TCPV4, tso4)).toBe(F.OFFLOAD_PASS);
    expect(F.offloadAction(N, F.VIRTIO_NET_HDR_GSO_TCPV6, tso4)).toBe(F.OFFLOAD_DROP);
    expect(F.offloadAction(N, F.VIRTIO_NET_HDR_GSO_UDP, tso4)).toBe(F.OFFLOAD_DROP);
    expect(F.offloadAction(N, F.VIRTIO_NET_HDR_GSO_TCPV4 | F.VIRTIO_NET_HDR_GSO_ECN, tso4)).toBe(F.OFFLOAD_DROP);
    expect(F.offloadAction(N, F.VIRTIO_NET_HDR_GSO_TCPV4 | F.VIRTIO_NET_HDR_GSO_ECN, all)).toBe(F.OFFLOAD_PASS);
    expect(F.offloadAction(N, 2 /* unknown gso type */, all)).toBe(F.OFFLOAD_DROP);
  });

  it('the offered features: offloads only together, never UFO/ECN/CTRL_VQ; MQ only with several pairs', () => {
    const on = netFeatures(2, true);
    const off = netFeatures(1, false);
    for (const b of [F.VIRTIO_NET_F_CSUM, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_HOST_TSO6, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_MQ]) {
      expect(on & bit(b)).not.toBe(0n);
      expect(off & bit(b)).toBe(0n);
    }
    for (const b of [F.VIRTIO_NET_F_HOST_UFO, F.VIRTIO_NET_F_GUEST_UFO, F.VIRTIO_NET_F_HOST_ECN, F.VIRTIO_NET_F_GUEST_ECN, F.VIRTIO_NET_F_CTRL_VQ])
      expect(on & bit(b)).toBe(0n);
  });

  it('internet checksum: the completed range plus the pseudo-header sum the field held sums to 0xffff', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 300 }), fc.nat(), fc.nat(5), (data, at, s0) => {
        const start = Math.min(s0, data.length - 4);
        const off = (at % Math.floor((data.length - start - 2) / 2)) * 2;
        const f = Uint8Array.from(data);
        const pseudo = (f[start + off]! << 8) | f[start + off + 1]!; // what the driver left there
        F.completeChecksum(f, start, off);
        let sum = pseudo;
        for (let i = start; i < f.length; i++) sum += (i - start) & 1 ? f[i]! : f[i]! << 8;
        while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
        return sum === 0xffff;
      }),
    );
  });

  it('the RARP announcement has the layout QEMU sends', () => {
    const mac = F.parseMac('52:54:00:12:34:56');
    const f = Buffer.from(F.rarpFrame(mac));
    expect(f.length).toBe(60);
    expect(f.subarray(0, 6).equals(Buffer.alloc(6, 0xff))).toBe(true);
    expect(f.subarray(6, 12).equals(Buffer.from(mac))).toBe(true);
    expect(f.readUInt16BE(12)).toBe(0x8035);
    expect(f.readUInt16BE(20)).toBe(3);
    expect(f.subarray(22, 28).equals(Buffer.from(mac))).toBe(true);
    expect(f.subarray(32, 38).equals(Buffer.from(mac))).toBe(true);
    expect(F.formatMac(mac)).toBe('52:54:00:12:34:56');
    const r = F.randomMac();
    expect(r[0]! & 3).toBe(2);
  });
});

describe('the learning table', () => {
  it('learns, moves, forgets a port, and never reports a MAC it was not told', () => {
    const t = new MacTable();
    const a = F.parseMac('02:00:00:00:00:01');
    const b = F.parseMac('02:00:00:00:00:02');
    expect(t.lookup(...key(a))).toBe(-1);
    expect(t.learn(...key(a), 0)).toBe(true);
    expect(t.learn(...key(a), 0)).toBe(false);
    expect(t.learn(...key(b), 1)).toBe(true);
    expect(t.lookup(...key(a))).toBe(0);
    expect(t.lookup(...key(b))).toBe(1);
    expect(t.learn(...key(a), 2)).toBe(true); // moved
    expect(t.lookup(...key(a))).toBe(2);
    expect(t.size).toBe(2);
    expect(t.flushPort(2)).toBe(1);
    expect(t.lookup(...key(a))).toBe(-1);
    expect(t.lookup(...key(b))).toBe(1);
  });

  it('agrees with a Map under random learn/flush sequences, and stops learning when 3/4 full', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.tuple(fc.constant('learn' as const), fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 5 })), fc.tuple(fc.constant('flush' as const), fc.constant(0), fc.integer({ min: 0, max: 5 }))), { maxLength: 300 }),
        (ops) => {
          const t = new MacTable();
          const m = new Map<number, number>();
          const mac = (i: number): Uint8Array => new Uint8Array([2, 0, 0, i >> 8, i & 0xff, (i * 7) & 0xff]);
          for (const [op, i, port] of ops) {
            if (op === 'learn') {
              t.learn(...key(mac(i)), port);
              m.set(i, port);
            } else {
              t.flushPort(port);
              for (const [k, v] of m) if (v === port) m.delete(k);
            }
          }
          for (let i = 0; i <= 400; i++) if (t.lookup(...key(mac(i))) !== (m.get(i) ?? -1)) return false;
          return t.size === m.size;
        },
      ),
      { numRuns: 50 },
    );
    const t = new MacTable();
    let learnt = 0;
    for (let i = 0; i < MAC_TABLE_SLOTS; i++) if (t.learn(...key(new Uint8Array([2, 1, 0, 0, i >> 8, i & 0xff])), 1)) learnt++;
    expect(learnt).toBe((MAC_TABLE_SLOTS * 3) / 4);
  });

  it('workers learning and looking up at once never see a wrong port', async () => {
    const t = new MacTable();
    // each worker owns 200 MACs, learns them on its port over and over while checking the others' answers
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      import(${JSON.stringify(new URL('../../build/out/src/net/mac-table.js', import.meta.url).href)}).then(({ MacTable }) => {
        const t = new MacTable(workerData.sab);
        const me = workerData.me;
        let bad = 0;
        for (let round = 0; round < 200; round++) {
          for (let i = 0; i < 200; i++) t.learn((2 << 24) | (me << 16) | i, 0, me);
          for (let o = 0; o < 3; o++)
            for (let i = 0; i < 200; i += 17) {
              const p = t.lookup((2 << 24) | (o << 16) | i, 0);
              if (p !== -1 && p !== o) bad++;
            }
          if (me === 0 && round % 20 === 10) t.flushPort(2);
        }
        parentPort.postMessage(bad);
      });`;
    const results = await Promise.all(
      [0, 1, 2].map(
        (me) =>
          new Promise<number>((resolve, reject) => {
            const w = new Worker(code, { eval: true, workerData: { sab: t.sab, me } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    expect(results).toEqual([0, 0, 0]);
    for (let i = 0; i < 200; i++) expect(t.lookup((2 << 24) | (1 << 16) | i, 0)).toBe(1);
  });
});
