import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { closeQuietly, blkGetSize64, blkSectorSizes, fstat, ftruncate, MAP_SHARED, memfdCreate, mmapView, PROT_READ, PROT_WRITE } from '../sys/syscalls.js';
import type { DeviceModel } from './device.js';

/**
 * virtio-blk (virtio device id 2) on a raw image: a regular file or a block device. The requests themselves
 * are served by the queue workers (blk-queue.ts) through io_uring, straight between the image and guest
 * buffers; this model opens the image, sizes it, and answers for the config space.
 */

// ---- feature bits (virtio 1.2, 5.2.3) ----
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// ---- request types and status values (5.2.6) ----
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
export const VIRTIO_BLK_ID_BYTES = 20;

export const SECTOR = 512;
/** virtio_blk_outhdr: type u32, reserved u32, sector u64 */
export const BLK_OUTHDR_BYTES = 16;
/** virtio_blk_discard_write_zeroes: sector u64, num_sectors u32, flags u32 */
export const BLK_DWZ_BYTES = 16;

// ---- limits the device announces (and the queue handler enforces) ----
/** requests in flight per queue: the io_uring SQ size and the number of request slots */
export const BLK_QUEUE_DEPTH = 128;
/** iovecs a request slot holds: the queue's 512 KiB scratch area split over BLK_QUEUE_DEPTH slots */
export const BLK_IOV_PER_SLOT = 256;
/** seg_max: data segments per request (well below BLK_IOV_PER_SLOT: a buffer that crosses a guest memory
 *  region boundary takes two iovecs) */
export const BLK_SEG_MAX = 128;
/** size_max: bytes per segment */
export const BLK_SIZE_MAX = 1 << 20;
export const BLK_MAX_DISCARD_SECTORS = 1 << 22; // 2 GiB per range
export const BLK_MAX_DISCARD_SEG = 32;
export const BLK_MAX_WRITE_ZEROES_SECTORS = 1 << 22;
export const BLK_MAX_WRITE_ZEROES_SEG = 32;
/** discard_sector_alignment: 4 KiB, the page size the guest caches in */
export const BLK_DISCARD_ALIGNMENT = 8;

/** struct virtio_blk_config as this device fills it (60 bytes, below) */
export const BLK_CONFIG_BYTES = 60;
/**
 * What GET_CONFIG may read: the 60 bytes above, then zeros for the fields of later specifications
 * (secure erase, 12 bytes; zoned, 24 bytes) whose features are never offered. QEMU asks for
 * sizeof(struct virtio_blk_config) of its own headers (72 bytes in 7.2, 96 in 8.0+) and fails the
 * device when the read is refused.
 */
export const BLK_CONFIG_SPACE = 96;
export const CFG_CAPACITY = 0;
export const CFG_SIZE_MAX = 8;
export const CFG_SEG_MAX = 12;
export const CFG_GEOMETRY = 16;
export const CFG_BLK_SIZE = 20;
export const CFG_PHYSICAL_BLOCK_EXP = 24;
export const CFG_ALIGNMENT_OFFSET = 25;
export const CFG_MIN_IO_SIZE = 26;
export const CFG_OPT_IO_SIZE = 28;
export const CFG_WRITEBACK = 32;
export const CFG_NUM_QUEUES = 34;
export const CFG_MAX_DISCARD_SECTORS = 36;
export const CFG_MAX_DISCARD_SEG = 40;
export const CFG_DISCARD_SECTOR_ALIGNMENT = 44;
export const CFG_MAX_WRITE_ZEROES_SECTORS = 48;
export const CFG_MAX_WRITE_ZEROES_SEG = 52;
export const CFG_WRITE_ZEROES_MAY_UNMAP = 56;

export const BLK_MAX_QUEUES = 32;

export interface BlkOptions {
  image: string;
  queues?: number;
  readOnly?: boolean;
  /** GET_ID answer, at most 20 bytes (default: derived from the image path) */
  serial?: string;
}

export interface BlkDevice extends DeviceModel {
  readonly imagePath: string;
  /** image size in bytes (a multiple of 512) */
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly serial: string;
  readonly blockDevice: boolean;
  /** the writeback byte of the config space: 1 writeback, 0 writethrough */
  readonly writeback: number;
  /** Close the image and the shared writeback flag (after every connection is gone). */
  close(): void;
}

export const BLK_CAPABILITIES = ['read-only', 'blk-file'] as const;

/** What `blk --print-capabilities` needs without an image: the name and the capabilities, nothing to serve. */
export function blkCapabilitiesModel(): DeviceModel {
  return { name: 'blk', queues: 1, maxQueueSize: 32768, features: 0n, protocolFeatures: 0n, options: {}, capabilities: BLK_CAPABILITIES };
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o060000;

/** 20 bytes or fewer of the image path: its base name, or a shortened base name plus a hash of the full path. */
export function defaultSerial(image: string): string {
  const full = path.resolve(image);
  const base = path.basename(full).replace(/[^\x21-\x7e]/g, '_');
  if (base.length > 0 && base.length <= VIRTIO_BLK_ID_BYTES) return base;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  return `${base.slice(0, VIRTIO_BLK_ID_BYTES - 9)}-${hash}`;
}

export function blkDevice(opts: BlkOptions): BlkDevice {
  const queues = opts.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > BLK_MAX_QUEUES)
    throw new Error(`--queues must be 1..${BLK_MAX_QUEUES}, got ${opts.queues}`);
  const serial = opts.serial ?? defaultSerial(opts.image);
  if (Buffer.byteLength(serial, 'utf8') > VIRTIO_BLK_ID_BYTES)
    throw new Error(`--serial must be at most ${VIRTIO_BLK_ID_BYTES} bytes, got ${Buffer.byteLength(serial, 'utf8')} ('${serial}')`);
  const readOnly = opts.readOnly ?? false;
  let fd: number;
  try {
    // libuv opens with O_CLOEXEC
    fd = fs.openSync(opts.image, readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR);
  } catch (e) {
    throw new Error(`cannot open image '${opts.image}'${readOnly ? '' : ' for writing'}: ${(e as Error).message}`);
  }
  let wceFd = -1;
  try {
    const st = fstat(fd);
    const kind = st.mode & S_IFMT;
    let size: bigint;
    let physical = 4096;
    let logical = SECTOR;
    if (kind === S_IFREG) size = st.size;
    else if (kind === S_IFBLK) {
      size = blkGetSize64(fd);
      ({ logical, physical } = blkSectorSizes(fd));
    } else throw new Error(`image '${opts.image}' is neither a regular file nor a block device`);
    if (size === 0n) throw new Error(`image '${opts.image}' is empty`);
    if (size % BigInt(SECTOR) !== 0n)
      throw new Error(`image '${opts.image}' is ${size} bytes, not a multiple of ${SECTOR}: resize it (e.g. truncate -s ${((size + 511n) / 512n) * 512n})`);
    if (size > BigInt(Number.MAX_SAFE_INTEGER) / 2n) throw new Error(`image '${opts.image}' is too large (${size} bytes)`);
    const sizeBytes = Number(size);
    if (logical < SECTOR || logical & (logical - 1)) logical = SECTOR;
    if (physical < logical || physical & (physical - 1)) physical = Math.max(logical, 4096);

    // the writeback byte, shared with the queue workers: one page of a memfd each side maps
    wceFd = memfdCreate('vhost-wasm-blk-wce');
    ftruncate(wceFd, 4096);
    const wceMap = mmapView(4096, PROT_READ | PROT_WRITE, MAP_SHARED, wceFd, 0n);
    const wce = new Uint8Array(wceMap.buffer, 0, 1);
    wce[0] = 1;

    let features =
      (1n << BigInt(VIRTIO_BLK_F_SIZE_MAX)) |
      (1n << BigInt(VIRTIO_BLK_F_SEG_MAX)) |
      (1n << BigInt(VIRTIO_BLK_F_BLK_SIZE)) |
      (1n << BigInt(VIRTIO_BLK_F_FLUSH)) |
      (1n << BigInt(VIRTIO_BLK_F_TOPOLOGY)) |
      (1n << BigInt(VIRTIO_BLK_F_CONFIG_WCE)) |
      (1n << BigInt(VIRTIO_BLK_F_MQ)) |
      (1n << BigInt(VIRTIO_BLK_F_DISCARD)) |
      (1n << BigInt(VIRTIO_BLK_F_WRITE_ZEROES));
    if (readOnly) features |= 1n << BigInt(VIRTIO_BLK_F_RO);

    const config = Buffer.alloc(BLK_CONFIG_SPACE);
    config.writeBigUInt64LE(size / BigInt(SECTOR), CFG_CAPACITY);
    config.writeUInt32LE(BLK_SIZE_MAX, CFG_SIZE_MAX);
    config.writeUInt32LE(BLK_SEG_MAX, CFG_SEG_MAX);
    // geometry (cylinders u16, heads u8, sectors u8) stays 0: VIRTIO_BLK_F_GEOMETRY is not offered
    config.writeUInt32LE(logical, CFG_BLK_SIZE);
    config.writeUInt8(Math.log2(physical / logical), CFG_PHYSICAL_BLOCK_EXP);
    config.writeUInt8(0, CFG_ALIGNMENT_OFFSET);
    config.writeUInt16LE(physical / logical, CFG_MIN_IO_SIZE);
    config.writeUInt32LE(0, CFG_OPT_IO_SIZE);
    config.writeUInt16LE(queues, CFG_NUM_QUEUES);
    config.writeUInt32LE(BLK_MAX_DISCARD_SECTORS, CFG_MAX_DISCARD_SECTORS);
    config.writeUInt32LE(BLK_MAX_DISCARD_SEG, CFG_MAX_DISCARD_SEG);
    config.writeUInt32LE(BLK_DISCARD_ALIGNMENT, CFG_DISCARD_SECTOR_ALIGNMENT);
    config.writeUInt32LE(BLK_MAX_WRITE_ZEROES_SECTORS, CFG_MAX_WRITE_ZEROES_SECTORS);
    config.writeUInt32LE(BLK_MAX_WRITE_ZEROES_SEG, CFG_MAX_WRITE_ZEROES_SEG);
    config.writeUInt8(1, CFG_WRITE_ZEROES_MAY_UNMAP);

    const blockDevice = kind === S_IFBLK;
    let closed = false;
    const imageFd = fd;
    const flagFd = wceFd;
    return {
      name: 'blk',
      queues,
      maxQueueSize: 32768,
      features,
      protocolFeatures: 0n,
      usedInOrder: 'in-order-completion', // io_uring finishes requests in any order
      options: { fd: imageFd, size: sizeBytes, readOnly, serial, wceFd: flagFd, blockDevice },
      capabilities: BLK_CAPABILITIES,
      imagePath: opts.image,
      sizeBytes,
      readOnly,
      serial,
      blockDevice,
      get writeback(): number {
        return wce[0]!;
      },
      readConfig(): Buffer {
        config[CFG_WRITEBACK] = wce[0]!;
        return Buffer.from(config);
      },
      writeConfig(offset: number, data: Buffer): boolean {
        // only the writeback byte is writable (VIRTIO_BLK_F_CONFIG_WCE): 0 writethrough, 1 writeback
        if (offset !== CFG_WRITEBACK || data.length !== 1 || data[0]! > 1) return false;
        wce[0] = data[0]!;
        return true;
      },
      close(): void {
        if (closed) return;
        closed = true;
        closeQuietly(imageFd);
        closeQuietly(flagFd);
      },
    };
  } catch (e) {
    closeQuietly(fd);
    closeQuietly(wceFd);
    throw e;
  }
}
