/**
 * `npm start`: the main job on an embedded default. A null back-end with N queues (one worker each) and the
 * built-in front-end driving it over a real unix socket and memfd guest memory, printing throughput per queue.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { nullDevice } from '../devices/null.js';
import { VhostUserServer } from '../vhost-user/server.js';
import { drive, formatReport } from './drive.js';
import { intOption } from './main.js';

export async function runDemo(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, strict: true, options: { queues: { type: 'string' }, seconds: { type: 'string' } } });
  const queues = intOption('queues', values.queues, 2, 1, 32);
  const seconds = Number(values.seconds ?? 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-wasm-demo-'));
  const socketPath = path.join(dir, 'null.sock');
  const server = new VhostUserServer({ device: nullDevice({ queues }), socketPath, log: () => {} }).start();
  try {
    console.log(`vhost-wasm demo: null device, ${queues} queues, one worker each, driven by the built-in front-end`);
    console.log(`(socket ${socketPath}; run 'vhost-wasm drive --help' to drive any back-end yourself)\n`);
    const r = await drive({ socketPath, device: 'null', queues, seconds, mode: 'throughput', polling: false, queueSize: 256, descsPerChain: 1, eventIdx: true, bufLen: 64 });
    console.log(formatReport(r));
    const lat = await drive({ socketPath, device: 'null', queues: 1, seconds: 1, mode: 'latency', polling: false, queueSize: 256, descsPerChain: 1, eventIdx: true, bufLen: 64 });
    console.log('\n' + formatReport(lat));
  } finally {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
