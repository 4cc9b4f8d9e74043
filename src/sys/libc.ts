/**
 * Raw libc entry points through koffi. Nothing here checks results: `syscalls.ts` wraps each call and turns
 * failures into SysError. Pointers are passed either as Buffers (local scratch) or as bigint addresses
 * (guest memory inside the wasm Memory), hence the `_addr` variants declared with uint64_t.
 */
import koffi from 'koffi';

koffi.alias('ssize_t', 'int64_t');
koffi.alias('off_t', 'int64_t');

const libc = koffi.load('libc.so.6');

type Fn<A extends unknown[], R> = (...args: A) => R;
type Ptr = Buffer | Uint8Array | null;

export const raw = {
  close: libc.func('int close(int fd)') as Fn<[number], number>,
  read: libc.func('ssize_t read(int fd, void *buf, size_t n)') as Fn<[number, Ptr, number], number>,
  write: libc.func('ssize_t write(int fd, const void *buf, size_t n)') as Fn<[number, Ptr, number], number>,
  readAddr: libc.func('read', 'ssize_t', ['int', 'uint64_t', 'size_t']) as Fn<[number, bigint, number], number>,
  writeAddr: libc.func('write', 'ssize_t', ['int', 'uint64_t', 'size_t']) as Fn<[number, bigint, number], number>,
  preadAddr: libc.func('pread', 'ssize_t', ['int', 'uint64_t', 'size_t', 'int64_t']) as Fn<[number, bigint, number, bigint], number>,
  pwriteAddr: libc.func('pwrite', 'ssize_t', ['int', 'uint64_t', 'size_t', 'int64_t']) as Fn<[number, bigint, number, bigint], number>,
  readvAddr: libc.func('readv', 'ssize_t', ['int', 'uint64_t', 'int']) as Fn<[number, bigint, number], number>,
  preadvAddr: libc.func('preadv', 'ssize_t', ['int', 'uint64_t', 'int', 'int64_t']) as Fn<[number, bigint, number, bigint], number>,
  pwritevAddr: libc.func('pwritev', 'ssize_t', ['int', 'uint64_t', 'int', 'int64_t']) as Fn<[number, bigint, number, bigint], number>,
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)') as Fn<[string, number], number>,
  ftruncate: libc.func('int ftruncate(int fd, int64_t len)') as Fn<[number, number | bigint], number>,
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)') as Fn<[number, number, number], number>,
  mmap: libc.func('mmap', 'uint64_t', ['uint64_t', 'size_t', 'int', 'int', 'int', 'int64_t']) as Fn<
    [bigint, number | bigint, number, number, number, bigint],
    bigint
  >,
  munmap: libc.func('munmap', 'int', ['uint64_t', 'size_t']) as Fn<[bigint, number | bigint], number>,
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)') as Fn<[number, number], number>,
  poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)') as Fn<[Ptr, number, number], number>,
  socket: libc.func('int socket(int domain, int type, int protocol)') as Fn<[number, number, number], number>,
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, int *sv)') as Fn<
    [number, number, number, Int32Array],
    number
  >,
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)') as Fn<[number, Ptr, number], number>,
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)') as Fn<[number, Ptr, number], number>,
  listen: libc.func('int listen(int fd, int backlog)') as Fn<[number, number], number>,
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)') as Fn<[number, null, null, number], number>,
  sendmsg: libc.func('ssize_t sendmsg(int fd, const void *msg, int flags)') as Fn<[number, Ptr, number], number>,
  recvmsg: libc.func('ssize_t recvmsg(int fd, void *msg, int flags)') as Fn<[number, Ptr, number], number>,
  fstat: libc.func('int fstat(int fd, void *st)') as Fn<[number, Ptr], number>,
  getpid: libc.func('int getpid()') as Fn<[], number>,
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *val, uint32_t *len)') as Fn<
    [number, number, number, Buffer, Uint32Array],
    number
  >,
  dup: libc.func('int dup(int fd)') as Fn<[number], number>,
  // open is variadic (the mode); koffi passes the extra argument with its type at the call
  open: libc.func('int open(const char *path, int flags, ...)') as (path: string, flags: number, modeType: 'uint32_t', mode: number) => number,
  mkstemp: libc.func('int mkstemp(char *template)') as Fn<[Buffer], number>,
  sched_yield: libc.func('int sched_yield()') as Fn<[], number>,
};

export function errno(): number {
  return koffi.errno();
}

/** The host address of byte 0 of a (shared) WebAssembly.Memory. Taken through a view: N-API refuses SABs. */
export function memoryBaseAddress(memory: WebAssembly.Memory): bigint {
  return koffi.address(new Uint8Array(memory.buffer, 0, 1));
}

/** The host address of a Buffer's first byte (Buffers from allocUnsafeSlow never move). */
export function bufferAddress(buf: Uint8Array): bigint {
  return koffi.address(buf);
}

export const nodePoll = koffi.node.poll;
export type PollHandle = ReturnType<typeof koffi.node.poll>;

// ---- block device back-end: io_uring (syscalls 425-427), ioctls, mappings seen through views ----
// glibc's syscall() is variadic but written in assembly (it only moves registers), so fixed all-integer
// prototypes are safe on x86-64 and avoid koffi's per-call variadic type parsing on the hot path.
export const rawBlk = {
  ioUringSetup: libc.func('syscall', 'int64_t', ['int64_t', 'int64_t', 'void *']) as Fn<[number, number, Ptr], number>,
  ioUringEnter: libc.func('syscall', 'int64_t', ['int64_t', 'int64_t', 'int64_t', 'int64_t', 'int64_t', 'int64_t', 'int64_t']) as Fn<
    [number, number, number, number, number, number, number],
    number
  >,
  ioUringRegister: libc.func('syscall', 'int64_t', ['int64_t', 'int64_t', 'int64_t', 'void *', 'int64_t']) as Fn<
    [number, number, number, Ptr, number],
    number
  >,
  /** mmap returning a koffi pointer, for koffi.view() (kernel rings, small shared flags) */
  mmapPtr: libc.func('mmap', 'void *', ['uint64_t', 'size_t', 'int', 'int', 'int', 'int64_t']) as Fn<
    [bigint, number, number, number, number, bigint],
    unknown
  >,
  ioctlPtr: libc.func('ioctl', 'int', ['int', 'uint64_t', 'void *']) as Fn<[number, bigint, Ptr], number>,
  fdatasync: libc.func('int fdatasync(int fd)') as Fn<[number], number>,
};

/** An ArrayBuffer over native memory (a koffi pointer from rawBlk.mmapPtr), and that memory's address. */
export function nativeView(ptr: unknown, len: number): { buffer: ArrayBuffer; address: bigint } {
  return { buffer: koffi.view(ptr, len), address: koffi.address(ptr) };
}
