/** The back-end under test as a real separate process: `node bin/vhost-wasm.js null ...`. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { cliPath } from './paths.js';

export interface BackendOptions {
  socketPath: string;
  queues: number;
  pollUs: number;
  batch: number;
  /** ring engine (--engine); default the back-end's */
  engine?: string;
  /** notification policy (--notify); default from pollUs */
  notify?: string;
  /** queue worker per queue (--queue-map) */
  queueMap?: readonly number[];
}

/** Every back-end still alive, so that an interrupted run can kill them all. */
const live = new Set<ChildProcess>();

let refusing = false;

/** After an interrupt: start no more back-ends. */
export function refuseNewBackends(): void {
  refusing = true;
}

export function killAllBackends(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const c of live) {
    try {
      c.kill(signal);
    } catch {
      // already gone
    }
  }
}

export class Backend {
  readonly args: string[];
  private stderrTail = '';
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitP: Promise<void>;

  private constructor(
    readonly child: ChildProcess,
    readonly opts: BackendOptions,
    args: string[],
  ) {
    this.args = args;
    live.add(child);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-4000);
    });
    child.stdout?.resume();
    this.exitP = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = { code, signal };
        live.delete(child);
        resolve();
      });
      child.once('error', (e) => {
        this.stderrTail += `\nspawn error: ${e.message}`;
        this.exited ??= { code: -1, signal: null };
        live.delete(child);
        resolve();
      });
    });
  }

  /** Spawn and wait until the socket is bound. */
  static async start(opts: BackendOptions, timeoutMs = 15_000): Promise<Backend> {
    if (refusing) throw new Error('interrupted');
    fs.rmSync(opts.socketPath, { force: true });
    const args = [
      cliPath,
      'null',
      '--socket-path',
      opts.socketPath,
      '--queues',
      String(opts.queues),
      '--poll-us',
      String(opts.pollUs),
      '--batch',
      String(opts.batch),
      ...(opts.engine ? ['--engine', opts.engine] : []),
      ...(opts.notify ? ['--notify', opts.notify] : []),
      ...(opts.queueMap ? ['--queue-map', opts.queueMap.join(',')] : []),
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const b = new Backend(child, opts, args.slice(1));
    const deadline = Date.now() + timeoutMs;
    // the socket file appears at bind(), before listen(): wait for the back-end to say it listens
    while (!fs.existsSync(opts.socketPath) || !b.stderrTail.includes('listening on')) {
      if (b.exited) throw new Error(`back-end exited before listening (${b.describeExit()}): ${b.log}`);
      if (Date.now() > deadline) {
        await b.stop();
        throw new Error(`back-end did not create ${opts.socketPath} within ${timeoutMs} ms: ${b.log}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return b;
  }

  get log(): string {
    return this.stderrTail.trim();
  }

  get alive(): boolean {
    return this.exited === undefined;
  }

  describeExit(): string {
    const e = this.exited;
    if (!e) return 'running';
    return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`;
  }

  /** SIGTERM, then SIGKILL if it has not gone within `graceMs`. */
  async stop(graceMs = 4000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exitP;
    clearTimeout(t);
    fs.rmSync(this.opts.socketPath, { force: true });
  }
}
