/**
 * The back-end state of one front-end connection: negotiated features, guest memory, rings and their workers.
 * It receives decoded, validated requests from the dispatcher and returns reply payloads; it never sees the
 * socket. Rings move through stopped -> started (kick fd + memory + addresses) -> stopped (GET_VRING_BASE), and
 * independently enabled/disabled (SET_VRING_ENABLE).
 */
import type { DeviceModel } from '../devices/device.js';
import { instantiateEngine, loadEngineModule, type EngineExports } from '../engine/engine.js';
import {
  ERROR_NAMES,
  MAX_REGIONS,
  QF_EVENT_IDX,
  QF_INDIRECT,
  QF_INFLIGHT,
  QF_IN_ORDER,
  QF_LOG,
  QF_LOG_USED,
  QS_AVAIL,
  QS_FEATURES,
  QS_LOG_DROPPED,
  QS_LOG_USED,
  QS_DESC,
  QS_LAST_AVAIL,
  QS_NEXT_USED,
  QS_USED,
  deviceArea,
  queueArea,
  REGION_TABLE,
} from '../engine/layout.js';
import { GuestMemory, type RegionSpec } from '../memory/guest-memory.js';
import type { RingWorkers, RingWorkersFactory } from '../queues/ring-workers.js';
import { queueMapping } from '../queues/worker-pool.js';
import type { CompletionOrder, NotifyPolicy, WorkerEvent } from '../queues/worker-protocol.js';
import { closeQuietly, dup, eventfdSignal, ftruncate, isEventfd, memfdCreate, MFD_ALLOW_SEALING, MFD_CLOEXEC } from '../sys/syscalls.js';
import { bit, hasBit, ProtocolFeature, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_VRING_F_LOG, VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from './constants.js';
import { decodePackedBase, encodePackedBase } from './vring-base.js';

export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;


/**
 * Transport features every device gets. VHOST_F_LOG_ALL (dirty logging, live migration): every device writes
 * guest memory only into the buffers the engine handed out and reports the length through it, which logs them.
 */
export const CORE_FEATURES =
  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_INDIRECT_DESC) | bit(VIRTIO_F_EVENT_IDX) | bit(VIRTIO_F_RING_PACKED) |
  bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VHOST_F_LOG_ALL);

export const CORE_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.BACKEND_REQ) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  bit(ProtocolFeature.RESET_DEVICE) |
  bit(ProtocolFeature.STATUS) |
  bit(ProtocolFeature.INFLIGHT_SHMFD) |
  bit(ProtocolFeature.LOG_SHMFD);

/** A request the front-end got wrong: the dispatcher logs it and fails the request. */
export class RequestError extends Error {
  override name = 'RequestError';
}

export interface SessionOptions {
  /** worker index per queue (default: one worker per queue) */
  queueToWorker?: readonly number[];
  /** notification policy (worker-protocol.ts); default 'event-idx', or 'adaptive' when pollUs > 0 */
  notify?: NotifyPolicy;
  /** busy-poll budget in µs before re-arming notifications (the 'adaptive' policy; 0 = pure eventfd) */
  pollUs?: number;
  /** completion order of asynchronous devices (default 'as-finished') */
  completion?: CompletionOrder;
  /** most chains popped per engine call */
  batch?: number;
  /** ring engine the workers run (engines.ts: wasm, reference, or a module path) */
  engine?: string;
  log: (line: string) => void;
}

/** What a connection borrows from its endpoint for as long as it lasts (server.ts). */
export interface SessionResources {
  /** the endpoint's guest memory; reset() when the connection is over */
  memory: GuestMemory;
  /** who runs the rings of this connection (the endpoint's warm worker pool, or the device's own) */
  workers: RingWorkersFactory;
}

interface Ring {
  size: number;
  addr: { desc: bigint; used: bigint; avail: bigint } | undefined;
  /** SET_VRING_ADDR's log_guest_addr when its flags had VHOST_VRING_F_LOG, else undefined */
  logUsed: bigint | undefined;
  base: number;
  kickFd: number; // -1 none; -2 = "no fd": poll the ring
  callFd: number;
  errFd: number;
  enabled: boolean;
  started: boolean;
  broken: boolean;
}

const NO_FD = -1;
const POLL_RING = -2;

export class Session {
  readonly memory: GuestMemory;
  private engine: EngineExports;
  private readonly module: WebAssembly.Module;
  private pool: RingWorkers | undefined;
  private readonly rings: Ring[];
  private acked = 0n;
  private protocolAcked = 0n;
  private protocolSet = false;
  private status = 0;
  private droppedReported = false;
  private owner = false;
  private backendReqFd = NO_FD;
  private closed = false;
  /** the inflight region (INFLIGHT_SHMFD), once the front-end asked for or handed over one */
  /** packed: the region was laid out for packed rings (VIRTIO_F_RING_PACKED acked when it was set up) */
  private inflight: { numQueues: number; queueSize: number; perQueue: number; addr: number; packed: boolean } | undefined;

  constructor(
    readonly device: DeviceModel,
    private readonly opts: SessionOptions,
    private readonly resources: SessionResources,
  ) {
    this.memory = resources.memory;
    this.module = loadEngineModule();
    this.engine = instantiateEngine(this.module, this.memory.memory);
    this.memory.onWarning = opts.log;
    this.rings = Array.from({ length: device.queues }, () => this.freshRing());
  }

  private freshRing(): Ring {
    return { size: 0, addr: undefined, logUsed: undefined, base: 0, kickFd: NO_FD, callFd: NO_FD, errFd: NO_FD, enabled: false, started: false, broken: false };
  }

  get offeredFeatures(): bigint {
    const u = this.device.usedInOrder;
    const inOrder = u === 'always' || (u === 'in-order-completion' && this.opts.completion === 'in-order');
    return CORE_FEATURES | this.device.features | (inOrder ? bit(VIRTIO_F_IN_ORDER) : 0n);
  }

  get offeredProtocolFeatures(): bigint {
    let f = CORE_PROTOCOL_FEATURES | this.device.protocolFeatures;
    if (this.device.readConfig) f |= bit(ProtocolFeature.CONFIG);
    return f & ~(this.device.withoutProtocolFeatures ?? 0n);
  }

  /**
   * Virtio features for the dispatcher's feature gate. VHOST_USER_F_PROTOCOL_FEATURES counts as negotiated once
   * the protocol features were (that exchange exists only when bit 30 is offered): QEMU's vhost-user-net sends
   * SET_VRING_ENABLE before SET_FEATURES (when the guest acks its features, before the device starts).
   */
  get gateFeatures(): bigint {
    return this.protocolSet ? this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES) : this.acked;
  }

  get acknowledgedFeatures(): bigint {
    return this.acked;
  }

  get acknowledgedProtocolFeatures(): bigint {
    return this.protocolAcked;
  }

  /** what GET_MAX_MEM_SLOTS answers: as many regions as the region table holds */
  get maxMemSlots(): number {
    return MAX_REGIONS;
  }

  hasProtocolFeature(b: number): boolean {
    return hasBit(this.protocolAcked, b);
  }

  /**
   * The ring a fd-carrying request names, with its fd checked: anything but an eventfd is refused (a worker
   * cannot poll or signal it). On refusal the fd is closed here: it was never taken.
   */
  private ringForFd(index: number, fd: number | undefined, what: string): Ring {
    try {
      const r = this.ring(index);
      if (fd !== undefined && !isEventfd(fd)) throw new RequestError(`${what} for vring ${index}: fd is not an eventfd`);
      return r;
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
  }

  private ring(index: number): Ring {
    const r = this.rings[index];
    if (!r) throw new RequestError(`vring index ${index} out of range (device has ${this.rings.length} queues)`);
    return r;
  }

  // ---- features and ownership ----
  getFeatures(): bigint {
    return this.offeredFeatures;
  }

  async setFeatures(f: bigint): Promise<void> {
    const extra = f & ~this.offeredFeatures;
    if (extra) throw new RequestError(`SET_FEATURES acks feature bits never offered: 0x${extra.toString(16)}`);
    // a packed chain completed out of order has no descriptors or chain record left to log its writes from
    if (hasBit(f, VHOST_F_LOG_ALL) && hasBit(f, VIRTIO_F_RING_PACKED))
      throw new RequestError('VHOST_F_LOG_ALL on packed rings is not supported: dirty logging needs split rings');
    if (hasBit(f, VIRTIO_F_RING_PACKED) && !this.packed) this.opts.log('VIRTIO_F_RING_PACKED acked: the rings are packed');
    if (hasBit(f, VIRTIO_F_IN_ORDER) && !hasBit(this.acked, VIRTIO_F_IN_ORDER)) this.opts.log('VIRTIO_F_IN_ORDER acked: buffers are used in the order they were made available');
    const logToggled = hasBit(f, VHOST_F_LOG_ALL) !== this.logging;
    if (logToggled && this.rings.some((r) => r.started)) {
      // running rings switch between two batches: the workers are paused while their queue state changes
      await this.withRingsPaused(() => {
        this.acked = f;
      });
      this.opts.log(`dirty logging ${this.logging ? 'on' : 'off'}`);
      if (!this.logging) this.reportDroppedLog();
    }
    this.acked = f;
    // Without VHOST_USER_F_PROTOCOL_FEATURES there is no SET_VRING_ENABLE: rings are enabled at once.
    if (!hasBit(f, VHOST_USER_F_PROTOCOL_FEATURES))
      for (let q = 0; q < this.rings.length; q++)
        this.setEnabled(q, true).catch((e: unknown) => this.opts.log(`queue ${q}: enabling failed: ${(e as Error).message}`));
  }

  getProtocolFeatures(): bigint {
    return this.offeredProtocolFeatures;
  }

  setProtocolFeatures(f: bigint): void {
    const extra = f & ~this.offeredProtocolFeatures;
    if (extra) throw new RequestError(`SET_PROTOCOL_FEATURES acks bits never offered: 0x${extra.toString(16)}`);
    this.protocolAcked = f;
    this.protocolSet = true;
  }

  setOwner(): void {
    this.owner = true;
  }

  get isOwner(): boolean {
    return this.owner;
  }

  queueCount(): number {
    return this.rings.length;
  }

  // ---- memory ----
  async setMemTable(regions: readonly RegionSpec[], fds: readonly number[]): Promise<void> {
    await this.withRingsPaused(() => {
      this.memory.clear();
      let i = 0;
      try {
        for (; i < regions.length; i++) this.memory.add(regions[i]!, fds[i]!);
      } catch (e) {
        // leave no half table: the fds not yet taken are closed, the mapped ones dropped
        for (let j = i + 1; j < fds.length; j++) closeQuietly(fds[j]);
        this.memory.clear();
        throw e;
      }
    });
    await this.startReadyRings();
  }

  async addMemRegion(region: RegionSpec, fd: number): Promise<void> {
    await this.withRingsPaused(() => void this.memory.add(region, fd));
    await this.startReadyRings();
  }

  /** Rings whose kick fd came before their memory or addresses start once everything is there. */
  private async startReadyRings(): Promise<void> {
    for (let q = 0; q < this.rings.length; q++) {
      try {
        await this.maybeStart(q);
      } catch (e) {
        this.opts.log(`queue ${q}: ${(e as Error).message}`);
      }
    }
  }

  async removeMemRegion(region: RegionSpec): Promise<void> {
    await this.withRingsPaused(() => {
      if (!this.memory.remove(region)) throw new RequestError(`REM_MEM_REG: no region at gpa 0x${region.gpa.toString(16)} size ${region.size}`);
    });
  }

  /** VHOST_F_LOG_ALL acked: the engine logs every guest write into the dirty log. */
  private get logging(): boolean {
    return hasBit(this.acked, VHOST_F_LOG_ALL);
  }

  /**
   * SET_LOG_BASE (LOG_SHMFD): map the front-end's log, replacing an older one. The rings pause meanwhile, so that
   * no batch logs half into each; the front-end syncs the old log after our reply. Replies 0 (libvhost-user's u64).
   */
  async setLogBase(mmapSize: bigint, mmapOffset: bigint, fd: number): Promise<bigint> {
    await this.withRingsPaused(() => {
      this.memory.mapLog(fd, mmapOffset, mmapSize);
      this.opts.log(`dirty log of ${mmapSize} bytes mapped`);
      const dv = new DataView(this.memory.memory.buffer);
      for (let q = 0; q < this.rings.length; q++) dv.setUint32(queueArea(q) + QS_LOG_DROPPED, 0, true);
    });
    this.droppedReported = false;
    return 0n;
  }

  /** SET_LOG_FD: an eventfd to tell the front-end the log changed; it polls the log anyway, so it is not kept. */
  setLogFd(fd: number): void {
    closeQuietly(fd);
  }

  /** The dirty-log state of a configured queue area: QF_LOG (VHOST_F_LOG_ALL), QF_LOG_USED + log_guest_addr. */
  private writeLogState(q: number, r: Ring): void {
    const dv = new DataView(this.memory.memory.buffer);
    const qs = queueArea(q);
    let f = dv.getUint32(qs + QS_FEATURES, true) & ~(QF_LOG | QF_LOG_USED);
    if (this.logging) f |= QF_LOG;
    if (r.logUsed !== undefined) f |= QF_LOG_USED;
    dv.setBigUint64(qs + QS_LOG_USED, r.logUsed ?? 0n, true);
    dv.setUint32(qs + QS_FEATURES, f, true);
  }

  /** Once per log: pages the engine could not record because the log was too small for the guest's memory. */
  private reportDroppedLog(): void {
    if (this.droppedReported) return;
    const dv = new DataView(this.memory.memory.buffer);
    let lost = 0;
    for (let q = 0; q < this.rings.length; q++) lost += dv.getUint32(queueArea(q) + QS_LOG_DROPPED, true);
    if (lost === 0) return;
    this.droppedReported = true;
    this.opts.log(`dirty log of ${this.memory.logBytes} bytes is too small for the guest: ${lost} written page(s) could not be logged; a migration may miss them`);
  }

  /** Quiesce the workers, change memory, re-translate running rings, resume: no request is lost or half-read. */
  private async withRingsPaused(change: () => void): Promise<void> {
    if (this.pool) await this.pool.pause();
    try {
      change();
    } finally {
      // a ring whose memory went away stops before anything resumes (the device needs a reset): it must not
      // run on whatever replaced its memory
      for (const q of this.retranslateStartedRings()) {
        await this.pool?.stop(q);
        this.rings[q]!.started = false;
      }
      if (this.pool) await this.pool.resume();
    }
  }

  /** Point started rings at their new wasm addresses; returns the rings that no longer translate. */
  private retranslateStartedRings(): number[] {
    const dv = new DataView(this.memory.memory.buffer);
    const lost: number[] = [];
    this.rings.forEach((r, q) => {
      if (!r.started) return;
      const t = this.translateRing(q, r);
      if (typeof t === 'string') {
        this.opts.log(`queue ${q}: ${t} after the memory table changed; the ring is stopped and the device needs a reset`);
        r.broken = true;
        lost.push(q);
        return;
      }
      const qs = queueArea(q);
      dv.setUint32(qs + QS_DESC, t.desc, true);
      dv.setUint32(qs + QS_AVAIL, t.avail, true);
      dv.setUint32(qs + QS_USED, t.used, true);
      this.writeLogState(q, r);
    });
    return lost;
  }

  // ---- rings ----
  setVringNum(index: number, num: number): void {
    const r = this.ring(index);
    if (r.started) throw new RequestError(`SET_VRING_NUM on started vring ${index}`);
    // packed rings may have any size (B.2); split rings a power of two
    if (num < 1 || num > this.device.maxQueueSize || (!this.packed && (num & (num - 1)) !== 0))
      throw new RequestError(`vring ${index} size ${num} is not a power of two in 1..${this.device.maxQueueSize}`);
    r.size = num;
  }

  async setVringAddr(index: number, addr: { flags: number; desc: bigint; used: bigint; avail: bigint; log: bigint }): Promise<void> {
    const r = this.ring(index);
    r.addr = { desc: addr.desc, used: addr.used, avail: addr.avail };
    // QEMU re-sends the addresses with VHOST_VRING_F_LOG when dirty logging starts (and without when it stops)
    r.logUsed = (addr.flags & VHOST_VRING_F_LOG) !== 0 ? addr.log : undefined;
    if (r.started) await this.withRingsPaused(() => {});
    else await this.maybeStart(index);
  }

  setVringBase(index: number, num: number): void {
    const r = this.ring(index);
    if (r.started) throw new RequestError(`SET_VRING_BASE on started vring ${index}`);
    if (num > 0xffff && !this.packed) throw new RequestError(`vring ${index} base ${num} has reserved bits set (split rings use bits 0-15)`);
    r.base = num;
  }

  /** GET_VRING_BASE: stop the ring (its worker finishes the batch in hand) and return the next avail index. */
  async getVringBase(index: number): Promise<number> {
    const r = this.ring(index);
    if (r.started) {
      await this.pool!.stop(index);
      const dv = new DataView(this.memory.memory.buffer);
      const lastAvail = dv.getUint16(queueArea(index) + QS_LAST_AVAIL, true);
      r.base = this.packed ? encodePackedBase(lastAvail, dv.getUint16(queueArea(index) + QS_NEXT_USED, true)) : lastAvail;
      r.started = false;
      if (this.logging) this.reportDroppedLog();
    }
    if (r.kickFd >= 0) closeQuietly(r.kickFd);
    r.kickFd = NO_FD;
    return r.base;
  }

  async setVringKick(index: number, fd: number | undefined): Promise<void> {
    const r = this.ringForFd(index, fd, 'SET_VRING_KICK');
    const old = r.kickFd;
    r.kickFd = fd ?? POLL_RING;
    if (r.started) {
      await this.pool!.setFds(index, { kickFd: fd ?? -1 });
    }
    if (old >= 0 && old !== fd) closeQuietly(old);
    if (!r.started) await this.maybeStart(index);
  }

  async setVringCall(index: number, fd: number | undefined): Promise<void> {
    const r = this.ringForFd(index, fd, 'SET_VRING_CALL');
    const old = r.callFd;
    r.callFd = fd ?? NO_FD;
    if (r.started) {
      await this.pool!.setFds(index, { callFd: r.callFd });
      // an interrupt may have raced with the switch (QEMU re-sends the call fd when it masks/unmasks)
      if (r.callFd >= 0) eventfdSignal(r.callFd);
    }
    if (old >= 0 && old !== fd) closeQuietly(old);
  }

  async setVringErr(index: number, fd: number | undefined): Promise<void> {
    const r = this.ringForFd(index, fd, 'SET_VRING_ERR');
    const old = r.errFd;
    r.errFd = fd ?? NO_FD;
    if (r.started) await this.pool!.setFds(index, { errFd: r.errFd });
    if (old >= 0 && old !== fd) closeQuietly(old);
  }

  async setEnabled(index: number, enabled: boolean): Promise<void> {
    const r = this.ring(index);
    r.enabled = enabled;
    if (r.started) await this.pool!.setEnabled(index, enabled);
  }

  /** VIRTIO_F_RING_PACKED acked: every ring of the connection is packed (B.2). */
  private get packed(): boolean {
    return hasBit(this.acked, VIRTIO_F_RING_PACKED);
  }

  private translateRing(q: number, r: Ring): { desc: number; avail: number; used: number } | string {
    if (!r.addr) return 'no ring addresses';
    const n = BigInt(r.size);
    // packed: avail and used are the driver and device event suppression structures, 4 bytes each
    const desc = this.memory.translateUva(r.addr.desc, 16n * n);
    const avail = this.memory.translateUva(r.addr.avail, this.packed ? 4n : 6n + 2n * n);
    const used = this.memory.translateUva(r.addr.used, this.packed ? 4n : 6n + 8n * n);
    if (desc === undefined) return `descriptor table at 0x${r.addr.desc.toString(16)} is not inside guest memory`;
    if (avail === undefined) return `avail ring at 0x${r.addr.avail.toString(16)} is not inside guest memory`;
    if (used === undefined) return `used ring at 0x${r.addr.used.toString(16)} is not inside guest memory`;
    void q;
    return { desc, avail, used };
  }

  /** Start a ring once it has a size, addresses, memory and a kick fd (or the no-fd bit). */
  private async maybeStart(q: number): Promise<void> {
    const r = this.rings[q]!;
    if (r.started || r.kickFd === NO_FD || !r.addr || r.size === 0 || this.memory.mapped.length === 0) return;
    const t = this.translateRing(q, r);
    if (typeof t === 'string') throw new RequestError(`vring ${q} cannot start: ${t}`);
    let qf = QF_INDIRECT;
    if (hasBit(this.acked, VIRTIO_F_EVENT_IDX)) qf |= QF_EVENT_IDX;
    // packed: one used descriptor per run of chains (split writes one used element per chain, which IN_ORDER allows)
    if (hasBit(this.acked, VIRTIO_F_IN_ORDER)) qf |= QF_IN_ORDER;
    const inf = this.inflightFor(q, r);
    if (inf) qf |= QF_INFLIGHT;
    const inflightAddr = inf ? this.inflight!.addr + q * this.inflight!.perQueue : 0;
    if (this.packed) {
      const b = decodePackedBase(r.base);
      this.engine.packedConfigure(queueArea(q), r.size, qf, t.desc, t.avail, t.used, REGION_TABLE, inflightAddr, b.lastAvail, b.nextUsed);
    } else {
      this.engine.splitConfigure(queueArea(q), r.size, qf, t.desc, t.avail, t.used, REGION_TABLE, inflightAddr, r.base);
    }
    this.writeLogState(q, r);
    const resubmit = this.recoverInflight(q, r);
    this.pool ??= this.resources.workers({
      device: this.device.name,
      deviceOptions: this.device.options,
      engine: this.opts.engine,
      memory: this.memory.memory,
      module: this.module,
      queueToWorker: this.opts.queueToWorker ?? queueMapping(this.rings.length),
      onEvent: (e) => this.onWorkerEvent(e),
    });
    r.started = true;
    r.broken = false;
    await this.pool.start({
      queue: q,
      kickFd: r.kickFd >= 0 ? r.kickFd : -1,
      callFd: r.callFd,
      errFd: r.errFd,
      enabled: r.enabled,
      notify: this.opts.notify,
      pollUs: this.opts.pollUs ?? 0,
      batch: this.opts.batch ?? 128,
      completion: this.opts.completion,
      resubmit,
      features: this.acked,
    });
    // A ring that resumes on a used ring with completions in it (a restart after a back-end died): the previous
    // back-end may have published used elements and died before writing the call fd, and a driver sleeping on
    // them would never look again. One interrupt, spurious at worst, makes it look.
    // (a packed ring's start position is index 0 with wrap counter 1)
    const start = this.packed ? 0x8000 : 0;
    if (r.callFd >= 0 && new DataView(this.memory.memory.buffer).getUint16(queueArea(q) + QS_NEXT_USED, true) !== start) eventfdSignal(r.callFd);
  }

  private onWorkerEvent(e: WorkerEvent): void {
    if (e.type === 'log') {
      this.opts.log(e.message);
      return;
    }
    const r = this.rings[e.queue];
    if (r) r.broken = true;
    this.opts.log(
      `queue ${e.queue}: ${ERROR_NAMES[e.code] ?? `error ${e.code}`} (descriptor ${e.detail}); ` +
        `the queue is stopped and the device needs a reset`,
    );
  }

  // ---- inflight tracking (A.10) ----
  /**
   * Whether ring q keeps inflight records: a region exists for it, with its size, laid out for its ring format
   * (a region set up before VIRTIO_F_RING_PACKED was acked has the split layout: a packed ring does without).
   */
  private inflightFor(q: number, r: Ring): boolean {
    const inf = this.inflight;
    return !!inf && q < inf.numQueues && r.size === inf.queueSize && inf.packed === this.packed;
  }

  private inflightLayout(numQueues: number, queueSize: number): { perQueue: number; total: number } {
    if (!this.packed && (queueSize & (queueSize - 1)) !== 0) throw new RequestError(`inflight queue size ${queueSize} is not a power of two`);
    if (numQueues > this.rings.length) throw new RequestError(`inflight for ${numQueues} queues, the device has ${this.rings.length}`);
    const perQueue = this.packed ? this.engine.inflightPackedQueueBytes(queueSize) : this.engine.inflightSplitQueueBytes(queueSize);
    return { perQueue, total: perQueue * numQueues };
  }

  /** GET_INFLIGHT_FD: a fresh, zeroed region for every queue, mapped here and shared with the front-end. */
  getInflightFd(numQueues: number, queueSize: number): { size: number; fd: number } {
    const { perQueue, total } = this.inflightLayout(numQueues, queueSize);
    const fd = memfdCreate('vhost-wasm-inflight', MFD_CLOEXEC | MFD_ALLOW_SEALING);
    try {
      ftruncate(fd, total);
      const addr = this.memory.mapInflight(dup(fd), 0n, BigInt(total));
      for (let q = 0; q < numQueues; q++) {
        if (this.packed) this.engine.inflightPackedInit(addr + q * perQueue, queueSize);
        else this.engine.inflightSplitInit(addr + q * perQueue, queueSize);
      }
      this.inflight = { numQueues, queueSize, perQueue, addr, packed: this.packed };
      return { size: total, fd };
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
  }

  /** SET_INFLIGHT_FD: adopt the region the front-end kept (after a back-end restart). */
  setInflightFd(numQueues: number, queueSize: number, mmapSize: bigint, mmapOffset: bigint, fd: number): void {
    let perQueue: number;
    try {
      const l = this.inflightLayout(numQueues, queueSize);
      if (BigInt(l.total) > mmapSize) throw new RequestError(`inflight region of ${mmapSize} bytes is smaller than the ${l.total} its queues need`);
      perQueue = l.perQueue;
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    const addr = this.memory.mapInflight(fd, mmapOffset, mmapSize);
    this.inflight = { numQueues, queueSize, perQueue, addr, packed: this.packed };
  }

  /**
   * The heads a previous back-end left in flight on ring q (after repairing a half-committed batch), in the
   * order it fetched them. last_avail moves past them: every chain popped before is either used or inflight.
   */
  private recoverInflight(q: number, r: Ring): number[] {
    if (!this.inflightFor(q, r)) return [];
    const qs = queueArea(q);
    const out = deviceArea(q); // the ring's handler is not running yet: its scratch is free
    // packed: the engine also sets both ring positions from the region (the front-end cannot know them)
    const n = this.packed ? this.engine.inflightPackedRecover(qs, out) : this.engine.inflightSplitRecover(qs, out);
    const dv = new DataView(this.memory.memory.buffer);
    const heads: number[] = [];
    for (let i = 0; i < n; i++) heads.push(dv.getUint16(out + 2 * i, true));
    if (n > 0) {
      if (!this.packed) dv.setUint16(qs + QS_LAST_AVAIL, (dv.getUint16(qs + QS_NEXT_USED, true) + n) & 0xffff, true);
      this.opts.log(`queue ${q}: resubmitting ${n} request(s) left in flight by the previous back-end`);
    }
    return heads;
  }

  // ---- net: SEND_RARP, NET_SET_MTU ----
  /** SEND_RARP: the u64's first 6 bytes (host order) are the MAC to announce. */
  async sendRarp(payload: bigint): Promise<void> {
    if (!this.device.sendRarp) throw new RequestError(`SEND_RARP: a ${this.device.name} device has no MAC to announce`);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(payload & 0xffff_ffff_ffff_ffffn);
    await this.device.sendRarp(new Uint8Array(b.subarray(0, 6)));
  }

  /** NET_SET_MTU: 68..65535 (RFC 791 minimum, 16-bit config field). */
  setMtu(mtu: bigint): void {
    if (!this.device.setMtu) throw new RequestError(`NET_SET_MTU: a ${this.device.name} device has no MTU`);
    if (mtu < 68n || mtu > 65535n) throw new RequestError(`NET_SET_MTU ${mtu} is outside 68..65535`);
    this.device.setMtu(Number(mtu));
  }

  /** The started rings, for statistics. */
  startedQueues(): number[] {
    return this.rings.flatMap((r, q) => (r.started ? [q] : []));
  }

  // ---- config, status, reset ----
  getConfig(offset: number, size: number): Buffer {
    const cfg = this.device.readConfig?.();
    if (!cfg) throw new RequestError('device has no config space');
    if (offset + size > cfg.length) throw new RequestError(`config read [${offset}, ${offset + size}) beyond the ${cfg.length}-byte config space`);
    return Buffer.from(cfg.subarray(offset, offset + size));
  }

  setConfig(offset: number, data: Buffer): void {
    if (!this.device.writeConfig?.(offset, data)) throw new RequestError(`config write at ${offset} (${data.length} bytes) refused: read-only`);
  }

  getStatus(): number {
    return this.status | (this.rings.some((r) => r.broken) ? VIRTIO_CONFIG_S_NEEDS_RESET : 0);
  }

  async setStatus(status: number): Promise<void> {
    // QEMU 7.2's vhost_dev_stop sends SET_STATUS(0) BEFORE the GET_VRING_BASEs whose answers it migrates: those
    // must still say where each ring stopped (a ring starts again only after a SET_VRING_BASE anyway)
    if (status === 0) await this.resetDevice(true);
    this.status = status & 0xff;
  }

  /**
   * RESET_DEVICE / SET_STATUS(0): every ring stopped and forgotten, features cleared, ownership kept; with
   * `keepBases` (SET_STATUS(0)) a stopped ring still reports where it stopped.
   */
  async resetDevice(keepBases = false): Promise<void> {
    for (let q = 0; q < this.rings.length; q++) {
      const base = await this.getVringBase(q);
      const r = this.rings[q]!;
      closeQuietly(r.callFd);
      closeQuietly(r.errFd);
      this.rings[q] = { ...this.freshRing(), base: keepBases ? base : 0 };
    }
    this.acked = 0n;
    this.status = 0;
  }

  setBackendReqFd(fd: number): void {
    if (this.backendReqFd >= 0) closeQuietly(this.backendReqFd);
    this.backendReqFd = fd;
  }

  /**
   * Everything of this connection goes: rings stop first (in-flight requests complete, devices flush), then the
   * workers let go of it (they use the memory), then fds and mappings; the Memory is left blank for the next.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const pool = this.pool;
    if (pool) {
      const stops = this.rings.map((r, q) => (r.started ? pool.stop(q).catch(() => undefined) : undefined));
      const limit = new Promise((resolve) => setTimeout(resolve, 5000).unref());
      await Promise.race([Promise.all(stops), limit]);
    }
    await this.pool?.close();
    this.pool = undefined;
    for (const r of this.rings) {
      for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd >= 0) closeQuietly(fd);
    }
    if (this.backendReqFd >= 0) closeQuietly(this.backendReqFd);
    this.memory.reset();
  }
}
