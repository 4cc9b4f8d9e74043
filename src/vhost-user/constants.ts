/**
 * vhost-user protocol numbers: request ids, header flags, protocol feature bits and the virtio feature
 * bits the project uses. Source: shared/spec/vhost-user-and-virtio.md A.2–A.6, B.3.
 *
 * Plain `as const` objects (no TS `enum`), so the module also runs under type-stripping.
 */

/** `1n << n`, for building and testing u64 feature masks. */
export function bit(n: number): bigint {
  if (!Number.isInteger(n) || n < 0 || n > 63) throw new RangeError(`feature bit ${n} is not in 0..63`);
  return 1n << BigInt(n);
}

/** True when bit `n` is set in the u64 mask `mask`. */
export function hasBit(mask: bigint, n: number): boolean {
  return (mask & bit(n)) !== 0n;
}

// ---- A.3 front-end → back-end requests ----

export const FrontendRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
  GET_SHMEM_CONFIG: 44,
} as const;
export type FrontendRequestName = keyof typeof FrontendRequest;
export type FrontendRequestId = (typeof FrontendRequest)[FrontendRequestName];

// ---- A.4 back-end → front-end requests (BACKEND_REQ channel) ----

export const BackendRequest = {
  BACKEND_IOTLB_MSG: 1,
  BACKEND_CONFIG_CHANGE_MSG: 2,
  BACKEND_VRING_HOST_NOTIFIER_MSG: 3,
  BACKEND_VRING_CALL: 4,
  BACKEND_VRING_ERR: 5,
  BACKEND_SHARED_OBJECT_ADD: 6,
  BACKEND_SHARED_OBJECT_REMOVE: 7,
  BACKEND_SHARED_OBJECT_LOOKUP: 8,
  BACKEND_SHMEM_MAP: 9,
  BACKEND_SHMEM_UNMAP: 10,
} as const;
export type BackendRequestName = keyof typeof BackendRequest;
export type BackendRequestId = (typeof BackendRequest)[BackendRequestName];

// ---- A.2 header flags ----

export const HeaderFlag = {
  /** protocol version, the only one there is */
  VERSION: 1,
  /** bits 0–1 hold the version */
  VERSION_MASK: 0x3,
  /** set on every reply */
  REPLY: 1 << 2,
  /** sender wants a reply (REPLY_ACK) */
  NEED_REPLY: 1 << 3,
  /** bits 4–31: must be 0 */
  RESERVED_MASK: 0xffff_fff0,
} as const;

// ---- A.5 protocol feature bits (bit numbers, not masks; use bit()) ----

export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
  /** merged early 2026; only together with INFLIGHT_SHMFD */
  GET_VRING_BASE_INFLIGHT: 20,
  /** pending upstream (A.0); rust-vmm moved it from 20 to 21 */
  SHMEM: 21,
} as const;
export type ProtocolFeatureName = keyof typeof ProtocolFeature;
export type ProtocolFeatureBit = (typeof ProtocolFeature)[ProtocolFeatureName];

// ---- virtio feature bits (bit numbers) that vhost-user and the ring engine care about (A.5, B.3) ----

export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VHOST_F_LOG_ALL = 26;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;
export const VIRTIO_F_SUSPEND = 43;

/** The same bits as one object, for name lookups. */
export const VirtioFeature = {
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VHOST_F_LOG_ALL,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_EVENT_IDX,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_VERSION_1,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_ORDER_PLATFORM,
  VIRTIO_F_NOTIFICATION_DATA,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_SUSPEND,
} as const;
export type VirtioFeatureName = keyof typeof VirtioFeature;

// ---- payload field constants (A.2, A.6) ----

/** SET_VRING_ADDR flags bit 0: log used-ring writes */
export const VHOST_VRING_F_LOG = 1;
/** SET_VRING_KICK/CALL/ERR and vring area u64: bits 0–7 ring index */
export const VRING_FD_INDEX_MASK = 0xff;
/** ... bit 8: no fd attached (poll instead) */
export const VRING_FD_NOFD = 0x100;

/** SET_CONFIG / GET_CONFIG flags (QEMU's VHOST_SET_CONFIG_TYPE_*) */
export const ConfigFlag = { FRONTEND: 0, MIGRATION: 1 } as const;
/** QEMU's VHOST_USER_MAX_CONFIG_SIZE */
export const MAX_CONFIG_SIZE = 256;

/** IOTLB message `type` */
export const IotlbType = { MISS: 1, UPDATE: 2, INVALIDATE: 3, ACCESS_FAIL: 4 } as const;
/** IOTLB message `perm` */
export const IotlbPerm = { NONE: 0, RO: 1, WO: 2, RW: 3 } as const;

/** SET_DEVICE_STATE_FD */
export const TransferDirection = { SAVE: 0, LOAD: 1 } as const;
export const TransferPhase = { STOPPED: 0 } as const;

/** BACKEND_SHMEM_MAP flags (rust-vmm; pending upstream) */
export const SHMEM_MAP_F_WRITABLE = 1n;

/** Largest virtqueue size (split and packed). */
export const MAX_QUEUE_SIZE = 32768;

// ---- name lookups for log messages ----

function invert<T extends Record<string, number>>(o: T): ReadonlyMap<number, keyof T & string> {
  const m = new Map<number, keyof T & string>();
  for (const [k, v] of Object.entries(o)) m.set(v, k as keyof T & string);
  return m;
}

const frontendNames = invert(FrontendRequest);
const backendNames = invert(BackendRequest);
const protocolFeatureNames = invert(ProtocolFeature);
const virtioFeatureNames = invert(VirtioFeature);

/** Front-end request id → name, e.g. `requestName(9) === "SET_VRING_ADDR"`; unknown ids → `"UNKNOWN(99)"`. */
export function requestName(id: number): string {
  return frontendNames.get(id) ?? `UNKNOWN(${id})`;
}

/** Back-end request id → name (A.4); unknown ids → `"UNKNOWN(99)"`. */
export function backendRequestName(id: number): string {
  return backendNames.get(id) ?? `UNKNOWN(${id})`;
}

export function isFrontendRequestId(id: number): id is FrontendRequestId {
  return frontendNames.has(id);
}

export function isBackendRequestId(id: number): id is BackendRequestId {
  return backendNames.has(id);
}

/** Protocol feature bit number → name; unknown bits → `"BIT(n)"`. */
export function protocolFeatureName(bitNumber: number): string {
  return protocolFeatureNames.get(bitNumber) ?? `BIT(${bitNumber})`;
}

/** Names of the bits set in a protocol feature mask, lowest first. */
export function describeProtocolFeatures(mask: bigint): string[] {
  return namesOf(mask, protocolFeatureName);
}

/** Names of the bits set in a virtio feature mask (known bits by name, others as `BIT(n)`). */
export function describeVirtioFeatures(mask: bigint): string[] {
  return namesOf(mask, (n) => virtioFeatureNames.get(n) ?? `BIT(${n})`);
}

function namesOf(mask: bigint, name: (n: number) => string): string[] {
  const out: string[] = [];
  for (let n = 0; n < 64; n++) if ((mask >> BigInt(n)) & 1n) out.push(name(n));
  return out;
}
