/**
 * AF_UNIX sockets with SCM_RIGHTS (src/sys/unix-socket.ts): fd passing both ways, the per-message fd limit
 * (no leak either side), non-blocking semantics, EOF, stale socket files and over-long paths.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bufferAddress, errno, raw } from '../../src/sys/libc.js';
import { SysError } from '../../src/sys/errors.js';
import { closeQuietly, eventfd, eventfdDrain, eventfdSignal, fstat, ftruncate, memfdCreate } from '../../src/sys/syscalls.js';
import { connectUnix, MAX_FDS_PER_MESSAGE, socketPair, UnixConnection, UnixListener } from '../../src/sys/unix-socket.js';
import { tempSocketPath } from '../helpers/backend.js';

const cleanup: (() => void)[] = [];
const trackFd = (fd: number): number => (cleanup.push(() => closeQuietly(fd)), fd);
const trackConn = (c: UnixConnection): UnixConnection => (cleanup.push(() => c.close()), c);
const trackListener = (l: UnixListener): UnixListener => (cleanup.push(() => l.close()), l);

afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

function pair(): [UnixConnection, UnixConnection] {
  const [a, b] = socketPair();
  return [trackConn(new UnixConnection(a)), trackConn(new UnixConnection(b))];
}

/** Receive until `n` bytes (or EOF) arrived, collecting fds; fails after 2 s. */
async function recvAll(c: UnixConnection, n: number): Promise<{ data: Buffer; fds: number[] }> {
  const buf = Buffer.allocUnsafeSlow(n);
  const fds: number[] = [];
  let got = 0;
  const deadline = Date.now() + 2000;
  while (got < n) {
    const r = c.recv(buf, got, n - got);
    fds.push(...r.fds);
    if (r.bytes === 0) break;
    if (r.bytes < 0) {
      if (Date.now() > deadline) throw new Error(`only ${got} of ${n} bytes arrived`);
      await new Promise((res) => setTimeout(res, 2));
      continue;
    }
    got += r.bytes;
  }
  for (const fd of fds) trackFd(fd);
  return { data: buf.subarray(0, got), fds };
}

function newMemfd(bytes = 4096): number {
  const fd = trackFd(memfdCreate('scm-test'));
  ftruncate(fd, bytes);
  return fd;
}

/** The received fd is the same open file: same inode, and a write through one is read through the other. */
function expectSameFile(sent: number, received: number): void {
  expect(received).not.toBe(sent);
  const a = fstat(sent);
  const b = fstat(received);
  expect(b.ino).toBe(a.ino);
  expect(b.dev).toBe(a.dev);
  const msg = Buffer.from(`hello through fd ${sent} at ${Date.now()}`);
  fs.writeSync(sent, msg, 0, msg.length, 100);
  const back = Buffer.alloc(msg.length);
  fs.readSync(received, back, 0, msg.length, 100);
  expect(back.equals(msg)).toBe(true);
  const reply = Buffer.from('and back');
  fs.writeSync(received, reply, 0, reply.length, 2000);
  const back2 = Buffer.alloc(reply.length);
  fs.readSync(sent, back2, 0, reply.length, 2000);
  expect(back2.equals(reply)).toBe(true);
}

const F_GETFD = 1;
const FD_CLOEXEC = 1;

/** sendmsg with `fds` in one SCM_RIGHTS message, bypassing UnixConnection.send's own limit check. */
function rawSendWithFds(fd: number, data: Buffer, fds: number[]): void {
  const dataBuf = Buffer.allocUnsafeSlow(data.length);
  data.copy(dataBuf);
  const iov = Buffer.allocUnsafeSlow(16);
  iov.writeBigUInt64LE(bufferAddress(dataBuf), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  const ctrlLen = 16 + ((fds.length * 4 + 7) & ~7);
  const ctrl = Buffer.alloc(ctrlLen);
  ctrl.writeBigUInt64LE(BigInt(16 + fds.length * 4), 0);
  ctrl.writeInt32LE(1, 8); // SOL_SOCKET
  ctrl.writeInt32LE(1, 12); // SCM_RIGHTS
  fds.forEach((f, i) => ctrl.writeInt32LE(f, 16 + i * 4));
  const msg = Buffer.alloc(56);
  msg.writeBigUInt64LE(bufferAddress(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(bufferAddress(ctrl), 32);
  msg.writeBigUInt64LE(BigInt(ctrlLen), 40);
  const n = raw.sendmsg(fd, msg, 0x4000);
  if (n !== data.length) throw new Error(`raw sendmsg returned ${n} (errno ${errno()})`);
}

describe('SCM_RIGHTS over socketPair()', () => {
  it('an fd sent from a to b refers to the same file', async () => {
    const [a, b] = pair();
    const mfd = newMemfd();
    a.send(Buffer.from('abcd'), [mfd]);
    const r = await recvAll(b, 4);
    expect(r.data.toString()).toBe('abcd');
    expect(r.fds).toHaveLength(1);
    expectSameFile(mfd, r.fds[0]!);
  });

  it('an fd sent from b back to a refers to the same file', async () => {
    const [a, b] = pair();
    const mfd = newMemfd();
    b.send(Buffer.from('xy'), [mfd]);
    const r = await recvAll(a, 2);
    expect(r.fds).toHaveLength(1);
    expectSameFile(mfd, r.fds[0]!);
  });

  it('several fds in one message arrive in order, each the right file', async () => {
    const [a, b] = pair();
    const sent = [newMemfd(), trackFd(eventfd()), newMemfd(8192)];
    a.send(Buffer.from('three'), sent);
    const r = await recvAll(b, 5);
    expect(r.fds).toHaveLength(3);
    expectSameFile(sent[0]!, r.fds[0]!);
    expectSameFile(sent[2]!, r.fds[2]!);
    // the eventfd: a signal through the received one is drained through the original
    eventfdSignal(r.fds[1]!);
    expect(eventfdDrain(sent[1]!)).toBe(1);
  });

  it('exactly MAX_FDS_PER_MESSAGE fds in one message all arrive', async () => {
    const [a, b] = pair();
    const sent = Array.from({ length: MAX_FDS_PER_MESSAGE }, () => newMemfd());
    a.send(Buffer.from('m'), sent);
    const r = await recvAll(b, 1);
    expect(r.fds).toHaveLength(MAX_FDS_PER_MESSAGE);
    r.fds.forEach((fd, i) => expect(fstat(fd).ino).toBe(fstat(sent[i]!).ino));
  });

  it('received fds are close-on-exec', async () => {
    const [a, b] = pair();
    a.send(Buffer.from('c'), [newMemfd()]);
    const r = await recvAll(b, 1);
    expect(raw.fcntl(r.fds[0]!, F_GETFD, 0) & FD_CLOEXEC).toBe(FD_CLOEXEC);
  });

  it('the fds stay attached to the first byte: a short recv of the header gets them, the rest comes without', async () => {
    const [a, b] = pair();
    a.send(Buffer.from('0123456789'), [newMemfd()]);
    await new Promise((r) => setTimeout(r, 5));
    const buf = Buffer.allocUnsafeSlow(10);
    const first = b.recv(buf, 0, 4);
    expect(first.bytes).toBe(4);
    expect(first.fds).toHaveLength(1);
    trackFd(first.fds[0]!);
    const rest = b.recv(buf, 4, 6);
    expect(rest.bytes).toBe(6);
    expect(rest.fds).toHaveLength(0);
    expect(buf.toString()).toBe('0123456789');
  });
});

describe('SCM_RIGHTS over UnixListener / connectUnix', () => {
  async function connectedPair(): Promise<[UnixConnection, UnixConnection]> {
    const p = tempSocketPath('fdpass.sock');
    cleanup.push(() => fs.rmSync(path.dirname(p), { recursive: true, force: true }));
    const l = trackListener(UnixListener.listen(p));
    const accepted = new Promise<number>((resolve) => l.start(resolve));
    const client = trackConn(new UnixConnection(connectUnix(p)));
    const fd = await Promise.race([
      accepted,
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no connection accepted within 2 s')), 2000)),
    ]);
    return [client, trackConn(new UnixConnection(fd))];
  }

  it('client -> server: the received fd is the same file', async () => {
    const [client, server] = await connectedPair();
    const mfd = newMemfd();
    client.send(Buffer.from('hdr!'), [mfd]);
    const r = await recvAll(server, 4);
    expect(r.fds).toHaveLength(1);
    expectSameFile(mfd, r.fds[0]!);
  });

  it('server -> client: the received fd is the same file', async () => {
    const [client, server] = await connectedPair();
    const mfd = newMemfd();
    server.send(Buffer.from('rep'), [mfd]);
    const r = await recvAll(client, 3);
    expect(r.fds).toHaveLength(1);
    expectSameFile(mfd, r.fds[0]!);
  });

  it('the accepted connection is non-blocking: recv on it returns -1 at once', async () => {
    const [, server] = await connectedPair();
    const t0 = performance.now();
    expect(server.recv(Buffer.allocUnsafeSlow(8), 0, 8).bytes).toBe(-1);
    expect(performance.now() - t0).toBeLessThan(100);
  });
});

describe('more than MAX_FDS_PER_MESSAGE fds: a clear error and no leak', () => {
  it('send() refuses too many fds with a clear error and sends nothing', async () => {
    const [a, b] = pair();
    const sent = Array.from({ length: MAX_FDS_PER_MESSAGE + 1 }, () => newMemfd());
    const before = openFds();
    expect(() => a.send(Buffer.from('x'), sent)).toThrow(new RegExp(`${MAX_FDS_PER_MESSAGE + 1} fds`));
    expect(openFds()).toBe(before);
    expect(b.recv(Buffer.allocUnsafeSlow(1), 0, 1)).toEqual({ bytes: -1, fds: [] });
  });

  it('recv() of a message carrying too many fds throws a clear error and closes every fd that arrived', async () => {
    const [a, b] = pair();
    const sent = Array.from({ length: MAX_FDS_PER_MESSAGE + 4 }, () => newMemfd());
    const before = openFds();
    rawSendWithFds(a.fd, Buffer.from('too many'), sent);
    expect(openFds()).toBe(before); // in flight, not installed anywhere yet
    expect(() => b.recv(Buffer.allocUnsafeSlow(16), 0, 16)).toThrow(/more than 8 fds/);
    expect(openFds()).toBe(before);
    // no fd that the message carried is open in this process apart from the senders' own
    const inos = new Set(sent.map((fd) => fstat(fd).ino));
    const holders = fs
      .readdirSync('/proc/self/fd')
      .map(Number)
      .filter((fd) => {
        try {
          return inos.has(fstat(fd).ino) && fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('/memfd:scm-test');
        } catch {
          return false;
        }
      });
    expect(holders.sort((x, y) => x - y)).toEqual([...sent].sort((x, y) => x - y));
  });
});

describe('non-blocking reads and EOF', () => {
  it('recv on an empty non-blocking socket returns bytes -1 without blocking', () => {
    const [, b] = pair();
    const t0 = performance.now();
    const r = b.recv(Buffer.allocUnsafeSlow(64), 0, 64);
    expect(r).toEqual({ bytes: -1, fds: [] });
    expect(performance.now() - t0).toBeLessThan(100);
  });

  it('recv after the peer closed returns 0 (EOF), also on repeat', () => {
    const [a, b] = pair();
    a.close();
    expect(b.recv(Buffer.allocUnsafeSlow(8), 0, 8)).toEqual({ bytes: 0, fds: [] });
    expect(b.recv(Buffer.allocUnsafeSlow(8), 0, 8).bytes).toBe(0);
  });

  it('data sent before the close is still read, then EOF', async () => {
    const [a, b] = pair();
    a.send(Buffer.from('last words'));
    a.close();
    const r = await recvAll(b, 64);
    expect(r.data.toString()).toBe('last words');
  });

  it('send to a closed peer throws SysError EPIPE (no SIGPIPE)', () => {
    const [a, b] = pair();
    b.close();
    let e: unknown;
    try {
      a.send(Buffer.from('anyone?'));
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(SysError);
    expect((e as SysError).code).toBe('EPIPE');
    expect((e as SysError).call).toBe('sendmsg');
  });

  it('close() twice on a UnixConnection is harmless', () => {
    const [a] = pair();
    a.close();
    expect(() => a.close()).not.toThrow();
  });
});

describe('socket paths', () => {
  it('the listener replaces a stale socket file left by a dead listener', async () => {
    const p = tempSocketPath('stale.sock');
    cleanup.push(() => fs.rmSync(path.dirname(p), { recursive: true, force: true }));
    const dead = UnixListener.listen(p);
    closeQuietly(dead.fd); // as if the process died: the socket file stays
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    expect(() => connectUnix(p)).toThrow(SysError); // ECONNREFUSED: nobody listens on it
    const l = trackListener(UnixListener.listen(p));
    const accepted = new Promise<number>((resolve) => l.start(resolve));
    const c = trackFd(connectUnix(p));
    expect(c).toBeGreaterThanOrEqual(0);
    trackFd(await accepted);
  });

  it('the listener does not delete a regular file in its way: bind fails with a SysError', () => {
    const p = tempSocketPath('not-a-socket');
    cleanup.push(() => fs.rmSync(path.dirname(p), { recursive: true, force: true }));
    fs.writeFileSync(p, 'precious');
    let e: unknown;
    try {
      trackListener(UnixListener.listen(p));
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(SysError);
    expect((e as SysError).call).toBe('bind');
    expect((e as SysError).code).toBe('EADDRINUSE');
    expect(fs.readFileSync(p, 'utf8')).toBe('precious');
  });

  it('close() removes the socket file', () => {
    const p = tempSocketPath('gone.sock');
    cleanup.push(() => fs.rmSync(path.dirname(p), { recursive: true, force: true }));
    UnixListener.listen(p).close();
    expect(fs.existsSync(p)).toBe(false);
  });

  it('a socket path too long for sun_path is refused with a clear error (listen and connect), no fd leaked', () => {
    const long = '/tmp/' + 'x'.repeat(120) + '.sock';
    const before = openFds();
    expect(() => UnixListener.listen(long)).toThrow(/socket path too long/);
    expect(() => connectUnix(long)).toThrow(/socket path too long/);
    expect(openFds()).toBe(before);
    expect(fs.existsSync(long)).toBe(false);
  });

  it('a 107-byte path (the longest sun_path holds) works', async () => {
    const dir = path.dirname(tempSocketPath('x'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const p = path.join(dir, 'y'.repeat(107 - dir.length - 1));
    expect(Buffer.byteLength(p)).toBe(107);
    const l = trackListener(UnixListener.listen(p));
    const accepted = new Promise<number>((resolve) => l.start(resolve));
    trackFd(connectUnix(p));
    trackFd(await accepted);
  });

  it('connecting to a path where nobody listens throws SysError naming connect', () => {
    let e: unknown;
    try {
      connectUnix('/tmp/vw-test-definitely-not-here.sock');
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(SysError);
    expect((e as SysError).call).toBe('connect');
    expect((e as SysError).code).toBe('ENOENT');
  });
});
