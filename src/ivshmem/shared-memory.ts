/**
 * The ivshmem shared memory as the server creates it: a POSIX shm object (`-M name`: shm_open, i.e. a file in
 * /dev/shm), an unlinked file in a directory (`-m dir`, hugetlbfs included), or a memfd (our extra). Sized like
 * the reference server does: left alone when it already has the size, else ftruncate'd, doubling on failure up
 * to 1 GiB (a hugetlbfs file takes only multiples of its page size).
 */
import fs from 'node:fs';
import path from 'node:path';
import { SysError } from '../sys/errors.js';
import {
  closeQuietly,
  fstat,
  ftruncate,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  memfdCreate,
  mkstemp,
  O_CREAT,
  O_NOFOLLOW,
  O_RDWR,
  openFile,
  sealAgainstShrink,
} from '../sys/syscalls.js';

export type ShmBacking = { kind: 'shm'; name: string } | { kind: 'dir'; dir: string } | { kind: 'memfd' };

const MAX_HUGEPAGE_SIZE = 1n << 30n;
const SHM_DIR = '/dev/shm';

export interface SharedMemoryFile {
  fd: number;
  /** the size it got (may exceed the one asked for on hugetlbfs) */
  size: bigint;
  /** for log lines: where it lives */
  where: string;
  /** close the fd and remove the name, if it has one that outlives us (shm) */
  release(): void;
}

/** The path shm_open(name) uses: one component under /dev/shm, leading slashes dropped. */
export function shmPath(name: string): string {
  const n = name.replace(/^\/+/, '');
  if (!n || n.includes('/') || n === '.' || n === '..') throw new RangeError(`invalid POSIX shm name '${name}' (one path component, e.g. ivshmem)`);
  return path.join(SHM_DIR, n);
}

export function openSharedMemory(backing: ShmBacking, size: bigint): SharedMemoryFile {
  let fd: number;
  let where: string;
  let unlinkAtRelease: string | undefined;
  switch (backing.kind) {
    case 'shm':
      where = shmPath(backing.name);
      fd = openFile(where, O_RDWR | O_CREAT | O_NOFOLLOW, 0o700);
      unlinkAtRelease = where;
      break;
    case 'dir': {
      const t = mkstemp(path.join(backing.dir, 'ivshmem.XXXXXX'));
      fd = t.fd;
      where = `${t.path} (unlinked)`;
      fs.unlinkSync(t.path);
      break;
    }
    case 'memfd':
      fd = memfdCreate('ivshmem', MFD_CLOEXEC | MFD_ALLOW_SEALING);
      where = 'memfd';
      break;
  }
  try {
    const got = sizeFile(fd, size);
    // a peer mapping memory that later shrinks would die of SIGBUS: a memfd can be sealed against that
    if (backing.kind === 'memfd') sealAgainstShrink(fd);
    return {
      fd,
      size: got,
      where,
      release: () => {
        closeQuietly(fd);
        if (unlinkAtRelease) fs.rmSync(unlinkAtRelease, { force: true });
      },
    };
  } catch (e) {
    closeQuietly(fd);
    if (unlinkAtRelease) fs.rmSync(unlinkAtRelease, { force: true });
    throw e;
  }
}

function sizeFile(fd: number, size: bigint): bigint {
  if (fstat(fd).size === size) return size;
  let s = size;
  let last: unknown;
  while (s <= (size > MAX_HUGEPAGE_SIZE ? size : MAX_HUGEPAGE_SIZE)) {
    try {
      ftruncate(fd, s);
      return s;
    } catch (e) {
      last = e;
      s *= 2n;
    }
  }
  throw last instanceof SysError ? last : new Error(`ftruncate to ${size} bytes failed`);
}

