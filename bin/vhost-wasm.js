#!/usr/bin/env node
// The CLI runs from the compiled output (npm install builds it).
import('../build/out/src/cli/main.js').then((m) => m.main(process.argv.slice(2))).catch((e) => {
  if (e && e.code === 'ERR_MODULE_NOT_FOUND') console.error('vhost-wasm is not built: run `npm run build` first');
  else console.error(e);
  process.exit(1);
});
