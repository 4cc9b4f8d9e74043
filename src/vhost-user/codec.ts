/**
 * vhost-user wire codec: header, one codec per payload kind (layout + validation side by side, as in
 * rust-vmm `message.rs`), and the request tables that tie ids to payloads, replies, fd counts and
 * feature gates. Pure: Buffers in, values out. No sockets and no fds here, only fd *counts*.
 *
 * Source: shared/spec/vhost-user-and-virtio.md A.2 (header), A.3/A.4 (requests), A.6 (layouts), A.7 (replies).
 *
 * Byte order: the protocol is host-native (A.1). This codec writes little-endian, which is the native
 * order on every host this project runs on (x86-64, arm64).
 *
 * Numbers: u8/u16/u32 fields are `number`, u64 fields are `bigint`.
 *
 * Each codec offers:
 *   decode(payload)  size check + layout + validate; throws ProtocolError
 *   encode(value)    validate + layout
 *   pack(value)      layout only (still range-checks each field): for tests that must put bad values on the wire
 */

import { Buffer } from 'node:buffer';
import {
  BackendRequest,
  type BackendRequestName,
  ConfigFlag,
  FrontendRequest,
  type FrontendRequestName,
  HeaderFlag,
  IotlbType,
  MAX_CONFIG_SIZE,
  MAX_QUEUE_SIZE,
  ProtocolFeature,
  type ProtocolFeatureBit,
  SHMEM_MAP_F_WRITABLE,
  TransferDirection,
  TransferPhase,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
  VIRTIO_F_ACCESS_PLATFORM,
  VRING_FD_INDEX_MASK,
  VRING_FD_NOFD,
  backendRequestName,
  bit,
  protocolFeatureName,
  requestName,
} from './constants.js';

export const HEADER_SIZE = 12;
/** Largest payload we accept (rust-vmm MAX_MSG_SIZE). */
export const MAX_PAYLOAD = 4096;
/** Most fds we accept with one message (SET_MEM_TABLE carries up to 8). */
export const MAX_FDS = 8;
/** Most regions in one SET_MEM_TABLE (QEMU baseline). */
export const MAX_MEM_REGIONS = 8;

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffff_ffff;

// ---------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------

/** A message that breaks the protocol. `request` is the request id when it is known. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly request?: number;
  constructor(message: string, request?: number) {
    super(message);
    if (request !== undefined) this.request = request;
  }
}

function fail(message: string): never {
  throw new ProtocolError(message);
}

function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

/** Run `fn`; a ProtocolError from it gets the request name as prefix and the request id attached. */
function within<T>(request: number, label: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ProtocolError && e.request === undefined) throw new ProtocolError(`${label}: ${e.message}`, request);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------
// Field helpers (range-checked writes, so that pack() never silently truncates)
// ---------------------------------------------------------------------------------------------------

function checkUint(field: string, v: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) fail(`${field} ${String(v)} does not fit in 0..${max}`);
}

function checkU64(field: string, v: bigint): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) fail(`${field} ${String(v)} is not a u64`);
}

function putU8(b: Buffer, off: number, field: string, v: number): void {
  checkUint(field, v, 0xff);
  b.writeUInt8(v, off);
}

function putU16(b: Buffer, off: number, field: string, v: number): void {
  checkUint(field, v, 0xffff);
  b.writeUInt16LE(v, off);
}

function putU32(b: Buffer, off: number, field: string, v: number): void {
  checkUint(field, v, U32_MAX);
  b.writeUInt32LE(v, off);
}

function putU64(b: Buffer, off: number, field: string, v: bigint): void {
  checkU64(field, v);
  b.writeBigUInt64LE(v, off);
}

/** `a + b` fits in a u64 (rust-vmm `checked_add(..).is_some()`). */
function addFits(a: bigint, b: bigint): boolean {
  return a + b <= U64_MAX;
}

// ---------------------------------------------------------------------------------------------------
// Codec framework
// ---------------------------------------------------------------------------------------------------

export interface PayloadCodec<T> {
  /** payload kind, used in error messages */
  readonly kind: string;
  /** exact size when `fixed`, otherwise the minimum */
  readonly size: number;
  readonly fixed: boolean;
  readonly maxSize: number;
  /** semantic checks; throws ProtocolError */
  validate(value: T): void;
  /** size check, layout, validate; throws ProtocolError */
  decode(payload: Buffer): T;
  /** validate, then layout */
  encode(value: T): Buffer;
  /** layout only (each field still range-checked) */
  pack(value: T): Buffer;
}

interface CodecDef<T> {
  kind: string;
  size: number;
  maxSize?: number;
  read(b: Buffer): T;
  write(value: T): Buffer;
  validate?(value: T): void;
  /** read() checks the size beyond the minimum itself (to say *why* a size is wrong) */
  readChecksSize?: boolean;
}

function makeCodec<T>(def: CodecDef<T>): PayloadCodec<T> {
  const maxSize = def.maxSize ?? def.size;
  const fixed = maxSize === def.size;
  const validate = def.validate ?? ((): void => {});
  const checkSize = (n: number): void => {
    if (fixed && n !== def.size) fail(`${def.kind} payload is ${n} bytes, expected ${def.size}`);
    if (!fixed && (n < def.size || (n > maxSize && def.readChecksSize !== true))) fail(`${def.kind} payload is ${n} bytes, expected ${def.size}..${maxSize}`);
  };
  return {
    kind: def.kind,
    size: def.size,
    fixed,
    maxSize,
    validate,
    decode(payload) {
      checkSize(payload.length);
      const v = def.read(payload);
      validate(v);
      return v;
    },
    encode(value) {
      validate(value);
      return def.write(value);
    },
    pack: (value) => def.write(value),
  };
}

/** Fixed-size layout: `write` fills a zeroed buffer of `size` bytes. */
function fixedCodec<T>(def: Omit<CodecDef<T>, 'write' | 'maxSize'> & { put(b: Buffer, value: T): void }): PayloadCodec<T> {
  return makeCodec<T>({
    ...def,
    write(value) {
      const b = Buffer.alloc(def.size);
      def.put(b, value);
      return b;
    },
  });
}

// ---------------------------------------------------------------------------------------------------
// Payload codecs (A.6)
// ---------------------------------------------------------------------------------------------------

/** No payload. */
export const empty: PayloadCodec<undefined> = fixedCodec<undefined>({
  kind: 'empty',
  size: 0,
  read: () => undefined,
  put: () => {},
  validate(v) {
    if (v !== undefined) fail('this message has no payload');
  },
});

/** `value:u64` (8). */
export const u64: PayloadCodec<bigint> = fixedCodec<bigint>({
  kind: 'u64',
  size: 8,
  read: (b) => b.readBigUInt64LE(0),
  put: (b, v) => putU64(b, 0, 'value', v),
});

export interface VringState {
  index: number;
  num: number;
}

/** `index:u32 @0, num:u32 @4` (8). What `num` means depends on the request; see the request checks. */
export const vringState: PayloadCodec<VringState> = fixedCodec<VringState>({
  kind: 'vring state',
  size: 8,
  read: (b) => ({ index: b.readUInt32LE(0), num: b.readUInt32LE(4) }),
  put(b, v) {
    putU32(b, 0, 'index', v.index);
    putU32(b, 4, 'num', v.num);
  },
});

export interface VringAddr {
  index: number;
  /** bit 0 = VHOST_VRING_F_LOG */
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

/**
 * `index:u32 @0, flags:u32 @4, desc:u64 @8, used:u64 @16, avail:u64 @24, log:u64 @32` (40).
 * Field order is desc, USED, avail. Alignment per B.6 (rust-vmm VhostUserVringAddr::is_valid).
 */
export const vringAddr: PayloadCodec<VringAddr> = fixedCodec<VringAddr>({
  kind: 'vring address',
  size: 40,
  read: (b) => ({
    index: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    desc: b.readBigUInt64LE(8),
    used: b.readBigUInt64LE(16),
    avail: b.readBigUInt64LE(24),
    log: b.readBigUInt64LE(32),
  }),
  put(b, v) {
    putU32(b, 0, 'index', v.index);
    putU32(b, 4, 'flags', v.flags);
    putU64(b, 8, 'desc', v.desc);
    putU64(b, 16, 'used', v.used);
    putU64(b, 24, 'avail', v.avail);
    putU64(b, 32, 'log', v.log);
  },
  validate(v) {
    checkUint('index', v.index, U32_MAX);
    checkUint('flags', v.flags, U32_MAX);
    if ((v.flags & ~VHOST_VRING_F_LOG) !== 0) fail(`flags ${hex(v.flags)} has bits other than VHOST_VRING_F_LOG (bit 0)`);
    if ((v.desc & 0xfn) !== 0n) fail(`desc address ${hex(v.desc)} is not 16-byte aligned`);
    if ((v.used & 0x3n) !== 0n) fail(`used address ${hex(v.used)} is not 4-byte aligned`);
    if ((v.avail & 0x1n) !== 0n) fail(`avail address ${hex(v.avail)} is not 2-byte aligned`);
  },
});

export interface VringFd {
  /** ring index, bits 0–7 */
  index: number;
  /** bit 8: no fd attached; the back-end polls instead */
  noFd: boolean;
}

/** SET_VRING_KICK/CALL/ERR: a u64 with bits 0–7 = index, bit 8 = no fd, all others 0 (8). */
export const vringFd: PayloadCodec<VringFd> = fixedCodec<VringFd>({
  kind: 'vring fd',
  size: 8,
  read(b) {
    const v = b.readBigUInt64LE(0);
    const reserved = v & ~BigInt(VRING_FD_INDEX_MASK | VRING_FD_NOFD) & U64_MAX;
    if (reserved !== 0n) fail(`value ${hex(v)} has reserved bits ${hex(reserved)} set (only bits 0-8 are defined)`);
    return { index: Number(v & BigInt(VRING_FD_INDEX_MASK)), noFd: (v & BigInt(VRING_FD_NOFD)) !== 0n };
  },
  put(b, v) {
    checkUint('index', v.index, VRING_FD_INDEX_MASK);
    b.writeBigUInt64LE(BigInt(v.index) | (v.noFd ? BigInt(VRING_FD_NOFD) : 0n), 0);
  },
  validate(v) {
    checkUint('index', v.index, VRING_FD_INDEX_MASK);
    if (typeof v.noFd !== 'boolean') fail('noFd must be a boolean');
  },
});

export interface MemRegion {
  /** guest-physical address */
  gpa: bigint;
  size: bigint;
  /** front-end user virtual address */
  uaddr: bigint;
  mmapOffset: bigint;
}

const REGION_SIZE = 32;

function readRegion(b: Buffer, off: number): MemRegion {
  return {
    gpa: b.readBigUInt64LE(off),
    size: b.readBigUInt64LE(off + 8),
    uaddr: b.readBigUInt64LE(off + 16),
    mmapOffset: b.readBigUInt64LE(off + 24),
  };
}

function putRegion(b: Buffer, off: number, r: MemRegion): void {
  putU64(b, off, 'gpa', r.gpa);
  putU64(b, off + 8, 'size', r.size);
  putU64(b, off + 16, 'uaddr', r.uaddr);
  putU64(b, off + 24, 'mmap_offset', r.mmapOffset);
}

/** rust-vmm VhostUserMemoryRegion::is_valid: size > 0 and no end address past 2^64 - 1. */
function validateRegion(r: MemRegion, label: string, checkMmapOffset = true): void {
  checkU64(`${label} gpa`, r.gpa);
  checkU64(`${label} size`, r.size);
  checkU64(`${label} uaddr`, r.uaddr);
  checkU64(`${label} mmap_offset`, r.mmapOffset);
  if (r.size === 0n) fail(`${label} has size 0`);
  if (!addFits(r.gpa, r.size)) fail(`${label}: gpa ${hex(r.gpa)} + size ${hex(r.size)} overflows 64 bits`);
  if (!addFits(r.uaddr, r.size)) fail(`${label}: uaddr ${hex(r.uaddr)} + size ${hex(r.size)} overflows 64 bits`);
  if (checkMmapOffset && !addFits(r.mmapOffset, r.size))
    fail(`${label}: mmap_offset ${hex(r.mmapOffset)} + size ${hex(r.size)} overflows 64 bits`);
}

export interface MemTable {
  /** 1..MAX_MEM_REGIONS regions; one fd per region, in this order */
  regions: MemRegion[];
}

/** `nregions:u32, padding:u32 (0), region[nregions]` with region = `gpa, size, uaddr, mmap_offset` (8 + 32n). */
export const memTable: PayloadCodec<MemTable> = makeCodec<MemTable>({
  kind: 'memory table',
  size: 8 + REGION_SIZE,
  maxSize: 8 + REGION_SIZE * MAX_MEM_REGIONS,
  readChecksSize: true,
  read(b) {
    const n = b.readUInt32LE(0);
    const padding = b.readUInt32LE(4);
    if (padding !== 0) fail(`padding is ${hex(padding)}, must be 0`);
    if (n < 1 || n > MAX_MEM_REGIONS) fail(`nregions ${n} is not in 1..${MAX_MEM_REGIONS}`);
    if (b.length !== 8 + REGION_SIZE * n) fail(`payload is ${b.length} bytes, but ${n} regions take ${8 + REGION_SIZE * n}`);
    const regions: MemRegion[] = [];
    for (let i = 0; i < n; i++) regions.push(readRegion(b, 8 + REGION_SIZE * i));
    return { regions };
  },
  write(v) {
    const b = Buffer.alloc(8 + REGION_SIZE * v.regions.length);
    putU32(b, 0, 'nregions', v.regions.length);
    v.regions.forEach((r, i) => putRegion(b, 8 + REGION_SIZE * i, r));
    return b;
  },
  validate(v) {
    const n = v.regions.length;
    if (n < 1 || n > MAX_MEM_REGIONS) fail(`nregions ${n} is not in 1..${MAX_MEM_REGIONS}`);
    v.regions.forEach((r, i) => validateRegion(r, `region ${i}`));
    const order = v.regions.map((r, i) => ({ r, i })).sort((a, b) => (a.r.gpa < b.r.gpa ? -1 : a.r.gpa > b.r.gpa ? 1 : 0));
    for (let k = 1; k < order.length; k++) {
      const prev = order[k - 1]!;
      const cur = order[k]!;
      if (cur.r.gpa < prev.r.gpa + prev.r.size) {
        const [a, c] = prev.i < cur.i ? [prev, cur] : [cur, prev];
        fail(
          `regions ${a.i} (gpa ${hex(a.r.gpa)}..${hex(a.r.gpa + a.r.size)}) and ${c.i} ` +
            `(gpa ${hex(c.r.gpa)}..${hex(c.r.gpa + c.r.size)}) overlap`,
        );
      }
    }
  },
});

function singleRegionCodec(kind: string, checkMmapOffset: boolean): PayloadCodec<MemRegion> {
  return fixedCodec<MemRegion>({
    kind,
    size: 8 + REGION_SIZE,
    // the leading u64 padding is ignored on read (rust-vmm does not check it either) and written as 0
    read: (b) => readRegion(b, 8),
    put: (b, r) => putRegion(b, 8, r),
    validate: (r) => validateRegion(r, 'region', checkMmapOffset),
  });
}

/**
 * ADD_MEM_REG / REM_MEM_REG: `padding:u64, region` (40). The 48-byte Xen form (XEN_MMAP) is rejected:
 * this project does not offer XEN_MMAP.
 */
export const memRegion: PayloadCodec<MemRegion> = singleRegionCodec('single memory region', true);

/** REM_MEM_REG: same layout as `memRegion`; the mmap offset is ignored (A.3), so it is not validated. */
export const memRegionRemove: PayloadCodec<MemRegion> = singleRegionCodec('single memory region', false);

export interface LogArea {
  mmapSize: bigint;
  mmapOffset: bigint;
}

/** SET_LOG_BASE: `mmap_size:u64, mmap_offset:u64` (16). rust-vmm VhostUserLog::is_valid. */
export const log: PayloadCodec<LogArea> = fixedCodec<LogArea>({
  kind: 'log',
  size: 16,
  read: (b) => ({ mmapSize: b.readBigUInt64LE(0), mmapOffset: b.readBigUInt64LE(8) }),
  put(b, v) {
    putU64(b, 0, 'mmap_size', v.mmapSize);
    putU64(b, 8, 'mmap_offset', v.mmapOffset);
  },
  validate(v) {
    checkU64('mmap_size', v.mmapSize);
    checkU64('mmap_offset', v.mmapOffset);
    if (v.mmapSize === 0n) fail('log mmap_size is 0');
    if (!addFits(v.mmapOffset, v.mmapSize)) fail(`log mmap_offset ${hex(v.mmapOffset)} + mmap_size ${hex(v.mmapSize)} overflows 64 bits`);
  },
});

/**
 * SET_LOG_BASE reply. libvhost-user replies with a u64 (8 bytes), rust-vmm echoes the 16-byte log
 * struct; QEMU accepts either (A.3). Decodes to a bigint (8) or a LogArea (16); encodes the same way.
 */
export const logBaseReply: PayloadCodec<bigint | LogArea> = makeCodec<bigint | LogArea>({
  kind: 'SET_LOG_BASE reply',
  size: 8,
  maxSize: 16,
  read(b) {
    if (b.length === 8) return b.readBigUInt64LE(0);
    if (b.length === 16) return log.decode(b);
    return fail(`SET_LOG_BASE reply payload is ${b.length} bytes, expected 8 (u64) or 16 (log)`);
  },
  write: (v) => (typeof v === 'bigint' ? u64.pack(v) : log.pack(v)),
  validate: (v) => (typeof v === 'bigint' ? u64.validate(v) : log.validate(v)),
});

export interface ConfigSpace {
  offset: number;
  /** 0 = front-end write, 1 = migration (ConfigFlag) */
  flags: number;
  /** `size` on the wire is `data.length` */
  data: Buffer;
}

const CONFIG_HDR = 12;

function readConfig(b: Buffer): ConfigSpace {
  const offset = b.readUInt32LE(0);
  const size = b.readUInt32LE(4);
  const flags = b.readUInt32LE(8);
  if (b.length !== CONFIG_HDR + size) fail(`config size field is ${size}, but ${b.length - CONFIG_HDR} bytes follow the config header`);
  return { offset, flags, data: Buffer.from(b.subarray(CONFIG_HDR)) };
}

function writeConfig(v: ConfigSpace): Buffer {
  const b = Buffer.alloc(CONFIG_HDR + v.data.length);
  putU32(b, 0, 'offset', v.offset);
  putU32(b, 4, 'size', v.data.length);
  putU32(b, 8, 'flags', v.flags);
  b.set(v.data, CONFIG_HDR);
  return b;
}

function validateConfig(v: ConfigSpace): void {
  checkUint('offset', v.offset, U32_MAX);
  checkUint('flags', v.flags, U32_MAX);
  if (!Buffer.isBuffer(v.data)) fail('config data must be a Buffer');
  const end = v.offset + v.data.length;
  if (end > MAX_CONFIG_SIZE)
    fail(`config offset ${v.offset} + size ${v.data.length} = ${end} is past the ${MAX_CONFIG_SIZE}-byte config space`);
  if (v.flags !== ConfigFlag.FRONTEND && v.flags !== ConfigFlag.MIGRATION)
    fail(`config flags ${v.flags} is neither 0 (front-end write) nor 1 (migration)`);
}

/** GET_CONFIG / SET_CONFIG: `offset:u32, size:u32, flags:u32, payload[size]` (12 + size, size + offset ≤ 256). */
export const config: PayloadCodec<ConfigSpace> = makeCodec<ConfigSpace>({
  kind: 'config',
  size: CONFIG_HDR,
  maxSize: CONFIG_HDR + MAX_CONFIG_SIZE,
  read: readConfig,
  write: writeConfig,
  validate: validateConfig,
});

/**
 * GET_CONFIG reply. A failed GET_CONFIG is signalled by size 0: rust-vmm sends a config header with
 * size 0, libvhost-user an empty payload. Both decode to `data.length === 0` (the empty payload as
 * offset 0, flags 0); encoding always writes the 12-byte header.
 */
export const configReply: PayloadCodec<ConfigSpace> = makeCodec<ConfigSpace>({
  kind: 'GET_CONFIG reply',
  size: 0,
  maxSize: CONFIG_HDR + MAX_CONFIG_SIZE,
  read(b) {
    if (b.length === 0) return { offset: 0, flags: 0, data: Buffer.alloc(0) };
    if (b.length < CONFIG_HDR) fail(`GET_CONFIG reply payload is ${b.length} bytes, expected 0 or at least ${CONFIG_HDR}`);
    return readConfig(b);
  },
  write: writeConfig,
  validate: validateConfig,
});

export interface InflightDesc {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}

/**
 * GET_INFLIGHT_FD / SET_INFLIGHT_FD: `mmap_size:u64, mmap_offset:u64, num_queues:u16, queue_size:u16`
 * + 4 bytes of C padding = 24 on the wire (libvhost-user checks size == 24). Padding ignored on read.
 */
export const inflight: PayloadCodec<InflightDesc> = fixedCodec<InflightDesc>({
  kind: 'inflight description',
  size: 24,
  read: (b) => ({
    mmapSize: b.readBigUInt64LE(0),
    mmapOffset: b.readBigUInt64LE(8),
    numQueues: b.readUInt16LE(16),
    queueSize: b.readUInt16LE(18),
  }),
  put(b, v) {
    putU64(b, 0, 'mmap_size', v.mmapSize);
    putU64(b, 8, 'mmap_offset', v.mmapOffset);
    putU16(b, 16, 'num_queues', v.numQueues);
    putU16(b, 18, 'queue_size', v.queueSize);
  },
  validate(v) {
    checkU64('mmap_size', v.mmapSize);
    checkU64('mmap_offset', v.mmapOffset);
    checkUint('num_queues', v.numQueues, 0xffff);
    checkUint('queue_size', v.queueSize, 0xffff);
    if (v.numQueues === 0) fail('inflight num_queues is 0');
    if (v.queueSize === 0 || v.queueSize > MAX_QUEUE_SIZE) fail(`inflight queue_size ${v.queueSize} is not in 1..${MAX_QUEUE_SIZE}`);
    if (!addFits(v.mmapOffset, v.mmapSize))
      fail(`inflight mmap_offset ${hex(v.mmapOffset)} + mmap_size ${hex(v.mmapSize)} overflows 64 bits`);
  },
});

export interface IotlbMsg {
  iova: bigint;
  size: bigint;
  uaddr: bigint;
  /** IotlbPerm: 0 none, 1 RO, 2 WO, 3 RW */
  perm: number;
  /** IotlbType: 1 miss, 2 update, 3 invalidate, 4 access-fail */
  type: number;
}

/**
 * Linux `struct vhost_iotlb_msg`: `iova:u64, size:u64, uaddr:u64, perm:u8, type:u8` + 6 bytes of
 * padding = 32 on the wire (A.6 [U]; sizeof in C). Padding ignored on read. Only UPDATE needs a
 * non-empty, non-wrapping range: QEMU may invalidate "everything" with size 0 (addr_mask + 1 wraps).
 */
export const iotlb: PayloadCodec<IotlbMsg> = fixedCodec<IotlbMsg>({
  kind: 'IOTLB message',
  size: 32,
  read: (b) => ({
    iova: b.readBigUInt64LE(0),
    size: b.readBigUInt64LE(8),
    uaddr: b.readBigUInt64LE(16),
    perm: b.readUInt8(24),
    type: b.readUInt8(25),
  }),
  put(b, v) {
    putU64(b, 0, 'iova', v.iova);
    putU64(b, 8, 'size', v.size);
    putU64(b, 16, 'uaddr', v.uaddr);
    putU8(b, 24, 'perm', v.perm);
    putU8(b, 25, 'type', v.type);
  },
  validate(v) {
    checkU64('iova', v.iova);
    checkU64('size', v.size);
    checkU64('uaddr', v.uaddr);
    checkUint('perm', v.perm, 0xff);
    checkUint('type', v.type, 0xff);
    if (v.perm > 3) fail(`IOTLB perm ${v.perm} is not in 0..3`);
    if (v.type < IotlbType.MISS || v.type > IotlbType.ACCESS_FAIL) fail(`IOTLB type ${v.type} is not in 1..4`);
    if (v.type === IotlbType.UPDATE) {
      if (v.size === 0n) fail('IOTLB update has size 0');
      if (!addFits(v.iova, v.size)) fail(`IOTLB update iova ${hex(v.iova)} + size ${hex(v.size)} overflows 64 bits`);
      if (!addFits(v.uaddr, v.size)) fail(`IOTLB update uaddr ${hex(v.uaddr)} + size ${hex(v.size)} overflows 64 bits`);
    }
  },
});

export interface VringArea {
  index: number;
  noFd: boolean;
  size: bigint;
  offset: bigint;
}

/** BACKEND_VRING_HOST_NOTIFIER_MSG: `u64 (bits 0–7 index, bit 8 no fd), size:u64, offset:u64` (24). */
export const vringArea: PayloadCodec<VringArea> = fixedCodec<VringArea>({
  kind: 'vring area',
  size: 24,
  read(b) {
    const fd = vringFd.decode(b.subarray(0, 8));
    return { index: fd.index, noFd: fd.noFd, size: b.readBigUInt64LE(8), offset: b.readBigUInt64LE(16) };
  },
  put(b, v) {
    vringFd.pack({ index: v.index, noFd: v.noFd }).copy(b, 0);
    putU64(b, 8, 'size', v.size);
    putU64(b, 16, 'offset', v.offset);
  },
  validate(v) {
    vringFd.validate({ index: v.index, noFd: v.noFd });
    checkU64('size', v.size);
    checkU64('offset', v.offset);
  },
});

export interface SharedObject {
  /** canonical lower-case UUID text, e.g. "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0" */
  uuid: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * `uuid[16]` (16). The bytes are in RFC 4122 order (the first three fields big-endian, A.6), which is
 * the order of the hex digits in the text form. Nil and max UUIDs are rejected (rust-vmm).
 */
export const sharedObject: PayloadCodec<SharedObject> = fixedCodec<SharedObject>({
  kind: 'shared object',
  size: 16,
  read(b) {
    const h = b.toString('hex', 0, 16);
    return { uuid: `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}` };
  },
  put(b, v) {
    if (typeof v.uuid !== 'string' || !UUID_RE.test(v.uuid)) fail(`uuid ${String(v.uuid)} is not a lower-case UUID`);
    Buffer.from(v.uuid.replaceAll('-', ''), 'hex').copy(b, 0);
  },
  validate(v) {
    if (typeof v.uuid !== 'string' || !UUID_RE.test(v.uuid)) fail(`uuid ${String(v.uuid)} is not a lower-case UUID`);
    if (/^[0-]+$/.test(v.uuid)) fail('uuid is the nil UUID');
    if (/^[f-]+$/.test(v.uuid)) fail('uuid is the max UUID');
  },
});

export interface DeviceStateTransfer {
  /** TransferDirection: 0 save, 1 load */
  direction: number;
  /** TransferPhase: 0 stopped */
  phase: number;
}

/** SET_DEVICE_STATE_FD: `direction:u32, phase:u32` (8). */
export const deviceStateTransfer: PayloadCodec<DeviceStateTransfer> = fixedCodec<DeviceStateTransfer>({
  kind: 'device state transfer',
  size: 8,
  read: (b) => ({ direction: b.readUInt32LE(0), phase: b.readUInt32LE(4) }),
  put(b, v) {
    putU32(b, 0, 'direction', v.direction);
    putU32(b, 4, 'phase', v.phase);
  },
  validate(v) {
    if (v.direction !== TransferDirection.SAVE && v.direction !== TransferDirection.LOAD)
      fail(`transfer direction ${String(v.direction)} is neither 0 (save) nor 1 (load)`);
    if (v.phase !== TransferPhase.STOPPED) fail(`transfer phase ${String(v.phase)} is not 0 (stopped)`);
  },
});

export interface DeviceStateFdReply {
  /** bits 0–7: 0 = success */
  error: number;
  /** bit 8: no fd returned (the front-end's fd is used) */
  noFd: boolean;
}

/** SET_DEVICE_STATE_FD reply: a u64 with bits 0–7 = error, bit 8 = no fd, all others 0 (8). */
export const deviceStateFdReply: PayloadCodec<DeviceStateFdReply> = fixedCodec<DeviceStateFdReply>({
  kind: 'device state fd reply',
  size: 8,
  read(b) {
    const v = b.readBigUInt64LE(0);
    const reserved = v & ~0x1ffn & U64_MAX;
    if (reserved !== 0n) fail(`value ${hex(v)} has reserved bits ${hex(reserved)} set (only bits 0-8 are defined)`);
    return { error: Number(v & 0xffn), noFd: (v & 0x100n) !== 0n };
  },
  put(b, v) {
    checkUint('error', v.error, 0xff);
    b.writeBigUInt64LE(BigInt(v.error) | (v.noFd ? 0x100n : 0n), 0);
  },
  validate(v) {
    checkUint('error', v.error, 0xff);
    if (typeof v.noFd !== 'boolean') fail('noFd must be a boolean');
  },
});

/**
 * CREATE_CRYPTO_SESSION request and reply: QEMU's VhostUserCryptoSession, whose layout changed across
 * QEMU versions (session_id first in the old form, op_code first in the new). Kept opaque: at least
 * the leading 8-byte field.
 */
export const cryptoSession: PayloadCodec<Buffer> = makeCodec<Buffer>({
  kind: 'crypto session',
  size: 8,
  maxSize: MAX_PAYLOAD,
  read: (b) => Buffer.from(b),
  write: (v) => Buffer.from(v),
  validate(v) {
    if (!Buffer.isBuffer(v)) fail('crypto session must be a Buffer');
    if (v.length < 8 || v.length > MAX_PAYLOAD) fail(`crypto session is ${v.length} bytes, expected 8..${MAX_PAYLOAD}`);
  },
});

export const MAX_SHMEM_REGIONS = 256;

export interface ShmemConfig {
  nregions: number;
  /** exactly 256 entries; the shmid is the index */
  memSizes: bigint[];
}

/** GET_SHMEM_CONFIG reply (pending upstream): `nregions:u32, padding:u32, mem_size[256]:u64` (2056). */
export const shmemConfig: PayloadCodec<ShmemConfig> = fixedCodec<ShmemConfig>({
  kind: 'shmem config',
  size: 8 + 8 * MAX_SHMEM_REGIONS,
  read(b) {
    const memSizes: bigint[] = [];
    for (let i = 0; i < MAX_SHMEM_REGIONS; i++) memSizes.push(b.readBigUInt64LE(8 + 8 * i));
    return { nregions: b.readUInt32LE(0), memSizes };
  },
  put(b, v) {
    putU32(b, 0, 'nregions', v.nregions);
    if (v.memSizes.length !== MAX_SHMEM_REGIONS) fail(`memSizes has ${v.memSizes.length} entries, expected ${MAX_SHMEM_REGIONS}`);
    v.memSizes.forEach((s, i) => putU64(b, 8 + 8 * i, `mem_size[${i}]`, s));
  },
  validate(v) {
    checkUint('nregions', v.nregions, U32_MAX);
    if (v.nregions > MAX_SHMEM_REGIONS) fail(`shmem nregions ${v.nregions} is more than ${MAX_SHMEM_REGIONS}`);
    if (v.memSizes.length !== MAX_SHMEM_REGIONS) fail(`memSizes has ${v.memSizes.length} entries, expected ${MAX_SHMEM_REGIONS}`);
    v.memSizes.forEach((s, i) => checkU64(`mem_size[${i}]`, s));
  },
});

export interface ShmemMap {
  shmid: number;
  fdOffset: bigint;
  shmOffset: bigint;
  len: bigint;
  /** bit 0 = WRITABLE (rust-vmm); default read-only */
  flags: bigint;
}

/**
 * BACKEND_SHMEM_MAP / _UNMAP (pending upstream): `shmid:u8, pad[7], fd_offset:u64, shm_offset:u64,
 * len:u64, flags:u64` (40). rust-vmm VhostUserMMap::is_valid; padding is not checked (nor there).
 */
export const shmemMap: PayloadCodec<ShmemMap> = fixedCodec<ShmemMap>({
  kind: 'shmem map',
  size: 40,
  read: (b) => ({
    shmid: b.readUInt8(0),
    fdOffset: b.readBigUInt64LE(8),
    shmOffset: b.readBigUInt64LE(16),
    len: b.readBigUInt64LE(24),
    flags: b.readBigUInt64LE(32),
  }),
  put(b, v) {
    putU8(b, 0, 'shmid', v.shmid);
    putU64(b, 8, 'fd_offset', v.fdOffset);
    putU64(b, 16, 'shm_offset', v.shmOffset);
    putU64(b, 24, 'len', v.len);
    putU64(b, 32, 'flags', v.flags);
  },
  validate(v) {
    checkUint('shmid', v.shmid, 0xff);
    checkU64('fd_offset', v.fdOffset);
    checkU64('shm_offset', v.shmOffset);
    checkU64('len', v.len);
    checkU64('flags', v.flags);
    if (v.len === 0n) fail('shmem map len is 0');
    if (!addFits(v.fdOffset, v.len)) fail(`shmem map fd_offset ${hex(v.fdOffset)} + len ${hex(v.len)} overflows 64 bits`);
    if (!addFits(v.shmOffset, v.len)) fail(`shmem map shm_offset ${hex(v.shmOffset)} + len ${hex(v.len)} overflows 64 bits`);
    if ((v.flags & ~SHMEM_MAP_F_WRITABLE) !== 0n) fail(`shmem map flags ${hex(v.flags)} has bits other than WRITABLE (bit 0)`);
  },
});

/** Every payload codec, by name. */
export const codecs = {
  empty,
  u64,
  vringState,
  vringAddr,
  vringFd,
  memTable,
  memRegion,
  memRegionRemove,
  log,
  logBaseReply,
  config,
  configReply,
  inflight,
  iotlb,
  vringArea,
  sharedObject,
  deviceStateTransfer,
  deviceStateFdReply,
  cryptoSession,
  shmemConfig,
  shmemMap,
} as const;

// ---------------------------------------------------------------------------------------------------
// vring base encodings (A.6): the `num` of SET_VRING_BASE / GET_VRING_BASE
// ---------------------------------------------------------------------------------------------------

/** Split ring: num bits 0–15 = next avail index, bits 16–31 reserved (0). */
export function decodeSplitVringBase(num: number): number {
  checkUint('vring base', num, U32_MAX);
  if (num > 0xffff) fail(`split vring base ${hex(num)} has reserved bits 16-31 set`);
  return num;
}

export interface PackedVringBase {
  /** bits 0–14 */
  availIdx: number;
  /** bit 15: driver (avail) wrap counter */
  availWrap: boolean;
  /** bits 16–30 */
  usedIdx: number;
  /** bit 31: device (used) wrap counter */
  usedWrap: boolean;
}

export function decodePackedVringBase(num: number): PackedVringBase {
  checkUint('vring base', num, U32_MAX);
  return {
    availIdx: num & 0x7fff,
    availWrap: (num & 0x8000) !== 0,
    usedIdx: (num >>> 16) & 0x7fff,
    usedWrap: (num & 0x8000_0000) !== 0,
  };
}

export function encodePackedVringBase(b: PackedVringBase): number {
  checkUint('availIdx', b.availIdx, 0x7fff);
  checkUint('usedIdx', b.usedIdx, 0x7fff);
  return (b.availIdx | (b.availWrap ? 0x8000 : 0) | (b.usedIdx << 16) | (b.usedWrap ? 0x8000_0000 : 0)) >>> 0;
}

// ---------------------------------------------------------------------------------------------------
// Header (A.2)
// ---------------------------------------------------------------------------------------------------

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

function checkHeader(h: MessageHeader, name: (id: number) => string): void {
  within(h.request, name(h.request), () => {
    checkUint('request', h.request, U32_MAX);
    checkUint('flags', h.flags, U32_MAX);
    checkUint('size', h.size, U32_MAX);
    const version = h.flags & HeaderFlag.VERSION_MASK;
    if (version !== HeaderFlag.VERSION) fail(`header version ${version} (flags ${hex(h.flags)}), expected ${HeaderFlag.VERSION}`);
    const reserved = (h.flags & HeaderFlag.RESERVED_MASK) >>> 0;
    if (reserved !== 0) fail(`reserved header flag bits ${hex(reserved)} set (flags ${hex(h.flags)})`);
    if (h.size > MAX_PAYLOAD) fail(`payload size ${h.size} is more than ${MAX_PAYLOAD}`);
  });
}

/** Which socket a message travels on: the main one (front-end requests) or BACKEND_REQ (back-end requests). */
export type ChannelName = 'frontend' | 'backend';

function namer(channel: ChannelName): (id: number) => string {
  return channel === 'frontend' ? requestName : backendRequestName;
}

/**
 * Reads the 12-byte header from the start of `buf` (which may hold more). Throws ProtocolError for a
 * short buffer, version != 1, reserved flag bits 4–31, or size > MAX_PAYLOAD. The request id is not
 * checked here (decodeRequest does that), so the caller can still name it in a log line. `channel`
 * only picks the request names used in error messages.
 */
export function decodeHeader(buf: Uint8Array, channel: ChannelName = 'frontend'): MessageHeader {
  if (buf.length < HEADER_SIZE) fail(`header is ${buf.length} bytes, expected ${HEADER_SIZE}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  const h = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
  checkHeader(h, namer(channel));
  return h;
}

/** Writes a 12-byte header; applies the same checks as decodeHeader. */
export function encodeHeader(h: MessageHeader, channel: ChannelName = 'frontend'): Buffer {
  checkHeader(h, namer(channel));
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(h.request, 0);
  b.writeUInt32LE(h.flags, 4);
  b.writeUInt32LE(h.size, 8);
  return b;
}

/** Header + payload in one Buffer; `size` is taken from the payload. */
export function encodeMessage(request: number, flags: number, payload: Buffer, channel: ChannelName = 'frontend'): Buffer {
  return Buffer.concat([encodeHeader({ request, flags, size: payload.length }, channel), payload]);
}

// ---------------------------------------------------------------------------------------------------
// Message specs (A.3, A.4, A.7)
// ---------------------------------------------------------------------------------------------------

export interface FdRange {
  readonly min: number;
  readonly max: number;
}

const FDS_0: FdRange = { min: 0, max: 0 };
const FDS_1: FdRange = { min: 1, max: 1 };
const FDS_0_1: FdRange = { min: 0, max: 1 };

export interface MessageSpec<Req = unknown, Rep = unknown> {
  readonly id: number;
  readonly name: string;
  /** request payload codec (`empty` when there is none) */
  readonly request: PayloadCodec<Req>;
  /** payload codec of the explicit reply; null when only a REPLY_ACK u64 can come back */
  readonly reply: PayloadCodec<Rep> | null;
  /** the explicit reply is sent whether or not NEED_REPLY is set (A.7) */
  readonly alwaysReplies: boolean;
  /** the explicit reply is sent only in postcopy mode (SET_MEM_TABLE, ADD_MEM_REG) */
  readonly postcopyReply: boolean;
  /** fds allowed with the request */
  readonly fds: FdRange;
  /** fds allowed with the explicit reply */
  readonly replyFds: FdRange;
  /** protocol feature that must be negotiated before this message may be sent */
  readonly protocolFeature?: ProtocolFeatureBit;
  /** virtio feature bit that must be acked before this message may be sent */
  readonly virtioFeature?: number;
  /** request rules beyond the payload layout; throws ProtocolError */
  check?(payload: Req): void;
  /** exact fd count implied by the payload, with the reason for the error message */
  expectFds?(payload: Req): { count: number; reason: string };
  /** exact fd count implied by the explicit reply */
  expectReplyFds?(payload: Rep): { count: number; reason: string };
}

/** Request payload type per front-end request. */
export interface FrontendRequestPayloads {
  GET_FEATURES: undefined;
  SET_FEATURES: bigint;
  SET_OWNER: undefined;
  RESET_OWNER: undefined;
  SET_MEM_TABLE: MemTable;
  SET_LOG_BASE: LogArea;
  SET_LOG_FD: undefined;
  SET_VRING_NUM: VringState;
  SET_VRING_ADDR: VringAddr;
  SET_VRING_BASE: VringState;
  GET_VRING_BASE: VringState;
  SET_VRING_KICK: VringFd;
  SET_VRING_CALL: VringFd;
  SET_VRING_ERR: VringFd;
  GET_PROTOCOL_FEATURES: undefined;
  SET_PROTOCOL_FEATURES: bigint;
  GET_QUEUE_NUM: undefined;
  SET_VRING_ENABLE: VringState;
  SEND_RARP: bigint;
  NET_SET_MTU: bigint;
  SET_BACKEND_REQ_FD: undefined;
  IOTLB_MSG: IotlbMsg;
  SET_VRING_ENDIAN: VringState;
  GET_CONFIG: ConfigSpace;
  SET_CONFIG: ConfigSpace;
  CREATE_CRYPTO_SESSION: Buffer;
  CLOSE_CRYPTO_SESSION: bigint;
  POSTCOPY_ADVISE: undefined;
  POSTCOPY_LISTEN: undefined;
  POSTCOPY_END: undefined;
  GET_INFLIGHT_FD: InflightDesc;
  SET_INFLIGHT_FD: InflightDesc;
  GPU_SET_SOCKET: undefined;
  RESET_DEVICE: undefined;
  VRING_KICK: VringState;
  GET_MAX_MEM_SLOTS: undefined;
  ADD_MEM_REG: MemRegion;
  REM_MEM_REG: MemRegion;
  SET_STATUS: bigint;
  GET_STATUS: undefined;
  GET_SHARED_OBJECT: SharedObject;
  SET_DEVICE_STATE_FD: DeviceStateTransfer;
  CHECK_DEVICE_STATE: undefined;
  GET_SHMEM_CONFIG: undefined;
}

/** Explicit-reply payload type per front-end request (`never` where only a REPLY_ACK can come back). */
export interface FrontendReplyPayloads {
  GET_FEATURES: bigint;
  SET_FEATURES: never;
  SET_OWNER: never;
  RESET_OWNER: never;
  SET_MEM_TABLE: MemTable;
  SET_LOG_BASE: bigint | LogArea;
  SET_LOG_FD: never;
  SET_VRING_NUM: never;
  SET_VRING_ADDR: never;
  SET_VRING_BASE: never;
  GET_VRING_BASE: VringState;
  SET_VRING_KICK: never;
  SET_VRING_CALL: never;
  SET_VRING_ERR: never;
  GET_PROTOCOL_FEATURES: bigint;
  SET_PROTOCOL_FEATURES: never;
  GET_QUEUE_NUM: bigint;
  SET_VRING_ENABLE: never;
  SEND_RARP: never;
  NET_SET_MTU: never;
  SET_BACKEND_REQ_FD: never;
  IOTLB_MSG: bigint;
  SET_VRING_ENDIAN: never;
  GET_CONFIG: ConfigSpace;
  SET_CONFIG: never;
  CREATE_CRYPTO_SESSION: Buffer;
  CLOSE_CRYPTO_SESSION: never;
  POSTCOPY_ADVISE: undefined;
  POSTCOPY_LISTEN: never;
  POSTCOPY_END: bigint;
  GET_INFLIGHT_FD: InflightDesc;
  SET_INFLIGHT_FD: never;
  GPU_SET_SOCKET: never;
  RESET_DEVICE: never;
  VRING_KICK: never;
  GET_MAX_MEM_SLOTS: bigint;
  ADD_MEM_REG: MemRegion;
  REM_MEM_REG: never;
  SET_STATUS: never;
  GET_STATUS: bigint;
  GET_SHARED_OBJECT: bigint;
  SET_DEVICE_STATE_FD: DeviceStateFdReply;
  CHECK_DEVICE_STATE: bigint;
  GET_SHMEM_CONFIG: ShmemConfig;
}

export interface BackendRequestPayloads {
  BACKEND_IOTLB_MSG: IotlbMsg;
  BACKEND_CONFIG_CHANGE_MSG: undefined;
  BACKEND_VRING_HOST_NOTIFIER_MSG: VringArea;
  BACKEND_VRING_CALL: VringState;
  BACKEND_VRING_ERR: VringState;
  BACKEND_SHARED_OBJECT_ADD: SharedObject;
  BACKEND_SHARED_OBJECT_REMOVE: SharedObject;
  BACKEND_SHARED_OBJECT_LOOKUP: SharedObject;
  BACKEND_SHMEM_MAP: ShmemMap;
  BACKEND_SHMEM_UNMAP: ShmemMap;
}

export interface BackendReplyPayloads {
  BACKEND_IOTLB_MSG: never;
  BACKEND_CONFIG_CHANGE_MSG: never;
  BACKEND_VRING_HOST_NOTIFIER_MSG: never;
  BACKEND_VRING_CALL: never;
  BACKEND_VRING_ERR: never;
  BACKEND_SHARED_OBJECT_ADD: never;
  BACKEND_SHARED_OBJECT_REMOVE: never;
  BACKEND_SHARED_OBJECT_LOOKUP: bigint;
  BACKEND_SHMEM_MAP: never;
  BACKEND_SHMEM_UNMAP: never;
}

type SpecTable<Names extends string, Req extends Record<Names, unknown>, Rep extends Record<Names, unknown>> = {
  readonly [K in Names]: MessageSpec<Req[K], Rep[K]>;
};

interface SpecOptions<Req, Rep> {
  reply?: PayloadCodec<Rep>;
  alwaysReplies?: boolean;
  postcopyReply?: boolean;
  fds?: FdRange;
  replyFds?: FdRange;
  protocolFeature?: ProtocolFeatureBit;
  virtioFeature?: number;
  check?(payload: Req): void;
  expectFds?(payload: Req): { count: number; reason: string };
  expectReplyFds?(payload: Rep): { count: number; reason: string };
}

function spec<Req, Rep = never>(id: number, name: string, request: PayloadCodec<Req>, o: SpecOptions<Req, Rep> = {}): MessageSpec<Req, Rep> {
  const s: MessageSpec<Req, Rep> = {
    id,
    name,
    request,
    reply: o.reply ?? null,
    alwaysReplies: o.alwaysReplies ?? false,
    postcopyReply: o.postcopyReply ?? false,
    fds: o.fds ?? FDS_0,
    replyFds: o.replyFds ?? FDS_0,
    ...(o.protocolFeature !== undefined ? { protocolFeature: o.protocolFeature } : {}),
    ...(o.virtioFeature !== undefined ? { virtioFeature: o.virtioFeature } : {}),
    ...(o.check ? { check: o.check } : {}),
    ...(o.expectFds ? { expectFds: o.expectFds } : {}),
    ...(o.expectReplyFds ? { expectReplyFds: o.expectReplyFds } : {}),
  };
  return Object.freeze(s);
}

/** A message with an explicit reply that always comes (A.7). */
function getter<Req, Rep>(reply: PayloadCodec<Rep>, o: SpecOptions<Req, Rep> = {}): SpecOptions<Req, Rep> {
  return { ...o, reply, alwaysReplies: true };
}

function vringFdRule(v: VringFd): { count: number; reason: string } {
  return v.noFd
    ? { count: 0, reason: 'the no-fd bit (8) is set, so no fd may come with it' }
    : { count: 1, reason: 'the no-fd bit (8) is clear, so exactly one fd must come with it' };
}

function numIsBool(what: string) {
  return (s: VringState): void => {
    if (s.num !== 0 && s.num !== 1) fail(`${what} ${s.num} is neither 0 nor 1`);
  };
}

function configSizeNonZero(c: ConfigSpace): void {
  if (c.data.length === 0) fail('config size is 0');
}

const F = FrontendRequest;
const P = ProtocolFeature;

/** Front-end → back-end messages, by name (A.3). */
export const FRONTEND_MESSAGES_BY_NAME: SpecTable<FrontendRequestName, FrontendRequestPayloads, FrontendReplyPayloads> = {
  GET_FEATURES: spec(F.GET_FEATURES, 'GET_FEATURES', empty, getter(u64)),
  SET_FEATURES: spec(F.SET_FEATURES, 'SET_FEATURES', u64),
  SET_OWNER: spec(F.SET_OWNER, 'SET_OWNER', empty),
  RESET_OWNER: spec(F.RESET_OWNER, 'RESET_OWNER', empty),
  SET_MEM_TABLE: spec(F.SET_MEM_TABLE, 'SET_MEM_TABLE', memTable, {
    reply: memTable,
    postcopyReply: true,
    fds: { min: 1, max: MAX_MEM_REGIONS },
    expectFds: (t) => ({ count: t.regions.length, reason: `${t.regions.length} regions need one fd each` }),
  }),
  SET_LOG_BASE: spec(F.SET_LOG_BASE, 'SET_LOG_BASE', log, getter(logBaseReply, { fds: FDS_1, protocolFeature: P.LOG_SHMFD })),
  SET_LOG_FD: spec(F.SET_LOG_FD, 'SET_LOG_FD', empty, { fds: FDS_1 }),
  SET_VRING_NUM: spec(F.SET_VRING_NUM, 'SET_VRING_NUM', vringState, {
    check(s) {
      if (s.num < 1 || s.num > MAX_QUEUE_SIZE) fail(`queue size ${s.num} is not in 1..${MAX_QUEUE_SIZE}`);
    },
  }),
  SET_VRING_ADDR: spec(F.SET_VRING_ADDR, 'SET_VRING_ADDR', vringAddr),
  SET_VRING_BASE: spec(F.SET_VRING_BASE, 'SET_VRING_BASE', vringState),
  GET_VRING_BASE: spec(F.GET_VRING_BASE, 'GET_VRING_BASE', vringState, getter(vringState)),
  SET_VRING_KICK: spec(F.SET_VRING_KICK, 'SET_VRING_KICK', vringFd, { fds: FDS_0_1, expectFds: vringFdRule }),
  SET_VRING_CALL: spec(F.SET_VRING_CALL, 'SET_VRING_CALL', vringFd, { fds: FDS_0_1, expectFds: vringFdRule }),
  SET_VRING_ERR: spec(F.SET_VRING_ERR, 'SET_VRING_ERR', vringFd, { fds: FDS_0_1, expectFds: vringFdRule }),
  GET_PROTOCOL_FEATURES: spec(F.GET_PROTOCOL_FEATURES, 'GET_PROTOCOL_FEATURES', empty, getter(u64)),
  SET_PROTOCOL_FEATURES: spec(F.SET_PROTOCOL_FEATURES, 'SET_PROTOCOL_FEATURES', u64),
  GET_QUEUE_NUM: spec(F.GET_QUEUE_NUM, 'GET_QUEUE_NUM', empty, getter(u64, { protocolFeature: P.MQ })),
  SET_VRING_ENABLE: spec(F.SET_VRING_ENABLE, 'SET_VRING_ENABLE', vringState, {
    virtioFeature: VHOST_USER_F_PROTOCOL_FEATURES,
    check: numIsBool('enable'),
  }),
  SEND_RARP: spec(F.SEND_RARP, 'SEND_RARP', u64, { protocolFeature: P.RARP }),
  NET_SET_MTU: spec(F.NET_SET_MTU, 'NET_SET_MTU', u64, { protocolFeature: P.MTU }),
  SET_BACKEND_REQ_FD: spec(F.SET_BACKEND_REQ_FD, 'SET_BACKEND_REQ_FD', empty, { fds: FDS_1, protocolFeature: P.BACKEND_REQ }),
  IOTLB_MSG: spec(F.IOTLB_MSG, 'IOTLB_MSG', iotlb, getter(u64, { virtioFeature: VIRTIO_F_ACCESS_PLATFORM })),
  SET_VRING_ENDIAN: spec(F.SET_VRING_ENDIAN, 'SET_VRING_ENDIAN', vringState, {
    protocolFeature: P.CROSS_ENDIAN,
    check: numIsBool('endianness'),
  }),
  GET_CONFIG: spec(F.GET_CONFIG, 'GET_CONFIG', config, getter(configReply, { protocolFeature: P.CONFIG, check: configSizeNonZero })),
  SET_CONFIG: spec(F.SET_CONFIG, 'SET_CONFIG', config, { protocolFeature: P.CONFIG, check: configSizeNonZero }),
  CREATE_CRYPTO_SESSION: spec(
    F.CREATE_CRYPTO_SESSION,
    'CREATE_CRYPTO_SESSION',
    cryptoSession,
    getter(cryptoSession, { protocolFeature: P.CRYPTO_SESSION }),
  ),
  CLOSE_CRYPTO_SESSION: spec(F.CLOSE_CRYPTO_SESSION, 'CLOSE_CRYPTO_SESSION', u64, { protocolFeature: P.CRYPTO_SESSION }),
  // libvhost-user and rust-vmm reply with the userfaultfd; rust-vmm sends no fd when it fails
  POSTCOPY_ADVISE: spec(F.POSTCOPY_ADVISE, 'POSTCOPY_ADVISE', empty, getter(empty, { protocolFeature: P.PAGEFAULT, replyFds: FDS_0_1 })),
  POSTCOPY_LISTEN: spec(F.POSTCOPY_LISTEN, 'POSTCOPY_LISTEN', empty, { protocolFeature: P.PAGEFAULT }),
  POSTCOPY_END: spec(F.POSTCOPY_END, 'POSTCOPY_END', empty, getter(u64, { protocolFeature: P.PAGEFAULT })),
  GET_INFLIGHT_FD: spec(
    F.GET_INFLIGHT_FD,
    'GET_INFLIGHT_FD',
    inflight,
    getter(inflight, { protocolFeature: P.INFLIGHT_SHMFD, replyFds: FDS_1 }),
  ),
  SET_INFLIGHT_FD: spec(F.SET_INFLIGHT_FD, 'SET_INFLIGHT_FD', inflight, {
    fds: FDS_1,
    protocolFeature: P.INFLIGHT_SHMFD,
    check(d) {
      if (d.mmapSize === 0n) fail('inflight mmap_size is 0');
    },
  }),
  GPU_SET_SOCKET: spec(F.GPU_SET_SOCKET, 'GPU_SET_SOCKET', empty, { fds: FDS_1 }),
  RESET_DEVICE: spec(F.RESET_DEVICE, 'RESET_DEVICE', empty, { protocolFeature: P.RESET_DEVICE }),
  VRING_KICK: spec(F.VRING_KICK, 'VRING_KICK', vringState, { protocolFeature: P.INBAND_NOTIFICATIONS }),
  GET_MAX_MEM_SLOTS: spec(F.GET_MAX_MEM_SLOTS, 'GET_MAX_MEM_SLOTS', empty, getter(u64, { protocolFeature: P.CONFIGURE_MEM_SLOTS })),
  ADD_MEM_REG: spec(F.ADD_MEM_REG, 'ADD_MEM_REG', memRegion, {
    reply: memRegion,
    postcopyReply: true,
    fds: FDS_1,
    protocolFeature: P.CONFIGURE_MEM_SLOTS,
  }),
  // "may accept 1; must close it unused" (A.3)
  REM_MEM_REG: spec(F.REM_MEM_REG, 'REM_MEM_REG', memRegionRemove, { fds: FDS_0_1, protocolFeature: P.CONFIGURE_MEM_SLOTS }),
  SET_STATUS: spec(F.SET_STATUS, 'SET_STATUS', u64, {
    protocolFeature: P.STATUS,
    check(v) {
      if (v > 0xffn) fail(`device status ${hex(v)} does not fit in the 8-bit status byte`);
    },
  }),
  GET_STATUS: spec(F.GET_STATUS, 'GET_STATUS', empty, getter(u64, { protocolFeature: P.STATUS })),
  GET_SHARED_OBJECT: spec(
    F.GET_SHARED_OBJECT,
    'GET_SHARED_OBJECT',
    sharedObject,
    getter(u64, { protocolFeature: P.SHARED_OBJECT, replyFds: FDS_0_1 }),
  ),
  SET_DEVICE_STATE_FD: spec(
    F.SET_DEVICE_STATE_FD,
    'SET_DEVICE_STATE_FD',
    deviceStateTransfer,
    getter(deviceStateFdReply, {
      fds: FDS_1,
      replyFds: FDS_0_1,
      protocolFeature: P.DEVICE_STATE,
      expectReplyFds: (r) =>
        r.error === 0 && !r.noFd
          ? { count: 1, reason: 'a successful reply with the no-fd bit (8) clear carries the back-end fd' }
          : { count: 0, reason: 'a reply with the no-fd bit (8) set or an error carries no fd' },
    }),
  ),
  CHECK_DEVICE_STATE: spec(F.CHECK_DEVICE_STATE, 'CHECK_DEVICE_STATE', empty, getter(u64, { protocolFeature: P.DEVICE_STATE })),
  GET_SHMEM_CONFIG: spec(F.GET_SHMEM_CONFIG, 'GET_SHMEM_CONFIG', empty, getter(shmemConfig, { protocolFeature: P.SHMEM })),
};

const B = BackendRequest;

/** Back-end → front-end messages on the BACKEND_REQ channel, by name (A.4). */
export const BACKEND_MESSAGES_BY_NAME: SpecTable<BackendRequestName, BackendRequestPayloads, BackendReplyPayloads> = {
  BACKEND_IOTLB_MSG: spec(B.BACKEND_IOTLB_MSG, 'BACKEND_IOTLB_MSG', iotlb, {
    virtioFeature: VIRTIO_F_ACCESS_PLATFORM,
    check(m) {
      if (m.type !== IotlbType.MISS && m.type !== IotlbType.ACCESS_FAIL)
        fail(`IOTLB type ${m.type} from the back-end must be 1 (miss) or 4 (access fail)`);
    },
  }),
  BACKEND_CONFIG_CHANGE_MSG: spec(B.BACKEND_CONFIG_CHANGE_MSG, 'BACKEND_CONFIG_CHANGE_MSG', empty, { protocolFeature: P.CONFIG }),
  BACKEND_VRING_HOST_NOTIFIER_MSG: spec(B.BACKEND_VRING_HOST_NOTIFIER_MSG, 'BACKEND_VRING_HOST_NOTIFIER_MSG', vringArea, {
    fds: FDS_0_1,
    protocolFeature: P.HOST_NOTIFIER,
    expectFds: (a) => vringFdRule({ index: a.index, noFd: a.noFd }),
  }),
  BACKEND_VRING_CALL: spec(B.BACKEND_VRING_CALL, 'BACKEND_VRING_CALL', vringState, { protocolFeature: P.INBAND_NOTIFICATIONS }),
  BACKEND_VRING_ERR: spec(B.BACKEND_VRING_ERR, 'BACKEND_VRING_ERR', vringState, { protocolFeature: P.INBAND_NOTIFICATIONS }),
  BACKEND_SHARED_OBJECT_ADD: spec(B.BACKEND_SHARED_OBJECT_ADD, 'BACKEND_SHARED_OBJECT_ADD', sharedObject, {
    protocolFeature: P.SHARED_OBJECT,
  }),
  BACKEND_SHARED_OBJECT_REMOVE: spec(B.BACKEND_SHARED_OBJECT_REMOVE, 'BACKEND_SHARED_OBJECT_REMOVE', sharedObject, {
    protocolFeature: P.SHARED_OBJECT,
  }),
  // rust-vmm's Backend::shared_object_lookup attaches an fd to the request; accept (and close) it
  BACKEND_SHARED_OBJECT_LOOKUP: spec(
    B.BACKEND_SHARED_OBJECT_LOOKUP,
    'BACKEND_SHARED_OBJECT_LOOKUP',
    sharedObject,
    getter(u64, { fds: FDS_0_1, replyFds: FDS_0_1, protocolFeature: P.SHARED_OBJECT }),
  ),
  BACKEND_SHMEM_MAP: spec(B.BACKEND_SHMEM_MAP, 'BACKEND_SHMEM_MAP', shmemMap, { fds: FDS_1, protocolFeature: P.SHMEM }),
  BACKEND_SHMEM_UNMAP: spec(B.BACKEND_SHMEM_UNMAP, 'BACKEND_SHMEM_UNMAP', shmemMap, { protocolFeature: P.SHMEM }),
};

function byId(table: Record<string, MessageSpec>): Readonly<Record<number, MessageSpec>> {
  const out: Record<number, MessageSpec> = {};
  for (const s of Object.values(table)) out[s.id] = s;
  return Object.freeze(out);
}

/** Front-end → back-end messages, by request id. */
export const FRONTEND_MESSAGES: Readonly<Record<number, MessageSpec>> = byId(FRONTEND_MESSAGES_BY_NAME);
/** Back-end → front-end messages, by request id. */
export const BACKEND_MESSAGES: Readonly<Record<number, MessageSpec>> = byId(BACKEND_MESSAGES_BY_NAME);

// ---------------------------------------------------------------------------------------------------
// Rules shared by both sides
// ---------------------------------------------------------------------------------------------------

function rangeText(r: FdRange): string {
  return r.min === r.max ? `exactly ${r.min}` : `${r.min} to ${r.max}`;
}

function checkFdCount(label: string, fdCount: number, range: FdRange, exact?: { count: number; reason: string }): void {
  if (!Number.isInteger(fdCount) || fdCount < 0) throw new TypeError(`fdCount ${fdCount} is not a count`);
  if (fdCount > MAX_FDS) fail(`${fdCount} fds attached${label}, at most ${MAX_FDS} are accepted per message`);
  if (fdCount < range.min || fdCount > range.max) fail(`${fdCount} fds attached${label}, expected ${rangeText(range)}`);
  if (exact && exact.count !== fdCount) fail(`${fdCount} fds attached${label}, but ${exact.reason}`);
}

/**
 * Checks the number of fds that came with a request against its spec and its decoded payload:
 * SET_MEM_TABLE one per region, SET_VRING_KICK/CALL/ERR according to the no-fd bit, and the fixed
 * ranges of A.3/A.4. Throws ProtocolError.
 */
export function checkFds<Req>(spec: MessageSpec<Req, unknown>, decoded: Req, fdCount: number): void {
  within(spec.id, spec.name, () => checkFdCount('', fdCount, spec.fds, spec.expectFds?.(decoded)));
}

/** Same for the fds that came with an explicit reply. */
export function checkReplyFds<Rep>(spec: MessageSpec<unknown, Rep>, decoded: Rep, fdCount: number): void {
  within(spec.id, spec.name, () => checkFdCount(' to the reply', fdCount, spec.replyFds, spec.expectReplyFds?.(decoded)));
}

export interface NegotiatedFeatures {
  /** acked virtio features (SET_FEATURES) */
  features: bigint;
  /** acked protocol features (SET_PROTOCOL_FEATURES) */
  protocolFeatures: bigint;
}

/** Throws ProtocolError when the message's protocol-feature or virtio-feature gate was not negotiated. */
export function checkGate(spec: MessageSpec, negotiated: NegotiatedFeatures): void {
  if (spec.protocolFeature !== undefined && (negotiated.protocolFeatures & bit(spec.protocolFeature)) === 0n)
    throw new ProtocolError(
      `${spec.name} needs protocol feature ${protocolFeatureName(spec.protocolFeature)} (bit ${spec.protocolFeature}), which was not negotiated`,
      spec.id,
    );
  if (spec.virtioFeature !== undefined && (negotiated.features & bit(spec.virtioFeature)) === 0n)
    throw new ProtocolError(`${spec.name} needs virtio feature bit ${spec.virtioFeature}, which was not negotiated`, spec.id);
}

export type ReplyKind = 'explicit' | 'ack' | 'none';

/**
 * What answers a request (A.7): its explicit reply when it always has one (or in postcopy mode for
 * SET_MEM_TABLE / ADD_MEM_REG), otherwise a u64 ack when `needReply` (NEED_REPLY set and REPLY_ACK
 * negotiated; the caller decides), otherwise nothing.
 */
export function replyKind(spec: MessageSpec, opts: { needReply: boolean; postcopy?: boolean }): ReplyKind {
  if (spec.alwaysReplies) return 'explicit';
  if (spec.postcopyReply && opts.postcopy === true) return 'explicit';
  return opts.needReply ? 'ack' : 'none';
}

// ---------------------------------------------------------------------------------------------------
// Generic message encode/decode over a spec table
// ---------------------------------------------------------------------------------------------------

interface Channel {
  readonly table: Readonly<Record<number, MessageSpec>>;
  readonly name: (id: number) => string;
  readonly what: string;
}

const FRONTEND: Channel = { table: FRONTEND_MESSAGES, name: requestName, what: 'front-end' };
const BACKEND: Channel = { table: BACKEND_MESSAGES, name: backendRequestName, what: 'back-end' };

function lookup(ch: Channel, id: number): MessageSpec {
  const s = ch.table[id];
  if (!s) throw new ProtocolError(`unknown ${ch.what} request id ${id}`, id);
  return s;
}

function checkBody(header: MessageHeader, payload: Buffer): void {
  if (header.size !== payload.length) fail(`header size is ${header.size}, but the payload is ${payload.length} bytes`);
}

interface Decoded {
  name: string;
  request: number;
  flags: number;
  needReply: boolean;
  payload: unknown;
  fdCount: number;
}

function decodeIn(ch: Channel, header: MessageHeader, payload: Buffer, fdCount: number): Decoded {
  checkHeader(header, ch.name);
  const s = lookup(ch, header.request);
  return within(s.id, s.name, () => {
    if ((header.flags & HeaderFlag.REPLY) !== 0) fail(`a request must not have the REPLY flag (flags ${hex(header.flags)})`);
    checkBody(header, payload);
    const value = s.request.decode(payload);
    s.check?.(value);
    checkFds(s, value, fdCount);
    return {
      name: s.name,
      request: s.id,
      flags: header.flags,
      needReply: (header.flags & HeaderFlag.NEED_REPLY) !== 0,
      payload: value,
      fdCount,
    };
  });
}

export interface EncodeRequestOptions {
  /** set NEED_REPLY (REPLY_ACK) */
  needReply?: boolean;
  /** when given, the fd count is checked against the request (checkFds) */
  fdCount?: number;
  /** skip the payload's semantic checks (layout only): for tests that send malformed messages */
  unchecked?: boolean;
}

function encodeRequestIn(ch: Channel, id: number, payload: unknown, o: EncodeRequestOptions = {}): Buffer {
  const s = lookup(ch, id);
  const body = within(s.id, s.name, () => {
    if (o.unchecked === true) return s.request.pack(payload);
    const b = s.request.encode(payload);
    s.check?.(payload);
    if (o.fdCount !== undefined) checkFdCount('', o.fdCount, s.fds, s.expectFds?.(payload));
    return b;
  });
  return encodeMessage(s.id, HeaderFlag.VERSION | (o.needReply === true ? HeaderFlag.NEED_REPLY : 0), body);
}

export interface EncodeReplyOptions {
  /** when given, the fd count is checked against the reply (checkReplyFds) */
  fdCount?: number;
}

const REPLY_FLAGS = HeaderFlag.VERSION | HeaderFlag.REPLY;

function encodeReplyIn(ch: Channel, id: number, payload: unknown, o: EncodeReplyOptions = {}): Buffer {
  const s = lookup(ch, id);
  const reply = s.reply;
  if (!reply) throw new TypeError(`${s.name} has no explicit reply; answer it with an ack`);
  const body = within(s.id, s.name, () => {
    const b = reply.encode(payload);
    if (o.fdCount !== undefined) checkFdCount(' to the reply', o.fdCount, s.replyFds, s.expectReplyFds?.(payload));
    return b;
  });
  return encodeMessage(s.id, REPLY_FLAGS, body);
}

function encodeAckIn(ch: Channel, id: number, status: bigint): Buffer {
  const s = lookup(ch, id);
  return encodeMessage(s.id, REPLY_FLAGS, within(s.id, s.name, () => u64.encode(status)));
}

function decodeReplyIn(
  ch: Channel,
  expected: number,
  header: MessageHeader,
  payload: Buffer,
  fdCount: number,
  kind: 'explicit' | 'ack',
): unknown {
  const s = lookup(ch, expected);
  checkHeader(header, ch.name);
  return within(s.id, s.name, () => {
    if (header.request !== s.id) fail(`expected a reply to ${s.name}, got ${ch.name(header.request)} (${header.request})`);
    // NEED_REPLY on a reply is tolerated: libvhost-user's vu_send_reply leaves the request's flag in place
    if ((header.flags & HeaderFlag.REPLY) === 0) fail(`reply lacks the REPLY flag (flags ${hex(header.flags)})`);
    checkBody(header, payload);
    if (kind === 'ack') {
      const status = u64.decode(payload);
      checkFdCount(' to the ack', fdCount, FDS_0);
      return status;
    }
    if (!s.reply) throw new TypeError(`${s.name} has no explicit reply; decode an ack`);
    const value = s.reply.decode(payload);
    checkFdCount(' to the reply', fdCount, s.replyFds, s.expectReplyFds?.(value));
    return value;
  });
}

// ---------------------------------------------------------------------------------------------------
// Front-end → back-end: the back-end decodes requests and encodes replies; the built-in front-end
// encodes requests and decodes replies.
// ---------------------------------------------------------------------------------------------------

/** A decoded front-end request: switch on `name` to get a typed `payload`. */
export type DecodedRequest = {
  [K in FrontendRequestName]: {
    readonly name: K;
    readonly request: (typeof FrontendRequest)[K];
    readonly flags: number;
    /** NEED_REPLY was set */
    readonly needReply: boolean;
    readonly payload: FrontendRequestPayloads[K];
    readonly fdCount: number;
  };
}[FrontendRequestName];

/**
 * Decodes a front-end request. Throws ProtocolError (with `request` set) for: unknown id, a header
 * that is not a request (bad version, reserved bits, REPLY set, size > MAX_PAYLOAD), header size !=
 * payload length, a payload of the wrong size or with invalid content, or the wrong number of fds.
 * Feature gates are not checked here (see checkGate).
 */
export function decodeRequest(header: MessageHeader, payload: Buffer, fdCount: number): DecodedRequest {
  return decodeIn(FRONTEND, header, payload, fdCount) as DecodedRequest;
}

/** Header + payload of a front-end request (version 1, NEED_REPLY if asked). */
export function encodeRequest<K extends FrontendRequestName>(
  name: K,
  payload: FrontendRequestPayloads[K],
  options?: EncodeRequestOptions,
): Buffer {
  return encodeRequestIn(FRONTEND, FrontendRequest[name], payload, options);
}

/** Header + payload of the explicit reply to a front-end request (REPLY set, id echoed, version 1). */
export function encodeReply<K extends FrontendRequestName>(
  name: K,
  payload: FrontendReplyPayloads[K],
  options?: EncodeReplyOptions,
): Buffer {
  return encodeReplyIn(FRONTEND, FrontendRequest[name], payload, options);
}

/** Header + u64 of a REPLY_ACK answer: 0 = success, anything else = failure. */
export function encodeAck(request: FrontendRequestName | number, status: bigint): Buffer {
  return encodeAckIn(FRONTEND, typeof request === 'number' ? request : FrontendRequest[request], status);
}

/**
 * Decodes the back-end's answer to `name`: the explicit reply, or with `kind = 'ack'` the u64 status
 * of a REPLY_ACK. Checks the REPLY flag, the echoed request id, the size, the payload and the fds.
 */
export function decodeReply<K extends FrontendRequestName>(
  name: K,
  header: MessageHeader,
  payload: Buffer,
  fdCount: number,
  kind: 'explicit',
): FrontendReplyPayloads[K];
export function decodeReply(name: FrontendRequestName, header: MessageHeader, payload: Buffer, fdCount: number, kind: 'ack'): bigint;
export function decodeReply(
  name: FrontendRequestName,
  header: MessageHeader,
  payload: Buffer,
  fdCount: number,
  kind: 'explicit' | 'ack',
): unknown {
  return decodeReplyIn(FRONTEND, FrontendRequest[name], header, payload, fdCount, kind);
}

// ---------------------------------------------------------------------------------------------------
// Back-end → front-end (BACKEND_REQ channel): the back-end encodes requests and decodes the acks;
// the front-end decodes requests and encodes replies.
// ---------------------------------------------------------------------------------------------------

export type DecodedBackendRequest = {
  [K in BackendRequestName]: {
    readonly name: K;
    readonly request: (typeof BackendRequest)[K];
    readonly flags: number;
    readonly needReply: boolean;
    readonly payload: BackendRequestPayloads[K];
    readonly fdCount: number;
  };
}[BackendRequestName];

export function decodeBackendRequest(header: MessageHeader, payload: Buffer, fdCount: number): DecodedBackendRequest {
  return decodeIn(BACKEND, header, payload, fdCount) as DecodedBackendRequest;
}

export function encodeBackendRequest<K extends BackendRequestName>(
  name: K,
  payload: BackendRequestPayloads[K],
  options?: EncodeRequestOptions,
): Buffer {
  return encodeRequestIn(BACKEND, BackendRequest[name], payload, options);
}

export function encodeBackendReply<K extends BackendRequestName>(
  name: K,
  payload: BackendReplyPayloads[K],
  options?: EncodeReplyOptions,
): Buffer {
  return encodeReplyIn(BACKEND, BackendRequest[name], payload, options);
}

export function encodeBackendAck(request: BackendRequestName | number, status: bigint): Buffer {
  return encodeAckIn(BACKEND, typeof request === 'number' ? request : BackendRequest[request], status);
}

export function decodeBackendReply<K extends BackendRequestName>(
  name: K,
  header: MessageHeader,
  payload: Buffer,
  fdCount: number,
  kind: 'explicit',
): BackendReplyPayloads[K];
export function decodeBackendReply(name: BackendRequestName, header: MessageHeader, payload: Buffer, fdCount: number, kind: 'ack'): bigint;
export function decodeBackendReply(
  name: BackendRequestName,
  header: MessageHeader,
  payload: Buffer,
  fdCount: number,
  kind: 'explicit' | 'ack',
): unknown {
  return decodeReplyIn(BACKEND, BackendRequest[name], header, payload, fdCount, kind);
}
