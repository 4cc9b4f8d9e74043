/**
 * The built-in vhost-user front-end: plays the VMM (feature and protocol negotiation, memory table, ring
 * set-up) and, through driver workers, the guest. Works against any vhost-user back-end.
 */
import { Piscina } from 'piscina';
import { drvInitFlags, instantiateEngine, loadEngineModule, type EngineExports } from '../engine/engine.js';
import { DRV_SEG_ADDR, DRV_SEG_BYTES, DRV_SEG_F_WRITE, DRV_SEG_FLAGS, DRV_SEG_LEN, DRV_USED_BYTES, DS_CHAIN_LEN, DS_LAST_USED, LOG_AREA, LOG_PAGE_SHIFT, deviceArea, queueArea } from '../engine/layout.js';
import { builtPath } from '../runtime/package-root.js';
import { closeQuietly, dup, eventfd, eventfdDrain, eventfdSignal, ftruncate, memfdCreate, MFD_ALLOW_SEALING, MFD_CLOEXEC, POLLIN, pollFds } from '../sys/syscalls.js';
import { bit, hasBit, ProtocolFeature, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_VRING_F_LOG, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from '../vhost-user/constants.js';
import { VhostUserClient } from './client.js';
import type { InflightDesc } from '../vhost-user/codec.js';
import type { DriverResult, DriverTask } from './driver-protocol.js';
import { GuestRam, queueFootprint, type RingPlacement } from './guest-ram.js';

export interface FrontendOptions {
  socketPath: string;
  queues: number;
  queueSize?: number;
  /** bytes of buffer per queue (default: queueSize * 4 KiB) */
  bufferBytes?: number;
  /** negotiate VIRTIO_F_EVENT_IDX when offered (default true) */
  eventIdx?: boolean;
  /** extra virtio feature bits to ack when offered */
  extraFeatures?: bigint;
  /** send SET_VRING_ENABLE(1) for every ring at set-up (default true) */
  enableRings?: boolean;
  /** negotiate INFLIGHT_SHMFD when offered and keep the region across reconnects */
  inflight?: boolean;
  /**
   * Send only the first N requests of the set-up, then stop there with the connection open (`setupDone` false):
   * a front-end that vanishes mid-setup, for tests.
   */
  setupSteps?: number;
  /** drive packed virtqueues: VIRTIO_F_RING_PACKED is required from the back-end */
  packed?: boolean;
  /**
   * Dirty logging, as QEMU during a live migration: negotiate LOG_SHMFD, hand the back-end a log (SET_LOG_BASE)
   * and turn VHOST_F_LOG_ALL on with the rings logging their used rings (VHOST_VRING_F_LOG). Read it with
   * dirtyPages(); setLogging() turns it off and on while the rings run.
   */
  log?: boolean;
}

export interface Segment {
  /** offset in the queue's buffer area */
  offset: number;
  len: number;
  write: boolean;
}

interface QueueState {
  ring: RingPlacement;
  kickFd: number;
  callFd: number;
}

const WANTED_PROTOCOL =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  bit(ProtocolFeature.STATUS) |
  bit(ProtocolFeature.CONFIG) |
  bit(ProtocolFeature.RESET_DEVICE);

/** thrown inside the set-up when `setupSteps` are used up */
class SetupCut extends Error {}

export class Frontend {
  client: VhostUserClient;
  inflightFd: number | undefined;
  private inflightDesc: InflightDesc | undefined;
  readonly ram: GuestRam;
  readonly module = loadEngineModule();
  readonly engine: EngineExports;
  readonly queues: QueueState[] = [];
  readonly size: number;
  readonly bufferBytes: number;
  features = 0n;
  protocolFeatures = 0n;
  private pool: Piscina | undefined;
  /** the dirty log's memfd (ours; the back-end got a copy), mapped at LOG_AREA of our own Memory */
  private logFd: number | undefined;
  private logging = false;
  private logClient: VhostUserClient | undefined;
  private stepsLeft: number | undefined;
  /** false when `setupSteps` cut the set-up short */
  setupDone = false;

  private constructor(private readonly opts: FrontendOptions) {
    this.size = opts.queueSize ?? 256;
    this.stepsLeft = opts.setupSteps;
    this.bufferBytes = opts.bufferBytes ?? this.size * 4096;
    this.client = VhostUserClient.connect(opts.socketPath);
    const bytes = Math.max(4 << 20, opts.queues * queueFootprint(this.size, this.bufferBytes));
    this.ram = new GuestRam(Math.ceil(bytes / (2 << 20)) * (2 << 20));
    this.engine = instantiateEngine(this.module, this.ram.mem.memory);
  }

  /** Connect and run the whole set-up sequence; the rings are started and enabled when this resolves. */
  static async connect(opts: FrontendOptions): Promise<Frontend> {
    const fe = new Frontend(opts);
    try {
      await fe.setup();
      fe.setupDone = true;
    } catch (e) {
      if (e instanceof SetupCut) return fe;
      fe.close();
      throw e;
    }
    return fe;
  }

  get eventIdx(): boolean {
    return hasBit(this.features, VIRTIO_F_EVENT_IDX);
  }

  /** One set-up request; with `setupSteps`, the set-up stops (SetupCut) once they are used up. */
  private step<T>(p: () => Promise<T>): Promise<T> {
    if (this.stepsLeft !== undefined && this.stepsLeft-- <= 0) throw new SetupCut();
    return p();
  }

  get packed(): boolean {
    return hasBit(this.features, VIRTIO_F_RING_PACKED);
  }

  private async setup(): Promise<void> {
    const c = this.client;
    const step = <T>(p: () => Promise<T>): Promise<T> => this.step(p);
    const offered = (await step(() => c.request('GET_FEATURES', undefined)))!;
    let want = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_INDIRECT_DESC) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | (this.opts.extraFeatures ?? 0n);
    if (this.opts.eventIdx ?? true) want |= bit(VIRTIO_F_EVENT_IDX);
    if (this.opts.packed) {
      if (!hasBit(offered, VIRTIO_F_RING_PACKED)) throw new Error('packed rings asked for, but the back-end does not offer VIRTIO_F_RING_PACKED');
      want |= bit(VIRTIO_F_RING_PACKED);
    }
    this.features = offered & want;
    if (hasBit(offered, VHOST_USER_F_PROTOCOL_FEATURES)) {
      const pf = (await step(() => c.request('GET_PROTOCOL_FEATURES', undefined)))!;
      this.protocolFeatures =
        pf & (WANTED_PROTOCOL | (this.opts.inflight ? bit(ProtocolFeature.INFLIGHT_SHMFD) : 0n) | (this.opts.log ? bit(ProtocolFeature.LOG_SHMFD) : 0n));
      if (this.opts.log && !hasBit(this.protocolFeatures, ProtocolFeature.LOG_SHMFD)) throw new Error('dirty logging asked for, but the back-end does not offer LOG_SHMFD');
      await step(() => c.request('SET_PROTOCOL_FEATURES', this.protocolFeatures));
      c.replyAck = hasBit(this.protocolFeatures, ProtocolFeature.REPLY_ACK);
      if (hasBit(this.protocolFeatures, ProtocolFeature.MQ)) {
        const n = Number((await step(() => c.request('GET_QUEUE_NUM', undefined)))!);
        if (n < this.opts.queues) throw new Error(`back-end has ${n} queues, ${this.opts.queues} wanted`);
      }
    }
    await step(() => c.request('SET_OWNER', undefined));
    await step(() => c.request('SET_FEATURES', this.features));
    const r = this.ram.region;
    await step(() => c.request('SET_MEM_TABLE', { regions: [{ gpa: r.gpa, size: r.size, uaddr: r.uaddr, mmapOffset: 0n }] }, [this.ram.fd]));
    if (hasBit(this.protocolFeatures, ProtocolFeature.INFLIGHT_SHMFD)) await step(() => this.setupInflight());
    await this.setupRings();
    if (this.opts.log) await step(() => this.setLogging(true));
  }

  /** Bytes of dirty log for our guest RAM: one bit per page, in whole u64s as QEMU sizes it. */
  get logBytes(): number {
    const pages = Math.ceil(Number(this.ram.region.gpa + this.ram.region.size) / (1 << LOG_PAGE_SHIFT));
    return Math.ceil(pages / 64) * 8;
  }

  /**
   * Start or stop dirty logging while the rings run, in QEMU's order (vhost_dev_set_log): a fresh log first
   * (SET_LOG_BASE, answered before we go on), then VHOST_F_LOG_ALL, then every ring's addresses again with or
   * without VHOST_VRING_F_LOG and its used ring's guest-physical address.
   */
  async setLogging(on: boolean): Promise<void> {
    if (!hasBit(this.protocolFeatures, ProtocolFeature.LOG_SHMFD)) throw new Error('LOG_SHMFD was not negotiated');
    const c = this.client;
    if (on && this.logFd === undefined) {
      const fd = memfdCreate('vhost-wasm-dirty-log', MFD_CLOEXEC | MFD_ALLOW_SEALING);
      try {
        ftruncate(fd, this.logBytes);
        this.ram.mem.mapLog(dup(fd), 0n, BigInt(this.logBytes));
      } catch (e) {
        closeQuietly(fd);
        throw e;
      }
      this.logFd = fd;
    }
    // every connection (a reconnected back-end too) gets the log before logging starts
    if (on && this.logClient !== c) {
      await c.request('SET_LOG_BASE', { mmapSize: BigInt(this.logBytes), mmapOffset: 0n }, [this.logFd!]);
      this.logClient = c;
    }
    this.logging = on;
    this.features = on ? this.features | bit(VHOST_F_LOG_ALL) : this.features & ~bit(VHOST_F_LOG_ALL);
    await c.request('SET_FEATURES', this.features);
    for (let q = 0; q < this.queues.length; q++) await c.request('SET_VRING_ADDR', this.vringAddr(q));
  }

  /** SET_VRING_ADDR for ring q: with VHOST_VRING_F_LOG and the used ring's guest-physical address while logging. */
  private vringAddr(q: number): { index: number; flags: number; desc: bigint; used: bigint; avail: bigint; log: bigint } {
    const ring = this.queues[q]!.ring;
    const log = this.logging ? (BigInt(ring.used) + this.ram.gpaDelta) & 0xffff_ffff_ffff_ffffn : 0n;
    return { index: q, flags: this.logging ? VHOST_VRING_F_LOG : 0, desc: ring.descUva, used: ring.usedUva, avail: ring.availUva, log };
  }

  /** The guest pages whose bits are set in the dirty log (page numbers: gpa >> 12); clears them with `clear`. */
  dirtyPages(clear = false): number[] {
    if (this.logFd === undefined) throw new Error('no dirty log set up');
    const u8 = new Uint8Array(this.ram.mem.memory.buffer, LOG_AREA, this.logBytes);
    const out: number[] = [];
    for (let i = 0; i < u8.length; i++) {
      const b = clear ? Atomics.exchange(u8, i, 0) : Atomics.load(u8, i);
      for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
    }
    return out;
  }

  /** Guest page number of an offset in queue q's buffer area. */
  bufferPage(q: number, offset: number): number {
    return Number((BigInt(this.queues[q]!.ring.buffers + offset) + this.ram.gpaDelta) & 0xffff_ffff_ffff_ffffn) >>> LOG_PAGE_SHIFT;
  }

  /** Guest page numbers of queue q's used ring. */
  usedRingPages(q: number): number[] {
    const used = Number((BigInt(this.queues[q]!.ring.used) + this.ram.gpaDelta) & 0xffff_ffff_ffff_ffffn);
    const first = used >>> LOG_PAGE_SHIFT;
    const last = (used + 6 + 8 * this.size - 1) >>> LOG_PAGE_SHIFT;
    return Array.from({ length: last - first + 1 }, (_, i) => first + i);
  }

  /** Every ring: size, base, addresses, call and kick fds, enable. */
  private async setupRings(): Promise<void> {
    const c = this.client;
    const step = <T>(p: () => Promise<T>): Promise<T> => this.step(p);
    const fresh = this.queues.length === 0;
    for (let q = 0; q < this.opts.queues; q++) {
      if (fresh) this.queues.push({ ring: this.ram.placeRing(this.size, this.bufferBytes), kickFd: eventfd(), callFd: eventfd() });
      const { ring, kickFd, callFd } = this.queues[q]!;
      // after a reconnect, start where the guest's used ring is, as QEMU does when the back-end went away
      const base = this.packed ? this.packedBase(q, fresh) : fresh ? 0 : Atomics.load(new Uint16Array(this.ram.mem.memory.buffer), (ring.used + 2) >>> 1);
      await step(() => c.request('SET_VRING_NUM', { index: q, num: this.size }));
      await step(() => c.request('SET_VRING_BASE', { index: q, num: base }));
      await step(() => c.request('SET_VRING_ADDR', this.vringAddr(q)));
      await step(() => c.request('SET_VRING_CALL', { index: q, noFd: false }, [callFd]));
      await step(() => c.request('SET_VRING_KICK', { index: q, noFd: false }, [kickFd]));
      if (hasBit(this.features, VHOST_USER_F_PROTOCOL_FEATURES) && (this.opts.enableRings ?? true))
        await step(() => c.request('SET_VRING_ENABLE', { index: q, num: 1 }));
    }
  }

  /**
   * After RESET_DEVICE or SET_STATUS(0), as a driver does: every ring re-initialised (zeroed, index 0), then the
   * features and the rings set up again on the same connection.
   */
  async restartDevice(): Promise<void> {
    for (let q = 0; q < this.queues.length; q++) {
      const r = this.queues[q]!.ring;
      if (this.engine.drvInit(this.ds(q), this.size, r.desc, r.avail, r.used, this.ram.gpaDelta, drvInitFlags(this.eventIdx, this.packed)) !== 0)
        throw new Error('drvInit refused the ring');
      this.engine.drvSetInterrupts(this.ds(q), 1);
      this.generic.add(q);
    }
    await this.client.request('SET_FEATURES', this.features);
    await this.setupRings();
  }

  /**
   * SET_VRING_BASE for a packed ring (both halves index | wrap << 15): at the start 0 with wrap 1; after a
   * reconnect, past the used descriptors the device wrote (reaped or not), where it will write the next one
   * (a back-end with an inflight region takes its positions from there instead).
   */
  private packedBase(q: number, fresh: boolean): number {
    if (fresh) return (0x8000 | (0x8000 << 16)) >>> 0;
    const dv = new DataView(this.ram.mem.memory.buffer);
    const ds = this.ds(q);
    const desc = this.queues[q]!.ring.desc;
    let pos = dv.getUint16(ds + DS_LAST_USED, true);
    for (let n = 0; n < this.size; n++) {
      const i = pos & 0x7fff;
      const w = pos >> 15;
      const f = dv.getUint16(desc + 16 * i + 14, true);
      if (((f >> 7) & 1) !== w || ((f >> 15) & 1) !== w) break;
      const slots = dv.getUint16(ds + DS_CHAIN_LEN + 2 * dv.getUint16(desc + 16 * i + 12, true), true);
      if (slots === 0) break;
      const j = i + slots;
      pos = j >= this.size ? (j - this.size) | ((w ^ 1) << 15) : j | (w << 15);
    }
    return (pos | (pos << 16)) >>> 0;
  }

  /** The inflight region: asked for on the first connection, handed back on every reconnect. */
  private async setupInflight(): Promise<void> {
    if (this.inflightFd === undefined) {
      const m = await this.client.requestWithFds('GET_INFLIGHT_FD', { mmapSize: 0n, mmapOffset: 0n, numQueues: this.opts.queues, queueSize: this.size });
      if (!m.fds[0]) throw new Error('GET_INFLIGHT_FD: no fd in the reply');
      this.inflightFd = m.fds[0];
      this.inflightDesc = m.reply;
      return;
    }
    await this.client.request('SET_INFLIGHT_FD', this.inflightDesc!, [this.inflightFd]);
  }

  /**
   * Connect again to the back-end at the same socket (it restarted) and set everything up again on the same
   * guest RAM and rings, as QEMU does with `reconnect=`: rings resume at the used index, and the inflight region
   * (if any) is handed back so the back-end can resubmit what was in flight.
   */
  async reconnect(): Promise<void> {
    this.client.close();
    this.client = VhostUserClient.connect(this.opts.socketPath);
    await this.setup();
  }

  /** Driver state block of queue q, in the front-end's memory. */
  ds(q: number): number {
    return queueArea(q);
  }

  /** Run the drivers of every queue for `seconds` in parallel (one piscina thread each). */
  async run(opts: Pick<DriverTask, 'mode' | 'polling' | 'seconds'> & Partial<Pick<DriverTask, 'descsPerChain' | 'bufLen' | 'writable' | 'submitBatch' | 'notify' | 'pollUs'>>): Promise<DriverResult[]> {
    this.pool ??= new Piscina({
      filename: builtPath('workers/driver-worker.js'),
      minThreads: this.queues.length,
      maxThreads: this.queues.length,
      idleTimeout: 1000,
    });
    const descsPerChain = opts.descsPerChain ?? 1;
    const bufLen = opts.bufLen ?? 64;
    return Promise.all(
      this.queues.map((qs, q) => {
        const task: DriverTask = {
          memory: this.ram.mem.memory,
          module: this.module,
          queue: q,
          ds: this.ds(q),
          size: this.size,
          desc: qs.ring.desc,
          avail: qs.ring.avail,
          used: qs.ring.used,
          gpaDelta: this.ram.gpaDelta,
          eventIdx: this.eventIdx,
          packed: this.packed,
          kickFd: qs.kickFd,
          callFd: qs.callFd,
          buffers: qs.ring.buffers,
          bufLen: Math.min(bufLen, Math.floor(this.bufferBytes / this.size / descsPerChain)),
          descsPerChain,
          writable: opts.writable ?? 0,
          mode: opts.mode,
          polling: opts.polling,
          seconds: opts.seconds,
          submitBatch: opts.submitBatch ?? 0,
          notify: opts.notify,
          pollUs: opts.pollUs,
        };
        return this.pool!.run(task) as Promise<DriverResult>;
      }),
    );
  }

  // ---- one chain at a time, from the main thread (tests, the rng check) ----
  private generic = new Set<number>();

  /** Make one chain of `segs` available on queue q, kick, and wait for its used element. */
  async roundTrip(q: number, segs: readonly Segment[], timeoutMs = 5000): Promise<{ id: number; len: number }> {
    this.submit(q, segs);
    return this.waitUsed(q, timeoutMs);
  }

  /** Make one chain available on queue q and kick if the device wants it; returns its head. */
  submit(q: number, segs: readonly Segment[]): number {
    return this.submitAll(q, [segs])[0]!;
  }

  /** Make several chains available on queue q with one avail.idx store (the device sees them as one batch). */
  submitAll(q: number, chains: readonly (readonly Segment[])[]): number[] {
    const qs = this.queues[q]!;
    const e = this.engine;
    if (!this.generic.has(q)) {
      if (e.drvInit(this.ds(q), this.size, qs.ring.desc, qs.ring.avail, qs.ring.used, this.ram.gpaDelta, drvInitFlags(this.eventIdx, this.packed)) !== 0)
        throw new Error('drvInit refused the ring');
      e.drvSetInterrupts(this.ds(q), 1);
      this.generic.add(q);
    }
    const list = deviceArea(q);
    const dv = new DataView(this.ram.mem.memory.buffer);
    const heads = chains.map((segs) => {
      segs.forEach((s, i) => {
        const at = list + i * DRV_SEG_BYTES;
        dv.setUint32(at + DRV_SEG_ADDR, qs.ring.buffers + s.offset, true);
        dv.setUint32(at + DRV_SEG_LEN, s.len, true);
        dv.setUint32(at + DRV_SEG_FLAGS, s.write ? DRV_SEG_F_WRITE : 0, true);
      });
      const head = e.drvAddChain(this.ds(q), list, segs.length);
      if (head < 0) throw new Error('no free descriptors');
      return head;
    });
    e.drvKickAvail(this.ds(q));
    if (e.drvNeedKick(this.ds(q))) eventfdSignal(qs.kickFd);
    return heads;
  }

  /** Wait for the next used element of queue q. */
  async waitUsed(q: number, timeoutMs = 5000): Promise<{ id: number; len: number }> {
    const qs = this.queues[q]!;
    const e = this.engine;
    const out = deviceArea(q) + 64 * DRV_SEG_BYTES;
    const pfd = Buffer.alloc(8);
    pfd.writeInt32LE(qs.callFd, 0);
    pfd.writeInt16LE(POLLIN, 4);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (e.drvReapTo(this.ds(q), out, 1) === 1) {
        const v = new DataView(this.ram.mem.memory.buffer);
        return { id: v.getUint32(out, true), len: v.getUint32(out + 4, true) };
      }
      if (Date.now() > deadline) throw new Error(`queue ${q}: no used element within ${timeoutMs} ms`);
      // wait on the call fd without blocking the event loop for long
      pfd.writeInt16LE(0, 6);
      if (pollFds(pfd, 1, 0) > 0) eventfdDrain(qs.callFd);
      else await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** A view of queue q's buffer area. */
  buffer(q: number, offset: number, len: number): Uint8Array {
    return new Uint8Array(this.ram.mem.memory.buffer, this.queues[q]!.ring.buffers + offset, len);
  }

  /** GET_VRING_BASE on every ring: the back-end stops them and reports where it got to. */
  async stop(): Promise<number[]> {
    const bases: number[] = [];
    for (let q = 0; q < this.queues.length; q++) bases.push((await this.client.request('GET_VRING_BASE', { index: q, num: 0 }))!.num);
    return bases;
  }

  close(): void {
    void this.pool?.destroy();
    this.pool = undefined;
    this.client.close();
    closeQuietly(this.inflightFd);
    closeQuietly(this.logFd);
    for (const q of this.queues) {
      closeQuietly(q.kickFd);
      closeQuietly(q.callFd);
    }
    this.ram.close();
  }
}
