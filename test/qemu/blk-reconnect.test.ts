// Back-end restart under a real guest: QEMU 7.2 with `-chardev socket,...,reconnect=1` and
// `vhost-user-blk-pci,num-queues=4` on `vhost-wasm blk`. The guest runs rounds of a write-and-verify fio job
// (build/guest/tests/blk-reconnect.sh, write-through so that writes stay in the back-end's hands a while);
// meanwhile this side SIGKILLs the back-end at random moments (2-6 s apart, then within a second at a moment its
// inflight records show requests held), starts it again on the same socket after 0.5 s, and QEMU reconnects
// (its reconnect timer: 1 s): GET_INFLIGHT_FD was sent at the first start (we offer
// INFLIGHT_SHMFD), SET_INFLIGHT_FD hands the region to every new back-end, which resubmits what the killed one
// left in flight. Ten kills; then the host writes "VW-HOST-DONE" into the image, the guest finishes its round
// and reports. Every round must verify: a lost or doubled write, a request completed twice or never, all fail it.
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCliBackend, type CliBackend } from './cli-backend.js';
import { bootGuest, describeResult, ensureGuestBuilt, fioGuestAvailable, killAllGuests, qemuAvailable, type GuestResult } from './guest.js';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';
const MiB = 1 << 20;
const KILLS = Number(process.env.VHOST_WASM_RECONNECT_KILLS ?? 10);
const MARK_OFFSET = 60 * MiB;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const alive = (be: CliBackend): boolean => be.child.exitCode === null && be.child.signalCode === null;

/** Resolve when `cond()` holds (checked every 20 ms); false after `limitMs`. */
async function until(cond: () => boolean, limitMs: number): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * How many requests the back-end `pid` holds right now according to its inflight region (A.10: one 16-byte
 * record per descriptor, byte 0 = inflight, after a 16-byte header per queue; packed rings: 32-byte records after
 * a 32-byte header), read through /proc/PID/mem (the back-end is our child, so ptrace-read access is ours).
 * undefined when the region cannot be read.
 */
function inflightNow(pid: number, packed: boolean): number | undefined {
  const rec = packed ? 32 : 16;
  let fd = -1;
  try {
    const line = readFileSync(`/proc/${pid}/maps`, 'utf8')
      .split('\n')
      .find((l) => l.includes('vhost-wasm-inflight'));
    if (!line) return undefined;
    const [lo, hi] = line.split(' ')[0]!.split('-').map((h) => parseInt(h, 16)) as [number, number];
    const region = Buffer.alloc(hi - lo);
    fd = openSync(`/proc/${pid}/mem`, 'r');
    readSync(fd, region, 0, region.length, lo);
    let n = 0;
    for (let at = 0; at + 16 <= region.length; ) {
      const version = region.readUInt16LE(at + 8);
      const descNum = region.readUInt16LE(at + 10);
      if (version !== 1 || descNum === 0) break;
      for (let i = 0; i < descNum; i++) if (region[at + rec + rec * i] === 1) n++;
      at += (rec * descNum + rec + 63) & ~63;
    }
    return n;
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

function threads(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return 0;
  }
}

describe.skipIf(!qemu.ok && !required)('vhost-user-blk: the back-end killed and restarted under a QEMU guest', () => {
  let dir: string | undefined;
  const backends: CliBackend[] = [];

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    for (const be of backends.splice(0)) {
      if (!alive(be)) continue;
      be.child.kill('SIGKILL');
      await be.exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  // packed=on: the same on packed virtqueues (packed inflight records; QEMU cannot restore packed ring positions
  // after a crash, the new back-end takes them from the region)
  it.each([false, true])(`${KILLS} SIGKILLs of the blk back-end under a fio write-and-verify load: QEMU reconnects, every round verifies (packed=%s)`, async (packed) => {
    if (!fioGuestAvailable()) {
      if (required) throw new Error('initrd-fio.img not built (install fio on the host and rerun build/guest/build-guest.sh)');
      console.warn('[qemu blk-reconnect] skipped: no initrd-fio.img (fio not installed on the host)');
      return;
    }
    dir = mkdtempSync(join(tmpdir(), 'vw-blk-reconnect-'));
    const img = join(dir, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, 64 * MiB);
    const sock = join(dir, 'blk.sock');
    const args = ['blk', '--socket-path', sock, '--image', img, '--queues', '4'];

    /** Start a back-end and wait until it listens on the socket. */
    const launch = async (): Promise<CliBackend> => {
      const be = startCliBackend(args);
      backends.push(be);
      if (!(await until(() => /listening on/.test(be.output()) || !alive(be), 20_000)) || !alive(be))
        throw new Error(`back-end did not come up:\n${be.output()}`);
      return be;
    };

    let be = await launch();
    const guestLines: string[] = [];
    let fioStarted = false;
    let guestDone = false;
    const t0 = Date.now();
    const guest: Promise<GuestResult> = bootGuest({
      test: 'blk-reconnect',
      fio: true,
      // virtio_blk uses min(num_queues, nr_cpu_ids) queues: 4 vCPUs for 4 hardware queues
      smp: 4,
      chardevs: [`socket,id=blk0,path=${sock},reconnect=1`],
      devices: [`vhost-user-blk-pci,chardev=blk0,num-queues=4${packed ? ',packed=on' : ''}`],
      // write-through: the back-end writes with RWF_DSYNC, so requests stay in its hands long enough for kills to
      // find some in flight (with the guest's write-back cache they complete in microseconds)
      kernelArgs: 'vw.blk_queues=4 vw.blk_cache=wt vw.blk_max_rounds=80 vw.timeout=420',
      timeoutMs: 450_000,
      onLine: (l) => {
        if (l.startsWith('[vw blk-reconnect]')) guestLines.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${l}`);
        if (/round 1 start/.test(l)) fioStarted = true;
      },
    }).finally(() => (guestDone = true));

    // the kill loop: each kill hits a back-end that QEMU has connected to and whose rings run (its queue workers
    // are up), 2-6 s later
    const kills: { at: number; downMs: number; reconnectMs: number }[] = [];
    // every restarted back-end must have been handed the inflight region (SET_INFLIGHT_FD) by QEMU
    let withInflight = 0;
    let aimed = 0;
    const mapsInflight = (pid: number): boolean => {
      try {
        return readFileSync(`/proc/${pid}/maps`, 'utf8').includes('vhost-wasm-inflight');
      } catch {
        return false;
      }
    };
    const why = (): string => `kills so far ${kills.length}\n--- guest ---\n${guestLines.join('\n')}\n--- back-end (last) ---\n${be.output().slice(-3000)}`;
    try {
      // (bootGuest may first wait for a QEMU slot that another test file's guest holds)
      if (!(await until(() => fioStarted || guestDone, 600_000))) throw new Error(`the guest never started fio\n${why()}`);
      for (let k = 0; k < KILLS && !guestDone; k++) {
        await sleep(2000 + Math.random() * 4000);
        if (guestDone) break;
        // aim: for up to a second, kill at a moment the back-end holds requests (its inflight records say so);
        // with the guest's pace most moments find it idle, and a kill then tests only the ring positions
        const aimUntil = Date.now() + 1000;
        let held: number | undefined = 0;
        while (Date.now() < aimUntil && (held = inflightNow(be.child.pid!, packed)) === 0) await new Promise((r) => setImmediate(r));
        if (held !== undefined && held > 0) aimed++;
        const tk = Date.now();
        be.child.kill('SIGKILL');
        await be.exited;
        // QEMU sees the socket close at once; its reconnect timer fires within a second
        await sleep(500);
        const tr = Date.now();
        be = await launch();
        // QEMU has reconnected and started the rings once the 4 queue workers are up
        const idle = threads(be.child.pid!);
        const b = be;
        if (!(await until(() => threads(b.child.pid!) >= idle + 4 || guestDone || !alive(b), 30_000)) || !alive(b))
          throw new Error(`QEMU did not reconnect to the restarted back-end within 30 s\n${why()}`);
        kills.push({ at: (tk - t0) / 1000, downMs: tr - tk, reconnectMs: Date.now() - tk });
        if (mapsInflight(b.child.pid!)) withInflight++;
      }
    } catch (e) {
      killAllGuests();
      await guest;
      throw e;
    }
    // let the guest know: it finishes the round in hand (which saw the last kill) and reports
    const fd = openSync(img, 'r+');
    try {
      const mark = Buffer.alloc(4096);
      mark.write('VW-HOST-DONE');
      writeSync(fd, mark, 0, mark.length, MARK_OFFSET);
    } finally {
      closeSync(fd);
    }
    const r = await guest;

    const all = backends.map((b) => b.output()).join('\n');
    const resubmits = [...all.matchAll(/queue (\d+): resubmitting (\d+) request/g)];
    const resubmitted = resubmits.reduce((s, m) => s + Number(m[2]), 0);
    // per restarted back-end: the requests it took over from the one killed before it
    const perKill = backends.slice(1).map((b) => [...b.output().matchAll(/resubmitting (\d+) request/g)].reduce((s, m) => s + Number(m[1]), 0));
    console.log(
      `[qemu blk-reconnect${packed ? ' packed' : ''}] ${kills.length} kills (at ${kills.map((x) => `${x.at.toFixed(1)}s`).join(', ')}); ` +
        `kill-to-rings-running ${kills.map((x) => x.reconnectMs).join(',')} ms; ` +
        `${aimed} kill(s) landed while the inflight records showed requests held; ` +
        `${withInflight} restarted back-end(s) got the inflight region back; ` +
        `${resubmitted} request(s) resubmitted in ${resubmits.length} ring recoveries (per kill: ${perKill.join(',')}); ` +
        `guest ${r.markerLine}; total ${r.durationMs} ms`,
    );
    console.log(`[qemu blk-reconnect] guest log:\n${guestLines.join('\n')}`);
    console.log(`[qemu blk-reconnect] back-end logs (distinct lines):\n${[...new Set(all.split('\n'))].join('\n')}`);
    const detail = `${describeResult(r, 6000)}\n--- guest ---\n${guestLines.join('\n')}\n--- back-ends (distinct lines) ---\n${[...new Set(all.split('\n'))].join('\n')}`;
    expect(r.passed, detail).toBe(true);
    expect(kills.length, detail).toBe(KILLS);
    expect(withInflight, `restarted back-ends that QEMU handed the inflight region (SET_INFLIGHT_FD)\n${detail}`).toBe(KILLS);
    expect(Number(r.markerFields.rounds), detail).toBeGreaterThanOrEqual(2);
    expect(r.markerFields.verified, detail).toBe(r.markerFields.rounds);
    // the kills that were aimed at held requests made the new back-ends resubmit (almost always: a request may
    // still complete between the look and the kill)
    if (aimed >= KILLS / 2) expect(resubmitted, `no request was ever resubmitted although ${aimed} kills were aimed\n${detail}`).toBeGreaterThan(0);
    // nothing broke a ring on the way (a ring error would have stalled the guest anyway)
    expect(all, detail).not.toMatch(/needs a reset|is stopped|queue worker failed/);
    // every back-end ran the format asked for
    const packedAcks = all.match(/VIRTIO_F_RING_PACKED acked/g)?.length ?? 0;
    if (packed) expect(packedAcks, detail).toBeGreaterThanOrEqual(KILLS + 1);
    else expect(packedAcks, detail).toBe(0);
  }, 1_200_000);
});
