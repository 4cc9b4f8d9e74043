/**
 * Waits for an ivshmem peer's own vectors: blocks in poll() on their eventfds and a stop eventfd, drains each
 * one that fires and posts { vector, count } to the main thread. The eventfds belong to the main thread; this
 * worker only reads them. A blocking poll() is what makes the wake-up cheap (design/feasibility.md §5), and the
 * stop eventfd is what lets the process exit while it waits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { eventfdDrain, POLLERR, POLLHUP, POLLIN, POLLNVAL, pollFds } from '../src/sys/syscalls.js';
import type { VectorWorkerData, VectorWorkerEvent } from '../src/ivshmem/vector-worker-protocol.js';

const data = workerData as VectorWorkerData;
const port = parentPort!;
const post = (e: VectorWorkerEvent): void => port.postMessage(e);

// pollfd: fd i32, events i16, revents i16; slot 0 is the stop eventfd
const live = data.vectors.slice();
let pfd = Buffer.alloc(0);
function rebuild(): void {
  pfd = Buffer.alloc(8 * (live.length + 1));
  pfd.writeInt32LE(data.stopFd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  live.forEach(([, fd], i) => {
    pfd.writeInt32LE(fd, 8 * (i + 1));
    pfd.writeInt16LE(POLLIN, 8 * (i + 1) + 4);
  });
}

rebuild();
post({ ready: true });
for (;;) {
  for (let i = 0; i <= live.length; i++) pfd.writeInt16LE(0, 8 * i + 6);
  if (pollFds(pfd, live.length + 1, -1) <= 0) continue;
  if (pfd.readInt16LE(6) & POLLIN) break;
  for (let i = 0; i < live.length; i++) {
    const re = pfd.readInt16LE(8 * (i + 1) + 6);
    const [vector, fd] = live[i]!;
    if (re & POLLIN) {
      const count = eventfdDrain(fd);
      if (count > 0) post({ vector, count });
    } else if (re & (POLLERR | POLLHUP | POLLNVAL)) {
      // a closed fd would make poll() spin: forget it and say so
      post({ vector, error: `eventfd ${fd} of vector ${vector} is no longer pollable (revents ${re})` });
      live.splice(i, 1);
      rebuild();
      break;
    }
  }
}
post({ stopped: true });
