/** Where the bench lives: it runs from build/out/bench/, the repository root is three levels up. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** build/out/bench (the compiled bench, and where the C baseline binary is built) */
export const benchOutDir = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(benchOutDir, '../../..');
export const cliPath = path.join(repoRoot, 'bin', 'vhost-wasm.js');
export const cSourcePath = path.join(repoRoot, 'bench', 'c', 'eventfd-pingpong.c');
export const resultsRoot = path.join(repoRoot, 'bench', 'results');

/**
 * Write one section's results (blk.json, net.json) into a results directory; a failure to write is recorded in
 * the section's errors rather than thrown, so the run still prints what it measured.
 */
export function writeSectionJson(r: { errors: string[] }, dir: string, file: string): string | undefined {
  try {
    fs.mkdirSync(dir, { recursive: true });
    const p = path.join(dir, file);
    fs.writeFileSync(p, JSON.stringify(r, null, 2) + '\n');
    return p;
  } catch (e) {
    r.errors.push(`writing results: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}
