/**
 * `vhost-wasm ivshmem-server` (option-compatible with QEMU's contrib/ivshmem-server) and `vhost-wasm
 * ivshmem-client` (a host-side peer: scripted with --ring/--write/--read/--wait, or commands on stdin).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { IvshmemPeer, type PeerEvent } from '../ivshmem/peer.js';
import { formatSize, IVSHMEM_MAX_VECTORS, parseSize } from '../ivshmem/protocol.js';
import { IvshmemConfigError, IvshmemServer, validateServerOptions } from '../ivshmem/server.js';
import type { ShmBacking } from '../ivshmem/shared-memory.js';
import { UsageError } from './main.js';

export const IVSHMEM_USAGE = `  vhost-wasm ivshmem-server [-S SOCKET] [-M SHM_NAME | -m DIR | --memfd] [-l SIZE] [-n VECTORS] [-F] [-v] [-p PIDFILE]
                  options as QEMU's contrib/ivshmem-server: -S socket (default /tmp/ivshmem_socket); -M POSIX shm
                  name (default ivshmem, removed at exit); -m directory for an unlinked file (hugetlbfs too);
                  --memfd an anonymous memfd; -l size, K/M/G suffixes, a power of two (default 4M); -n vectors per
                  peer 1..64 (default 1); -F foreground (default: detach, write -p PIDFILE, default
                  /var/run/ivshmem-server.pid); -v verbose (needs -F)
  vhost-wasm ivshmem-client [-S SOCKET] [--ring PEER:VECTOR|PEER:all|all] [--write OFFSET:TEXT] [--read OFFSET:LEN]
                  [--wait] [--wait-peer PEER] [--timeout S] [--stay] [--json] [-v]
                  a host-side peer: maps the shared memory, rings peers, waits for its own vectors. Actions run in
                  command-line order; without any, commands are read from stdin (dump, int PEER VECTOR|all,
                  int all, write OFFSET TEXT, read OFFSET LEN, quit)
`;

const DEFAULT_SOCKET = '/tmp/ivshmem_socket';
const DEFAULT_PIDFILE = '/var/run/ivshmem-server.pid';
const DAEMON_CHILD_FLAG = '--daemon-child';

// ---------------------------------------------------------------- server

export async function runIvshmemServer(args: string[]): Promise<void> {
  const { values, tokens } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h' },
      verbose: { type: 'boolean', short: 'v' },
      foreground: { type: 'boolean', short: 'F' },
      'pid-file': { type: 'string', short: 'p' },
      socket: { type: 'string', short: 'S' },
      'shm-name': { type: 'string', short: 'M' },
      'shm-dir': { type: 'string', short: 'm' },
      memfd: { type: 'boolean' },
      size: { type: 'string', short: 'l' },
      vectors: { type: 'string', short: 'n' },
      'daemon-child': { type: 'boolean' },
    },
    strict: true,
    tokens: true,
  });
  if (values.help) {
    process.stdout.write(`usage:\n${IVSHMEM_USAGE}`);
    return;
  }
  // -M, -m (and --memfd): the last one given wins, as with the reference's getopt loop
  let backing: ShmBacking = { kind: 'shm', name: 'ivshmem' };
  for (const t of tokens ?? []) {
    if (t.kind !== 'option') continue;
    if (t.name === 'shm-name') backing = { kind: 'shm', name: t.value! };
    else if (t.name === 'shm-dir') backing = { kind: 'dir', dir: t.value! };
    else if (t.name === 'memfd') backing = { kind: 'memfd' };
  }
  let size: bigint;
  try {
    size = parseSize(values.size ?? '4M');
  } catch (e) {
    throw new UsageError(`-l: ${(e as Error).message}`);
  }
  const vectorsText = values.vectors ?? '1';
  const vectors = /^(0x[0-9a-f]+|\d+)$/i.test(vectorsText) ? Number(vectorsText) : NaN;
  if (!Number.isInteger(vectors)) throw new UsageError(`-n: cannot parse the number of vectors '${vectorsText}'`);
  try {
    validateServerOptions({ size, vectors });
  } catch (e) {
    if (e instanceof IvshmemConfigError) throw new UsageError(e.message);
    throw e;
  }
  if (values.verbose && !values.foreground) throw new UsageError('cannot use verbose in daemon mode (-v needs -F)');
  if (backing.kind === 'dir' && !fs.existsSync(backing.dir)) throw new UsageError(`-m: no directory ${backing.dir}`);
  const socketPath = values.socket ?? DEFAULT_SOCKET;

  if (!values.foreground) return daemonize(args);

  const daemonChild = values['daemon-child'] === true;
  const pidFile = values['pid-file'] ?? (daemonChild ? DEFAULT_PIDFILE : undefined);
  const log = values.verbose ? (l: string): void => void process.stdout.write(`${l}\n`) : undefined;
  let server: IvshmemServer;
  try {
    server = new IvshmemServer({ socketPath, backing, size, vectors, log }).start();
    if (pidFile) fs.writeFileSync(pidFile, `${process.pid}\n`);
  } catch (e) {
    if (daemonChild && process.send) process.send({ error: (e as Error).message });
    throw e;
  }
  const stop = (sig: string): void => {
    log?.(`${sig}: closing`);
    server.close();
    if (pidFile) fs.rmSync(pidFile, { force: true });
    process.exit(0);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGPIPE', () => undefined);
  process.on('unhandledRejection', (e) => process.stderr.write(`vhost-wasm ivshmem-server: internal error: ${(e as Error)?.stack ?? e}\n`));
  if (daemonChild && process.send) {
    process.send({ ready: true, pid: process.pid });
    process.disconnect();
  }
}

/**
 * Node cannot fork(): "daemonize" starts this same command again with -F as a detached child in its own session,
 * stdio closed, and returns once that child says it is serving (its pid file written) or failed (its message).
 */
async function daemonize(args: string[]): Promise<void> {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'ivshmem-server', ...args, '-F', DAEMON_CHILD_FLAG], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
  });
  const outcome = await new Promise<{ ready?: boolean; pid?: number; error?: string }>((resolve) => {
    child.once('message', (m: { ready?: boolean; pid?: number; error?: string }) => resolve(m));
    child.once('exit', (code) => resolve({ error: `the server exited during start (code ${code})` }));
    child.once('error', (e) => resolve({ error: e.message }));
  });
  if (!outcome.ready) throw new Error(outcome.error ?? 'the server did not start');
  child.unref();
  child.disconnect();
}

// ---------------------------------------------------------------- client

type Action =
  | { kind: 'ring'; peer: number | 'all'; vector: number | 'all' }
  | { kind: 'write'; offset: number; text: string }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'wait' }
  | { kind: 'wait-peer'; peer: number };

function intArg(what: string, s: string, min: number, max: number): number {
  const n = /^(0x[0-9a-f]+|\d+)$/i.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${what} must be an integer in ${min}..${max}, got '${s}'`);
  return n;
}

function parseRing(s: string): Action {
  if (s === 'all') return { kind: 'ring', peer: 'all', vector: 'all' };
  const m = /^([^:]+):([^:]+)$/.exec(s);
  if (!m) throw new UsageError(`--ring takes PEER:VECTOR, PEER:all or all, got '${s}'`);
  return {
    kind: 'ring',
    peer: intArg('--ring peer', m[1]!, 0, 65535),
    vector: m[2] === 'all' ? 'all' : intArg('--ring vector', m[2]!, 0, IVSHMEM_MAX_VECTORS - 1),
  };
}

function parseOffsetPair(opt: string, s: string): [number, string] {
  const i = s.indexOf(':');
  if (i <= 0) throw new UsageError(`${opt} takes OFFSET:..., got '${s}'`);
  return [intArg(`${opt} offset`, s.slice(0, i), 0, 2 ** 32 - 1), s.slice(i + 1)];
}

export async function runIvshmemClient(args: string[]): Promise<void> {
  const { values, tokens } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h' },
      verbose: { type: 'boolean', short: 'v' },
      socket: { type: 'string', short: 'S' },
      ring: { type: 'string', multiple: true },
      write: { type: 'string', multiple: true },
      read: { type: 'string', multiple: true },
      wait: { type: 'boolean', multiple: true },
      'wait-peer': { type: 'string', multiple: true },
      timeout: { type: 'string' },
      stay: { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
    tokens: true,
  });
  if (values.help) {
    process.stdout.write(`usage:\n${IVSHMEM_USAGE}`);
    return;
  }
  const actions: Action[] = [];
  for (const t of tokens ?? []) {
    if (t.kind !== 'option') continue;
    if (t.name === 'ring') actions.push(parseRing(t.value!));
    else if (t.name === 'write') {
      const [offset, text] = parseOffsetPair('--write', t.value!);
      actions.push({ kind: 'write', offset, text });
    } else if (t.name === 'read') {
      const [offset, len] = parseOffsetPair('--read', t.value!);
      actions.push({ kind: 'read', offset, length: intArg('--read length', len, 1, 1 << 20) });
    } else if (t.name === 'wait') actions.push({ kind: 'wait' });
    else if (t.name === 'wait-peer') actions.push({ kind: 'wait-peer', peer: intArg('--wait-peer', t.value!, 0, 65535) });
  }
  const timeoutMs = values.timeout === undefined ? 30_000 : Number(values.timeout) * 1000;
  if (!(timeoutMs > 0)) throw new UsageError(`--timeout must be a positive number of seconds, got '${values.timeout}'`);
  const json = values.json === true;
  const out = (event: string, fields: Record<string, unknown>, human: string): void => {
    process.stdout.write(json ? `${JSON.stringify({ event, ...fields })}\n` : `${human}\n`);
  };

  const peer = await IvshmemPeer.connect({ socketPath: values.socket ?? DEFAULT_SOCKET, timeoutMs });
  const interrupts: { vector: number; count: number }[] = [];
  const wakeups = new Set<() => void>();
  peer.on((e: PeerEvent) => {
    switch (e.type) {
      case 'peer-joined':
        out('peer-joined', { peer: e.peer }, `peer ${e.peer} joined`);
        break;
      case 'peer-vector':
        if (values.verbose) out('peer-vector', { peer: e.peer, vector: e.vector }, `peer ${e.peer} vector ${e.vector}`);
        break;
      case 'peer-left':
        out('peer-left', { peer: e.peer }, `peer ${e.peer} left`);
        break;
      case 'interrupt':
        interrupts.push({ vector: e.vector, count: e.count });
        out('interrupt', { vector: e.vector, count: e.count }, `interrupt on vector ${e.vector} (count ${e.count})`);
        break;
      case 'server-gone':
        out('server-gone', { reason: e.reason }, `server gone: ${e.reason}`);
        break;
      case 'warning':
        out('warning', { message: e.message }, `warning: ${e.message}`);
        break;
    }
    wakeups.forEach((w) => w());
  });
  out(
    'connected',
    { id: peer.id, size: peer.shmSize, vectors: peer.vectorCount, peers: Object.fromEntries(peer.peers()) },
    `connected: id ${peer.id}, shared memory ${formatSize(BigInt(peer.shmSize))}, ${peer.vectorCount} vector(s); peers: ${[...peer.peers().keys()].join(' ') || 'none'}`,
  );

  const until = (pred: () => boolean, what: string): Promise<void> =>
    new Promise((resolve, reject) => {
      if (pred()) return resolve();
      const t = setTimeout(() => {
        wakeups.delete(check);
        reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`));
      }, timeoutMs);
      const check = (): void => {
        if (!pred()) return;
        clearTimeout(t);
        wakeups.delete(check);
        resolve();
      };
      wakeups.add(check);
    });

  const run = (a: Action): void => {
    switch (a.kind) {
      case 'ring': {
        const targets = a.peer === 'all' ? [...peer.peers().keys()] : [a.peer];
        for (const p of targets) {
          const n = a.peer === 'all' || a.vector === 'all' ? (peer.peers().get(p) ?? 0) : 1;
          for (let v = 0; v < n; v++) {
            const vector = a.vector === 'all' ? v : a.vector;
            peer.ring(p, vector);
            out('rang', { peer: p, vector }, `rang peer ${p} vector ${vector}`);
          }
        }
        return;
      }
      case 'write': {
        const data = Buffer.from(a.text);
        if (a.offset + data.length > peer.shmSize) throw new UsageError(`write of ${data.length} bytes at ${a.offset} goes past the shared memory (${peer.shmSize} bytes)`);
        peer.bytes().set(data, a.offset);
        out('wrote', { offset: a.offset, length: data.length }, `wrote ${data.length} bytes at ${a.offset}`);
        return;
      }
      case 'read': {
        if (a.offset + a.length > peer.shmSize) throw new UsageError(`read of ${a.length} bytes at ${a.offset} goes past the shared memory (${peer.shmSize} bytes)`);
        const b = Buffer.from(peer.bytes().subarray(a.offset, a.offset + a.length));
        const nul = b.indexOf(0);
        const text = (nul >= 0 ? b.subarray(0, nul) : b).toString('utf8');
        out('read', { offset: a.offset, length: a.length, text, hex: b.toString('hex') }, `read at ${a.offset}: ${JSON.stringify(text)}`);
        return;
      }
      default:
        return;
    }
  };

  try {
    if (actions.length > 0) {
      let waited = 0;
      for (const a of actions) {
        if (a.kind === 'wait') {
          const want = ++waited;
          await until(() => interrupts.length >= want, `interrupt #${want}`);
        } else if (a.kind === 'wait-peer') await until(() => peer.peers().has(a.peer), `peer ${a.peer}`);
        else run(a);
      }
      if (!values.stay) return;
    }
    await interactive(peer, run, out);
  } finally {
    await peer.close();
  }
}

/** The reference client's stdin commands (dump, int PEER VECTOR|all, int all) plus write/read/quit. */
async function interactive(peer: IvshmemPeer, run: (a: Action) => void, out: (event: string, f: Record<string, unknown>, human: string) => void): Promise<void> {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    const w = line.trim().split(/\s+/);
    try {
      if (w[0] === '' || w[0] === undefined) continue;
      if (w[0] === 'quit' || w[0] === 'exit') break;
      if (w[0] === 'dump') {
        out('dump', { id: peer.id, vectors: peer.vectorCount, peers: Object.fromEntries(peer.peers()) }, `id ${peer.id}, ${peer.vectorCount} vector(s); peers: ${[...peer.peers()].map(([p, n]) => `${p}(${n})`).join(' ') || 'none'}`);
      } else if (w[0] === 'int' && w[1] === 'all') run({ kind: 'ring', peer: 'all', vector: 'all' });
      else if (w[0] === 'int' && w.length === 3) run(parseRing(`${w[1]}:${w[2]}`));
      else if (w[0] === 'write' && w.length >= 3) run({ kind: 'write', offset: intArg('offset', w[1]!, 0, 2 ** 32 - 1), text: line.trim().split(/\s+/).slice(2).join(' ') });
      else if (w[0] === 'read' && w.length === 3) run({ kind: 'read', offset: intArg('offset', w[1]!, 0, 2 ** 32 - 1), length: intArg('length', w[2]!, 1, 1 << 20) });
      else out('error', { message: `unknown command '${line.trim()}'` }, `unknown command '${line.trim()}' (dump, int PEER VECTOR|all, int all, write OFF TEXT, read OFF LEN, quit)`);
    } catch (e) {
      out('error', { message: (e as Error).message }, `error: ${(e as Error).message}`);
    }
  }
  rl.close();
  // quit before EOF: stdin would keep the process alive
  process.stdin.destroy();
}
