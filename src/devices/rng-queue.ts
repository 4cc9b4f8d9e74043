import fs from 'node:fs';
import {
  CH_SEG_COUNT,
  CH_SEG_START,
  CH_USED_LEN,
  CHAIN_BYTES,
  CHAINS_OFFSET,
  DEVICE_AREA_SIZE,
  SEG_ADDR,
  SEG_BYTES,
  SEG_F_WRITE,
  SEG_FLAGS,
  SEG_LEN,
  SEGS_OFFSET,
} from '../engine/layout.js';
import { readv } from '../sys/syscalls.js';
import { LinearViews } from './linear-views.js';
import type { QueueHandler, QueueHandlerContext, QueueHandlerFactory } from './queue-handler.js';

const IOV_MAX = 1024;
const IOV_SLOTS = Math.min(IOV_MAX, DEVICE_AREA_SIZE / 16);

/**
 * virtio-rng: fill every device-writable segment of a batch from the kernel's random source with one readv per
 * IOV_MAX segments, straight into guest memory (the iovec array lives in the queue's scratch area).
 */
export const createRngQueueHandler: QueueHandlerFactory = (ctx: QueueHandlerContext): QueueHandler => {
  const source = String(ctx.options['source'] ?? '/dev/urandom');
  const fd = fs.openSync(source, fs.constants.O_RDONLY);
  const views = new LinearViews(ctx.memory);
  const iovHost = ctx.hostBase + BigInt(ctx.scratch);
  const chainBase = ctx.queueArea + CHAINS_OFFSET;
  const segBase = ctx.queueArea + SEGS_OFFSET;

  /** readv the iovecs gathered so far; returns bytes delivered */
  const flush = (n: number): number => (n === 0 ? 0 : readv(fd, iovHost, n));

  return {
    process(count: number): void {
      const { u32, u64 } = views.refresh();
      let iovs = 0;
      let firstChain = 0;
      // Each chain's CH_USED_LEN first holds the bytes queued for it; settle() trims it to what readv delivered.
      const settle = (upTo: number, got: number): void => {
        for (let c = firstChain; c < upTo; c++) {
          const used = (chainBase + c * CHAIN_BYTES + CH_USED_LEN) >>> 2;
          const give = Math.min(u32[used]!, got);
          got -= give;
          u32[used] = give;
        }
      };
      for (let c = 0; c < count; c++) {
        const ch = (chainBase + c * CHAIN_BYTES) >>> 2;
        const s0 = u32[ch + CH_SEG_START / 4]!;
        const ns = u32[ch + CH_SEG_COUNT / 4]!;
        if (iovs + ns > IOV_SLOTS && iovs > 0) {
          settle(c, flush(iovs));
          firstChain = c;
          iovs = 0;
        }
        let queued = 0;
        for (let s = s0; s < s0 + ns && iovs < IOV_SLOTS; s++) {
          const sg = (segBase + s * SEG_BYTES) >>> 2;
          if (!(u32[sg + SEG_FLAGS / 4]! & SEG_F_WRITE)) continue;
          const len = u32[sg + SEG_LEN / 4]!;
          const slot = (ctx.scratch >>> 3) + iovs * 2;
          u64[slot] = ctx.hostBase + BigInt(u32[sg + SEG_ADDR / 4]!);
          u64[slot + 1] = BigInt(len);
          queued += len;
          iovs++;
        }
        u32[ch + CH_USED_LEN / 4] = queued;
      }
      settle(count, flush(iovs));
    },
    close(): void {
      fs.closeSync(fd);
    },
  };
};
