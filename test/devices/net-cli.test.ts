/** `vhost-wasm net` as a process: argument checks, two ports of one switch, counters at SIGUSR1 and at exit. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as F from '../../src/net/frame.js';
import { BROADCAST, ethFrame, mac, NetPeer } from './net-peer.js';

const CLI = resolve(import.meta.dirname, '../../bin/vhost-wasm.js');
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });

let dir: string | undefined;
const peers: NetPeer[] = [];
afterEach(() => {
  for (const p of peers.splice(0)) p.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('vhost-wasm net (the command)', () => {
  it('checks its arguments', () => {
    expect(JSON.parse(cli('net', '--print-capabilities').stdout)).toEqual({ type: 'net', features: [] });
    const none = cli('net');
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/at least one --socket-path/);
    expect(cli('net', '--socket-path', '/tmp/x.sock', '--queues', '17').status).toBe(2);
    expect(cli('net', '--socket-path', '/tmp/x.sock', '--mac', 'zz').stderr).toMatch(/not a MAC address/);
    expect(cli('net', '--socket-path', '/tmp/x.sock', '--mtu', '20').status).toBe(2);
    expect(cli('help').stdout).toMatch(/vhost-wasm net +--socket-path P1 \[--socket-path P2 \.\.\.\] \[--queues N\]/);
  });

  it('two sockets are two ports of one switch; SIGTERM exits 0 after printing each port\'s counters', async () => {
    dir = mkdtempSync(join(tmpdir(), 'vw-netcli-'));
    const a = join(dir, 'a.sock');
    const b = join(dir, 'b.sock');
    const child = spawn(process.execPath, [CLI, 'net', '--socket-path', a, '--socket-path', b, '--queues', '2', '--mac', '02:aa:00:00:00:01'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('close', r));
    try {
      for (let i = 0; i < 300 && !(existsSync(a) && existsSync(b)); i++) await new Promise((r) => setTimeout(r, 50));
      const pa = await NetPeer.connect(a, 2, [F.VIRTIO_NET_F_MRG_RXBUF]);
      peers.push(pa);
      const pb = await NetPeer.connect(b, 2, [F.VIRTIO_NET_F_MRG_RXBUF]);
      peers.push(pb);
      const cfg = (await pa.fe.client.request('GET_CONFIG', { offset: 0, flags: 0, data: Buffer.alloc(10) }))!.data;
      expect(F.formatMac(cfg.subarray(0, 6))).toBe('02:aa:00:00:00:01');
      expect(cfg.readUInt16LE(8)).toBe(2);
      pb.postRx(1, 4);
      const f = ethFrame(BROADCAST, mac(7), 0x88b5, 777);
      await pa.send(1, f);
      expect((await pb.recv(1)).frame.equals(f)).toBe(true);
      child.kill('SIGUSR1');
      for (let i = 0; i < 100 && !/port 1 stats/.test(out); i++) await new Promise((r) => setTimeout(r, 20));
      expect(JSON.parse(/port 1 stats (\{.*\})/.exec(out)![1]!)).toMatchObject({ rxFrames: 1, rxBytes: 791, rxByPair: [0, 1] });
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(out).toMatch(/SIGTERM, shutting down/);
    expect(JSON.parse([...out.matchAll(/port 0 stats (\{.*\})/g)].at(-1)![1]!)).toMatchObject({ txFrames: 1, txFlooded: 1, txByPair: [0, 1] });
  });
});
