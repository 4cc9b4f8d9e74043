// Builds the SIGBUS guard (src/sys/native/sigbus-guard.c) into build/out/libvw-sigbus.so with the system C
// compiler. Optional: without a compiler the back-end runs unguarded and says so.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
const src = 'src/sys/native/sigbus-guard.c';
const out = 'build/out/libvw-sigbus.so';
fs.mkdirSync('build/out', { recursive: true });
const cc = process.env.CC || 'cc';
try {
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs > fs.statSync(src).mtimeMs) process.exit(0);
  execFileSync(cc, ['-O2', '-shared', '-fPIC', '-Wall', '-o', out, src], { stdio: 'inherit' });
} catch (e) {
  console.warn(`warning: could not build ${out} with ${cc} (${e.message}); guest memory will run without the SIGBUS guard`);
}
