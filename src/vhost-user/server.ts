/**
 * A vhost-user back-end endpoint: listens (socket path or inherited fd), serves one front-end at a time, and
 * when that front-end goes away releases everything of its connection and waits for the next. The guest Memory
 * and the queue workers belong to the endpoint and are handed to each connection in turn (worker-pool.ts).
 */
import type { DeviceModel } from '../devices/device.js';
import { loadEngineModule } from '../engine/engine.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { queueMapping, QueueWorkerPool } from '../queues/worker-pool.js';
import { closeQuietly } from '../sys/syscalls.js';
import { UnixListener } from '../sys/unix-socket.js';
import { Dispatcher } from './dispatcher.js';
import { Session, type SessionOptions, type SessionResources } from './session.js';
import { MessageChannel } from './transport.js';

const MAX_WAITING = 16;

export interface ServerOptions extends Omit<SessionOptions, 'log'> {
  device: DeviceModel;
  socketPath?: string;
  fd?: number;
  log?: (line: string) => void;
}

export class VhostUserServer {
  private readonly listener: UnixListener;
  private active: { channel: MessageChannel; session: Session; done: Promise<void> } | undefined;
  private readonly log: (line: string) => void;
  private connections = 0;
  private closing = false;
  private readonly waiting: number[] = [];
  private kept: { memory: GuestMemory; pool: QueueWorkerPool } | undefined;

  constructor(private readonly opts: ServerOptions) {
    this.log = opts.log ?? ((l) => process.stderr.write(`vhost-wasm ${opts.device.name}: ${l}\n`));
    if (opts.socketPath !== undefined) this.listener = UnixListener.listen(opts.socketPath);
    else if (opts.fd !== undefined) this.listener = UnixListener.fromFd(opts.fd);
    else throw new Error('one of --socket-path or --fd is required');
  }

  start(): this {
    this.listener.start((fd) => {
      try {
        this.accept(fd);
      } catch (e) {
        this.log(`cannot serve a new front-end: ${(e as Error).message}`);
        closeQuietly(fd);
        this.active = undefined;
      }
    });
    this.log(`listening on ${this.opts.socketPath ?? `fd ${this.opts.fd}`} (${this.opts.device.queues} queue(s))`);
    return this;
  }

  /** Resolves when the current connection (if any) has been fully released. */
  idle(): Promise<void> {
    return this.active?.done ?? Promise.resolve();
  }

  /** The current front-end's session, if one is connected. */
  get session(): Session | undefined {
    return this.active?.session;
  }

  get connectionCount(): number {
    return this.connections;
  }

  /** Queue workers spawned so far (replacements included): they are kept across connections. */
  get workerSpawnCount(): number {
    return this.kept?.pool.spawnCount ?? 0;
  }

  /** Memory and worker pool, made at the first connection and kept for the next ones. */
  private resources(): SessionResources {
    if (!this.kept) {
      const memory = new GuestMemory();
      const pool = new QueueWorkerPool({
        device: this.opts.device.name,
        deviceOptions: this.opts.device.options,
        engine: this.opts.engine,
        memory: memory.memory,
        module: loadEngineModule(),
        queueToWorker: this.opts.queueToWorker ?? queueMapping(this.opts.device.queues),
        log: this.log,
      });
      this.kept = { memory, pool };
    }
    const { memory, pool } = this.kept;
    return { memory, workers: this.opts.device.workers ?? ((ctx) => pool.leaseFor(ctx.onEvent)) };
  }

  /**
   * Let Memory and workers go: the endpoint closes, or (`onlyIfTainted`) a worker did not let go of its
   * connection and may still write into the Memory, so the next connection gets fresh ones.
   */
  private async discard(onlyIfTainted: boolean): Promise<void> {
    const k = this.kept;
    if (!k || (onlyIfTainted && !k.pool.tainted)) return;
    this.kept = undefined;
    await k.pool.close();
    k.memory.release();
  }

  private accept(fd: number): void {
    if (this.closing) {
      closeQuietly(fd);
      return;
    }
    if (this.active) {
      // one front-end at a time: the next waits until the current one has gone and been released
      if (this.waiting.length >= MAX_WAITING) {
        this.log(`refusing front-end connection (fd ${fd}): ${MAX_WAITING} already waiting`);
        closeQuietly(fd);
      } else this.waiting.push(fd);
      return;
    }
    this.connections++;
    const session = new Session(this.opts.device, { ...this.opts, log: this.log }, this.resources());
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const dispatcher = new Dispatcher(session, this.log);
    const channel = new MessageChannel(
      fd,
      (m) => dispatcher.enqueue(m),
      (why) => {
        this.log(why ? `front-end connection closed: ${why.message}` : 'front-end disconnected');
        void dispatcher
          .drain()
          .then(() => session.close())
          .then(
            () => this.discard(true),
            (e: unknown) => {
              // whatever of it was not released must not reach the next connection
              this.log(`releasing the connection failed: ${(e as Error).message}`);
              return this.discard(false);
            },
          )
          .catch((e: unknown) => this.log(`releasing the endpoint's memory and workers failed: ${(e as Error).message}`))
          .finally(() => {
            if (this.active?.session === session) this.active = undefined;
            release();
            const next = this.waiting.shift();
            if (next !== undefined) this.accept(next);
          });
      },
    );
    dispatcher.attach(channel);
    this.active = { channel, session, done };
    channel.start();
  }

  async close(): Promise<void> {
    this.closing = true;
    this.listener.close();
    for (const fd of this.waiting.splice(0)) closeQuietly(fd);
    const a = this.active;
    if (a) {
      a.channel.close();
      await a.done;
    }
    await this.discard(false);
  }
}
