import os from 'node:os';

const ERRNO_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(os.constants.errno).map(([name, value]) => [value, name]),
);

/** A failed system call: which call, the errno and its symbolic name. */
export class SysError extends Error {
  readonly errno: number;
  readonly call: string;
  readonly code: string;

  constructor(call: string, errno: number, detail?: string) {
    const code = ERRNO_NAMES[errno] ?? `E${errno}`;
    super(`${call}${detail ? ` (${detail})` : ''} failed: ${code} (errno ${errno})`);
    this.name = 'SysError';
    this.errno = errno;
    this.call = call;
    this.code = code;
  }
}

export const Errno = os.constants.errno;
