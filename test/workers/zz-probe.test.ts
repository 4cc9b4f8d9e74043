import { it } from 'vitest';
import { Frontend } from '../../src/frontend/frontend.js';
import { spawnBackend } from '../helpers/backend.js';
it('probe', async () => {
  const be = await spawnBackend(['null', '--queues', '2']);
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    const fe = await Frontend.connect({ socketPath: be.socketPath, queues: 2, queueSize: 64 });
    const t1 = performance.now();
    await fe.roundTrip(0, [{ offset: 0, len: 16, write: false }]);
    const t2 = performance.now();
    await fe.roundTrip(1, [{ offset: 0, len: 16, write: false }]);
    const t3 = performance.now();
    fe.close();
    console.log('T', (t1 - t0).toFixed(1), (t2 - t1).toFixed(1), (t3 - t2).toFixed(1), (performance.now() - t3).toFixed(1));
    await new Promise((r) => setTimeout(r, 300));
  }
  await be.stop();
});
