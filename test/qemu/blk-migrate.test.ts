// Live migration of a guest with vhost-user-blk on our back-end (QEMU 7.2 needs VHOST_F_LOG_ALL and LOG_SHMFD
// before it lets such a VM migrate). Two back-ends serve the same image on two sockets; the source QEMU runs
// the guest test blk-migrate, which writes a pattern and keeps reading the disk back into guest memory while
// the VM migrates to a destination QEMU started with -incoming. After the migration the host writes a marker
// into the image; the guest, now on the destination, checks its RAM copy, the disk and a fresh write.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCliBackend, stopCliBackend, waitForSockets, type CliBackend } from './cli-backend.js';
import { ensureGuestBuilt, qemuArgs, qemuAvailable, qemuBinary, type BootOptions } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';

/** A QEMU we started, its console collected line by line. */
class Vm {
  readonly child: ChildProcess;
  out = '';
  private waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  constructor(args: string[]) {
    this.child = spawn(qemuBinary()!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const take = (d: Buffer): void => {
      this.out += d.toString().replace(/\r/g, '');
      for (const w of [...this.waiters]) {
        const m = this.out.match(w.re);
        if (m) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    };
    this.child.stdout!.on('data', take);
    this.child.stderr!.on('data', take);
  }
  waitFor(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const m = this.out.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ${re} within ${ms} ms; console tail:\n${this.out.slice(-3000)}`)), ms);
      this.waiters.push({ re, resolve: (x) => (clearTimeout(t), resolve(x)) });
      this.child.once('exit', (code) => reject(new Error(`QEMU exited (${code}) before ${re}; console tail:\n${this.out.slice(-3000)}`)));
    });
  }
  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

/** A minimal QMP client: one command at a time, events skipped. */
class Qmp {
  private buf = '';
  private pending: ((v: Record<string, unknown>) => void) | undefined;
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('return' in msg || 'error' in msg) {
          const p = this.pending;
          this.pending = undefined;
          p?.(msg);
        }
      }
    });
  }
  static async connect(path: string, ms = 20_000): Promise<Qmp> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.pending = resolve;
      this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  }
  close(): void {
    this.sock.destroy();
  }
}

describe.skipIf(!qemu.ok && !required)('live migration with vhost-user-blk on vhost-wasm', () => {
  let dir: string | undefined;
  const backends: CliBackend[] = [];
  const vms: Vm[] = [];
  const qmps: Qmp[] = [];

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    for (const q of qmps.splice(0)) q.close();
    for (const v of vms.splice(0)) v.kill();
    for (const b of backends.splice(0)) await stopCliBackend(b, 3_000);
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('the guest keeps its memory and its disk across the migration, and the disk keeps working after it', async () => {
    dir = mkdtempSync(join(tmpdir(), 'vw-mig-'));
    const image = join(dir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
    const socks = [join(dir, 'src.sock'), join(dir, 'dst.sock')];
    for (const s of socks) {
      const be = startCliBackend(['blk', '--socket-path', s, '--image', image]);
      backends.push(be);
      await waitForSockets([s], be, 15_000);
    }
    // the harness's choice (tcg unless VHOST_WASM_QEMU_ACCEL=kvm): -cpu host fails on nested KVM here
    const accel = process.env.VHOST_WASM_QEMU_ACCEL === 'kvm' ? 'kvm' : 'tcg';
    const base = (sock: string, qmp: string): BootOptions => ({
      test: 'blk-migrate',
      memMiB: 256,
      // one vCPU by default (VW_MIGRATE_SMP=2 for two): with two (multi-threaded TCG) the destination kernel
      // double-faulted right after the switch-over in about 2 of 9 runs; not isolated yet (the same migration
      // without the vhost-user device did not, 4 of 4)
      smp: Number(process.env.VW_MIGRATE_SMP ?? 1),
      accel,
      chardevs: [`socket,id=blk0,path=${sock}`],
      devices: ['vhost-user-blk-pci,chardev=blk0,num-queues=1'],
      kernelArgs: 'vw.migrate_wait=150 vw.timeout=200',
      extraArgs: ['-qmp', `unix:${qmp},server=on,wait=off`],
    });
    const migSock = join(dir, 'mig.sock');
    const src = new Vm(qemuArgs(base(socks[0]!, join(dir, 'src.qmp'))));
    vms.push(src);
    const dst = new Vm([...qemuArgs(base(socks[1]!, join(dir, 'dst.qmp'))), '-incoming', `unix:${migSock}`]);
    vms.push(dst);

    const ready = await src.waitFor(/VW-MIGRATE-READY md5=(\w+)/, 120_000);
    const srcQmp = await Qmp.connect(join(dir, 'src.qmp'));
    qmps.push(srcQmp);
    const dstQmp = await Qmp.connect(join(dir, 'dst.qmp'));
    qmps.push(dstQmp);
    const started = await srcQmp.cmd('migrate', { uri: `unix:${migSock}` });
    expect(started.error, JSON.stringify(started)).toBeUndefined();
    let status = '';
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const r = (await srcQmp.cmd('query-migrate')).return as { status?: string; ram?: { transferred?: number } } | undefined;
      status = r?.status ?? '';
      if (status === 'completed' || status === 'failed' || status === 'cancelled') break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(status, `source console:\n${src.out.slice(-3000)}\ndestination console:\n${dst.out.slice(-3000)}`).toBe('completed');
    await srcQmp.cmd('quit');

    // the destination runs the guest now: tell it so through the disk
    const fd = openSync(image, 'r+');
    try {
      writeSync(fd, Buffer.from('MIGRATED'), 0, 8, 32 << 20);
    } finally {
      closeSync(fd);
    }
    const why = (): string =>
      `source console:\n${src.out.slice(-3000)}\n--- destination console:\n${dst.out.slice(-4000)}\n--- back-ends ---\n${backends.map((b) => b.output().slice(-2000)).join('\n---\n')}`;
    const pass = await dst.waitFor(/VW-(PASS|FAIL) blk-migrate[^\n]*\n/, 120_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${why()}`);
    });
    console.log(`[qemu blk-migrate] accel ${accel}: ${pass[0]}`);
    expect(pass[1], why()).toBe('PASS');
    expect(pass[0]).toContain(`md5=${ready[1]}`);
    // QEMU gave the source back-end a log and turned dirty logging on while the rings ran; every page fit
    expect(backends[0]!.output(), why()).toMatch(/dirty log of \d+ bytes mapped/);
    expect(backends[0]!.output(), why()).toMatch(/dirty logging on/);
    expect(backends[0]!.output(), why()).not.toMatch(/too small for the guest/);
  }, 420_000);
});
