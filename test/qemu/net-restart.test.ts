// Back-end restart under real guests, for net: two QEMU 7.2 guests with `-chardev socket,...,reconnect=1` and
// `-netdev vhost-user,queues=2` (virtio-net-pci mq=on: two queue pairs, each a vhost_dev of its own) on two ports of one `vhost-wasm net` process ping each other while this side SIGKILLs the
// back-end (2-5 s apart) and starts it again on the same sockets after 0.3 s. QEMU takes each guest's link down
// when the back-end goes, reconnects (its timer: 1 s), sets the device up again (rings resume at the used index:
// GET_VRING_BASE could not be asked of a dead back-end) and brings the link up. The guests count the link going
// down and report when the peer answers again (build/guest/tests/net-restart.sh); the next kill waits for both.
// Meanwhile a 16 MiB TCP stream runs from one guest to the other across the restarts, and after the last restart
// they move a 4 MiB file; both print the md5s. Neither side may crash.
//
// virtio-net-pci runs with `vectors=0` (INTx): QEMU 7.2 under TCG segfaults in vhost_net_start with MSI-X
// (shared/design/real-clients.md).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCliBackend, stopCliBackend, waitForSockets, type CliBackend } from './cli-backend.js';
import { bootGuest, describeResult, ensureGuestBuilt, killAllGuests, qemuAvailable, type GuestResult } from './guest.js';

// Both guests must run at the same time: this process takes two boot slots (guest.ts reads this per boot).
process.env.VHOST_WASM_QEMU_SLOTS = '2';

const qemu = qemuAvailable();
const required = !!process.env.CI || process.env.VHOST_WASM_REQUIRE_QEMU === '1';
const KILLS = Number(process.env.VHOST_WASM_NET_RESTART_KILLS ?? 10);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, limitMs: number): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

describe.skipIf(!qemu.ok && !required)('vhost-user-net: the back-end killed and restarted under two QEMU guests', () => {
  let dir: string | undefined;
  const backends: CliBackend[] = [];

  beforeAll(async () => {
    await ensureGuestBuilt();
  }, 600_000);

  afterEach(async () => {
    for (const be of backends.splice(0)) await stopCliBackend(be, 3_000);
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it(`${KILLS} SIGKILLs of the net back-end while the guests ping each other and stream over TCP: traffic resumes after each, the stream and a later transfer match`, async () => {
    dir = mkdtempSync(join(tmpdir(), 'vw-net-restart-'));
    const socks = [join(dir, 'a.sock'), join(dir, 'b.sock')];
    const launch = async (): Promise<CliBackend> => {
      const be = startCliBackend(['net', '--socket-path', socks[0]!, '--socket-path', socks[1]!, '--queues', '2']);
      backends.push(be);
      await waitForSockets(socks, be, 15_000);
      if (!(await until(() => (be.output().match(/listening on/g) ?? []).length >= 2, 15_000)))
        throw new Error(`back-end did not listen on both sockets:\n${be.output()}`);
      return be;
    };
    let be = await launch();

    const t0 = Date.now();
    const lines: string[][] = [[], []];
    const up = [false, false];
    /** when the receiver had the whole stream (ms since t0) */
    let streamDoneAt = Infinity;
    const back = [0, 0];
    const done = [false, false];
    const guest = (i: number, mac: string, role: 'recv' | 'send', ip: string, peer: string): Promise<GuestResult> =>
      bootGuest({
        test: 'net-restart',
        chardevs: [`socket,id=c0,path=${socks[i]},reconnect=1`],
        netdevs: ['vhost-user,id=n0,chardev=c0,queues=2'],
        devices: [`virtio-net-pci,netdev=n0,mac=${mac},mq=on,vectors=0`],
        kernelArgs: `vw.net_role=${role} vw.net_ip=${ip} vw.net_peer=${peer} vw.net_restarts=${KILLS} vw.timeout=560`,
        timeoutMs: 580_000,
        onLine: (l) => {
          if (!l.startsWith('[vw net-restart]')) return;
          lines[i]!.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${l}`);
          if (/traffic up/.test(l)) up[i] = true;
          if (i === 0 && /stream received/.test(l)) streamDoneAt = Math.min(streamDoneAt, Date.now() - t0);
          const m = /restart (\d+): traffic back/.exec(l);
          if (m) back[i] = Number(m[1]);
        },
      }).finally(() => (done[i] = true));
    const guests = [
      guest(0, '52:54:00:00:0b:01', 'recv', '10.78.0.1', '10.78.0.2'),
      guest(1, '52:54:00:00:0b:02', 'send', '10.78.0.2', '10.78.0.1'),
    ];
    const why = (): string =>
      `kills ${kills.length}\n--- guest A ---\n${lines[0]!.join('\n')}\n--- guest B ---\n${lines[1]!.join('\n')}\n` +
      `--- back-ends ---\n${backends.map((b) => b.output().slice(-2500)).join('\n---\n')}`;
    const kills: { at: number; backMs: number }[] = [];
    const killedAt: number[] = [];
    try {
      if (!(await until(() => (up[0] && up[1]) || done[0] || done[1], 560_000))) throw new Error(`the guests never reached each other\n${why()}`);
      if (done[0] || done[1]) throw new Error(`a guest ended before the kills\n${why()}`);
      for (let k = 1; k <= KILLS; k++) {
        await sleep(2000 + Math.random() * 3000);
        const tk = Date.now();
        killedAt.push(tk - t0);
        be.child.kill('SIGKILL');
        await be.exited;
        await sleep(300);
        be = await launch();
        // both guests saw their link go down and the peer answer again: QEMU reconnected and traffic flows
        if (!(await until(() => (back[0]! >= k && back[1]! >= k) || done[0] || done[1], 120_000)))
          throw new Error(`traffic did not resume within 120 s after kill ${k}\n${why()}`);
        if (back[0]! < k || back[1]! < k) throw new Error(`a guest ended after kill ${k}\n${why()}`);
        kills.push({ at: (tk - t0) / 1000, backMs: Date.now() - tk });
      }
    } catch (e) {
      killAllGuests();
      await Promise.all(guests);
      throw e;
    }
    const [ra, rb] = (await Promise.all(guests)) as [GuestResult, GuestResult];
    be.child.kill('SIGTERM');
    await be.exited;
    const all = backends.map((b) => b.output()).join('\n');
    const detail = `--- guest A ---\n${describeResult(ra)}\n--- guest B ---\n${describeResult(rb)}\n${why()}`;
    console.log(
      `[qemu net-restart] ${kills.length} kills (at ${kills.map((x) => `${x.at.toFixed(1)}s`).join(', ')}); ` +
        `kill-to-traffic-on-both ${kills.map((x) => x.backMs).join(',')} ms; ` +
        `${killedAt.filter((t) => t < streamDoneAt).length} kill(s) while the stream ran; A: ${ra.markerLine}; B: ${rb.markerLine}`,
    );
    console.log(`[qemu net-restart] guest A:\n${lines[0]!.join('\n')}\nguest B:\n${lines[1]!.join('\n')}`);
    expect(ra.passed, detail).toBe(true);
    expect(rb.passed, detail).toBe(true);
    expect(kills.length).toBe(KILLS);
    expect(Number(ra.markerFields.restarts), detail).toBeGreaterThanOrEqual(KILLS);
    expect(Number(rb.markerFields.restarts), detail).toBeGreaterThanOrEqual(KILLS);
    expect(ra.markerFields.stream_bytes, detail).toBe('16777216');
    expect(ra.markerFields.stream_md5, detail).toMatch(/^[0-9a-f]{32}$/);
    expect(ra.markerFields.stream_md5, detail).toBe(rb.markerFields.stream_md5);
    expect(ra.markerFields.bytes, detail).toBe('4194304');
    expect(ra.markerFields.md5, detail).toMatch(/^[0-9a-f]{32}$/);
    expect(ra.markerFields.md5, detail).toBe(rb.markerFields.md5);
    // the last back-end, stopped with SIGTERM, exited cleanly; no back-end refused a request or broke a ring
    expect(be.child.exitCode, detail).toBe(0);
    expect(all, detail).not.toMatch(/needs virtio feature|needs protocol feature|internal error|broken|NEEDS_RESET|needs a reset/i);
    expect(`${ra.stderr}${rb.stderr}`, detail).not.toMatch(/Segmentation|Aborted|core dumped|assertion/i);
  }, 1_200_000);
});
