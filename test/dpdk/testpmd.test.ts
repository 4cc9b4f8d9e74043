// DPDK's testpmd with the virtio-user PMD (a vhost-user front-end that needs no VM and no hugepages) against the
// ports of `vhost-wasm net`:
//   - testpmd txonly on port A, testpmd rxonly on port B, two queue pairs each: packets flow through the switch;
//   - testpmd on port A, our built-in front-end on port B: frames both ways, checked byte by byte on our side.
// Launch lines as in shared/design/real-clients.md (--no-huge -m 1024 --total-num-mbufs=16384, the forwarding
// lcores of the two processes on different CPUs). Skipped when dpdk-testpmd is not installed, unless
// VHOST_WASM_REQUIRE_DPDK=1.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BROADCAST, ethFrame, NetPeer } from '../devices/net-peer.js';

const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
const CLI = join(REPO_ROOT, 'bin', 'vhost-wasm.js');

function which(bin: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(d, bin);
    try {
      if (d && statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

const TESTPMD = which('dpdk-testpmd');
const STDBUF = which('stdbuf');
const required = process.env.VHOST_WASM_REQUIRE_DPDK === '1';

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function run(cmd: string, args: string[], stdin: 'pipe' | 'ignore' = 'ignore'): Proc {
  const child = spawn(cmd, args, { stdio: [stdin, 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  const exited = new Promise<number | null>((res) => {
    child.once('close', (code) => {
      process.off('exit', kill);
      res(code);
    });
    child.once('error', (e) => {
      out += `\nspawn error: ${String(e)}`;
      res(null);
    });
  });
  return { child, out: () => out, exited };
}

async function waitFor(what: string, cond: () => boolean, p: Proc, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (p.child.exitCode !== null) throw new Error(`exited before ${what}:\n${p.out().slice(-4000)}`);
    if (Date.now() > end) throw new Error(`no ${what} after ${ms} ms:\n${p.out().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

class Testpmd {
  private constructor(
    readonly p: Proc,
    readonly name: string,
  ) {}

  /** testpmd with one virtio-user port on `sock`, forwarding on lcore `fwdLcore` (main lcore: the other). */
  static async start(name: string, sock: string, queues: number, mode: 'txonly' | 'rxonly', fwdLcore: 0 | 1, vdevExtra = ''): Promise<Testpmd> {
    const args = [
      '-l', '0,1', '--main-lcore', String(1 - fwdLcore), '--no-huge', '-m', '1024', '--no-pci',
      `--file-prefix=vw${process.pid}${name}`, '--single-file-segments',
      '--vdev', `net_virtio_user0,path=${sock},queues=${queues}${vdevExtra}`,
      '--', '--no-mlockall', '--total-num-mbufs=16384', '-i', `--rxq=${queues}`, `--txq=${queues}`,
      `--forward-mode=${mode}`, '--auto-start',
    ];
    // testpmd's stdout is a pipe here: line-buffer it, or the stats sit in its buffer
    const p = STDBUF ? run(STDBUF, ['-oL', TESTPMD!, ...args], 'pipe') : run(TESTPMD!, args, 'pipe');
    const t = new Testpmd(p, name);
    await waitFor(`${name}: the testpmd> prompt`, () => /testpmd> /.test(p.out()), p, 30_000);
    return t;
  }

  /** RX-packets and TX-packets of port 0 now (`show port stats all`). */
  async stats(): Promise<{ rx: number; tx: number }> {
    const before = this.p.out().length;
    this.p.child.stdin!.write('show port stats all\n');
    const re = /NIC statistics for port 0[\s\S]*?RX-packets:\s+(\d+)[\s\S]*?TX-packets:\s+(\d+)/;
    await waitFor(`${this.name}: port stats`, () => re.test(this.p.out().slice(before)), this.p, 10_000);
    const m = re.exec(this.p.out().slice(before))!;
    return { rx: Number(m[1]), tx: Number(m[2]) };
  }

  /** The port's MAC, as testpmd printed it at start. */
  mac(): string {
    return /Port 0: ([0-9A-Fa-f:]{17})/.exec(this.p.out())?.[1]?.toLowerCase() ?? '';
  }

  async quit(): Promise<void> {
    if (this.p.child.exitCode !== null) return;
    this.p.child.stdin!.write('quit\n');
    const t = setTimeout(() => this.p.child.kill('SIGKILL'), 15_000);
    await this.p.exited;
    clearTimeout(t);
  }
}

async function startSwitch(dir: string, queues: number): Promise<{ be: Proc; a: string; b: string }> {
  const a = join(dir, 'a.sock');
  const b = join(dir, 'b.sock');
  const be = run(process.execPath, [CLI, 'net', '--socket-path', a, '--socket-path', b, '--queues', String(queues)]);
  await waitFor('the switch sockets', () => existsSync(a) && existsSync(b), be, 15_000);
  return { be, a, b };
}

async function stopSwitch(be: Proc): Promise<{ out: string; stats: (port: number) => Record<string, number & number[]> }> {
  be.child.kill('SIGTERM');
  await be.exited;
  const out = be.out();
  return {
    out,
    stats: (port) => JSON.parse(new RegExp(`port ${port} stats (\\{.*\\})`).exec(out)?.[1] ?? '{}') as Record<string, number & number[]>,
  };
}

describe.skipIf(!TESTPMD && !required)('vhost-wasm net with DPDK testpmd (virtio-user PMD)', () => {
  let dir: string | undefined;
  const procs: Testpmd[] = [];
  const peers: NetPeer[] = [];
  let be: Proc | undefined;

  afterEach(async () => {
    for (const p of peers.splice(0)) p.close();
    for (const t of procs.splice(0)) await t.quit();
    if (be && be.child.exitCode === null) {
      be.child.kill('SIGKILL');
      await be.exited;
    }
    be = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  // testpmd txonly on port A -> switch -> testpmd rxonly on port B, two queue pairs, on each ring layout testpmd's
  // virtio-user offers. in_order=1: its in-order TX/RX paths (virtio_xmit_pkts_inorder, the packed in-order
  // cleanup) run only once VIRTIO_F_IN_ORDER is negotiated; mrg_rxbuf=0 keeps split RX on its in-order path too.
  const variants = [
    { name: 'split rings', extra: '', acks: [] as string[] },
    { name: 'packed virtqueues (virtio-user packed_vq=1)', extra: ',packed_vq=1', acks: ['VIRTIO_F_RING_PACKED'] },
    { name: 'IN_ORDER: buffers are used in the order they were made available (virtio-user in_order=1, split rings)', extra: ',in_order=1,mrg_rxbuf=0', acks: ['VIRTIO_F_IN_ORDER'] },
    {
      name: 'IN_ORDER: buffers are used in the order they were made available (virtio-user in_order=1, packed rings)',
      extra: ',packed_vq=1,in_order=1,mrg_rxbuf=0',
      acks: ['VIRTIO_F_IN_ORDER', 'VIRTIO_F_RING_PACKED'],
    },
  ];
  for (const { name, extra, acks } of variants) {
    it(`${name}: testpmd txonly on port A -> switch -> testpmd rxonly on port B, two queue pairs`, async () => {
      dir = mkdtempSync(join(tmpdir(), 'vw-dpdk-'));
      const sw = await startSwitch(dir, 2);
      be = sw.be;
      const rx = await Testpmd.start('rx', sw.b, 2, 'rxonly', 1, extra);
      procs.push(rx);
      const tx = await Testpmd.start('tx', sw.a, 2, 'txonly', 0, extra);
      procs.push(tx);
      const t0 = Date.now();
      await new Promise((r) => setTimeout(r, 4000));
      const s1 = await rx.stats();
      const t1 = await tx.stats();
      await new Promise((r) => setTimeout(r, 1000));
      const s2 = await rx.stats();
      const t2 = await tx.stats();
      const secs = (Date.now() - t0) / 1000;
      await tx.quit();
      await rx.quit();
      const { out, stats } = await stopSwitch(sw.be);
      const a = stats(0);
      const b = stats(1);
      console.log(
        `[dpdk testpmd ${name}] ${secs.toFixed(1)} s: testpmd tx ${t2.tx} packets, testpmd rx ${s2.rx} packets (${(s2.rx / secs / 1000).toFixed(0)} kpps); ` +
          `switch: port 0 txFrames ${a.txFrames} txByPair ${JSON.stringify(a.txByPair)}, port 1 rxFrames ${b.rxFrames} rxByPair ${JSON.stringify(b.rxByPair)} ` +
          `rxDropNoBuffer ${b.rxDropNoBuffer}`,
      );
      const why = `${out.slice(-3000)}\n--- rx ---\n${rx.p.out().slice(-2000)}\n--- tx ---\n${tx.p.out().slice(-2000)}`;
      // both testpmds negotiated what the variant asks for with the back-end
      for (const f of acks) expect(out.match(new RegExp(`${f} acked`, 'g'))?.length ?? 0, why).toBeGreaterThanOrEqual(2);
      expect(t1.tx, why).toBeGreaterThan(0);
      expect(s1.rx, why).toBeGreaterThan(0);
      expect(a.txFrames, why).toBeGreaterThan(0);
      // traffic keeps flowing (an in-order driver that found a used entry out of order would stop reclaiming buffers)
      expect(t2.tx, why).toBeGreaterThan(t1.tx);
      expect(s2.rx, why).toBeGreaterThan(s1.rx);
      // what the switch delivered is what testpmd counted, give or take the frames still in its RX rings
      expect(b.rxFrames, why).toBeGreaterThanOrEqual(s2.rx);
      // testpmd spreads its txonly traffic over both queues; the switch keeps the pair index
      expect(a.txByPair.every((n: number) => n > 0), why).toBe(true);
      expect(b.rxByPair.every((n: number) => n > 0), why).toBe(true);
      expect(out, why).not.toMatch(/internal error|failed|broken|needs a reset|needs (virtio|protocol) feature/i);
    }, 120_000);
  }

  it('testpmd on port A and the built-in front-end on port B exchange frames both ways', async () => {
    dir = mkdtempSync(join(tmpdir(), 'vw-dpdk-'));
    const sw = await startSwitch(dir, 1);
    be = sw.be;
    const pb = await NetPeer.connect(sw.b, 1, [15 /* MRG_RXBUF */]);
    peers.push(pb);

    // our side -> testpmd rxonly: every frame arrives
    const rx = await Testpmd.start('rx', sw.a, 1, 'rxonly', 0);
    procs.push(rx);
    const src = new Uint8Array([0x02, 0, 0, 0, 0, 0xb0]);
    const frame = ethFrame(BROADCAST, src, 0x88b5, 200);
    // the first frame waits until testpmd's RX ring is up (its rings start after the prompt)
    let got = 0;
    for (let i = 0; i < 100 && got === 0; i++) {
      await pb.send(0, frame);
      await new Promise((r) => setTimeout(r, 50));
      got = (await rx.stats()).rx;
    }
    expect(got).toBeGreaterThan(0);
    for (let i = 0; i < 500; i++) await pb.send(0, frame);
    let rxNow = 0;
    for (let i = 0; i < 40 && rxNow < got + 500; i++) {
      rxNow = (await rx.stats()).rx;
      if (rxNow < got + 500) await new Promise((r) => setTimeout(r, 100));
    }
    expect(rxNow).toBe(got + 500);
    await rx.quit();

    // testpmd txonly -> our side: 64-byte IPv4/UDP frames from testpmd's MAC, delivered into our RX buffers
    const tx = await Testpmd.start('tx', sw.a, 1, 'txonly', 0);
    procs.push(tx);
    pb.postRx(0, 64);
    const f = await pb.recv(0, 10_000);
    const txMac = tx.mac();
    await tx.quit();
    expect(f.frame.length).toBe(64);
    expect(f.frame.readUInt16BE(12)).toBe(0x0800);
    expect(f.frame[14 + 9]).toBe(17); // UDP
    expect(Array.from(f.frame.subarray(6, 12), (x) => x.toString(16).padStart(2, '0')).join(':')).toBe(txMac);
    for (let i = 1; i < 32; i++) expect((await pb.recv(0, 5000)).frame.length).toBe(64);

    const { out, stats } = await stopSwitch(sw.be);
    const a = stats(0);
    const b = stats(1);
    console.log(`[dpdk testpmd] built-in front-end <-> testpmd: port 0 ${JSON.stringify(a)}\n  port 1 ${JSON.stringify(b)}`);
    expect(a.rxFrames).toBeGreaterThanOrEqual(got + 500);
    expect(b.rxFrames).toBeGreaterThanOrEqual(32);
    expect(out).not.toMatch(/internal error|failed|broken/i);
  }, 120_000);
});
