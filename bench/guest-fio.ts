/**
 * The guest side of the blk benchmark (`--guest`): a QEMU (TCG) Linux guest with `vhost-user-blk-pci` on the
 * back-end under test runs fio 4k randread and randwrite, iodepth 32, one job per queue, on /dev/vda, and
 * prints the IOPS on its console.
 *
 * The guest is the test guest (build/guest/build-guest.sh: vmlinux + initrd-fio.img). Its fio script is not
 * part of that build: it goes into one more uncompressed cpio layer appended to a copy of initrd-fio.img (the
 * kernel unpacks concatenated archives in order), so the benchmark needs no guest rebuild.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './paths.js';

export const GUEST_OUT = process.env['VHOST_WASM_GUEST_OUT'] ?? path.join(repoRoot, 'build', 'guest', 'out');
const TEST = 'vwbench-blk';

const SCRIPT = `#!/bin/sh
# vhost-wasm bench (bench/guest-fio.ts): fio 4k randread then randwrite on /dev/vda, iodepth 32,
# VW_FIO_JOBS jobs (one per queue), VW_FIO_SECONDS each
. /lib/vw-lib.sh
DEV=/dev/vda
jobs=\${VW_FIO_JOBS:-1}
secs=\${VW_FIO_SECONDS:-5}
vw_wait_for 30 -b "$DEV" || vw_fail "no $DEV after 30s"
nq=$(ls -d /sys/block/vda/mq/* 2>/dev/null | wc -l)
command -v fio >/dev/null || vw_fail "fio not in this initramfs"
COMMON="--filename=$DEV --direct=1 --ioengine=libaio --bs=4k --iodepth=32 --numjobs=$jobs --group_reporting --time_based --runtime=$secs --ramp_time=1 --norandommap --randrepeat=0 --output-format=terse --terse-version=3"
# interrupts of the virtio-blk queues (virtioN-req.M lines of /proc/interrupts), summed over the CPUs
irqs() { grep -E 'virtio[0-9]+-req' /proc/interrupts | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; else break } END { print s + 0 }'; }
i0=$(irqs)
fio --name=rr $COMMON --rw=randread >/tmp/rr.out 2>&1 || { cat /tmp/rr.out; vw_fail "fio randread failed"; }
i1=$(irqs)
fio --name=rw $COMMON --rw=randwrite >/tmp/rw.out 2>&1 || { cat /tmp/rw.out; vw_fail "fio randwrite failed"; }
i2=$(irqs)
rr=$(grep '^3;' /tmp/rr.out | awk -F';' '{print $8}' | cut -d. -f1)
rw=$(grep '^3;' /tmp/rw.out | awk -F';' '{print $49}' | cut -d. -f1)
rre=$(grep '^3;' /tmp/rr.out | awk -F';' '{print $5}')
rwe=$(grep '^3;' /tmp/rw.out | awk -F';' '{print $5}')
vw_pass "queues=$nq jobs=$jobs randread_iops=$rr randwrite_iops=$rw errors=$((rre + rwe)) randread_irqs=$((i1 - i0)) randwrite_irqs=$((i2 - i1))"
`;

/** newc cpio of regular files (name relative to /, content, mode), trailer included, padded to 512 bytes. */
function cpio(files: { name: string; data: Buffer; mode: number }[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 900000;
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  const entry = (name: string, data: Buffer, mode: number): void => {
    const nameBuf = Buffer.from(name + '\0');
    const f = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBuf.length, 0];
    const hdr = Buffer.from('070701' + f.map((v) => v.toString(16).padStart(8, '0')).join(''));
    parts.push(hdr, nameBuf, pad4(hdr.length + nameBuf.length), data, pad4(data.length));
  };
  for (const f of files) entry(f.name, f.data, f.mode);
  entry('TRAILER!!!', Buffer.alloc(0), 0);
  const all = Buffer.concat(parts);
  return Buffer.concat([all, Buffer.alloc((512 - (all.length % 512)) % 512)]);
}

export function guestFioAvailable(): { ok: boolean; reason?: string; qemu?: string } {
  const qemu = process.env['VHOST_WASM_QEMU'] ?? 'qemu-system-x86_64';
  const r = spawnSync(qemu, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return { ok: false, reason: `${qemu} not runnable (apt-get install qemu-system-x86)` };
  for (const f of ['vmlinux', 'initrd-fio.img'])
    if (!fs.existsSync(path.join(GUEST_OUT, f))) return { ok: false, reason: `guest not built: ${path.join(GUEST_OUT, f)} missing (install fio, run bash build/guest/build-guest.sh)` };
  return { ok: true, qemu };
}

/** A copy of initrd-fio.img with the benchmark's script appended as /tests/vwbench-blk.sh. */
export function makeBenchInitrd(dir: string): string {
  const base = fs.readFileSync(path.join(GUEST_OUT, 'initrd-fio.img'));
  const out = path.join(dir, 'initrd-bench.img');
  const layer = cpio([{ name: `tests/${TEST}.sh`, data: Buffer.from(SCRIPT), mode: 0o100755 }]);
  fs.writeFileSync(out, Buffer.concat([base, Buffer.alloc((512 - (base.length % 512)) % 512), layer]));
  return out;
}

export interface GuestFioResult {
  ok: boolean;
  error?: string;
  queues?: number;
  randreadIops?: number;
  randwriteIops?: number;
  fioErrors?: number;
  /** virtio-blk queue interrupts the guest took during each fio run (ramp included) */
  randreadIrqs?: number;
  randwriteIrqs?: number;
  /** CPU seconds the back-end process used while the guest ran (filled in by the caller) */
  backendCpuSeconds?: number;
  /** spawn to exit, ms */
  durationMs: number;
  marker?: string;
}

/**
 * Boot the guest on the vhost-user-blk socket and run the fio script. `smp` vCPUs (virtio_blk uses
 * min(num_queues, vCPUs) hardware queues), `jobs` fio jobs.
 */
export async function runGuestFio(o: {
  qemu: string;
  initrd: string;
  socketPath: string;
  queues: number;
  jobs: number;
  seconds: number;
  smp?: number;
  timeoutMs?: number;
}): Promise<GuestFioResult> {
  const smp = o.smp ?? 4;
  const timeoutMs = o.timeoutMs ?? 240_000;
  const append = ['console=ttyS0', 'panic=-1', 'quiet', `vw.test=${TEST}`, `vw.fio_jobs=${o.jobs}`, `vw.fio_seconds=${o.seconds}`, `vw.timeout=${Math.ceil(timeoutMs / 1000)}`];
  const accel = process.env['VHOST_WASM_QEMU_ACCEL'] === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max'];
  const args = [
    '-machine', 'q35', ...accel, '-smp', String(smp), '-m', '512M',
    '-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-numa', 'node,memdev=mem',
    '-nographic', '-nodefaults', '-serial', 'stdio', '-no-reboot',
    '-kernel', path.join(GUEST_OUT, 'vmlinux'), '-initrd', o.initrd, '-append', append.join(' '),
    '-chardev', `socket,id=blk0,path=${o.socketPath}`,
    '-device', `vhost-user-blk-pci,chardev=blk0,num-queues=${o.queues}`,
  ];
  const started = Date.now();
  const child = spawn(o.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  let marker: string | undefined;
  const re = new RegExp(`VW-(PASS|FAIL) ${TEST}(.*)$`, 'm');
  const kill = (): void => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  };
  const onExit = (): void => kill();
  process.once('exit', onExit);
  let grace: NodeJS.Timeout | undefined;
  const feed = (d: Buffer): void => {
    out = (out + d.toString().replace(/\r/g, '')).slice(-200_000);
    if (!marker) {
      // complete lines only: the marker line may arrive in pieces
      const m = re.exec(out.slice(0, out.lastIndexOf('\n') + 1));
      if (m) {
        marker = m[0];
        grace = setTimeout(kill, 15_000);
      }
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  const timer = setTimeout(kill, timeoutMs);
  await new Promise<void>((resolve) => {
    child.once('close', () => resolve());
    child.once('error', (e) => {
      out += `\nspawn error: ${e.message}`;
      resolve();
    });
  });
  clearTimeout(timer);
  if (grace) clearTimeout(grace);
  process.off('exit', onExit);
  const durationMs = Date.now() - started;
  if (!marker || !marker.startsWith('VW-PASS')) {
    const tail = out.split('\n').slice(-25).join('\n');
    return { ok: false, durationMs, marker, error: marker ? `guest: ${marker}\n${tail}` : `no result from the guest within ${Math.round(durationMs / 1000)} s:\n${tail}` };
  }
  const fields: Record<string, string> = {};
  for (const tok of marker.split(/\s+/)) {
    const eq = tok.indexOf('=');
    if (eq > 0) fields[tok.slice(0, eq)] = tok.slice(eq + 1);
  }
  const num = (k: string): number | undefined => (fields[k] !== undefined && fields[k] !== '' && Number.isFinite(Number(fields[k])) ? Number(fields[k]) : undefined);
  const r: GuestFioResult = {
    ok: true,
    durationMs,
    marker,
    queues: num('queues'),
    randreadIops: num('randread_iops'),
    randwriteIops: num('randwrite_iops'),
    fioErrors: num('errors'),
    randreadIrqs: num('randread_irqs'),
    randwriteIrqs: num('randwrite_irqs'),
  };
  if (r.randreadIops === undefined || r.randwriteIops === undefined) return { ...r, ok: false, error: `guest printed no IOPS: ${marker}` };
  if (r.queues !== o.queues) return { ...r, ok: false, error: `guest saw ${r.queues} hardware queues, ${o.queues} expected` };
  if (r.fioErrors) return { ...r, ok: false, error: `fio reported ${r.fioErrors} I/O errors` };
  return r;
}
