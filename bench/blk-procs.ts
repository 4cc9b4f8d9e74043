/**
 * The two vhost-user-blk back-ends of the blk benchmark as separate processes: ours
 * (`node bin/vhost-wasm.js blk --image IMG --queues N`) and qemu-storage-daemon exporting the same image as
 * vhost-user-blk. Spawn, wait for the socket, stop; every process still alive can be killed at once.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath } from './paths.js';

const live = new Set<ChildProcess>();
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;
let refusing = false;

export function refuseNewBlkProcs(): void {
  refusing = true;
}

export function killAllBlkProcs(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const c of live) {
    try {
      c.kill(signal);
    } catch {
      // already gone
    }
  }
}

export type QsdAio = 'io_uring' | 'threads';

/** A back-end process that listens on a unix socket. */
export class SocketServer {
  private tail = '';
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitP: Promise<void>;

  private constructor(
    readonly child: ChildProcess,
    readonly socketPath: string,
    readonly command: string[],
  ) {
    live.add(child);
    const keep = (d: string): void => {
      this.tail = (this.tail + d).slice(-4000);
    };
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exitP = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = { code, signal };
        live.delete(child);
        resolve();
      });
      child.once('error', (e) => {
        this.tail += `\nspawn error: ${e.message}`;
        this.exited ??= { code: -1, signal: null };
        live.delete(child);
        resolve();
      });
    });
  }

  static async start(command: string[], socketPath: string, timeoutMs = 15_000): Promise<SocketServer> {
    if (refusing) throw new Error('interrupted');
    fs.rmSync(socketPath, { force: true });
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = new SocketServer(child, socketPath, command);
    const deadline = Date.now() + timeoutMs;
    while (!fs.existsSync(socketPath)) {
      if (s.exited) throw new Error(`${path.basename(command[0]!)} exited before listening (${s.describeExit()}): ${s.log}`);
      if (Date.now() > deadline) {
        await s.stop();
        throw new Error(`${path.basename(command[0]!)} did not create ${socketPath} within ${timeoutMs} ms: ${s.log}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return s;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get log(): string {
    return this.tail.trim();
  }

  get alive(): boolean {
    return this.exited === undefined;
  }

  describeExit(): string {
    const e = this.exited;
    if (!e) return 'running';
    return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`;
  }

  /** File descriptors of the process that are io_uring instances (0 when it cannot be read). */
  ioUringFds(): number {
    if (!this.pid) return 0;
    let n = 0;
    try {
      for (const f of fs.readdirSync(`/proc/${this.pid}/fd`)) {
        try {
          if (fs.readlinkSync(`/proc/${this.pid}/fd/${f}`).includes('io_uring')) n++;
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      return 0;
    }
    return n;
  }

  /** CPU seconds (user + system, all threads) the process has used so far; undefined when unreadable. */
  cpuSeconds(): number | undefined {
    if (!this.pid) return undefined;
    try {
      const stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      // fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
    } catch {
      return undefined;
    }
  }

  /** SIGTERM, then SIGKILL if it has not gone within `graceMs`. */
  async stop(graceMs = 4000): Promise<void> {
    if (this.alive) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exitP;
      clearTimeout(t);
    }
    fs.rmSync(this.socketPath, { force: true });
  }
}

/**
 * `vhost-wasm blk` on the image; `workers` (optional) spreads the queues over that many queue workers
 * (--queue-map i % workers) instead of the default one worker per queue.
 */
export function oursCommand(socketPath: string, image: string, queues: number, workers?: number): string[] {
  const cmd = [process.execPath, cliPath, 'blk', '--socket-path', socketPath, '--image', image, '--queues', String(queues)];
  if (workers !== undefined && workers < queues) cmd.push('--queue-map', Array.from({ length: queues }, (_, i) => i % workers).join(','));
  return cmd;
}

export function qsdCommand(binary: string, socketPath: string, image: string, queues: number, aio: QsdAio): string[] {
  return [
    binary,
    '--blockdev',
    `driver=file,node-name=f0,filename=${image},cache.direct=off,aio=${aio}`,
    '--export',
    `type=vhost-user-blk,id=e0,node-name=f0,writable=on,num-queues=${queues},addr.type=unix,addr.path=${socketPath}`,
  ];
}

/** qemu-storage-daemon on PATH (or VHOST_WASM_QSD): its path and version line, or why not. */
export function findQsd(): { binary?: string; version?: string; error?: string } {
  const bin = process.env['VHOST_WASM_QSD'] || 'qemu-storage-daemon';
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return { error: `${bin}: ${(r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found (apt-get install qemu-system-common)' : r.error.message}` };
  if (r.status !== 0) return { error: `${bin} --version exited ${r.status}: ${r.stderr}` };
  const which = bin.includes('/') ? bin : spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).stdout.trim() || bin;
  return { binary: which, version: r.stdout.split('\n')[0]!.trim() };
}

/**
 * Start qemu-storage-daemon with aio=io_uring; if that does not come up (a kernel or build without io_uring),
 * with aio=threads. Reports which, and why it fell back.
 */
export async function startQsd(binary: string, socketPath: string, image: string, queues: number, prefer: QsdAio = 'io_uring'): Promise<{ server: SocketServer; aio: QsdAio; fallback?: string }> {
  try {
    return { server: await SocketServer.start(qsdCommand(binary, socketPath, image, queues, prefer), socketPath), aio: prefer };
  } catch (e) {
    if (prefer === 'threads') throw e;
    const why = e instanceof Error ? e.message : String(e);
    return { server: await SocketServer.start(qsdCommand(binary, socketPath, image, queues, 'threads'), socketPath), aio: 'threads', fallback: why };
  }
}

/** A raw image of `bytes` on tmpfs, every byte written (no holes: reads and writes hit real pages). */
export function makeImage(file: string, bytes: number): void {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  const fd = fs.openSync(file, 'w');
  try {
    for (let off = 0; off < bytes; off += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off), off);
  } finally {
    fs.closeSync(fd);
  }
}
