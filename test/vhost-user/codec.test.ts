import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BackendRequest,
  type BackendRequestName,
  FrontendRequest,
  type FrontendRequestName,
  HeaderFlag,
  ProtocolFeature,
  VHOST_USER_F_PROTOCOL_FEATURES,
  backendRequestName,
  bit,
  describeProtocolFeatures,
  hasBit,
  requestName,
} from '../../src/vhost-user/constants.js';
import {
  BACKEND_MESSAGES,
  BACKEND_MESSAGES_BY_NAME,
  type BackendReplyPayloads,
  type BackendRequestPayloads,
  FRONTEND_MESSAGES,
  FRONTEND_MESSAGES_BY_NAME,
  type FrontendReplyPayloads,
  type FrontendRequestPayloads,
  HEADER_SIZE,
  MAX_FDS,
  MAX_PAYLOAD,
  type MemRegion,
  type MessageHeader,
  type MessageSpec,
  type PayloadCodec,
  ProtocolError,
  checkFds,
  checkGate,
  codecs,
  config,
  configReply,
  cryptoSession,
  decodeBackendReply,
  decodeBackendRequest,
  decodeHeader,
  decodePackedVringBase,
  decodeReply,
  decodeRequest,
  decodeSplitVringBase,
  deviceStateFdReply,
  deviceStateTransfer,
  empty,
  encodeAck,
  encodeBackendAck,
  encodeBackendReply,
  encodeBackendRequest,
  encodeHeader,
  encodePackedVringBase,
  encodeReply,
  encodeRequest,
  inflight,
  iotlb,
  log,
  logBaseReply,
  memRegion,
  memRegionRemove,
  memTable,
  replyKind,
  sharedObject,
  shmemConfig,
  shmemMap,
  u64,
  vringAddr,
  vringArea,
  vringFd,
  vringState,
} from '../../src/vhost-user/codec.js';

// ---------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;
const V = HeaderFlag.VERSION;

/** Expect `fn` to throw a ProtocolError whose message matches `re`. */
function rejects(fn: () => unknown, re: RegExp): ProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect((caught as ProtocolError).message).toMatch(re);
  return caught as ProtocolError;
}

/** Decode a front-end request from raw parts, bypassing encodeHeader (to put bad things on the wire). */
function decodeRaw(request: number, payload: Buffer, fdCount: number, flags: number = V) {
  return decodeRequest({ request, flags, size: payload.length }, payload, fdCount);
}

function wire(buf: Buffer): { header: MessageHeader; body: Buffer } {
  return { header: decodeHeader(buf), body: buf.subarray(HEADER_SIZE) };
}

function rawHeader(request: number, flags: number, size: number): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(flags >>> 0, 4);
  b.writeUInt32LE(size, 8);
  return b;
}

function region(gpa: bigint, size: bigint, uaddr = 0x7f00_0000_0000n, mmapOffset = 0n): MemRegion {
  return { gpa, size, uaddr, mmapOffset };
}

/** A memory-table payload written by hand (nregions field independent of the region list). */
function rawMemTable(nregions: number, regions: MemRegion[], padding = 0): Buffer {
  const b = Buffer.alloc(8 + 32 * regions.length);
  b.writeUInt32LE(nregions, 0);
  b.writeUInt32LE(padding, 4);
  regions.forEach((r, i) => {
    b.writeBigUInt64LE(r.gpa, 8 + 32 * i);
    b.writeBigUInt64LE(r.size, 16 + 32 * i);
    b.writeBigUInt64LE(r.uaddr, 24 + 32 * i);
    b.writeBigUInt64LE(r.mmapOffset, 32 + 32 * i);
  });
  return b;
}

function u64Buf(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

function uuidOf(bytes: Uint8Array): string {
  const h = Buffer.from(bytes).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------------
// arbitraries for valid values
// ---------------------------------------------------------------------------------------------------

const u64Arb = fc.bigInt({ min: 0n, max: U64_MAX });
const u32Arb = fc.integer({ min: 0, max: 0xffff_ffff });
const alignedArb = (align: bigint) => fc.bigInt({ min: 0n, max: U64_MAX / align }).map((v) => v * align);
const bufArb = (minLength: number, maxLength: number) => fc.uint8Array({ minLength, maxLength }).map((a) => Buffer.from(a));

const vringStateArb = fc.record({ index: u32Arb, num: u32Arb });
const vringAddrArb = fc.record({
  index: u32Arb,
  flags: fc.constantFrom(0, 1),
  desc: alignedArb(16n),
  used: alignedArb(4n),
  avail: alignedArb(2n),
  log: u64Arb,
});
const vringFdArb = fc.record({ index: fc.integer({ min: 0, max: 255 }), noFd: fc.boolean() });

/** a region whose three end addresses all fit in a u64 */
const regionArb = fc.bigInt({ min: 1n, max: U64_MAX }).chain((size) =>
  fc.record({
    gpa: fc.bigInt({ min: 0n, max: U64_MAX - size }),
    size: fc.constant(size),
    uaddr: fc.bigInt({ min: 0n, max: U64_MAX - size }),
    mmapOffset: fc.bigInt({ min: 0n, max: U64_MAX - size }),
  }),
);

/** 1..8 regions with disjoint GPA ranges, in random order */
const memTableArb = fc
  .array(
    fc.record({
      gap: fc.bigInt({ min: 0n, max: 1n << 40n }),
      size: fc.bigInt({ min: 1n, max: 1n << 40n }),
      uaddr: fc.bigInt({ min: 0n, max: 1n << 60n }),
      mmapOffset: fc.bigInt({ min: 0n, max: 1n << 60n }),
    }),
    { minLength: 1, maxLength: 8 },
  )
  .chain((parts) => {
    let at = 0n;
    const regions = parts.map((p) => {
      const gpa = at + p.gap;
      at = gpa + p.size;
      return { gpa, size: p.size, uaddr: p.uaddr, mmapOffset: p.mmapOffset };
    });
    return fc.shuffledSubarray(regions, { minLength: regions.length, maxLength: regions.length }).map((rs) => ({ regions: rs }));
  });

const logArb = fc.bigInt({ min: 1n, max: U64_MAX }).chain((mmapSize) =>
  fc.record({ mmapSize: fc.constant(mmapSize), mmapOffset: fc.bigInt({ min: 0n, max: U64_MAX - mmapSize }) }),
);

const configArb = (minData: number) =>
  fc.integer({ min: 0, max: 256 - minData }).chain((offset) =>
    fc.record({ offset: fc.constant(offset), flags: fc.constantFrom(0, 1), data: bufArb(minData, 256 - offset) }),
  );

const inflightArb = fc.bigInt({ min: 0n, max: U64_MAX }).chain((mmapSize) =>
  fc.record({
    mmapSize: fc.constant(mmapSize),
    mmapOffset: fc.bigInt({ min: 0n, max: U64_MAX - mmapSize }),
    numQueues: fc.integer({ min: 1, max: 0xffff }),
    queueSize: fc.integer({ min: 1, max: 32768 }),
  }),
);

const iotlbArb = fc.oneof(
  fc.record({ iova: u64Arb, size: u64Arb, uaddr: u64Arb, perm: fc.integer({ min: 0, max: 3 }), type: fc.constantFrom(1, 3, 4) }),
  fc.bigInt({ min: 1n, max: U64_MAX }).chain((size) =>
    fc.record({
      iova: fc.bigInt({ min: 0n, max: U64_MAX - size }),
      size: fc.constant(size),
      uaddr: fc.bigInt({ min: 0n, max: U64_MAX - size }),
      perm: fc.integer({ min: 0, max: 3 }),
      type: fc.constant(2),
    }),
  ),
);

const vringAreaArb = fc.record({ index: fc.integer({ min: 0, max: 255 }), noFd: fc.boolean(), size: u64Arb, offset: u64Arb });

const sharedObjectArb = fc
  .uint8Array({ minLength: 16, maxLength: 16 })
  .filter((a) => a.some((x) => x !== 0) && a.some((x) => x !== 0xff))
  .map((a) => ({ uuid: uuidOf(a) }));

const deviceStateTransferArb = fc.record({ direction: fc.constantFrom(0, 1), phase: fc.constant(0) });
const deviceStateFdReplyArb = fc.record({ error: fc.integer({ min: 0, max: 255 }), noFd: fc.boolean() });

const shmemConfigArb = fc.record({
  nregions: fc.integer({ min: 0, max: 256 }),
  memSizes: fc.array(u64Arb, { minLength: 256, maxLength: 256 }),
});

const shmemMapArb = fc.bigInt({ min: 1n, max: U64_MAX }).chain((len) =>
  fc.record({
    shmid: fc.integer({ min: 0, max: 255 }),
    fdOffset: fc.bigInt({ min: 0n, max: U64_MAX - len }),
    shmOffset: fc.bigInt({ min: 0n, max: U64_MAX - len }),
    len: fc.constant(len),
    flags: fc.constantFrom(0n, 1n),
  }),
);

// ---------------------------------------------------------------------------------------------------
// constants
// ---------------------------------------------------------------------------------------------------

describe('constants', () => {
  it('front-end request ids are 1..44, unique, and requestName inverts them (A.3)', () => {
    const ids = Object.values(FrontendRequest).sort((a, b) => a - b);
    expect(ids).toEqual(Array.from({ length: 44 }, (_, i) => i + 1));
    for (const [name, id] of Object.entries(FrontendRequest)) expect(requestName(id)).toBe(name);
    expect(FrontendRequest.SET_BACKEND_REQ_FD).toBe(21);
    expect(FrontendRequest.GET_SHMEM_CONFIG).toBe(44);
    expect(requestName(99)).toBe('UNKNOWN(99)');
  });

  it('back-end request ids are 1..10, unique, and backendRequestName inverts them (A.4)', () => {
    const ids = Object.values(BackendRequest).sort((a, b) => a - b);
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    for (const [name, id] of Object.entries(BackendRequest)) expect(backendRequestName(id)).toBe(name);
    expect(backendRequestName(0)).toBe('UNKNOWN(0)');
  });

  it('protocol feature bits match A.5', () => {
    expect(ProtocolFeature).toMatchObject({
      MQ: 0, LOG_SHMFD: 1, RARP: 2, REPLY_ACK: 3, MTU: 4, BACKEND_REQ: 5, CROSS_ENDIAN: 6, CRYPTO_SESSION: 7,
      PAGEFAULT: 8, CONFIG: 9, BACKEND_SEND_FD: 10, HOST_NOTIFIER: 11, INFLIGHT_SHMFD: 12, RESET_DEVICE: 13,
      INBAND_NOTIFICATIONS: 14, CONFIGURE_MEM_SLOTS: 15, STATUS: 16, XEN_MMAP: 17, SHARED_OBJECT: 18,
      DEVICE_STATE: 19, GET_VRING_BASE_INFLIGHT: 20, SHMEM: 21,
    });
  });

  it('header flags: version 1 in bits 0-1, REPLY bit 2, NEED_REPLY bit 3 (A.2)', () => {
    expect([HeaderFlag.VERSION, HeaderFlag.VERSION_MASK, HeaderFlag.REPLY, HeaderFlag.NEED_REPLY]).toEqual([1, 3, 4, 8]);
    expect(HeaderFlag.RESERVED_MASK >>> 0).toBe(~0xf >>> 0);
  });

  it('bit(n) is 1n << n and hasBit tests it; out-of-range bit numbers throw', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 63 }), (n) => bit(n) === 2n ** BigInt(n) && hasBit(bit(n), n) && !hasBit(~bit(n) & U64_MAX, n)));
    expect(() => bit(64)).toThrow(RangeError);
    expect(() => bit(-1)).toThrow(RangeError);
  });

  it('describeProtocolFeatures names each set bit', () => {
    expect(describeProtocolFeatures(bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(40))).toEqual(['MQ', 'REPLY_ACK', 'BIT(40)']);
  });
});

// ---------------------------------------------------------------------------------------------------
// payload codecs: round trips
// ---------------------------------------------------------------------------------------------------

function roundTrip<T>(codec: PayloadCodec<T>, arb: fc.Arbitrary<T>, numRuns = 100): void {
  fc.assert(
    fc.property(arb, (v) => {
      const b = codec.encode(v);
      expect(b.length).toBeGreaterThanOrEqual(codec.size);
      expect(b.length).toBeLessThanOrEqual(codec.maxSize);
      expect(codec.decode(b)).toEqual(v);
    }),
    { numRuns },
  );
}

describe('payload codecs: decode(encode(v)) equals v for every valid v', () => {
  it('empty', () => roundTrip(empty, fc.constant(undefined), 1));
  it('u64', () => roundTrip(u64, u64Arb));
  it('vringState', () => roundTrip(vringState, vringStateArb));
  it('vringAddr (aligned desc/used/avail)', () => roundTrip(vringAddr, vringAddrArb));
  it('vringFd', () => roundTrip(vringFd, vringFdArb));
  it('memTable (1..8 disjoint regions)', () => roundTrip(memTable, memTableArb));
  it('memRegion (ADD_MEM_REG single region)', () => roundTrip(memRegion, regionArb));
  it('memRegionRemove', () => roundTrip(memRegionRemove, regionArb));
  it('log', () => roundTrip(log, logArb));
  it('logBaseReply (u64 or log echo)', () => roundTrip(logBaseReply, fc.oneof(u64Arb, logArb)));
  it('config', () => roundTrip(config, configArb(0)));
  it('configReply', () => roundTrip(configReply, configArb(0)));
  it('inflight', () => roundTrip(inflight, inflightArb));
  it('iotlb', () => roundTrip(iotlb, iotlbArb));
  it('vringArea', () => roundTrip(vringArea, vringAreaArb));
  it('sharedObject', () => roundTrip(sharedObject, sharedObjectArb));
  it('deviceStateTransfer', () => roundTrip(deviceStateTransfer, deviceStateTransferArb));
  it('deviceStateFdReply', () => roundTrip(deviceStateFdReply, deviceStateFdReplyArb));
  it('cryptoSession (opaque)', () => roundTrip(cryptoSession, bufArb(8, 600)));
  it('shmemConfig', () => roundTrip(shmemConfig, shmemConfigArb, 20));
  it('shmemMap', () => roundTrip(shmemMap, shmemMapArb));

  it('every exported codec has a round-trip test above', () => {
    expect(Object.keys(codecs).sort()).toEqual(
      [
        'empty', 'u64', 'vringState', 'vringAddr', 'vringFd', 'memTable', 'memRegion', 'memRegionRemove', 'log',
        'logBaseReply', 'config', 'configReply', 'inflight', 'iotlb', 'vringArea', 'sharedObject',
        'deviceStateTransfer', 'deviceStateFdReply', 'cryptoSession', 'shmemConfig', 'shmemMap',
      ].sort(),
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// payload codecs: byte layouts (round trips cannot see two swapped fields)
// ---------------------------------------------------------------------------------------------------

describe('payload layouts (A.6 offsets, little-endian)', () => {
  it('vring address: index@0 flags@4 desc@8 used@16 avail@24 log@32, 40 bytes (order desc, used, avail)', () => {
    const b = vringAddr.encode({ index: 3, flags: 1, desc: 0x1000n, used: 0x2000n, avail: 0x3000n, log: 0x4000n });
    expect(b.length).toBe(40);
    expect([b.readUInt32LE(0), b.readUInt32LE(4)]).toEqual([3, 1]);
    expect([b.readBigUInt64LE(8), b.readBigUInt64LE(16), b.readBigUInt64LE(24), b.readBigUInt64LE(32)]).toEqual([
      0x1000n, 0x2000n, 0x3000n, 0x4000n,
    ]);
  });

  it('vring fd u64: index in bits 0-7, no-fd in bit 8', () => {
    expect(vringFd.encode({ index: 0x12, noFd: true }).readBigUInt64LE(0)).toBe(0x112n);
    expect(vringFd.decode(u64Buf(0x1ffn))).toEqual({ index: 0xff, noFd: true });
    expect(vringFd.decode(u64Buf(0x07n))).toEqual({ index: 7, noFd: false });
  });

  it('memory table: nregions@0 padding@4 then 32-byte regions gpa, size, uaddr, mmap_offset', () => {
    const b = memTable.encode({ regions: [region(0x1000n, 0x2000n, 0x3000n, 0x4000n), region(0x10000n, 0x100n, 0x5000n, 0n)] });
    expect(b.length).toBe(8 + 64);
    expect([b.readUInt32LE(0), b.readUInt32LE(4)]).toEqual([2, 0]);
    expect([b.readBigUInt64LE(8), b.readBigUInt64LE(16), b.readBigUInt64LE(24), b.readBigUInt64LE(32)]).toEqual([
      0x1000n, 0x2000n, 0x3000n, 0x4000n,
    ]);
    expect(b.readBigUInt64LE(40)).toBe(0x10000n);
  });

  it('single region: u64 padding then the region, 40 bytes', () => {
    const b = memRegion.encode(region(0x1000n, 0x2000n, 0x3000n, 0x4000n));
    expect(b.length).toBe(40);
    expect([b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readBigUInt64LE(16), b.readBigUInt64LE(24), b.readBigUInt64LE(32)]).toEqual([
      0n, 0x1000n, 0x2000n, 0x3000n, 0x4000n,
    ]);
  });

  it('inflight: mmap_size@0 mmap_offset@8 num_queues@16 queue_size@18, 24 bytes with padding', () => {
    const b = inflight.encode({ mmapSize: 0x1000n, mmapOffset: 0x40n, numQueues: 2, queueSize: 256 });
    expect(b.length).toBe(24);
    expect([b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readUInt16LE(16), b.readUInt16LE(18), b.readUInt32LE(20)]).toEqual([
      0x1000n, 0x40n, 2, 256, 0,
    ]);
  });

  it('IOTLB: iova@0 size@8 uaddr@16 perm@24 type@25, 32 bytes', () => {
    const b = iotlb.encode({ iova: 1n, size: 2n, uaddr: 3n, perm: 3, type: 2 });
    expect(b.length).toBe(32);
    expect([b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readBigUInt64LE(16), b[24], b[25]]).toEqual([1n, 2n, 3n, 3, 2]);
  });

  it('config: offset@0 size@4 flags@8 then the bytes', () => {
    const b = config.encode({ offset: 4, flags: 1, data: Buffer.from([9, 8, 7]) });
    expect([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8), [...b.subarray(12)]]).toEqual([4, 3, 1, [9, 8, 7]]);
  });

  it('shared object UUID bytes are in RFC 4122 (text) order', () => {
    const b = sharedObject.encode({ uuid: '00112233-4455-6677-8899-aabbccddeeff' });
    expect(b.toString('hex')).toBe('00112233445566778899aabbccddeeff');
  });

  it('device state fd reply: error in bits 0-7, no-fd in bit 8 (rust-vmm error reply 0x101)', () => {
    expect(deviceStateFdReply.decode(u64Buf(0x101n))).toEqual({ error: 1, noFd: true });
    expect(deviceStateFdReply.encode({ error: 0, noFd: true }).readBigUInt64LE(0)).toBe(0x100n);
  });

  it('vring area: fd u64@0 size@8 offset@16', () => {
    const b = vringArea.encode({ index: 2, noFd: false, size: 4096n, offset: 8192n });
    expect([b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readBigUInt64LE(16)]).toEqual([2n, 4096n, 8192n]);
  });

  it('shmem map: shmid@0 fd_offset@8 shm_offset@16 len@24 flags@32, 40 bytes', () => {
    const b = shmemMap.encode({ shmid: 7, fdOffset: 1n, shmOffset: 2n, len: 3n, flags: 1n });
    expect(b.length).toBe(40);
    expect([b[0], b.readBigUInt64LE(8), b.readBigUInt64LE(16), b.readBigUInt64LE(24), b.readBigUInt64LE(32)]).toEqual([7, 1n, 2n, 3n, 1n]);
  });

  it('shmem config: nregions@0, padding, 256 u64 sizes: 2056 bytes', () => {
    const memSizes = Array.from({ length: 256 }, (_, i) => BigInt(i));
    const b = shmemConfig.encode({ nregions: 3, memSizes });
    expect(b.length).toBe(2056);
    expect([b.readUInt32LE(0), b.readBigUInt64LE(8 + 8 * 255)]).toEqual([3, 255n]);
  });

  it('header: request@0 flags@4 size@8', () => {
    const b = encodeHeader({ request: 9, flags: V | HeaderFlag.NEED_REPLY, size: 40 });
    expect([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8)]).toEqual([9, 9, 40]);
  });

  it('packed vring base: avail idx bits 0-14, avail wrap 15, used idx 16-30, used wrap 31; round trip', () => {
    expect(encodePackedVringBase({ availIdx: 5, availWrap: true, usedIdx: 3, usedWrap: true })).toBe(0x8003_8005);
    fc.assert(
      fc.property(u32Arb, (num) => encodePackedVringBase(decodePackedVringBase(num)) === num),
    );
  });

  it('split vring base: bits 16-31 are reserved', () => {
    expect(decodeSplitVringBase(0xffff)).toBe(0xffff);
    rejects(() => decodeSplitVringBase(0x1_0000), /reserved bits 16-31/);
  });
});

// ---------------------------------------------------------------------------------------------------
// header rules (A.2)
// ---------------------------------------------------------------------------------------------------

describe('header rules', () => {
  it('header round trip: decodeHeader(encodeHeader(h)) equals h for valid headers', () => {
    fc.assert(
      fc.property(
        u32Arb,
        fc.constantFrom(V, V | HeaderFlag.REPLY, V | HeaderFlag.NEED_REPLY, V | HeaderFlag.REPLY | HeaderFlag.NEED_REPLY),
        fc.integer({ min: 0, max: MAX_PAYLOAD }),
        (request, flags, size) => {
          expect(decodeHeader(encodeHeader({ request, flags, size }))).toEqual({ request, flags, size });
        },
      ),
    );
  });

  it('a version other than 1 is rejected', () => {
    for (const version of [0, 2, 3]) {
      rejects(() => decodeHeader(rawHeader(1, version, 0)), new RegExp(`GET_FEATURES: header version ${version}`));
      rejects(() => encodeHeader({ request: 1, flags: version, size: 0 }), /header version/);
    }
  });

  it('reserved flag bits 4..31 are rejected', () => {
    fc.assert(
      fc.property(fc.integer({ min: 4, max: 31 }), (n) => {
        const e = rejects(() => decodeHeader(rawHeader(3, V | (1 << n), 0)), /reserved header flag bits/);
        expect(e.request).toBe(3);
        rejects(() => encodeHeader({ request: 3, flags: (V | (1 << n)) >>> 0, size: 0 }), /reserved header flag bits/);
      }),
    );
  });

  it('a payload size above 4096 is rejected; 4096 is accepted', () => {
    rejects(() => decodeHeader(rawHeader(5, V, MAX_PAYLOAD + 1)), /payload size 4097 is more than 4096/);
    rejects(() => decodeHeader(rawHeader(5, V, 0xffff_ffff)), /more than 4096/);
    expect(decodeHeader(rawHeader(5, V, MAX_PAYLOAD)).size).toBe(MAX_PAYLOAD);
  });

  it('a header shorter than 12 bytes is rejected; a longer buffer is read from its start', () => {
    rejects(() => decodeHeader(Buffer.alloc(11)), /header is 11 bytes, expected 12/);
    const b = Buffer.concat([Buffer.alloc(4), rawHeader(2, V, 8), Buffer.alloc(8)]);
    expect(decodeHeader(b.subarray(4))).toEqual({ request: 2, flags: V, size: 8 });
  });

  it('back-end channel headers are named with back-end request names', () => {
    rejects(() => decodeHeader(rawHeader(3, 0, 0), 'backend'), /^BACKEND_VRING_HOST_NOTIFIER_MSG: header version 0/);
  });
});

// ---------------------------------------------------------------------------------------------------
// message tables
// ---------------------------------------------------------------------------------------------------

describe('message tables (A.3, A.4, A.7)', () => {
  it('every front-end request id has a spec with its name and id', () => {
    for (const [name, id] of Object.entries(FrontendRequest)) {
      expect(FRONTEND_MESSAGES[id]).toBe(FRONTEND_MESSAGES_BY_NAME[name as FrontendRequestName]);
      expect(FRONTEND_MESSAGES[id]).toMatchObject({ id, name });
    }
    expect(Object.keys(FRONTEND_MESSAGES)).toHaveLength(44);
  });

  it('every back-end request id has a spec with its name and id', () => {
    for (const [name, id] of Object.entries(BackendRequest)) {
      expect(BACKEND_MESSAGES[id]).toBe(BACKEND_MESSAGES_BY_NAME[name as BackendRequestName]);
      expect(BACKEND_MESSAGES[id]).toMatchObject({ id, name });
    }
    expect(Object.keys(BACKEND_MESSAGES)).toHaveLength(10);
  });

  it('fd ranges follow A.3', () => {
    const fds = (n: FrontendRequestName) => FRONTEND_MESSAGES_BY_NAME[n].fds;
    expect(fds('SET_MEM_TABLE')).toEqual({ min: 1, max: 8 });
    for (const n of ['SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR', 'REM_MEM_REG'] as const) expect(fds(n)).toEqual({ min: 0, max: 1 });
    const one = ['SET_LOG_BASE', 'SET_LOG_FD', 'SET_BACKEND_REQ_FD', 'SET_INFLIGHT_FD', 'GPU_SET_SOCKET', 'SET_DEVICE_STATE_FD', 'ADD_MEM_REG'];
    for (const n of one) expect(fds(n as FrontendRequestName)).toEqual({ min: 1, max: 1 });
    const rest = Object.keys(FrontendRequest).filter(
      (n) => !one.includes(n) && !['SET_MEM_TABLE', 'SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR', 'REM_MEM_REG'].includes(n),
    );
    expect(rest).toHaveLength(44 - 12);
    for (const n of rest) expect(fds(n as FrontendRequestName)).toEqual({ min: 0, max: 0 });
  });

  it('protocol feature gates follow A.3', () => {
    const gate = (n: FrontendRequestName) => FRONTEND_MESSAGES_BY_NAME[n].protocolFeature;
    const P = ProtocolFeature;
    const expected: Partial<Record<FrontendRequestName, number>> = {
      GET_QUEUE_NUM: P.MQ, GET_CONFIG: P.CONFIG, SET_CONFIG: P.CONFIG, ADD_MEM_REG: P.CONFIGURE_MEM_SLOTS,
      REM_MEM_REG: P.CONFIGURE_MEM_SLOTS, GET_MAX_MEM_SLOTS: P.CONFIGURE_MEM_SLOTS, SET_STATUS: P.STATUS,
      GET_STATUS: P.STATUS, GET_INFLIGHT_FD: P.INFLIGHT_SHMFD, SET_INFLIGHT_FD: P.INFLIGHT_SHMFD,
      RESET_DEVICE: P.RESET_DEVICE, SET_BACKEND_REQ_FD: P.BACKEND_REQ, SEND_RARP: P.RARP, NET_SET_MTU: P.MTU,
      SET_LOG_BASE: P.LOG_SHMFD, VRING_KICK: P.INBAND_NOTIFICATIONS, SET_VRING_ENDIAN: P.CROSS_ENDIAN,
      CREATE_CRYPTO_SESSION: P.CRYPTO_SESSION, CLOSE_CRYPTO_SESSION: P.CRYPTO_SESSION, POSTCOPY_ADVISE: P.PAGEFAULT,
      POSTCOPY_LISTEN: P.PAGEFAULT, POSTCOPY_END: P.PAGEFAULT, GET_SHARED_OBJECT: P.SHARED_OBJECT,
      SET_DEVICE_STATE_FD: P.DEVICE_STATE, CHECK_DEVICE_STATE: P.DEVICE_STATE, GET_SHMEM_CONFIG: P.SHMEM,
    };
    for (const n of Object.keys(FrontendRequest) as FrontendRequestName[]) expect([n, gate(n)]).toEqual([n, expected[n]]);
    expect(FRONTEND_MESSAGES_BY_NAME.SET_VRING_ENABLE.virtioFeature).toBe(VHOST_USER_F_PROTOCOL_FEATURES);
  });

  it('always-reply messages follow A.7', () => {
    const always = Object.values(FRONTEND_MESSAGES)
      .filter((s) => s.alwaysReplies)
      .map((s) => s.name)
      .sort();
    expect(always).toEqual(
      [
        'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'GET_VRING_BASE', 'SET_LOG_BASE', 'GET_INFLIGHT_FD', 'GET_QUEUE_NUM',
        'GET_CONFIG', 'IOTLB_MSG', 'POSTCOPY_ADVISE', 'POSTCOPY_END', 'GET_MAX_MEM_SLOTS', 'GET_STATUS',
        'GET_SHARED_OBJECT', 'SET_DEVICE_STATE_FD', 'CHECK_DEVICE_STATE', 'GET_SHMEM_CONFIG', 'CREATE_CRYPTO_SESSION',
      ].sort(),
    );
    const postcopy = Object.values(FRONTEND_MESSAGES).filter((s) => s.postcopyReply).map((s) => s.name).sort();
    expect(postcopy).toEqual(['ADD_MEM_REG', 'SET_MEM_TABLE']);
    for (const s of Object.values(FRONTEND_MESSAGES)) expect([s.name, s.reply !== null]).toEqual([s.name, s.alwaysReplies || s.postcopyReply]);
  });

  it('replyKind: explicit when always, explicit in postcopy for SET_MEM_TABLE, ack on NEED_REPLY, else none', () => {
    const S = FRONTEND_MESSAGES_BY_NAME;
    expect(replyKind(S.GET_FEATURES, { needReply: false })).toBe('explicit');
    expect(replyKind(S.CHECK_DEVICE_STATE, { needReply: false })).toBe('explicit');
    expect(replyKind(S.GET_FEATURES, { needReply: true })).toBe('explicit');
    expect(replyKind(S.SET_MEM_TABLE, { needReply: true, postcopy: true })).toBe('explicit');
    expect(replyKind(S.SET_MEM_TABLE, { needReply: true })).toBe('ack');
    expect(replyKind(S.SET_VRING_NUM, { needReply: true })).toBe('ack');
    expect(replyKind(S.SET_VRING_NUM, { needReply: false, postcopy: true })).toBe('none');
  });

  it('checkGate rejects a message whose protocol or virtio feature was not negotiated', () => {
    const S = FRONTEND_MESSAGES_BY_NAME;
    const e = rejects(
      () => checkGate(S.GET_QUEUE_NUM, { features: 0n, protocolFeatures: bit(ProtocolFeature.CONFIG) }),
      /^GET_QUEUE_NUM needs protocol feature MQ \(bit 0\)/,
    );
    expect(e.request).toBe(FrontendRequest.GET_QUEUE_NUM);
    expect(() => checkGate(S.GET_QUEUE_NUM, { features: 0n, protocolFeatures: bit(ProtocolFeature.MQ) })).not.toThrow();
    rejects(() => checkGate(S.SET_VRING_ENABLE, { features: 0n, protocolFeatures: U64_MAX }), /virtio feature bit 30/);
    expect(() => checkGate(S.SET_VRING_ENABLE, { features: bit(30), protocolFeatures: 0n })).not.toThrow();
    expect(() => checkGate(S.GET_FEATURES, { features: 0n, protocolFeatures: 0n })).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------------
// full requests and replies: round trips
// ---------------------------------------------------------------------------------------------------

type FrontendArbs = { [K in FrontendRequestName]: fc.Arbitrary<FrontendRequestPayloads[K]> };
const none = fc.constant(undefined);
const frontendArbs: FrontendArbs = {
  GET_FEATURES: none,
  SET_FEATURES: u64Arb,
  SET_OWNER: none,
  RESET_OWNER: none,
  SET_MEM_TABLE: memTableArb,
  SET_LOG_BASE: logArb,
  SET_LOG_FD: none,
  SET_VRING_NUM: fc.record({ index: u32Arb, num: fc.integer({ min: 1, max: 32768 }) }),
  SET_VRING_ADDR: vringAddrArb,
  SET_VRING_BASE: vringStateArb,
  GET_VRING_BASE: vringStateArb,
  SET_VRING_KICK: vringFdArb,
  SET_VRING_CALL: vringFdArb,
  SET_VRING_ERR: vringFdArb,
  GET_PROTOCOL_FEATURES: none,
  SET_PROTOCOL_FEATURES: u64Arb,
  GET_QUEUE_NUM: none,
  SET_VRING_ENABLE: fc.record({ index: u32Arb, num: fc.constantFrom(0, 1) }),
  SEND_RARP: u64Arb,
  NET_SET_MTU: u64Arb,
  SET_BACKEND_REQ_FD: none,
  IOTLB_MSG: iotlbArb,
  SET_VRING_ENDIAN: fc.record({ index: u32Arb, num: fc.constantFrom(0, 1) }),
  GET_CONFIG: configArb(1),
  SET_CONFIG: configArb(1),
  CREATE_CRYPTO_SESSION: bufArb(8, 300),
  CLOSE_CRYPTO_SESSION: u64Arb,
  POSTCOPY_ADVISE: none,
  POSTCOPY_LISTEN: none,
  POSTCOPY_END: none,
  GET_INFLIGHT_FD: inflightArb,
  SET_INFLIGHT_FD: inflightArb.filter((d) => d.mmapSize > 0n),
  GPU_SET_SOCKET: none,
  RESET_DEVICE: none,
  VRING_KICK: vringStateArb,
  GET_MAX_MEM_SLOTS: none,
  ADD_MEM_REG: regionArb,
  REM_MEM_REG: regionArb,
  SET_STATUS: fc.bigInt({ min: 0n, max: 0xffn }),
  GET_STATUS: none,
  GET_SHARED_OBJECT: sharedObjectArb,
  SET_DEVICE_STATE_FD: deviceStateTransferArb,
  CHECK_DEVICE_STATE: none,
  GET_SHMEM_CONFIG: none,
};

type ReplyArbs = { [K in FrontendRequestName]?: fc.Arbitrary<FrontendReplyPayloads[K]> };
const replyArbs: ReplyArbs = {
  GET_FEATURES: u64Arb,
  SET_MEM_TABLE: memTableArb,
  SET_LOG_BASE: fc.oneof(u64Arb, logArb),
  GET_VRING_BASE: vringStateArb,
  GET_PROTOCOL_FEATURES: u64Arb,
  GET_QUEUE_NUM: u64Arb,
  IOTLB_MSG: u64Arb,
  GET_CONFIG: configArb(0),
  CREATE_CRYPTO_SESSION: bufArb(8, 300),
  POSTCOPY_ADVISE: none,
  POSTCOPY_END: u64Arb,
  GET_INFLIGHT_FD: inflightArb,
  GET_MAX_MEM_SLOTS: u64Arb,
  ADD_MEM_REG: regionArb,
  GET_STATUS: u64Arb,
  GET_SHARED_OBJECT: u64Arb,
  SET_DEVICE_STATE_FD: deviceStateFdReplyArb,
  CHECK_DEVICE_STATE: u64Arb,
  GET_SHMEM_CONFIG: shmemConfigArb,
};

type BackendArbs = { [K in BackendRequestName]: fc.Arbitrary<BackendRequestPayloads[K]> };
const backendArbs: BackendArbs = {
  BACKEND_IOTLB_MSG: fc.record({ iova: u64Arb, size: u64Arb, uaddr: u64Arb, perm: fc.integer({ min: 0, max: 3 }), type: fc.constantFrom(1, 4) }),
  BACKEND_CONFIG_CHANGE_MSG: none,
  BACKEND_VRING_HOST_NOTIFIER_MSG: vringAreaArb,
  BACKEND_VRING_CALL: vringStateArb,
  BACKEND_VRING_ERR: vringStateArb,
  BACKEND_SHARED_OBJECT_ADD: sharedObjectArb,
  BACKEND_SHARED_OBJECT_REMOVE: sharedObjectArb,
  BACKEND_SHARED_OBJECT_LOOKUP: sharedObjectArb,
  BACKEND_SHMEM_MAP: shmemMapArb,
  BACKEND_SHMEM_UNMAP: shmemMapArb,
};

/** one valid payload for a front-end request (fixed seed) */
function sampleOf(name: FrontendRequestName): unknown {
  return fc.sample(frontendArbs[name] as fc.Arbitrary<unknown>, { numRuns: 1, seed: 42 })[0];
}

function fdsFor<Req>(s: MessageSpec<Req, unknown>, payload: Req): number {
  return s.expectFds?.(payload).count ?? s.fds.min;
}

function replyFdsFor<Rep>(s: MessageSpec<unknown, Rep>, payload: Rep): number {
  return s.expectReplyFds?.(payload).count ?? s.replyFds.min;
}

describe('full messages: decode(encode(m)) equals m', () => {
  it.each(Object.keys(FrontendRequest) as FrontendRequestName[])('front-end request %s', (name) => {
    const s = FRONTEND_MESSAGES_BY_NAME[name] as MessageSpec;
    const arb = frontendArbs[name] as fc.Arbitrary<unknown>;
    fc.assert(
      fc.property(arb, fc.boolean(), (payload, needReply) => {
        const fdCount = fdsFor(s, payload);
        const buf = encodeRequest(name, payload as never, { needReply, fdCount });
        const { header, body } = wire(buf);
        expect(header).toEqual({ request: s.id, flags: V | (needReply ? HeaderFlag.NEED_REPLY : 0), size: buf.length - HEADER_SIZE });
        const d = decodeRequest(header, body, fdCount);
        expect(d).toEqual({ name, request: s.id, flags: header.flags, needReply, payload, fdCount });
      }),
      { numRuns: name === 'SET_MEM_TABLE' ? 100 : 30 },
    );
  });

  it.each(Object.keys(replyArbs) as FrontendRequestName[])('explicit reply to %s (REPLY set, id echoed)', (name) => {
    const s = FRONTEND_MESSAGES_BY_NAME[name] as MessageSpec;
    const arb = replyArbs[name] as fc.Arbitrary<unknown>;
    fc.assert(
      fc.property(arb, (payload) => {
        const fdCount = replyFdsFor(s, payload);
        const buf = encodeReply(name, payload as never, { fdCount });
        const { header, body } = wire(buf);
        expect(header.request).toBe(s.id);
        expect(header.flags).toBe(V | HeaderFlag.REPLY);
        expect(decodeReply(name, header, body, fdCount, 'explicit')).toEqual(payload);
      }),
      { numRuns: name === 'GET_SHMEM_CONFIG' ? 10 : 30 },
    );
  });

  it('every message with an explicit reply has a reply round trip above', () => {
    const withReply = Object.values(FRONTEND_MESSAGES).filter((s) => s.reply).map((s) => s.name).sort();
    expect(Object.keys(replyArbs).sort()).toEqual(withReply);
  });

  it('REPLY_ACK: ack u64 round trip for every front-end request', () => {
    fc.assert(
      fc.property(fc.constantFrom(...(Object.keys(FrontendRequest) as FrontendRequestName[])), u64Arb, (name, status) => {
        const { header, body } = wire(encodeAck(name, status));
        expect(header).toEqual({ request: FrontendRequest[name], flags: V | HeaderFlag.REPLY, size: 8 });
        expect(decodeReply(name, header, body, 0, 'ack')).toBe(status);
      }),
    );
  });

  it.each(Object.keys(BackendRequest) as BackendRequestName[])('back-end request %s', (name) => {
    const s = BACKEND_MESSAGES_BY_NAME[name] as MessageSpec;
    const arb = backendArbs[name] as fc.Arbitrary<unknown>;
    fc.assert(
      fc.property(arb, fc.boolean(), (payload, needReply) => {
        const fdCount = fdsFor(s, payload);
        const { header, body } = wire(encodeBackendRequest(name, payload as never, { needReply, fdCount }));
        expect(decodeBackendRequest(header, body, fdCount)).toEqual({ name, request: s.id, flags: header.flags, needReply, payload, fdCount });
      }),
      { numRuns: 30 },
    );
  });

  it('back-end channel: SHARED_OBJECT_LOOKUP explicit reply and acks round trip', () => {
    fc.assert(
      fc.property(u64Arb, fc.integer({ min: 0, max: 1 }), (v, fds) => {
        const r = wire(encodeBackendReply('BACKEND_SHARED_OBJECT_LOOKUP', v, { fdCount: fds }));
        expect(decodeBackendReply('BACKEND_SHARED_OBJECT_LOOKUP', r.header, r.body, fds, 'explicit')).toBe(v);
        const a = wire(encodeBackendAck('BACKEND_SHMEM_MAP', v));
        expect(decodeBackendReply('BACKEND_SHMEM_MAP', a.header, a.body, 0, 'ack')).toBe(v);
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// request rejections
// ---------------------------------------------------------------------------------------------------

describe('request framing rules', () => {
  it('an unknown request id is rejected, with the id attached', () => {
    for (const id of [0, 45, 99, 0xffff_ffff]) {
      const e = rejects(() => decodeRaw(id, Buffer.alloc(0), 0), new RegExp(`unknown front-end request id ${id}`));
      expect(e.request).toBe(id);
    }
    rejects(() => decodeBackendRequest({ request: 11, flags: V, size: 0 }, Buffer.alloc(0), 0), /unknown back-end request id 11/);
  });

  const wrongSizes = (s: MessageSpec): number[] => {
    const c = s.request;
    const out = c.fixed ? [c.size + 1, c.size + 8] : [];
    if (c.size > 0) out.push(c.size - 1, 0);
    return out;
  };

  it.each(Object.values(FRONTEND_MESSAGES).map((s) => [s.name, s] as const))('%s: a payload of the wrong size is rejected', (name, s) => {
    const sizes = wrongSizes(s);
    expect(sizes.length).toBeGreaterThan(0);
    for (const n of sizes) {
      const e = rejects(() => decodeRaw(s.id, Buffer.alloc(n), MAX_FDS), new RegExp(`^${name}: .*payload is ${n} bytes, expected`));
      expect(e.request).toBe(s.id);
    }
  });

  it.each(Object.values(BACKEND_MESSAGES).map((s) => [s.name, s] as const))('%s: a payload of the wrong size is rejected', (name, s) => {
    for (const n of wrongSizes(s)) {
      rejects(
        () => decodeBackendRequest({ request: s.id, flags: V, size: n }, Buffer.alloc(n), 1),
        new RegExp(`^${name}: .*payload is ${n} bytes, expected`),
      );
    }
  });

  it('SET_LOG_BASE carries the 16-byte log struct, not the u64 of the spec table', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_LOG_BASE, u64Buf(4096n), 1), /SET_LOG_BASE: log payload is 8 bytes, expected 16/);
    expect(decodeRaw(FrontendRequest.SET_LOG_BASE, log.encode({ mmapSize: 4096n, mmapOffset: 0n }), 1).name).toBe('SET_LOG_BASE');
  });

  it('a request with the REPLY flag is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_OWNER, Buffer.alloc(0), 0, V | HeaderFlag.REPLY), /^SET_OWNER: a request must not have the REPLY flag/);
  });

  it('a request header with a bad version or reserved bits is rejected by decodeRequest too', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_OWNER, Buffer.alloc(0), 0, 2), /header version 2/);
    rejects(() => decodeRaw(FrontendRequest.SET_OWNER, Buffer.alloc(0), 0, V | 0x10), /reserved header flag bits 0x10/);
  });

  it('a header size that differs from the payload length is rejected', () => {
    rejects(
      () => decodeRequest({ request: FrontendRequest.SET_FEATURES, flags: V, size: 16 }, Buffer.alloc(8), 0),
      /SET_FEATURES: header size is 16, but the payload is 8 bytes/,
    );
  });

  it('NEED_REPLY is reported as needReply', () => {
    expect(decodeRaw(FrontendRequest.SET_OWNER, Buffer.alloc(0), 0, V | HeaderFlag.NEED_REPLY).needReply).toBe(true);
    expect(decodeRaw(FrontendRequest.SET_OWNER, Buffer.alloc(0), 0).needReply).toBe(false);
  });

  it('encodeRequest validates the payload unless unchecked, and never sets REPLY', () => {
    const bad = { index: 0, flags: 0, desc: 0x1003n, used: 0n, avail: 0n, log: 0n };
    rejects(() => encodeRequest('SET_VRING_ADDR', bad), /^SET_VRING_ADDR: desc address 0x1003 is not 16-byte aligned$/);
    const buf = encodeRequest('SET_VRING_ADDR', bad, { unchecked: true });
    expect(decodeHeader(buf).flags & HeaderFlag.REPLY).toBe(0);
    const { header, body } = wire(buf);
    const e = rejects(() => decodeRequest(header, body, 0), /^SET_VRING_ADDR: desc address 0x1003 is not 16-byte aligned$/);
    expect(e.request).toBe(FrontendRequest.SET_VRING_ADDR);
  });

  it('encodeRequest with fdCount checks the fds', () => {
    rejects(() => encodeRequest('SET_LOG_FD', undefined, { fdCount: 0 }), /SET_LOG_FD: 0 fds attached, expected exactly 1/);
    rejects(() => encodeRequest('SET_VRING_CALL', { index: 0, noFd: true }, { fdCount: 1 }), /no-fd bit \(8\) is set/);
  });
});

describe('fd count rules', () => {
  const S = FRONTEND_MESSAGES_BY_NAME;
  const table = (n: number) => memTable.encode({ regions: Array.from({ length: n }, (_, i) => region(BigInt(i) << 32n, 0x1000n)) });

  it(`more than ${MAX_FDS} fds are rejected on any message`, () => {
    rejects(() => decodeRaw(FrontendRequest.SET_MEM_TABLE, table(8), 9), /9 fds attached, at most 8/);
  });

  it.each(Object.values(FRONTEND_MESSAGES).filter((s) => s.fds.max === 0).map((s) => [s.name, s] as const))(
    '%s takes no fds: one fd is rejected',
    (name, s) => {
      const payload = sampleOf(name as FrontendRequestName);
      const body = s.request.encode(payload);
      expect(() => decodeRaw(s.id, body, 0)).not.toThrow();
      rejects(() => decodeRaw(s.id, body, 1), new RegExp(`^${name}: 1 fds attached, expected exactly 0`));
    },
  );

  it.each(Object.values(FRONTEND_MESSAGES).filter((s) => s.fds.min === 1 && s.fds.max === 1).map((s) => [s.name, s] as const))(
    '%s takes exactly one fd: 0 and 2 are rejected',
    (name, s) => {
      const payload = sampleOf(name as FrontendRequestName);
      const body = s.request.encode(payload);
      expect(() => decodeRaw(s.id, body, 1)).not.toThrow();
      rejects(() => decodeRaw(s.id, body, 0), new RegExp(`^${name}: 0 fds attached, expected exactly 1`));
      rejects(() => decodeRaw(s.id, body, 2), new RegExp(`^${name}: 2 fds attached, expected exactly 1`));
    },
  );

  it('SET_MEM_TABLE: the fd count must equal nregions', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 8 }), (n, k) => {
        fc.pre(n !== k);
        rejects(() => decodeRaw(FrontendRequest.SET_MEM_TABLE, table(n), k), k === 0 ? /0 fds attached, expected 1 to 8/ : new RegExp(`${k} fds attached, but ${n} regions need one fd each`));
      }),
    );
    expect(decodeRaw(FrontendRequest.SET_MEM_TABLE, table(3), 3).fdCount).toBe(3);
  });

  it('checkFds applies the payload-dependent rule on its own', () => {
    rejects(() => checkFds(S.SET_MEM_TABLE, { regions: [region(0n, 1n), region(1n, 1n)] }, 1), /SET_MEM_TABLE: 1 fds attached, but 2 regions/);
    expect(() => checkFds(S.SET_MEM_TABLE, { regions: [region(0n, 1n), region(1n, 1n)] }, 2)).not.toThrow();
  });

  it.each(['SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR'] as const)('%s with the no-fd bit and an fd is rejected', (name) => {
    rejects(() => decodeRaw(FrontendRequest[name], u64Buf(0x100n), 1), new RegExp(`^${name}: 1 fds attached, but the no-fd bit \\(8\\) is set`));
    expect(decodeRaw(FrontendRequest[name], u64Buf(0x100n), 0).payload).toEqual({ index: 0, noFd: true });
  });

  it.each(['SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR'] as const)('%s without the no-fd bit and without an fd is rejected', (name) => {
    rejects(() => decodeRaw(FrontendRequest[name], u64Buf(0x3n), 0), new RegExp(`^${name}: 0 fds attached, but the no-fd bit \\(8\\) is clear`));
    expect(decodeRaw(FrontendRequest[name], u64Buf(0x3n), 1).payload).toEqual({ index: 3, noFd: false });
  });

  it('vring fd values with bits above 8 set are rejected', () => {
    fc.assert(
      fc.property(fc.integer({ min: 9, max: 63 }), (n) => {
        rejects(() => decodeRaw(FrontendRequest.SET_VRING_KICK, u64Buf((1n << BigInt(n)) | 1n), 1), /reserved bits .* set \(only bits 0-8 are defined\)/);
      }),
    );
  });

  it('REM_MEM_REG accepts 0 or 1 fd, not 2', () => {
    const body = memRegion.encode(region(0x1000n, 0x1000n));
    expect(decodeRaw(FrontendRequest.REM_MEM_REG, body, 0).name).toBe('REM_MEM_REG');
    expect(decodeRaw(FrontendRequest.REM_MEM_REG, body, 1).name).toBe('REM_MEM_REG');
    rejects(() => decodeRaw(FrontendRequest.REM_MEM_REG, body, 2), /REM_MEM_REG: 2 fds attached, expected 0 to 1/);
  });

  it('BACKEND_VRING_HOST_NOTIFIER_MSG: fd presence follows the no-fd bit', () => {
    const withFd = vringArea.encode({ index: 1, noFd: false, size: 4096n, offset: 0n });
    const noFd = vringArea.encode({ index: 1, noFd: true, size: 0n, offset: 0n });
    const dec = (b: Buffer, fds: number) => decodeBackendRequest({ request: 3, flags: V, size: b.length }, b, fds);
    expect(dec(withFd, 1).fdCount).toBe(1);
    expect(dec(noFd, 0).fdCount).toBe(0);
    rejects(() => dec(withFd, 0), /no-fd bit \(8\) is clear/);
    rejects(() => dec(noFd, 1), /no-fd bit \(8\) is set/);
  });
});

// ---------------------------------------------------------------------------------------------------
// payload rejections
// ---------------------------------------------------------------------------------------------------

describe('vring address rules (B.6)', () => {
  const addr = (o: Partial<{ flags: number; desc: bigint; used: bigint; avail: bigint }>) =>
    vringAddr.pack({ index: 0, flags: 0, desc: 0x1000n, used: 0x2000n, avail: 0x3000n, log: 0n, ...o });
  const dec = (b: Buffer) => decodeRaw(FrontendRequest.SET_VRING_ADDR, b, 0);

  it('a desc address that is not 16-byte aligned is rejected', () => {
    fc.assert(
      fc.property(u64Arb.filter((v) => (v & 0xfn) !== 0n), (desc) => {
        rejects(() => dec(addr({ desc })), new RegExp(`^SET_VRING_ADDR: desc address 0x${desc.toString(16)} is not 16-byte aligned$`));
      }),
    );
  });

  it('a used address that is not 4-byte aligned is rejected', () => {
    fc.assert(
      fc.property(u64Arb.filter((v) => (v & 0x3n) !== 0n), (used) => {
        rejects(() => dec(addr({ used })), /used address 0x[0-9a-f]+ is not 4-byte aligned/);
      }),
    );
  });

  it('an avail address that is not 2-byte aligned is rejected', () => {
    fc.assert(
      fc.property(u64Arb.filter((v) => (v & 0x1n) !== 0n), (avail) => {
        rejects(() => dec(addr({ avail })), /avail address 0x[0-9a-f]+ is not 2-byte aligned/);
      }),
    );
  });

  it('the fields are read in the order desc, used, avail (a used address of 0x1002 is misaligned, as avail it is fine)', () => {
    expect(() => dec(addr({ avail: 0x1002n }))).not.toThrow();
    rejects(() => dec(addr({ used: 0x1002n })), /used address 0x1002/);
  });

  it('flags other than bit 0 (VHOST_VRING_F_LOG) are rejected', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 31 }), (n) => {
        rejects(() => dec(addr({ flags: (1 << n) >>> 0 })), /has bits other than VHOST_VRING_F_LOG/);
      }),
    );
    expect(dec(addr({ flags: 1 })).payload).toMatchObject({ flags: 1 });
  });
});

describe('memory table and region rules', () => {
  const setMemTable = (b: Buffer, fds: number) => decodeRaw(FrontendRequest.SET_MEM_TABLE, b, fds);
  const addMemReg = (r: MemRegion) => decodeRaw(FrontendRequest.ADD_MEM_REG, memRegion.pack(r), 1);

  it('nregions 0 is rejected', () => {
    rejects(() => setMemTable(rawMemTable(0, [region(0n, 0x1000n)]), 1), /^SET_MEM_TABLE: nregions 0 is not in 1\.\.8$/);
  });

  it('nregions 9 is rejected', () => {
    const regions = Array.from({ length: 9 }, (_, i) => region(BigInt(i) << 32n, 0x1000n));
    rejects(() => setMemTable(rawMemTable(9, regions), 8), /nregions 9 is not in 1\.\.8/);
  });

  it('nregions must match the payload size (8 + 32n)', () => {
    rejects(() => setMemTable(rawMemTable(3, [region(0n, 0x1000n), region(0x1000n, 0x1000n)]), 3), /payload is 72 bytes, but 3 regions take 104/);
    rejects(() => setMemTable(rawMemTable(1, [region(0n, 0x1000n), region(0x1000n, 0x1000n)]), 1), /payload is 72 bytes, but 1 regions take 40/);
  });

  it('non-zero padding after nregions is rejected (rust-vmm)', () => {
    rejects(() => setMemTable(rawMemTable(1, [region(0n, 0x1000n)], 7), 1), /padding is 0x7, must be 0/);
  });

  it('a zero-size region is rejected', () => {
    rejects(() => setMemTable(rawMemTable(2, [region(0n, 0x1000n), region(0x2000n, 0n)]), 2), /^SET_MEM_TABLE: region 1 has size 0$/);
    rejects(() => addMemReg(region(0x1000n, 0n)), /^ADD_MEM_REG: region has size 0$/);
  });

  it('a region whose gpa, uaddr or mmap_offset end overflows 64 bits is rejected', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: U64_MAX }), fc.constantFrom('gpa', 'uaddr', 'mmapOffset'), (size, field) => {
        fc.pre(size > 0n);
        const start = U64_MAX - size + 1n; // start + size = 2^64
        const r: MemRegion = { gpa: 0n, size, uaddr: 0n, mmapOffset: 0n, [field]: start };
        const wireName = field === 'mmapOffset' ? 'mmap_offset' : field;
        rejects(() => setMemTable(rawMemTable(1, [r]), 1), new RegExp(`region 0: ${wireName} 0x[0-9a-f]+ \\+ size 0x[0-9a-f]+ overflows 64 bits`));
        rejects(() => addMemReg(r), new RegExp(`^ADD_MEM_REG: region: ${wireName} .* overflows 64 bits`));
      }),
    );
  });

  it('a region that ends exactly at 2^64 - 1 is accepted', () => {
    const r = region(U64_MAX - 0x1000n, 0x1000n, U64_MAX - 0x1000n, U64_MAX - 0x1000n);
    expect(setMemTable(rawMemTable(1, [r]), 1).payload).toEqual({ regions: [r] });
  });

  it('overlapping regions (by GPA) are rejected', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 1n << 48n }),
        fc.bigInt({ min: 1n, max: 1n << 32n }),
        fc.bigInt({ min: 1n, max: 1n << 32n }),
        fc.bigInt({ min: 0n, max: (1n << 32n) - 1n }),
        fc.boolean(),
        (gpaA, sizeA, sizeB, into, swap) => {
          // B starts inside A, so they share at least one byte
          const a = region(gpaA, sizeA);
          const b = region(gpaA + (into % sizeA), sizeB);
          const regions = swap ? [b, a] : [a, b];
          rejects(() => setMemTable(rawMemTable(2, regions), 2), /^SET_MEM_TABLE: regions 0 \(gpa .*\) and 1 \(gpa .*\) overlap$/);
        },
      ),
    );
  });

  it('adjacent regions do not overlap', () => {
    const t = rawMemTable(3, [region(0x2000n, 0x1000n), region(0n, 0x1000n), region(0x1000n, 0x1000n)]);
    expect(setMemTable(t, 3).payload).toMatchObject({ regions: { length: 3 } });
  });

  it('a single region must be 40 bytes: the 48-byte Xen form and a bare 32-byte region are rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.ADD_MEM_REG, Buffer.alloc(48), 1), /ADD_MEM_REG: single memory region payload is 48 bytes, expected 40/);
    rejects(() => decodeRaw(FrontendRequest.REM_MEM_REG, Buffer.alloc(32), 0), /REM_MEM_REG: single memory region payload is 32 bytes, expected 40/);
  });

  it('REM_MEM_REG ignores the mmap offset (no overflow check on it), but not the rest', () => {
    const r = region(0x1000n, 0x1000n, 0x7000n, U64_MAX);
    expect(decodeRaw(FrontendRequest.REM_MEM_REG, memRegion.pack(r), 0).payload).toEqual(r);
    rejects(() => decodeRaw(FrontendRequest.ADD_MEM_REG, memRegion.pack(r), 1), /mmap_offset .* overflows/);
    rejects(() => decodeRaw(FrontendRequest.REM_MEM_REG, memRegion.pack(region(0x1000n, 0n)), 0), /region has size 0/);
  });

  it('encode refuses the same tables that decode rejects', () => {
    rejects(() => memTable.encode({ regions: [] }), /nregions 0/);
    rejects(() => memTable.encode({ regions: [region(0n, 0x2000n), region(0x1000n, 0x1000n)] }), /overlap/);
    rejects(() => memTable.encode({ regions: [region(0n, -1n)] }), /is not a u64/);
  });
});

describe('config rules', () => {
  const cfg = (offset: number, size: number, flags: number, data = size) => {
    const b = Buffer.alloc(12 + data);
    b.writeUInt32LE(offset, 0);
    b.writeUInt32LE(size, 4);
    b.writeUInt32LE(flags, 8);
    return b;
  };

  it('offset + size beyond 256 is rejected', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 256 }), fc.integer({ min: 1, max: 256 }), (offset, size) => {
        fc.pre(offset + size > 256);
        rejects(() => decodeRaw(FrontendRequest.SET_CONFIG, cfg(offset, size, 0), 0), /past the 256-byte config space/);
      }),
    );
    rejects(() => decodeRaw(FrontendRequest.GET_CONFIG, cfg(0xffff_fff0, 16, 0), 0), /past the 256-byte config space/);
    expect(decodeRaw(FrontendRequest.SET_CONFIG, cfg(250, 6, 0), 0).name).toBe('SET_CONFIG');
  });

  it('flags other than 0 (front-end) and 1 (migration) are rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_CONFIG, cfg(0, 4, 2), 0), /config flags 2 is neither 0/);
    expect(decodeRaw(FrontendRequest.SET_CONFIG, cfg(0, 4, 1), 0).payload).toMatchObject({ flags: 1 });
  });

  it('a size field that disagrees with the bytes that follow is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_CONFIG, cfg(0, 8, 0, 4), 0), /config size field is 8, but 4 bytes follow/);
  });

  it('GET_CONFIG and SET_CONFIG with size 0 are rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.GET_CONFIG, cfg(0, 0, 0), 0), /^GET_CONFIG: config size is 0$/);
    rejects(() => decodeRaw(FrontendRequest.SET_CONFIG, cfg(0, 0, 0), 0), /^SET_CONFIG: config size is 0$/);
  });

  it('a failed GET_CONFIG reply (empty payload, or size 0) decodes to empty data', () => {
    const h = (size: number): MessageHeader => ({ request: FrontendRequest.GET_CONFIG, flags: V | HeaderFlag.REPLY, size });
    expect(decodeReply('GET_CONFIG', h(0), Buffer.alloc(0), 0, 'explicit').data.length).toBe(0);
    expect(decodeReply('GET_CONFIG', h(12), cfg(8, 0, 0), 0, 'explicit')).toEqual({ offset: 8, flags: 0, data: Buffer.alloc(0) });
    rejects(() => decodeReply('GET_CONFIG', h(5), Buffer.alloc(5), 0, 'explicit'), /expected 0 or at least 12/);
  });
});

describe('inflight rules (A.6: 24 bytes on the wire)', () => {
  const raw = (numQueues: number, queueSize: number, mmapSize = 0x1000n, mmapOffset = 0n) => {
    const b = Buffer.alloc(24);
    b.writeBigUInt64LE(mmapSize, 0);
    b.writeBigUInt64LE(mmapOffset, 8);
    b.writeUInt16LE(numQueues, 16);
    b.writeUInt16LE(queueSize, 18);
    return b;
  };

  it.each([16, 20, 32])('an inflight payload of %i bytes is rejected', (n) => {
    rejects(() => decodeRaw(FrontendRequest.GET_INFLIGHT_FD, Buffer.alloc(n), 0), new RegExp(`^GET_INFLIGHT_FD: inflight description payload is ${n} bytes, expected 24$`));
    rejects(() => decodeRaw(FrontendRequest.SET_INFLIGHT_FD, Buffer.alloc(n), 1), new RegExp(`SET_INFLIGHT_FD: .*${n} bytes, expected 24`));
  });

  it('num_queues 0 is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.GET_INFLIGHT_FD, raw(0, 256), 0), /num_queues is 0/);
  });

  it('queue_size 0 or above 32768 is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.GET_INFLIGHT_FD, raw(1, 0), 0), /queue_size 0 is not in 1\.\.32768/);
    rejects(() => decodeRaw(FrontendRequest.GET_INFLIGHT_FD, raw(1, 32769), 0), /queue_size 32769/);
  });

  it('SET_INFLIGHT_FD with mmap_size 0 is rejected (GET_INFLIGHT_FD requests carry 0)', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_INFLIGHT_FD, raw(1, 256, 0n), 1), /^SET_INFLIGHT_FD: inflight mmap_size is 0$/);
    expect(decodeRaw(FrontendRequest.GET_INFLIGHT_FD, raw(2, 256, 0n), 0).payload).toMatchObject({ numQueues: 2, queueSize: 256 });
  });

  it('mmap_offset + mmap_size overflowing 64 bits is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_INFLIGHT_FD, raw(1, 256, 2n, U64_MAX - 1n), 1), /overflows 64 bits/);
  });
});

describe('other payload rules', () => {
  it('SET_VRING_NUM: queue size 0 or above 32768 is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_VRING_NUM, vringState.pack({ index: 0, num: 0 }), 0), /^SET_VRING_NUM: queue size 0 is not in 1\.\.32768$/);
    rejects(() => decodeRaw(FrontendRequest.SET_VRING_NUM, vringState.pack({ index: 0, num: 32769 }), 0), /queue size 32769/);
  });

  it('SET_VRING_ENABLE: num other than 0/1 is rejected (rust-vmm)', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_VRING_ENABLE, vringState.pack({ index: 0, num: 2 }), 0), /enable 2 is neither 0 nor 1/);
  });

  it('SET_VRING_ENDIAN: num other than 0 (LE) / 1 (BE) is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_VRING_ENDIAN, vringState.pack({ index: 0, num: 5 }), 0), /endianness 5 is neither 0 nor 1/);
  });

  it('SET_STATUS: a value above the 8-bit status byte is rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_STATUS, u64Buf(0x100n), 0), /device status 0x100 does not fit/);
  });

  it('log: mmap_size 0 and overflowing mmap_offset + mmap_size are rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_LOG_BASE, log.pack({ mmapSize: 0n, mmapOffset: 0n }), 1), /log mmap_size is 0/);
    rejects(() => decodeRaw(FrontendRequest.SET_LOG_BASE, log.pack({ mmapSize: 2n, mmapOffset: U64_MAX }), 1), /overflows 64 bits/);
  });

  it('IOTLB: perm above 3 and type outside 1..4 are rejected', () => {
    const m = { iova: 0n, size: 0x1000n, uaddr: 0n, perm: 3, type: 2 };
    rejects(() => decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, perm: 4 }), 0), /IOTLB perm 4 is not in 0\.\.3/);
    rejects(() => decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, type: 0 }), 0), /IOTLB type 0 is not in 1\.\.4/);
    rejects(() => decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, type: 5 }), 0), /IOTLB type 5/);
  });

  it('IOTLB update: size 0 or a wrapping range is rejected; invalidate may use size 0', () => {
    const m = { iova: 0n, size: 0x1000n, uaddr: 0n, perm: 3, type: 2 };
    rejects(() => decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, size: 0n }), 0), /IOTLB update has size 0/);
    rejects(() => decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, iova: U64_MAX }), 0), /iova .* overflows/);
    rejects(() => decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, uaddr: U64_MAX }), 0), /uaddr .* overflows/);
    expect(decodeRaw(FrontendRequest.IOTLB_MSG, iotlb.pack({ ...m, type: 3, size: 0n }), 0).name).toBe('IOTLB_MSG');
  });

  it('BACKEND_IOTLB_MSG: only miss (1) and access-fail (4) may come from the back-end', () => {
    const b = iotlb.pack({ iova: 0n, size: 0x1000n, uaddr: 0n, perm: 1, type: 2 });
    rejects(() => decodeBackendRequest({ request: 1, flags: V, size: 32 }, b, 0), /must be 1 \(miss\) or 4 \(access fail\)/);
  });

  it('SET_DEVICE_STATE_FD: direction other than 0/1 and phase other than 0 are rejected', () => {
    rejects(() => decodeRaw(FrontendRequest.SET_DEVICE_STATE_FD, deviceStateTransfer.pack({ direction: 2, phase: 0 }), 1), /transfer direction 2/);
    rejects(() => decodeRaw(FrontendRequest.SET_DEVICE_STATE_FD, deviceStateTransfer.pack({ direction: 0, phase: 1 }), 1), /transfer phase 1 is not 0/);
  });

  it('shared object: the nil and max UUIDs are rejected (rust-vmm)', () => {
    rejects(() => decodeRaw(FrontendRequest.GET_SHARED_OBJECT, Buffer.alloc(16), 0), /nil UUID/);
    rejects(() => decodeRaw(FrontendRequest.GET_SHARED_OBJECT, Buffer.alloc(16, 0xff), 0), /max UUID/);
    rejects(() => sharedObject.encode({ uuid: 'ABCDEF00-0000-0000-0000-000000000001' }), /not a lower-case UUID/);
  });

  it('shmem map: len 0, wrapping ranges and unknown flags are rejected', () => {
    const m = { shmid: 0, fdOffset: 0n, shmOffset: 0n, len: 0x1000n, flags: 0n };
    const dec = (b: Buffer, fds: number) => decodeBackendRequest({ request: 9, flags: V, size: 40 }, b, fds);
    rejects(() => dec(shmemMap.pack({ ...m, len: 0n }), 1), /len is 0/);
    rejects(() => dec(shmemMap.pack({ ...m, fdOffset: U64_MAX }), 1), /fd_offset .* overflows/);
    rejects(() => dec(shmemMap.pack({ ...m, shmOffset: U64_MAX }), 1), /shm_offset .* overflows/);
    rejects(() => dec(shmemMap.pack({ ...m, flags: 2n }), 1), /has bits other than WRITABLE/);
  });

  it('shmem config: nregions above 256 is rejected', () => {
    const b = shmemConfig.pack({ nregions: 0, memSizes: Array.from({ length: 256 }, () => 0n) });
    b.writeUInt32LE(257, 0);
    rejects(() => shmemConfig.decode(b), /nregions 257 is more than 256/);
  });

  it('device state fd reply: bits above 8 are rejected', () => {
    rejects(() => deviceStateFdReply.decode(u64Buf(0x200n)), /reserved bits 0x200/);
  });

  it('pack range-checks fields instead of truncating them', () => {
    rejects(() => vringState.pack({ index: 2 ** 32, num: 0 }), /index 4294967296 does not fit in 0\.\.4294967295/);
    rejects(() => u64.pack(1n << 64n), /is not a u64/);
    rejects(() => inflight.pack({ mmapSize: 0n, mmapOffset: 0n, numQueues: 0x10000, queueSize: 1 }), /num_queues 65536/);
  });
});

// ---------------------------------------------------------------------------------------------------
// reply rules
// ---------------------------------------------------------------------------------------------------

describe('reply rules (A.7)', () => {
  const reply = (request: number, payload: Buffer, flags = V | HeaderFlag.REPLY): MessageHeader => ({ request, flags, size: payload.length });

  it('a reply without the REPLY flag is rejected', () => {
    const p = u64Buf(1n);
    rejects(() => decodeReply('GET_FEATURES', reply(1, p, V), p, 0, 'explicit'), /^GET_FEATURES: reply lacks the REPLY flag/);
    rejects(() => decodeReply('SET_OWNER', reply(3, p, V), p, 0, 'ack'), /reply lacks the REPLY flag/);
  });

  it('a reply to a different request is rejected', () => {
    const p = u64Buf(1n);
    const e = rejects(() => decodeReply('GET_FEATURES', reply(15, p), p, 0, 'explicit'), /expected a reply to GET_FEATURES, got GET_PROTOCOL_FEATURES \(15\)/);
    expect(e.request).toBe(FrontendRequest.GET_FEATURES);
  });

  it('a reply that also carries NEED_REPLY is accepted (libvhost-user echoes the flag)', () => {
    const p = u64Buf(7n);
    expect(decodeReply('GET_FEATURES', reply(1, p, V | HeaderFlag.REPLY | HeaderFlag.NEED_REPLY), p, 0, 'explicit')).toBe(7n);
  });

  it('an ack must be a u64 and carry no fds', () => {
    rejects(() => decodeReply('SET_VRING_NUM', reply(8, Buffer.alloc(4)), Buffer.alloc(4), 0, 'ack'), /payload is 4 bytes, expected 8/);
    rejects(() => decodeReply('SET_VRING_NUM', reply(8, u64Buf(0n)), u64Buf(0n), 1, 'ack'), /1 fds attached to the ack, expected exactly 0/);
  });

  it('an explicit reply of the wrong size is rejected', () => {
    rejects(() => decodeReply('GET_VRING_BASE', reply(11, u64Buf(0n)), Buffer.alloc(4), 0, 'explicit'), /header size is 8, but the payload is 4 bytes/);
    rejects(() => decodeReply('GET_VRING_BASE', reply(11, Buffer.alloc(4)), Buffer.alloc(4), 0, 'explicit'), /vring state payload is 4 bytes, expected 8/);
  });

  it('GET_INFLIGHT_FD: the reply must carry exactly one fd', () => {
    const p = inflight.encode({ mmapSize: 0x1000n, mmapOffset: 0n, numQueues: 1, queueSize: 256 });
    expect(decodeReply('GET_INFLIGHT_FD', reply(31, p), p, 1, 'explicit')).toMatchObject({ mmapSize: 0x1000n });
    rejects(() => decodeReply('GET_INFLIGHT_FD', reply(31, p), p, 0, 'explicit'), /0 fds attached to the reply, expected exactly 1/);
  });

  it('SET_DEVICE_STATE_FD: the reply carries an fd exactly when it succeeded with the no-fd bit clear', () => {
    const ok = u64Buf(0n);
    const noFd = u64Buf(0x100n);
    const err = u64Buf(0x101n);
    expect(decodeReply('SET_DEVICE_STATE_FD', reply(42, ok), ok, 1, 'explicit')).toEqual({ error: 0, noFd: false });
    rejects(() => decodeReply('SET_DEVICE_STATE_FD', reply(42, ok), ok, 0, 'explicit'), /carries the back-end fd/);
    rejects(() => decodeReply('SET_DEVICE_STATE_FD', reply(42, noFd), noFd, 1, 'explicit'), /carries no fd/);
    expect(decodeReply('SET_DEVICE_STATE_FD', reply(42, err), err, 0, 'explicit')).toEqual({ error: 1, noFd: true });
  });

  it('SET_LOG_BASE reply: a u64 (libvhost-user) or the 16-byte log echo (rust-vmm); other sizes are rejected', () => {
    const l = log.encode({ mmapSize: 0x1000n, mmapOffset: 0n });
    expect(decodeReply('SET_LOG_BASE', reply(6, u64Buf(0n)), u64Buf(0n), 0, 'explicit')).toBe(0n);
    expect(decodeReply('SET_LOG_BASE', reply(6, l), l, 0, 'explicit')).toEqual({ mmapSize: 0x1000n, mmapOffset: 0n });
    rejects(() => decodeReply('SET_LOG_BASE', reply(6, Buffer.alloc(12)), Buffer.alloc(12), 0, 'explicit'), /expected 8 \(u64\) or 16 \(log\)/);
  });

  it('encodeReply/decodeReply refuse an explicit reply for a request that has none (a caller bug, TypeError)', () => {
    expect(() => encodeReply('SET_VRING_NUM', undefined as never)).toThrow(TypeError);
    expect(() => decodeReply('SET_VRING_NUM', reply(8, u64Buf(0n)), u64Buf(0n), 0, 'explicit')).toThrow(TypeError);
    expect(decodeReply('SET_VRING_NUM', reply(8, u64Buf(0n)), u64Buf(0n), 0, 'ack')).toBe(0n);
  });

  it('encodeReply with fdCount checks the reply fds', () => {
    rejects(
      () => encodeReply('GET_INFLIGHT_FD', { mmapSize: 1n, mmapOffset: 0n, numQueues: 1, queueSize: 1 }, { fdCount: 0 }),
      /GET_INFLIGHT_FD: 0 fds attached to the reply, expected exactly 1/,
    );
  });

  it('encodeAck accepts a request id and echoes it', () => {
    expect(decodeHeader(encodeAck(FrontendRequest.SET_VRING_KICK, 0n))).toEqual({ request: 12, flags: V | HeaderFlag.REPLY, size: 8 });
    rejects(() => encodeAck(77, 0n), /unknown front-end request id 77/);
  });
});
