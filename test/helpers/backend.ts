/** Back-ends for tests: in this process (VhostUserServer) or as a real child process (the CLI). */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DeviceModel } from '../../src/devices/device.js';
import { VhostUserServer, type ServerOptions } from '../../src/vhost-user/server.js';

export function tempSocketPath(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vw-test-'));
  return path.join(dir, name);
}

export interface InProcessBackend {
  server: VhostUserServer;
  socketPath: string;
  logs: string[];
  close(): Promise<void>;
}

export function startBackend(device: DeviceModel, opts: Partial<ServerOptions> = {}): InProcessBackend {
  const socketPath = tempSocketPath(`${device.name}.sock`);
  const logs: string[] = [];
  const server = new VhostUserServer({ device, socketPath, log: (l) => logs.push(l), ...opts }).start();
  return {
    server,
    socketPath,
    logs,
    close: async () => {
      await server.close();
      fs.rmSync(path.dirname(socketPath), { recursive: true, force: true });
    },
  };
}

export interface ChildBackend {
  child: ChildProcess;
  socketPath: string;
  output(): string;
  stop(): Promise<number | null>;
}

const BIN = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '../../bin/vhost-wasm.js');

/** Start `vhost-wasm <args> --socket-path P` and wait until it listens. */
export async function spawnBackend(args: string[], socketPath = tempSocketPath('be.sock')): Promise<ChildBackend> {
  const child = spawn(process.execPath, [BIN, ...args, '--socket-path', socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + 15_000;
  // the socket file appears at bind(), before listen(): wait for the back-end to say it listens
  while (!fs.existsSync(socketPath) || !out.includes('listening on')) {
    if (child.exitCode !== null) throw new Error(`back-end exited early (${child.exitCode}): ${out}`);
    if (Date.now() > deadline) throw new Error(`back-end did not listen within 15 s: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    socketPath,
    output: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}
