/**
 * Shared machinery of the fuzz tests (test/fuzz/*.test.ts): run counts and seeds from the environment, a real
 * back-end child process that can be checked and restarted, a raw vhost-user connection that keeps every message
 * the back-end sends, the fds the fuzzers attach, and the "does the back-end still serve a well-behaved
 * front-end" check.
 *
 * Environment (read by every fuzz file):
 *   FUZZ_RUNS=N        runs per property (default: small, for CI; e.g. FUZZ_RUNS=5000 for a long run)
 *   FUZZ_SEED=S        replay a fast-check seed (printed with every failure)
 *   FUZZ_PATH=P        replay one counterexample path (printed with the seed)
 *   FUZZ_SKIP_KNOWN=1  leave out inputs of known bugs still open (KNOWN_BUGS in protocol-model.ts), to hunt for others
 *   FUZZ_VERBOSE=1     print every generated case
 */
import fs from 'node:fs';
import type fc from 'fast-check';
import { Frontend } from '../../src/frontend/frontend.js';
import { closeQuietly, eventfd, ftruncate, memfdCreate, MFD_ALLOW_SEALING, MFD_CLOEXEC } from '../../src/sys/syscalls.js';
import { connectUnix } from '../../src/sys/unix-socket.js';
import { MessageChannel, type RawMessage } from '../../src/vhost-user/transport.js';
import { spawnBackend, type ChildBackend } from '../helpers/backend.js';

// ---------------------------------------------------------------------------------------------------
// run counts, seeds, time limits
// ---------------------------------------------------------------------------------------------------

export const LONG_RUN = process.env['FUZZ_RUNS'] !== undefined;
export const SKIP_KNOWN = process.env['FUZZ_SKIP_KNOWN'] === '1';
export const VERBOSE = process.env['FUZZ_VERBOSE'] === '1';

/** Runs for one property: FUZZ_RUNS when set, else the CI default. */
export function runs(ciDefault: number): number {
  const v = process.env['FUZZ_RUNS'];
  if (v === undefined) return ciDefault;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`FUZZ_RUNS must be a positive integer, got '${v}'`);
  return n;
}

/**
 * fast-check parameters. In CI (no FUZZ_RUNS) the whole property, shrinking included, is cut off after
 * `ciBudgetMs` so that the suite stays inside its time budget; a failure found before that is still reported
 * (with the smallest counterexample found so far). Long runs get about 3 s per run plus 20 minutes.
 */
export function fcParams<T>(numRuns: number, ciBudgetMs: number): fc.Parameters<T> {
  const p: fc.Parameters<T> = { numRuns, verbose: VERBOSE ? 2 : 1 };
  const seed = process.env['FUZZ_SEED'];
  if (seed !== undefined) p.seed = Number(seed);
  const path = process.env['FUZZ_PATH'];
  if (path !== undefined) p.path = path;
  // CI: the whole property, shrinking included, within its budget. Long runs: every run, then at most about
  // 20 minutes of shrinking (a hang costs seconds per shrink attempt)
  p.interruptAfterTimeLimit = LONG_RUN ? numRuns * 3000 + 20 * 60_000 : ciBudgetMs;
  return p;
}

/** vitest timeout for a property with `numRuns` runs of at most `perRunMs` each. */
export function testTimeout(numRuns: number, perRunMs: number, ciBudgetMs: number): number {
  return LONG_RUN ? numRuns * Math.max(perRunMs, 3000) + 25 * 60_000 : ciBudgetMs + 45_000;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** JSON with bigints as "0x..." strings (counterexamples are printed this way, ready for the corpus). */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x));
}

// ---------------------------------------------------------------------------------------------------
// the back-end under test: a real child process
// ---------------------------------------------------------------------------------------------------

export class FuzzBackend {
  private be: ChildBackend | undefined;
  /** output offset of the current process (restarts reset it) */
  restarts = 0;

  constructor(readonly args: string[]) {}

  async start(): Promise<this> {
    this.be = await this.spawn();
    return this;
  }

  /**
   * spawnBackend returns once the socket file exists, which bind() creates before listen(): a connect in between
   * is refused. The server logs "listening on" after listen().
   */
  private async spawn(): Promise<ChildBackend> {
    const be = await spawnBackend(this.args);
    const deadline = Date.now() + 15_000;
    while (!/listening on/.test(be.output())) {
      if (be.child.exitCode !== null || Date.now() > deadline) throw new Error(`back-end did not start listening: ${be.output()}`);
      await sleep(10);
    }
    return be;
  }

  private get cur(): ChildBackend {
    if (!this.be) throw new Error('back-end not started');
    return this.be;
  }

  get socketPath(): string {
    return this.cur.socketPath;
  }

  get pid(): number {
    return this.cur.child.pid!;
  }

  alive(): boolean {
    const c = this.cur.child;
    return c.exitCode === null && c.signalCode === null;
  }

  exitDescription(): string {
    const c = this.cur.child;
    return c.signalCode !== null ? `killed by ${c.signalCode}` : `exited with code ${c.exitCode}`;
  }

  output(): string {
    return this.cur.output();
  }

  /** Everything the back-end wrote from output offset `from` on. */
  since(from: number): string {
    return this.output().slice(from);
  }

  /** Resolves true when `re` matches the output written since `from`, false after `ms`. */
  async waitOutput(re: RegExp, from: number, ms = 1000): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (re.test(this.since(from))) return true;
      if (Date.now() > deadline) return false;
      await sleep(10);
    }
  }

  fdCount(): number {
    return fs.readdirSync(`/proc/${this.pid}/fd`).length;
  }

  /** Wait (up to `ms`) for the open fd count to come down to `target`; returns the last count seen. */
  async settleFds(target: number, ms = 1500): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const n = this.fdCount();
      if (n <= target || Date.now() > deadline) return n;
      await sleep(20);
    }
  }

  /** Kill the current process (if any) and start a fresh one: after a crash or a hang. */
  async restart(): Promise<void> {
    if (this.be) {
      const c = this.be.child;
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await new Promise((r) => c.once('exit', r));
      }
    }
    this.restarts++;
    this.be = await this.spawn();
  }

  async stop(): Promise<void> {
    if (!this.be) return;
    const c = this.be.child;
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await new Promise((r) => c.once('exit', r));
    }
    fs.rmSync(this.be.socketPath, { force: true });
  }
}

/** Rejects with `what` after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang?)`)), ms);
    }),
  ]);
}

/**
 * The back-end still serves: a fresh, well-behaved front-end connects (the server takes it once the previous
 * connection has been released) and completes one chain on each of `queues` within a few seconds. Throws with
 * a description otherwise.
 */
export async function checkServes(be: FuzzBackend, queues: number, device: 'null' | 'rng', timeoutMs = 6000): Promise<void> {
  if (!be.alive()) throw new Error(`the back-end process died (${be.exitDescription()})`);
  const fe = await withTimeout(
    Frontend.connect({ socketPath: be.socketPath, queues, queueSize: 16, bufferBytes: 16 * 256 }),
    timeoutMs,
    'a fresh front-end could not set up the device',
  );
  try {
    for (let q = 0; q < queues; q++) {
      const r = await fe.roundTrip(q, [{ offset: 0, len: 16, write: device === 'rng' }], timeoutMs);
      const want = device === 'rng' ? 16 : 0;
      if (r.len !== want) throw new Error(`fresh front-end: queue ${q} used length ${r.len}, expected ${want}`);
    }
  } finally {
    fe.close();
  }
  if (!be.alive()) throw new Error(`the back-end process died (${be.exitDescription()})`);
}

// ---------------------------------------------------------------------------------------------------
// a raw connection that keeps every message the back-end sends
// ---------------------------------------------------------------------------------------------------

export class RawConn {
  private readonly channel: MessageChannel;
  private readonly inbox: RawMessage[] = [];
  private wake: (() => void) | undefined;
  /** why the connection ended: undefined while open, null for a plain close by the back-end */
  ended: Error | null | undefined = undefined;

  constructor(socketPath: string) {
    this.channel = new MessageChannel(
      connectUnix(socketPath),
      (m) => {
        this.inbox.push(m);
        this.wake?.();
      },
      (why) => {
        this.ended = why ?? null;
        this.wake?.();
      },
    );
    this.channel.start();
  }

  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Send bytes with fds; false when the back-end has already closed the connection (EPIPE and the like). */
  send(data: Buffer, fds: readonly number[] = []): boolean {
    if (this.closed) return false;
    try {
      this.channel.send(data, fds);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Messages received until `done(messages)` says so, the connection ends, or `ms` pass. Every received fd is
   * closed (the fuzzers look only at the messages).
   */
  async collect(done: (got: RawMessage[]) => boolean, ms: number): Promise<{ got: RawMessage[]; closed: boolean; timedOut: boolean }> {
    const deadline = Date.now() + ms;
    const got: RawMessage[] = [];
    for (;;) {
      while (this.inbox.length) {
        const m = this.inbox.shift()!;
        for (const fd of m.fds) closeQuietly(fd);
        got.push(m);
        if (done(got)) return { got, closed: false, timedOut: false };
      }
      if (this.closed) return { got, closed: true, timedOut: false };
      const left = deadline - Date.now();
      if (left <= 0) return { got, closed: false, timedOut: true };
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wake = undefined;
    }
  }

  /** Wait until the back-end closes the connection; false after `ms`. */
  async waitClosed(ms: number): Promise<boolean> {
    const r = await this.collect(() => false, ms);
    return r.closed;
  }

  close(): void {
    this.channel.close();
    for (const m of this.inbox.splice(0)) for (const fd of m.fds) closeQuietly(fd);
  }
}

// ---------------------------------------------------------------------------------------------------
// fds the fuzzers attach to messages
// ---------------------------------------------------------------------------------------------------

/**
 * Kinds of fd a fuzzed message can carry. Fresh kinds are created for the message and closed right after it
 * was sent (the back-end got its own copy); `guestA`/`guestB` are the connection's guest-memory memfds and
 * `kick0`.. the kick eventfds the harness keeps to signal later.
 */
export const FRESH_FD_KINDS = ['eventfd', 'memfd', 'memfd0', 'devnull-r', 'devnull-w'] as const;
export type FreshFdKind = (typeof FRESH_FD_KINDS)[number];
export type FdKind = FreshFdKind | 'guestA' | 'guestB' | `kick${number}`;

/** Size fstat() reports for each kind (what the back-end compares a region's mmap_offset + size with). */
export const GUEST_BYTES = 2 << 20;
export function fdKindSize(k: FdKind): bigint {
  if (k === 'guestA' || k === 'guestB' || k === 'memfd') return BigInt(GUEST_BYTES);
  return 0n;
}

/** Per-connection fds: the guest memfds and the kick eventfds live as long as the connection. */
export class ConnFds {
  /** A allows sealing (like QEMU's memory-backend-memfd and the built-in front-end), B does not (like a file) */
  readonly guestA = memfdCreate('fuzz-guest-a', MFD_CLOEXEC | MFD_ALLOW_SEALING);
  readonly guestB = memfdCreate('fuzz-guest-b', MFD_CLOEXEC);
  readonly kicks: number[];

  constructor(queues: number) {
    ftruncate(this.guestA, GUEST_BYTES);
    ftruncate(this.guestB, GUEST_BYTES);
    this.kicks = Array.from({ length: queues }, () => eventfd());
  }

  /** The fds for `kinds`, and a function that closes the fresh ones. */
  open(kinds: readonly FdKind[]): { fds: number[]; release(): void } {
    const fresh: number[] = [];
    const fds = kinds.map((k) => {
      switch (k) {
        case 'guestA':
          return this.guestA;
        case 'guestB':
          return this.guestB;
        case 'eventfd':
          return track(fresh, eventfd());
        case 'memfd': {
          const fd = track(fresh, memfdCreate('fuzz-extra'));
          ftruncate(fd, GUEST_BYTES);
          return fd;
        }
        case 'memfd0':
          return track(fresh, memfdCreate('fuzz-empty'));
        case 'devnull-r':
          return track(fresh, fs.openSync('/dev/null', 'r'));
        case 'devnull-w':
          return track(fresh, fs.openSync('/dev/null', 'w'));
        default: {
          const q = Number(k.slice(4));
          const fd = this.kicks[q];
          if (fd === undefined) return track(fresh, eventfd());
          return fd;
        }
      }
    });
    return { fds, release: () => fresh.forEach((fd) => closeQuietly(fd)) };
  }

  close(): void {
    closeQuietly(this.guestA);
    closeQuietly(this.guestB);
    for (const fd of this.kicks) closeQuietly(fd);
  }
}

function track(list: number[], fd: number): number {
  list.push(fd);
  return fd;
}
