/**
 * Re-render summary.md and the charts of a results directory from its results.json (after changing the charts,
 * or for results copied from another machine):
 *
 *   node build/out/bench/render.js bench/results/<date>
 */
import fs from 'node:fs';
import path from 'node:path';
import { type AllResults, writeSummary } from './summary.js';

const dir = process.argv[2];
if (!dir || !fs.existsSync(path.join(dir, 'results.json'))) {
  process.stderr.write('usage: node build/out/bench/render.js bench/results/<date>   (a directory with results.json)\n');
  process.exit(2);
}
const r = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')) as AllResults;
const { files } = writeSummary(dir, r);
process.stdout.write(`${dir}: ${files.join(', ')}\n`);
