/**
 * AF_UNIX stream sockets with SCM_RIGHTS, through koffi. Everything is non-blocking; the main thread learns of
 * readiness from libuv (koffi.node.poll), so receiving never blocks the event loop.
 */
import fs from 'node:fs';
import { bufferAddress, errno, nodePoll, raw, type PollHandle } from './libc.js';
import { Errno, SysError } from './errors.js';
import { closeQuietly, fstat, pollFds, POLLOUT, setNonBlocking } from './syscalls.js';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_CTRUNC = 0x8;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SUN_PATH_MAX = 108;
const SO_ACCEPTCONN = 30;
const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;

/** Most fds one message may carry (vhost-user: 8 memory regions). */
export const MAX_FDS_PER_MESSAGE = 8;
const CMSG_SPACE = 16 + MAX_FDS_PER_MESSAGE * 4;

function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path);
  if (p.length >= SUN_PATH_MAX) throw new Error(`socket path too long (${p.length} bytes, max ${SUN_PATH_MAX - 1}): ${path}`);
  const sa = Buffer.alloc(2 + SUN_PATH_MAX);
  sa.writeUInt16LE(AF_UNIX, 0);
  p.copy(sa, 2);
  return sa;
}

function newSocket(): number {
  const fd = raw.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SysError('socket', errno());
  return fd;
}

/** A socket listening on a path (stale socket files are replaced) or an inherited listening fd. */
export class UnixListener {
  readonly fd: number;
  readonly path: string | undefined;
  private handle: PollHandle | undefined;

  private constructor(fd: number, path?: string) {
    this.fd = fd;
    this.path = path;
  }

  static listen(path: string, backlog = 16): UnixListener {
    const sa = sockaddrUn(path);
    try {
      if (fs.lstatSync(path).isSocket()) fs.unlinkSync(path);
    } catch {
      // nothing there
    }
    const fd = newSocket();
    if (raw.bind(fd, sa, sa.length) < 0) {
      const e = errno();
      closeQuietly(fd);
      throw new SysError('bind', e, path);
    }
    if (raw.listen(fd, backlog) < 0) {
      const e = errno();
      closeQuietly(fd);
      throw new SysError('listen', e, path);
    }
    return new UnixListener(fd, path);
  }

  /**
   * Adopt an inherited listening socket (`--fd`). It must be one: libuv polling anything else aborts the
   * process from native code, beyond any catch.
   */
  static fromFd(fd: number): UnixListener {
    let st;
    try {
      st = fstat(fd);
    } catch (e) {
      throw new Error(`--fd ${fd}: not an open file descriptor (${(e as Error).message})`);
    }
    if ((st.mode & S_IFMT) !== S_IFSOCK) throw new Error(`--fd ${fd}: not a socket`);
    const val = Buffer.alloc(4);
    const len = new Uint32Array([4]);
    if (raw.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, val, len) < 0) throw new SysError('getsockopt', errno(), `--fd ${fd}`);
    if (val.readInt32LE(0) === 0) throw new Error(`--fd ${fd}: the socket is not listening`);
    setNonBlocking(fd);
    return new UnixListener(fd);
  }

  /** Calls `onConnection` with each accepted (non-blocking, close-on-exec) fd. */
  start(onConnection: (fd: number) => void): void {
    this.handle = nodePoll(this.fd, { readable: true, writable: false }, () => {
      for (;;) {
        const c = raw.accept4(this.fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
          const e = errno();
          if (e !== Errno.EAGAIN && e !== Errno.EINTR && e !== Errno.ECONNABORTED) {
            process.emitWarning(new SysError('accept4', e).message);
          }
          return;
        }
        onConnection(c);
      }
    });
  }

  close(): void {
    this.handle?.close();
    this.handle = undefined;
    closeQuietly(this.fd);
    if (this.path) {
      try {
        fs.unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }
}

/** Connect to a listening unix socket; returns a non-blocking fd. */
export function connectUnix(path: string): number {
  const sa = sockaddrUn(path);
  const fd = newSocket();
  if (raw.connect(fd, sa, sa.length) < 0) {
    const e = errno();
    closeQuietly(fd);
    throw new SysError('connect', e, path);
  }
  return fd;
}

export function socketPair(): [number, number] {
  const sv = new Int32Array(2);
  if (raw.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) throw new SysError('socketpair', errno());
  return [sv[0]!, sv[1]!];
}

/** One received chunk of stream data with the fds that came with it. */
export interface RecvResult {
  bytes: number; // > 0 data, 0 EOF, -1 would block
  fds: number[];
}

/**
 * A connected stream socket: scatter-free recvmsg/sendmsg with fd passing. The msghdr, iovec and control
 * buffers are allocated once (stable addresses) and reused for every call.
 */
export class UnixConnection {
  readonly fd: number;
  private readonly msg = Buffer.allocUnsafeSlow(56);
  private readonly iov = Buffer.allocUnsafeSlow(16);
  private readonly ctrl = Buffer.allocUnsafeSlow(CMSG_SPACE);
  private readonly pfd = Buffer.alloc(8);
  private handle: PollHandle | undefined;
  closed = false;

  constructor(fd: number) {
    this.fd = fd;
  }

  private prepare(dataAddr: bigint, length: number, controlLen: number): void {
    this.msg.fill(0);
    this.iov.writeBigUInt64LE(dataAddr, 0);
    this.iov.writeBigUInt64LE(BigInt(length), 8);
    this.msg.writeBigUInt64LE(bufferAddress(this.iov), 16);
    this.msg.writeBigUInt64LE(1n, 24);
    if (controlLen > 0) {
      this.msg.writeBigUInt64LE(bufferAddress(this.ctrl), 32);
      this.msg.writeBigUInt64LE(BigInt(controlLen), 40);
    }
  }

  /**
   * Receive up to `length` bytes into `buf` at `offset`, with any fds attached. Throws SysError on a socket
   * error; a control-data truncation (too many fds) closes what arrived and throws.
   */
  recv(buf: Buffer, offset: number, length: number): RecvResult {
    this.ctrl.fill(0);
    this.prepare(bufferAddress(buf) + BigInt(offset), length, CMSG_SPACE);
    const n = raw.recvmsg(this.fd, this.msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      const e = errno();
      if (e === Errno.EAGAIN || e === Errno.EINTR) return { bytes: -1, fds: [] };
      throw new SysError('recvmsg', e, `fd ${this.fd}`);
    }
    const fds = this.parseFds();
    if (this.msg.readInt32LE(48) & MSG_CTRUNC) {
      for (const fd of fds) closeQuietly(fd);
      throw new Error(`recvmsg: more than ${MAX_FDS_PER_MESSAGE} fds attached to one message; dropped them`);
    }
    return { bytes: n, fds };
  }

  private parseFds(): number[] {
    const controlLen = Number(this.msg.readBigUInt64LE(40));
    const fds: number[] = [];
    let off = 0;
    while (off + 16 <= controlLen) {
      const len = Number(this.ctrl.readBigUInt64LE(off));
      const level = this.ctrl.readInt32LE(off + 8);
      const type = this.ctrl.readInt32LE(off + 12);
      if (len < 16) break;
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let p = off + 16; p + 4 <= off + len && p + 4 <= CMSG_SPACE; p += 4) fds.push(this.ctrl.readInt32LE(p));
      }
      off += (len + 7) & ~7;
    }
    return fds;
  }

  /** Send all of `data` with `fds` attached to its first byte; waits (up to `timeoutMs`) while the socket is full. */
  send(data: Buffer, fds: readonly number[] = [], timeoutMs = 5000): void {
    if (fds.length > MAX_FDS_PER_MESSAGE) throw new Error(`cannot send ${fds.length} fds in one message`);
    let sent = 0;
    let withFds = fds.length > 0;
    const deadline = Date.now() + timeoutMs;
    while (sent < data.length) {
      let controlLen = 0;
      if (withFds) {
        controlLen = 16 + ((fds.length * 4 + 7) & ~7);
        this.ctrl.fill(0);
        this.ctrl.writeBigUInt64LE(BigInt(16 + fds.length * 4), 0);
        this.ctrl.writeInt32LE(SOL_SOCKET, 8);
        this.ctrl.writeInt32LE(SCM_RIGHTS, 12);
        fds.forEach((fd, i) => this.ctrl.writeInt32LE(fd, 16 + i * 4));
      }
      this.prepare(bufferAddress(data) + BigInt(sent), data.length - sent, controlLen);
      const n = raw.sendmsg(this.fd, this.msg, MSG_NOSIGNAL);
      if (n < 0) {
        const e = errno();
        if (e === Errno.EINTR) continue;
        if (e === Errno.EAGAIN) {
          const left = deadline - Date.now();
          if (left <= 0) throw new SysError('sendmsg', e, `fd ${this.fd}: peer not reading`);
          this.pfd.writeInt32LE(this.fd, 0);
          this.pfd.writeInt16LE(POLLOUT, 4);
          this.pfd.writeInt16LE(0, 6);
          pollFds(this.pfd, 1, Math.min(left, 100));
          continue;
        }
        throw new SysError('sendmsg', e, `fd ${this.fd}`);
      }
      sent += n;
      withFds = false;
    }
  }

  /** Watch for readability on the libuv loop. `onReadable` also runs on hang-up/error so EOF is seen. */
  watch(onReadable: () => void): void {
    this.handle = nodePoll(this.fd, { readable: true, writable: false }, () => onReadable());
  }

  unwatch(): void {
    this.handle?.close();
    this.handle = undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unwatch();
    closeQuietly(this.fd);
  }
}
