/** Where the bench lives: it runs from build/out/bench/, the repository root is three levels up. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** build/out/bench (the compiled bench, and where the C baseline binary is built) */
export const benchOutDir = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(benchOutDir, '../../..');
export const cliPath = path.join(repoRoot, 'bin', 'vhost-wasm.js');
export const cSourcePath = path.join(repoRoot, 'bench', 'c', 'eventfd-pingpong.c');
export const resultsRoot = path.join(repoRoot, 'bench', 'results');
