/** `--stats [interval]`: print (or write as JSON lines) each running queue's figures while serving. */
import fs from 'node:fs';
import { formatRates, rates, readCounters, type QueueCounters } from '../vhost-user/stats.js';
import type { VhostUserServer } from '../vhost-user/server.js';

export interface StatsOptions {
  intervalSec: number;
  /** JSON lines to this file ('-' = stdout) instead of text on stderr */
  jsonPath?: string;
}

export function startStatsReporter(device: string, server: VhostUserServer, o: StatsOptions): () => void {
  let prev = new Map<number, QueueCounters>();
  let session = server.session;
  const out = o.jsonPath && o.jsonPath !== '-' ? fs.openSync(o.jsonPath, 'a') : undefined;
  const timer = setInterval(() => {
    const s = server.session;
    if (s !== session) {
      session = s;
      prev = new Map();
    }
    if (!s) return;
    const now = readCounters(s.memory.memory, s.startedQueues());
    for (const c of now) {
      const p = prev.get(c.queue);
      if (p) {
        const r = rates(p, c);
        if (o.jsonPath) {
          const line = JSON.stringify({ time: new Date().toISOString(), device, ...r }) + '\n';
          if (out !== undefined) fs.writeSync(out, line);
          else process.stdout.write(line);
        } else process.stderr.write(formatRates(device, r) + '\n');
      }
      prev.set(c.queue, c);
    }
  }, o.intervalSec * 1000);
  timer.unref();
  return () => {
    clearInterval(timer);
    if (out !== undefined) fs.closeSync(out);
  };
}

/** `--stats` takes an optional interval: `--stats`, `--stats 2`, `--stats=0.5`. Normalised for parseArgs. */
export function normaliseStatsFlag(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--stats') {
      const next = args[i + 1];
      if (next !== undefined && /^\d+(\.\d+)?$/.test(next)) {
        out.push(`--stats=${next}`);
        i++;
      } else out.push('--stats=1');
    } else out.push(a);
  }
  return out;
}
