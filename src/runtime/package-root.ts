/**
 * Where the package lives. Modules run both as TypeScript sources (vitest) and as compiled JS under build/out,
 * but workers and the wasm engine always load from build/out.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function packageRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj) && JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'vhost-wasm') return (root = dir);
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the vhost-wasm package root');
    dir = up;
  }
}

/** A file of the build output, e.g. builtPath('workers/queue-worker.js'). */
export function builtPath(rel: string): string {
  return path.join(packageRoot(), 'build', 'out', rel);
}
