/**
 * The engine's ABI: where things live in a connection's shared WebAssembly.Memory.
 *
 * Every offset here is a wasm linear-memory address. `assembly/layout.ts` mirrors these values for the
 * AssemblyScript side; `test/engine/layout.test.ts` checks that both agree (the engine exports getters).
 *
 *   0x0000_0000  null page: never mapped to anything, so a wasm address of 0 means "untranslatable"
 *   0x0010_0000  region table (guest memory regions, see REGION_*)
 *   0x0020_0000  queue areas, QUEUE_AREA_SIZE each, MAX_QUEUES of them: queue state, chain records, segments
 *   0x0220_0000  device scratch areas, DEVICE_AREA_SIZE per queue (iovecs, request headers, ...)
 *   0x0380_0000  dirty log (the SET_LOG_BASE fd, mapped here during live migration)
 *   0x0400_0000  inflight region (the INFLIGHT_SHMFD memfd, mapped here)
 *   0x0800_0000  guest RAM regions, each mapped at a 2 MiB-aligned host address
 */

export const WASM_PAGE = 0x1_0000;

// ---- region table ----
export const REGION_TABLE = 0x0010_0000;
export const REGION_HDR_COUNT = 0; // u32 number of valid entries
export const REGION_HDR_GENERATION = 4; // u32 bumped on every change
// bytes of the dirty log mapped at LOG_AREA (0 = none); lives in the region table header because every queue
// of the connection shares the one log, and it changes only while the rings are paused, like the table
export const REGION_HDR_LOG_BYTES = 8;
export const REGION_HDR_SIZE = 64;
export const REGION_ENTRY_SIZE = 32;
export const REGION_GPA = 0; // u64 guest-physical start
export const REGION_SIZE = 8; // u64 length in bytes
export const REGION_UVA = 16; // u64 front-end virtual start
export const REGION_WASM = 24; // u64 wasm linear address of the region's first byte
export const MAX_REGIONS = 64;

// ---- queue areas ----
export const QUEUE_AREAS = 0x0020_0000;
export const QUEUE_AREA_SIZE = 0x4_0000;
export const MAX_QUEUES = 32;

// queue state, at the start of each queue area
export const QS_SIZE_FIELD = 0; // u32 queue size N
export const QS_FEATURES = 4; // u32 QF_* bits
export const QS_DESC = 8; // u32 wasm address of the descriptor table
export const QS_AVAIL = 12; // u32 wasm address of the avail ring
export const QS_USED = 16; // u32 wasm address of the used ring
export const QS_REGIONS = 20; // u32 wasm address of the region table
export const QS_INFLIGHT = 24; // u32 wasm address of this queue's inflight area, 0 = none
export const QS_ERROR = 28; // u32 ERR_* code once the ring is broken, 0 while healthy
export const QS_LAST_AVAIL = 32; // u16 next avail index to pop (free-running)
export const QS_NEXT_USED = 34; // u16 next used index to publish (free-running)
export const QS_SIGNALLED_USED = 36; // u16 used index at the last notification decision
export const QS_SIGNALLED_VALID = 38; // u16 0 until the first decision
export const QS_ERROR_DETAIL = 44; // u32 the head or descriptor index that broke the ring
export const QS_INFLIGHT_COUNTER = 48; // u64 fetch-order counter for inflight records
export const QS_PENDING = 56; // u32 used elements written since the last publish
export const QS_STAT_CHAINS = 64; // u64 chains popped
export const QS_STAT_DESCS = 72; // u64 descriptors walked
export const QS_STAT_BATCHES = 80; // u64 popBatch calls that returned > 0
export const QS_STAT_NOTIFY = 88; // u64 publishes that asked for a notification
export const QS_STAT_SUPPRESSED = 96; // u64 publishes where the driver did not want one
export const QS_STAT_BYTES_READ = 104; // u64 readable bytes handed out
export const QS_STAT_BYTES_WRITTEN = 112; // u64 used lengths reported
// written by the queue's worker as f64 (plain numbers: no BigInt allocation on the hot path); the engine never
// touches these
export const QS_STAT_KICKS = 128; // f64 kick eventfd wake-ups with a non-zero counter
export const QS_STAT_CALLS = 136; // f64 call eventfd writes
export const QS_STAT_POLL_HITS = 144; // f64 busy-poll rounds that found work
export const QS_LOG_USED = 168; // u64 log_guest_addr from SET_VRING_ADDR: guest-physical address of the used ring
export const QS_LOG_DROPPED = 176; // u32 pages written that the log was too small to record (saturating)
export const QS_BYTES = 512;

export const QF_EVENT_IDX = 1 << 0;
export const QF_INDIRECT = 1 << 1;
export const QF_INFLIGHT = 1 << 3;
export const QF_PACKED = 1 << 4; // packed ring (B.2): set by packedConfigure; every engine entry point dispatches on it
export const QF_IN_ORDER = 1 << 5; // VIRTIO_F_IN_ORDER: packed complete() writes one used descriptor per run
export const QF_LOG = 1 << 6; // VHOST_F_LOG_ALL: log the device's writes into guest buffers in the dirty log
export const QF_LOG_USED = 1 << 7; // VHOST_VRING_F_LOG as well: log the ring writes (split: at QS_LOG_USED)

// packed-ring queue state (B.2). QS_LAST_AVAIL / QS_NEXT_USED / QS_SIGNALLED_USED then hold a ring
// position as `index | wrap << 15` (the vhost-user SET_VRING_BASE encoding), QS_AVAIL / QS_USED the
// driver / device event suppression structures, and CH_HEAD a packed token (PACKED_TOKEN_*).
export const QS_PK_BATCH = 160; // u16 position of the first used descriptor not yet published
export const QS_PK_BATCH_FLAGS = 162; // u16 the flags it gets when the batch is published (written last, B.5 row 6)
export const QS_PK_INFL_FREE = 164; // u16 packed inflight: entry the next fetched chain starts at (shadow free_head)
// a packed chain token (CH_HEAD, pushUsed's head): buffer id | ring slots the chain took << 16;
// with packed inflight tracking the low half is the chain's inflight head entry instead of the id
export const PACKED_TOKEN_SLOTS_SHIFT = 16;

// chain records: one per popped chain, CHAIN_CAP per queue
export const CHAINS_OFFSET = 0x200; // from the queue area start
export const CHAIN_BYTES = 32;
export const CHAIN_CAP = 1024;
export const CH_HEAD = 0; // u32 head descriptor index (the id to return in the used ring)
export const CH_SEG_START = 4; // u32 index of the first segment in the queue's segment array
export const CH_SEG_COUNT = 8; // u32 number of segments
export const CH_READ_LEN = 12; // u32 total device-readable bytes
export const CH_WRITE_LEN = 16; // u32 total device-writable bytes
export const CH_USED_LEN = 20; // u32 set by the device: bytes it wrote, reported in the used ring

// segments: (wasm address, length, flags); a descriptor may split into several at region boundaries
export const SEGS_OFFSET = CHAINS_OFFSET + CHAIN_CAP * CHAIN_BYTES;
export const SEG_BYTES = 16;
export const SEG_CAP = 12288;
export const SEG_ADDR = 0; // u32 wasm address
export const SEG_LEN = 4; // u32
export const SEG_FLAGS = 8; // u32 SEG_F_*
export const SEG_F_WRITE = 1;

// heads to resubmit after a reconnect (u16 each), handed to splitPopHeads in chunks
export const RESUBMIT_OFFSET = 0x3_f800; // from the queue area start, after the segments
export const RESUBMIT_CAP = 1024;

// ---- device scratch ----
export const DEVICE_AREAS = 0x0220_0000;
export const DEVICE_AREA_SIZE = 0x8_0000;

// ---- dirty log (A.9): one bit per 4 KiB guest page, bit = gpa >> LOG_PAGE_SHIFT ----
export const LOG_AREA = 0x0380_0000;
export const LOG_AREA_MAX = 0x0080_0000; // 8 MiB of bitmap: guest-physical addresses up to 256 GiB
export const LOG_PAGE_SHIFT = 12;

// ---- inflight ----
export const INFLIGHT_AREA = 0x0400_0000;
export const INFLIGHT_AREA_MAX = 0x0400_0000;

// ---- guest RAM ----
export const GUEST_AREA = 0x0800_0000;
export const GUEST_ALIGN = 0x20_0000;
export const MEMORY_MAX_PAGES = 65536;

// ---- error codes (QS_ERROR; popBatch returns their negation) ----
export const ERR_AVAIL_IDX = 1; // avail.idx moved more than N past last_avail
export const ERR_HEAD_RANGE = 2; // head index >= N
export const ERR_NEXT_RANGE = 3; // next index >= table size
export const ERR_CHAIN_LOOP = 4; // more descriptors than the table holds: a loop
export const ERR_TRANSLATE = 5; // buffer not inside the mapped guest regions
export const ERR_INDIRECT_LEN = 6; // indirect table length 0 or not a multiple of 16
export const ERR_INDIRECT_NESTED = 7; // indirect descriptor inside an indirect table
export const ERR_WRITE_ORDER = 8; // readable descriptor after a writable one
export const ERR_INDIRECT_NEXT = 9; // INDIRECT together with NEXT
export const ERR_SEGMENTS = 10; // chain needs more segments than SEG_CAP
export const ERR_CHAIN_BYTES = 11; // chain longer than 2^32 - 1 bytes
export const ERR_INDIRECT_OFF = 12; // indirect descriptor used without VIRTIO_F_INDIRECT_DESC... reserved, not raised
export const ERR_USED_ID = 13; // pushUsed with an id that is not a popped head
export const ERR_DEVICE = 14; // the device failed on a chain (raised by the worker, never by the engine)
export const ERR_DESC_FLAGS = 15; // packed: a chain continues into a slot the driver has not made available

export const ERROR_NAMES: Record<number, string> = {
  [ERR_AVAIL_IDX]: 'avail index moved more than the queue size',
  [ERR_HEAD_RANGE]: 'head index out of range',
  [ERR_NEXT_RANGE]: 'next index out of range',
  [ERR_CHAIN_LOOP]: 'descriptor chain loops or is longer than its table',
  [ERR_TRANSLATE]: 'buffer outside the mapped guest memory',
  [ERR_INDIRECT_LEN]: 'indirect table length is 0 or not a multiple of 16',
  [ERR_INDIRECT_NESTED]: 'nested indirect table',
  [ERR_WRITE_ORDER]: 'device-readable descriptor after a device-writable one',
  [ERR_INDIRECT_NEXT]: 'indirect descriptor with the NEXT flag',
  [ERR_SEGMENTS]: 'chain has more segments than the engine can hand out',
  [ERR_CHAIN_BYTES]: 'chain longer than 4 GiB',
  [ERR_INDIRECT_OFF]: 'indirect descriptor without VIRTIO_F_INDIRECT_DESC',
  [ERR_USED_ID]: 'used id is not an outstanding head',
  [ERR_DEVICE]: 'the device failed on a chain',
  [ERR_DESC_FLAGS]: 'packed chain runs into a descriptor that is not available',
};

export function queueArea(q: number): number {
  return QUEUE_AREAS + q * QUEUE_AREA_SIZE;
}
export function deviceArea(q: number): number {
  return DEVICE_AREAS + q * DEVICE_AREA_SIZE;
}

// =====================================================================================================
// ---- driver state ----
// The guest (driver) side of a split ring, as run by our built-in front-end and the benchmarks
// (assembly/split-driver.ts). A driver state block lives at a `ds` address in the FRONT-END's own
// memory (normally at the start of one of its queue areas; it needs DS_BYTES). Offsets are from `ds`.
// Appended section: nothing above this line depends on it.
// =====================================================================================================
export const QUEUE_SIZE_MAX = 32768; // largest split ring (B.1)

// split-ring format (B.1) as written by the driver and read by the engine
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const VIRTQ_DESC_BYTES = 16;
// packed-ring format (B.2)
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

export const DS_SIZE_FIELD = 0; // u32 queue size N
export const DS_FLAGS = 4; // u32 DSF_* bits
export const DS_DESC = 8; // u32 wasm address of the descriptor table (in the driver's memory)
export const DS_AVAIL = 12; // u32 wasm address of the avail ring
export const DS_USED = 16; // u32 wasm address of the used ring
export const DS_NUM_FREE = 20; // u32 free descriptors (generic mode)
export const DS_GPA_DELTA = 24; // u64 gpa = wasm address + delta (mod 2^64)
export const DS_FREE_HEAD = 32; // u16 first descriptor of the free list (generic mode; linked through desc.next)
export const DS_AVAIL_IDX = 34; // u16 shadow avail idx: next slot to fill (published by drvSubmit / drvKickAvail)
export const DS_LAST_USED = 36; // u16 next used index the driver will reap
export const DS_KICK_AVAIL = 38; // u16 avail idx at the last drvNeedKick decision
export const DS_FREE_CHAINS = 44; // u32 heads on the free stack (fixed-chain mode)
export const DS_DESCS_PER_CHAIN = 48; // u32 descriptors per chain (fixed-chain mode)
export const DS_ERRORS = 52; // u32 used elements whose id was not an outstanding head (device bug)
export const DS_STAT_SUBMITTED = 56; // u64 chains made available
export const DS_STAT_REAPED = 64; // u64 used elements reaped
export const DS_STAT_USED_BYTES = 72; // u64 sum of used lengths reaped
export const DS_STAT_KICKS = 80; // u64 drvNeedKick answers 1
export const DS_STAT_KICKS_SUPPRESSED = 88; // u64 drvNeedKick answers 0 with new buffers published
export const DS_OUTSTANDING = 96; // u32 chains made available and not reaped yet
export const DS_CHAIN_LEN = 0x100; // u16[QUEUE_SIZE_MAX] descriptors owned by each outstanding head, 0 = not outstanding
export const DS_FREE_STACK = DS_CHAIN_LEN + 2 * QUEUE_SIZE_MAX; // u16[QUEUE_SIZE_MAX] free heads (fixed-chain mode)
export const DS_BYTES = DS_FREE_STACK + 2 * QUEUE_SIZE_MAX; // 0x20100, fits in one QUEUE_AREA_SIZE

export const DSF_EVENT_IDX = 1 << 0; // VIRTIO_F_EVENT_IDX negotiated
export const DSF_FIXED = 1 << 1; // fixed-chain (benchmark) mode set up by drvSetupFixedChains
export const DSF_INTR_OFF = 1 << 2; // drvSetInterrupts(ds, 0) in effect
export const DSF_PACKED = 1 << 3; // packed ring (assembly/packed-driver.ts): drvInit flags bit DRV_INIT_PACKED

// drvInit's last argument: bits
export const DRV_INIT_EVENT_IDX = 1 << 0;
export const DRV_INIT_PACKED = 1 << 1; // avail / used are then the driver / device event suppression structures
// packed driver state, in the spare words of the DS block; DS_AVAIL_IDX / DS_LAST_USED / DS_KICK_AVAIL then
// hold positions (index | wrap << 15), DS_CHAIN_LEN the ring slots of each outstanding buffer id, DS_FREE_STACK
// (DS_FREE_CHAINS of them) the free buffer ids in both modes, DS_NUM_FREE the free ring slots
export const DS_PK_BUF_ADDR = 104; // u32 fixed-chain mode: buffer area (chain c, descriptor j at + (c * dpc + j) * len)
export const DS_PK_BUF_LEN = 108; // u32 fixed-chain mode: bytes per descriptor
export const DS_PK_WRITABLE = 112; // u32 fixed-chain mode: DRV_FIXED_*

// drvSetupFixedChains `writable` modes
export const DRV_FIXED_READ = 0; // every descriptor device-readable
export const DRV_FIXED_WRITE = 1; // every descriptor device-writable
export const DRV_FIXED_READ_THEN_WRITE = 2; // first descriptor readable, the others writable

// drvAddChain segment records (in the driver's memory)
export const DRV_SEG_BYTES = 16;
export const DRV_SEG_ADDR = 0; // u32 wasm address of the buffer in the driver's memory
export const DRV_SEG_LEN = 4; // u32
export const DRV_SEG_FLAGS = 8; // u32 DRV_SEG_F_*
export const DRV_SEG_F_WRITE = 1; // device-writable

// drvReapTo output records
export const DRV_USED_BYTES = 8; // { id: u32, len: u32 }

// ---- packed inflight region (A.10), per queue: the layout DPDK and SPDK use ----
// packed resubmission copies a chain's descriptors from the inflight area here (ring format), in the
// queue area after the segments
export const PK_RESUB_DESCS_OFFSET = 0x3_8800;
export const PK_RESUB_DESCS_CAP = 1792;
export const PINFL_HDR_BYTES = 32; // header, 32 bytes in C
export const PINFL_FEATURES = 0; // u64
export const PINFL_VERSION = 8; // u16 (1; 0 = uninitialised)
export const PINFL_DESC_NUM = 10; // u16
export const PINFL_FREE_HEAD = 12; // u16 first free entry
export const PINFL_OLD_FREE_HEAD = 14; // u16 free_head at the last commit
export const PINFL_USED_IDX = 16; // u16 device used index (no wrap bit)
export const PINFL_OLD_USED_IDX = 18; // u16 used_idx at the last commit
export const PINFL_USED_WRAP = 20; // u8 device used wrap counter
export const PINFL_OLD_USED_WRAP = 21; // u8 at the last commit
export const PINFL_DESC_BYTES = 32; // DescStatePacked
export const PINFLD_INFLIGHT = 0; // u8 (head entries)
export const PINFLD_NEXT = 2; // u16 free list / chain link
export const PINFLD_LAST = 4; // u16 (head entries) the chain's last entry
export const PINFLD_NUM = 6; // u16 (head entries) ring slots the chain took
export const PINFLD_COUNTER = 8; // u64 (head entries) fetch order
export const PINFLD_ID = 16; // u16 copy of the descriptor
export const PINFLD_FLAGS = 18; // u16
export const PINFLD_LEN = 20; // u32
export const PINFLD_ADDR = 24; // u64
