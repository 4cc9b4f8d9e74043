// Harness for booting a real QEMU (Debian bookworm's 7.2) Linux guest in tests.
//
// The guest (build/guest/build-guest.sh) is Debian's kernel plus a busybox
// initramfs whose /init runs /tests/NAME.sh for `vw.test=NAME` and prints
//   VW-BEGIN NAME / VW-PASS NAME k=v ... / VW-FAIL NAME reason
// on the serial console, then powers off.
//
// Environment:
//   VHOST_WASM_QEMU           qemu-system-x86_64 binary (default: from PATH)
//   VHOST_WASM_QEMU_ACCEL     tcg (default) | kvm
//   VHOST_WASM_QEMU_VERBOSE=1 echo the guest console to stderr while it runs
//   VHOST_WASM_QEMU_SLOTS     how many guests may run at once across test workers
//                             (default: 1 per 2 CPUs, at least 1)
//   VHOST_WASM_GUEST_OUT      guest build dir (default: build/guest/out)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GUEST_DIR = join(REPO_ROOT, 'build', 'guest');
export const GUEST_OUT = process.env.VHOST_WASM_GUEST_OUT ?? join(GUEST_DIR, 'out');
export const BUILD_SCRIPT = join(GUEST_DIR, 'build-guest.sh');

export type Accel = 'tcg' | 'kvm';

export interface BootOptions {
  /** Guest test to run: /tests/NAME.sh inside the initramfs (vw.test=NAME). */
  test: string;
  /** Guest RAM in MiB (default 512); backed by a shared memfd so vhost-user back-ends can map it. */
  memMiB?: number;
  /** vCPUs (default 2). */
  smp?: number;
  /** Extra `-device` arguments, e.g. `vhost-user-rng-pci,chardev=rng0`. */
  devices?: string[];
  /** Extra `-chardev` arguments, e.g. `socket,id=rng0,path=/tmp/x.sock`. */
  chardevs?: string[];
  /** Extra `-netdev` arguments, e.g. `vhost-user,id=n0,chardev=c0`. */
  netdevs?: string[];
  /** Extra `-object` arguments, e.g. `rng-random,id=rng0,filename=/dev/urandom`. */
  objects?: string[];
  /** Anything else, appended verbatim to QEMU's argv. */
  extraArgs?: string[];
  /** Kill QEMU (SIGKILL) after this long (default 120000). Waiting for a boot slot is not counted. */
  timeoutMs?: number;
  /** tcg (default, or VHOST_WASM_QEMU_ACCEL) or kvm. */
  accel?: Accel;
  /** Appended to the kernel command line, e.g. `vw.rng_bytes=4194304 vw.timeout=60`. */
  kernelArgs?: string;
  /** Boot initrd-fio.img (initrd.gz + the host's fio) instead of initrd.gz. */
  fio?: boolean;
  /** Kernel image: vmlinux (default; faster under TCG) or vmlinuz (the bzImage). */
  kernelImage?: 'vmlinux' | 'vmlinuz';
  /** Called with each console line (\r stripped) as it arrives. */
  onLine?: (line: string) => void;
  /** After the PASS/FAIL marker, give the guest this long to power off before SIGKILL (default 15000). */
  shutdownGraceMs?: number;
}

export interface GuestResult {
  /** A `VW-PASS <test>` line was seen. */
  passed: boolean;
  /** A `VW-FAIL <test>` line was seen. */
  failed: boolean;
  /** The PASS/FAIL line itself. */
  markerLine?: string;
  /** key=value pairs from the marker line's details, e.g. { bytes: '1048576' }. */
  markerFields: Record<string, string>;
  /** `VW-BEGIN <test>` was seen: the guest reached the test. */
  begun: boolean;
  /** Everything QEMU wrote on stdout (the serial console) and stderr, \r removed. */
  serial: string;
  /** QEMU's stderr alone. */
  stderr: string;
  /** QEMU's exit code (null when killed by a signal). */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The harness killed QEMU because timeoutMs ran out. */
  timedOut: boolean;
  /** Spawn to exit, in ms. */
  durationMs: number;
  /** Spawn to the VW-BEGIN line, in ms (boot time up to the test). */
  bootMs?: number;
  /** The argv QEMU was started with. */
  argv: string[];
}

// ----------------------------------------------------------------- availability

function findInPath(bin: string): string | undefined {
  if (bin.includes('/')) return existsSync(bin) ? bin : undefined;
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    if (!d) continue;
    const p = join(d, bin);
    try {
      if (statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

export function qemuBinary(): string | undefined {
  return findInPath(process.env.VHOST_WASM_QEMU ?? 'qemu-system-x86_64');
}

/** QEMU is installed (the guest may still need building: see ensureGuestBuilt). */
export function qemuAvailable(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `QEMU guests need Linux (this is ${process.platform})` };
  if (!qemuBinary()) return { ok: false, reason: 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)' };
  return { ok: true };
}

const GUEST_FILES = ['vmlinux', 'vmlinuz', 'initrd.gz', 'kernel-version'];

/** QEMU is installed and the guest is built. */
export function guestAvailable(): { ok: boolean; reason?: string } {
  const q = qemuAvailable();
  if (!q.ok) return q;
  const missing = GUEST_FILES.filter((f) => !existsSync(join(GUEST_OUT, f)));
  if (missing.length) {
    return { ok: false, reason: `guest not built (missing ${missing.join(', ')} in ${GUEST_OUT}; run bash build/guest/build-guest.sh)` };
  }
  return { ok: true };
}

export function fioGuestAvailable(): boolean {
  return existsSync(join(GUEST_OUT, 'initrd-fio.img'));
}

export function guestKernelVersion(): string | undefined {
  try {
    return readFileSync(join(GUEST_OUT, 'kernel-version'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

function newestMtime(paths: string[]): number {
  let t = 0;
  for (const p of paths) {
    try {
      const st = statSync(p);
      if (st.isDirectory()) t = Math.max(t, newestMtime(readdirSync(p).map((e) => join(p, e))));
      else t = Math.max(t, st.mtimeMs);
    } catch {
      /* gone */
    }
  }
  return t;
}

/**
 * Runs build/guest/build-guest.sh when the guest is missing or older than its
 * inputs (the script, build/guest/tests/, build/guest/helpers/). Resolves with the script's output;
 * rejects if it fails. Safe to call from several test files at once (the script
 * takes a lock, and is a fast no-op when up to date).
 */
export async function ensureGuestBuilt(opts: { force?: boolean; timeoutMs?: number } = {}): Promise<{ built: boolean; log: string }> {
  const have = guestAvailable().ok;
  if (have && !opts.force) {
    const built = statSync(join(GUEST_OUT, 'initrd.gz')).mtimeMs;
    const inputs = newestMtime([BUILD_SCRIPT, join(GUEST_DIR, 'tests'), join(GUEST_DIR, 'helpers')]);
    if (inputs <= built) return { built: false, log: '' };
  }
  const log = await new Promise<string>((resolvePromise, reject) => {
    const child = spawn('bash', [BUILD_SCRIPT], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...(opts.force ? { VW_GUEST_FORCE: '1' } : {}) },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolvePromise(out);
      else reject(new Error(`build-guest.sh failed (code ${code}, signal ${signal}):\n${out}`));
    });
  });
  const after = guestAvailable();
  if (!after.ok) throw new Error(`build-guest.sh succeeded but the guest is unavailable: ${after.reason}\n${log}`);
  return { built: true, log };
}

// ----------------------------------------------------------------- process bookkeeping

// QEMU runs as `timeout -s KILL N qemu ...` in a process group of its own: we kill
// the whole group (timeout and QEMU), and if this process dies without cleaning up
// (a killed test worker), `timeout` still kills QEMU N seconds later.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killTree(c: ChildProcess): void {
  if (c.pid === undefined) return;
  try {
    process.kill(-c.pid, 'SIGKILL');
  } catch {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) killTree(c);
  });
}

/** Kills every QEMU this process started that is still running. */
export function killAllGuests(): void {
  for (const c of live) killTree(c);
}

// A cross-process limit on concurrent guests: TCG guests on a 2-core box slow each
// other down badly, and test files run in parallel workers. Slots are directories
// created atomically with mkdir; a slot whose owner pid is dead is taken over.
const SLOT_DIR = join(tmpdir(), 'vhost-wasm-qemu-slots');

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function slotCount(): number {
  const env = Number(process.env.VHOST_WASM_QEMU_SLOTS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, Math.floor(availableParallelism() / 2));
}

async function acquireSlot(): Promise<() => void> {
  mkdirSync(SLOT_DIR, { recursive: true });
  const n = slotCount();
  const token = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  for (;;) {
    for (let i = 0; i < n; i++) {
      const dir = join(SLOT_DIR, `slot-${i}`);
      try {
        mkdirSync(dir);
      } catch {
        // Taken: reclaim it if its owner is gone.
        let owner = NaN;
        try {
          owner = Number(readFileSync(join(dir, 'owner'), 'utf8').split('-')[0]);
        } catch {
          // Owner file not written yet (racing creator) or removed: reclaim only when old.
          try {
            if (Date.now() - statSync(dir).mtimeMs < 5_000) continue;
          } catch {
            continue;
          }
        }
        if (Number.isFinite(owner) && pidAlive(owner)) continue;
        try {
          rmSync(dir, { recursive: true, force: true });
          mkdirSync(dir);
        } catch {
          continue;
        }
      }
      writeFileSync(join(dir, 'owner'), token);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          if (readFileSync(join(dir, 'owner'), 'utf8') === token) rmSync(dir, { recursive: true, force: true });
        } catch {
          /* already reclaimed */
        }
      };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ----------------------------------------------------------------- boot

/** Builds QEMU's argv for the given options (exported for debugging and tests). */
export function qemuArgs(opts: BootOptions): string[] {
  if (!/^[A-Za-z0-9_.-]+$/.test(opts.test)) throw new Error(`bad guest test name: ${JSON.stringify(opts.test)}`);
  const mem = opts.memMiB ?? 512;
  const smp = opts.smp ?? 2;
  const accel: Accel = opts.accel ?? (process.env.VHOST_WASM_QEMU_ACCEL === 'kvm' ? 'kvm' : 'tcg');
  const kernel = join(GUEST_OUT, opts.kernelImage ?? 'vmlinux');
  const initrd = join(GUEST_OUT, opts.fio ? 'initrd-fio.img' : 'initrd.gz');
  const append = ['console=ttyS0', 'panic=-1', 'quiet', `vw.test=${opts.test}`];
  if (opts.kernelArgs) append.push(opts.kernelArgs);
  const args = [
    '-machine', 'q35',
    ...(accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
    '-smp', String(smp),
    '-m', `${mem}M`,
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem',
    '-nographic', '-nodefaults',
    '-serial', 'stdio',
    '-no-reboot',
    '-kernel', kernel,
    '-initrd', initrd,
    '-append', append.join(' '),
  ];
  for (const o of opts.objects ?? []) args.push('-object', o);
  for (const c of opts.chardevs ?? []) args.push('-chardev', c);
  for (const n of opts.netdevs ?? []) args.push('-netdev', n);
  for (const d of opts.devices ?? []) args.push('-device', d);
  args.push(...(opts.extraArgs ?? []));
  return args;
}

function parseFields(details: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const tok of details.trim().split(/\s+/)) {
    const eq = tok.indexOf('=');
    if (eq > 0) fields[tok.slice(0, eq)] = tok.slice(eq + 1);
  }
  return fields;
}

/**
 * Boots the guest and runs one guest test. Never rejects for guest failures:
 * inspect passed/failed/timedOut/serial. Rejects only if QEMU cannot be spawned
 * or the guest is not built.
 */
export async function bootGuest(opts: BootOptions): Promise<GuestResult> {
  const avail = guestAvailable();
  if (!avail.ok) throw new Error(avail.reason);
  if (opts.fio && !fioGuestAvailable()) {
    throw new Error('initrd-fio.img not built: install fio on the host and rerun build/guest/build-guest.sh');
  }
  const qemu = qemuBinary()!;
  const argv = qemuArgs(opts);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const graceMs = opts.shutdownGraceMs ?? 15_000;
  const verbose = process.env.VHOST_WASM_QEMU_VERBOSE === '1';
  const escaped = opts.test.replace(/[.]/g, '\\.');
  const markerRe = new RegExp(`VW-(PASS|FAIL) ${escaped}(?=\\s|$)(.*)$`);
  const beginRe = new RegExp(`VW-BEGIN ${escaped}(?=\\s|$)`);

  const release = await acquireSlot();
  installExitHook();
  const started = Date.now();
  let serial = '';
  let stderr = '';
  let partial = '';
  let passed = false;
  let failed = false;
  let begun = false;
  let bootMs: number | undefined;
  let markerLine: string | undefined;
  let markerFields: Record<string, string> = {};
  let timedOut = false;
  let graceTimer: NodeJS.Timeout | undefined;

  const timeoutBin = findInPath('timeout');
  const hardLimitS = Math.ceil((timeoutMs + graceMs) / 1000) + 30;
  const child = timeoutBin
    ? spawn(timeoutBin, ['-s', 'KILL', String(hardLimitS), qemu, ...argv], { stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    : spawn(qemu, argv, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  live.add(child);

  const onLine = (line: string): void => {
    if (verbose) process.stderr.write(`[guest ${opts.test}] ${line}\n`);
    opts.onLine?.(line);
    if (!begun && beginRe.test(line)) {
      begun = true;
      bootMs = Date.now() - started;
    }
    if (!markerLine) {
      const m = markerRe.exec(line);
      if (m) {
        markerLine = line.slice(m.index);
        markerFields = parseFields(m[2] ?? '');
        if (m[1] === 'PASS') passed = true;
        else failed = true;
        // The guest powers off right after; don't wait forever if it doesn't.
        graceTimer = setTimeout(() => killTree(child), graceMs);
      }
    }
  };
  const feed = (text: string): void => {
    partial += text;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      onLine(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  };
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    const t = d.replace(/\r/g, '');
    serial += t;
    feed(t);
  });
  child.stderr!.on('data', (d: string) => {
    const t = d.replace(/\r/g, '');
    stderr += t;
    serial += t;
    if (verbose) process.stderr.write(`[qemu ${opts.test} stderr] ${t}`);
  });
  child.stdin!.on('error', () => {
    /* QEMU gone */
  });

  const timer = setTimeout(() => {
    timedOut = true;
    killTree(child);
  }, timeoutMs);

  try {
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res, rej) => {
      child.once('error', rej);
      child.once('close', (code, signal) => res({ code, signal }));
    });
    if (partial) onLine(partial);
    return {
      passed,
      failed,
      markerLine,
      markerFields,
      begun,
      serial,
      stderr,
      exitCode: code,
      signal,
      timedOut: timedOut && !passed && !failed,
      durationMs: Date.now() - started,
      bootMs,
      argv: [qemu, ...argv],
    };
  } finally {
    clearTimeout(timer);
    if (graceTimer) clearTimeout(graceTimer);
    if (child.exitCode === null && child.signalCode === null) killTree(child);
    child.stdin?.destroy();
    live.delete(child);
    release();
  }
}

/** A short human-readable summary of a result, for assertion messages. */
export function describeResult(r: GuestResult, tailChars = 4000): string {
  const head = `passed=${r.passed} failed=${r.failed} timedOut=${r.timedOut} exit=${r.exitCode} signal=${r.signal} ` +
    `duration=${r.durationMs}ms boot=${r.bootMs ?? '-'}ms marker=${JSON.stringify(r.markerLine ?? null)}`;
  const tail = r.serial.length > tailChars ? '...' + r.serial.slice(-tailChars) : r.serial;
  return `${head}\n--- console (tail) ---\n${tail}\n--- argv ---\n${r.argv.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}`;
}

/** Synchronous check that QEMU supports a device model (e.g. vhost-user-rng-pci). */
export function qemuHasDevice(name: string): boolean {
  const q = qemuBinary();
  if (!q) return false;
  const r = spawnSync(q, ['-device', 'help'], { encoding: 'utf8', timeout: 30_000 });
  return new RegExp(`name "${name.replace(/[-.]/g, '\\$&')}"`).test(`${r.stdout}${r.stderr}`);
}
