// Mirror of src/engine/layout.ts (the authoritative ABI). Every constant here is re-exported by
// index.ts as an immutable wasm global; test/engine/layout.test.ts checks both sides agree.
// Only constants: no mutable static data (every instance shares the memory, see feasibility §3).

export const WASM_PAGE: u32 = 0x1_0000;

// ---- region table ----
export const REGION_TABLE: u32 = 0x0010_0000;
export const REGION_HDR_COUNT: u32 = 0;
export const REGION_HDR_GENERATION: u32 = 4;
export const REGION_HDR_LOG_BYTES: u32 = 8;
export const REGION_HDR_SIZE: u32 = 64;
export const REGION_ENTRY_SIZE: u32 = 32;
export const REGION_GPA: u32 = 0;
export const REGION_SIZE: u32 = 8;
export const REGION_UVA: u32 = 16;
export const REGION_WASM: u32 = 24;
export const MAX_REGIONS: u32 = 64;

// ---- queue areas ----
export const QUEUE_AREAS: u32 = 0x0020_0000;
export const QUEUE_AREA_SIZE: u32 = 0x4_0000;
export const MAX_QUEUES: u32 = 32;

export const QS_SIZE_FIELD: u32 = 0;
export const QS_FEATURES: u32 = 4;
export const QS_DESC: u32 = 8;
export const QS_AVAIL: u32 = 12;
export const QS_USED: u32 = 16;
export const QS_REGIONS: u32 = 20;
export const QS_INFLIGHT: u32 = 24;
export const QS_ERROR: u32 = 28;
export const QS_LAST_AVAIL: u32 = 32;
export const QS_NEXT_USED: u32 = 34;
export const QS_SIGNALLED_USED: u32 = 36;
export const QS_SIGNALLED_VALID: u32 = 38;
export const QS_ERROR_DETAIL: u32 = 44;
export const QS_INFLIGHT_COUNTER: u32 = 48;
export const QS_PENDING: u32 = 56;
export const QS_STAT_CHAINS: u32 = 64;
export const QS_STAT_DESCS: u32 = 72;
export const QS_STAT_BATCHES: u32 = 80;
export const QS_STAT_NOTIFY: u32 = 88;
export const QS_STAT_SUPPRESSED: u32 = 96;
export const QS_STAT_BYTES_READ: u32 = 104;
export const QS_STAT_BYTES_WRITTEN: u32 = 112;
// written by the queue's worker (the engine never touches these)
export const QS_STAT_KICKS: u32 = 128;
export const QS_STAT_CALLS: u32 = 136;
export const QS_STAT_POLL_HITS: u32 = 144;
export const QS_LOG_USED: u32 = 168;
export const QS_LOG_DROPPED: u32 = 176;
export const QS_BYTES: u32 = 512;

export const QF_EVENT_IDX: u32 = 1 << 0;
export const QF_INDIRECT: u32 = 1 << 1;
export const QF_INFLIGHT: u32 = 1 << 3;
export const QF_PACKED: u32 = 1 << 4;
export const QF_IN_ORDER: u32 = 1 << 5;
export const QF_LOG: u32 = 1 << 6;
export const QF_LOG_USED: u32 = 1 << 7;
export const QS_PK_BATCH: u32 = 160;
export const QS_PK_BATCH_FLAGS: u32 = 162;
export const QS_PK_INFL_FREE: u32 = 164;
export const PACKED_TOKEN_SLOTS_SHIFT: u32 = 16;

export const CHAINS_OFFSET: u32 = 0x200;
export const CHAIN_BYTES: u32 = 32;
export const CHAIN_CAP: u32 = 1024;
export const CH_HEAD: u32 = 0;
export const CH_SEG_START: u32 = 4;
export const CH_SEG_COUNT: u32 = 8;
export const CH_READ_LEN: u32 = 12;
export const CH_WRITE_LEN: u32 = 16;
export const CH_USED_LEN: u32 = 20;

export const SEGS_OFFSET: u32 = CHAINS_OFFSET + CHAIN_CAP * CHAIN_BYTES;
export const SEG_BYTES: u32 = 16;
export const SEG_CAP: u32 = 12288;

// heads to resubmit after a reconnect (u16 each), handed to splitPopHeads in chunks
export const RESUBMIT_OFFSET: u32 = 0x3_f800;
export const RESUBMIT_CAP: u32 = 1024;
export const SEG_ADDR: u32 = 0;
export const SEG_LEN: u32 = 4;
export const SEG_FLAGS: u32 = 8;
export const SEG_F_WRITE: u32 = 1;

// ---- device scratch ----
export const DEVICE_AREAS: u32 = 0x0220_0000;
export const DEVICE_AREA_SIZE: u32 = 0x8_0000;

// ---- dirty log ----
export const LOG_AREA: u32 = 0x0380_0000;
export const LOG_AREA_MAX: u32 = 0x0080_0000;
export const LOG_PAGE_SHIFT: u32 = 12;

// ---- inflight ----
export const INFLIGHT_AREA: u32 = 0x0400_0000;
export const INFLIGHT_AREA_MAX: u32 = 0x0400_0000;

// ---- guest RAM ----
export const GUEST_AREA: u32 = 0x0800_0000;
export const GUEST_ALIGN: u32 = 0x20_0000;
export const MEMORY_MAX_PAGES: u32 = 65536;

// ---- error codes ----
export const ERR_AVAIL_IDX: u32 = 1;
export const ERR_HEAD_RANGE: u32 = 2;
export const ERR_NEXT_RANGE: u32 = 3;
export const ERR_CHAIN_LOOP: u32 = 4;
export const ERR_TRANSLATE: u32 = 5;
export const ERR_INDIRECT_LEN: u32 = 6;
export const ERR_INDIRECT_NESTED: u32 = 7;
export const ERR_WRITE_ORDER: u32 = 8;
export const ERR_INDIRECT_NEXT: u32 = 9;
export const ERR_SEGMENTS: u32 = 10;
export const ERR_CHAIN_BYTES: u32 = 11;
export const ERR_INDIRECT_OFF: u32 = 12;
export const ERR_USED_ID: u32 = 13;
export const ERR_DEVICE: u32 = 14;
export const ERR_DESC_FLAGS: u32 = 15;

// ---- driver state (src/engine/layout.ts "driver state" section) ----
export const QUEUE_SIZE_MAX: u32 = 32768;

export const VIRTQ_DESC_F_NEXT: u32 = 1;
export const VIRTQ_DESC_F_WRITE: u32 = 2;
export const VIRTQ_DESC_F_INDIRECT: u32 = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT: u32 = 1;
export const VIRTQ_USED_F_NO_NOTIFY: u32 = 1;
export const VIRTQ_DESC_BYTES: u32 = 16;
export const VIRTQ_DESC_F_AVAIL: u32 = 1 << 7;
export const VIRTQ_DESC_F_USED: u32 = 1 << 15;
export const RING_EVENT_FLAGS_ENABLE: u32 = 0;
export const RING_EVENT_FLAGS_DISABLE: u32 = 1;
export const RING_EVENT_FLAGS_DESC: u32 = 2;

export const DS_SIZE_FIELD: u32 = 0;
export const DS_FLAGS: u32 = 4;
export const DS_DESC: u32 = 8;
export const DS_AVAIL: u32 = 12;
export const DS_USED: u32 = 16;
export const DS_NUM_FREE: u32 = 20;
export const DS_GPA_DELTA: u32 = 24;
export const DS_FREE_HEAD: u32 = 32;
export const DS_AVAIL_IDX: u32 = 34;
export const DS_LAST_USED: u32 = 36;
export const DS_KICK_AVAIL: u32 = 38;
export const DS_FREE_CHAINS: u32 = 44;
export const DS_DESCS_PER_CHAIN: u32 = 48;
export const DS_ERRORS: u32 = 52;
export const DS_STAT_SUBMITTED: u32 = 56;
export const DS_STAT_REAPED: u32 = 64;
export const DS_STAT_USED_BYTES: u32 = 72;
export const DS_STAT_KICKS: u32 = 80;
export const DS_STAT_KICKS_SUPPRESSED: u32 = 88;
export const DS_OUTSTANDING: u32 = 96;
export const DS_CHAIN_LEN: u32 = 0x100;
export const DS_FREE_STACK: u32 = DS_CHAIN_LEN + 2 * QUEUE_SIZE_MAX;
export const DS_BYTES: u32 = DS_FREE_STACK + 2 * QUEUE_SIZE_MAX;

export const DSF_EVENT_IDX: u32 = 1 << 0;
export const DSF_FIXED: u32 = 1 << 1;
export const DSF_INTR_OFF: u32 = 1 << 2;
export const DSF_PACKED: u32 = 1 << 3;
export const DRV_INIT_EVENT_IDX: u32 = 1 << 0;
export const DRV_INIT_PACKED: u32 = 1 << 1;
export const DS_PK_BUF_ADDR: u32 = 104;
export const DS_PK_BUF_LEN: u32 = 108;
export const DS_PK_WRITABLE: u32 = 112;

export const DRV_FIXED_READ: u32 = 0;
export const DRV_FIXED_WRITE: u32 = 1;
export const DRV_FIXED_READ_THEN_WRITE: u32 = 2;

export const DRV_SEG_BYTES: u32 = 16;
export const DRV_SEG_ADDR: u32 = 0;
export const DRV_SEG_LEN: u32 = 4;
export const DRV_SEG_FLAGS: u32 = 8;
export const DRV_SEG_F_WRITE: u32 = 1;

export const DRV_USED_BYTES: u32 = 8;

// ---- split inflight region (A.10), per queue; engine-internal, mirrored in src/engine/reference-split.ts ----
export const INFL_HDR_BYTES: u32 = 16;
export const INFL_FEATURES: u32 = 0; // u64
export const INFL_VERSION: u32 = 8; // u16 (1; 0 = uninitialised)
export const INFL_DESC_NUM: u32 = 10; // u16
export const INFL_LAST_BATCH_HEAD: u32 = 12; // u16
export const INFL_USED_IDX: u32 = 14; // u16
export const INFL_DESC_BYTES: u32 = 16;
export const INFLD_INFLIGHT: u32 = 0; // u8
export const INFLD_NEXT: u32 = 6; // u16
export const INFLD_COUNTER: u32 = 8; // u64

// ---- packed inflight region (A.10), per queue; engine-internal, mirrored in src/engine/reference-packed.ts ----
export const PK_RESUB_DESCS_OFFSET: u32 = 0x3_8800;
export const PK_RESUB_DESCS_CAP: u32 = 1792;
export const PINFL_HDR_BYTES: u32 = 32;
export const PINFL_FEATURES: u32 = 0;
export const PINFL_VERSION: u32 = 8;
export const PINFL_DESC_NUM: u32 = 10;
export const PINFL_FREE_HEAD: u32 = 12;
export const PINFL_OLD_FREE_HEAD: u32 = 14;
export const PINFL_USED_IDX: u32 = 16;
export const PINFL_OLD_USED_IDX: u32 = 18;
export const PINFL_USED_WRAP: u32 = 20;
export const PINFL_OLD_USED_WRAP: u32 = 21;
export const PINFL_DESC_BYTES: u32 = 32;
export const PINFLD_INFLIGHT: u32 = 0;
export const PINFLD_NEXT: u32 = 2;
export const PINFLD_LAST: u32 = 4;
export const PINFLD_NUM: u32 = 6;
export const PINFLD_COUNTER: u32 = 8;
export const PINFLD_ID: u32 = 16;
export const PINFLD_FLAGS: u32 = 18;
export const PINFLD_LEN: u32 = 20;
export const PINFLD_ADDR: u32 = 24;
