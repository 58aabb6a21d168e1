// Fault test: with PostgreSQL down for 10 s the API answers 503 ANODYNE_E_STORE_UNAVAILABLE, then recovers by itself (root).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SCOPES } from '@anodyne/identity';
import { startPostgres, type TestPostgres } from '@anodyne/store/testing';
import { startTestPlatform, https, type TestPlatform } from './testing/index.js';
import { skipUnless } from '@anodyne/common';

const isRoot = process.getuid?.() === 0;
const PORT = 19_800 + (process.pid % 90);

describe('faults: the store unreachable for 10 s', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let pg: TestPostgres;
  let tp: TestPlatform;
  let token: string;

  before(async () => {
    pg = await startPostgres();
    tp = await startTestPlatform('ft', '10.198.12.0/24', PORT, {
      ANODYNE_STORE_DRIVER: 'postgres',
      ANODYNE_STORE_URL: await pg.createDatabase(),
    });
    await tp.platform.identity.createUser({ username: 'ops', password: 'ops-password', groups: [SCOPES.admin] });
    token = (await tp.platform.identity.token({ grant_type: 'password', username: 'ops', password: 'ops-password' })).access_token;
  });
  after(async () => {
    await pg.resume().catch(() => undefined);
    await tp.stop();
    await pg.stop();
  });

  it('the API answers 503 with a code while PostgreSQL is down and recovers by itself', async (t) => {
    const call = (path: string) => https(tp.platform.url, tp.platform.caPem, 'GET', path, { token });
    assert.equal((await call('/v1/clusters')).status, 200);
    await pg.pause();
    const downAt = performance.now();
    const seen = new Set<string>();
    while (performance.now() - downAt < 10_000) {
      for (const path of ['/healthz', '/v1/clusters', '/v1/tasks']) {
        const r = await call(path);
        assert.equal(r.status, 503, `${path} while the store is down: ${r.text}`);
        const body = r.body as { code: string; message: string };
        assert.equal(body.code, 'ANODYNE_E_STORE_UNAVAILABLE');
        seen.add(path);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(seen.size, 3);
    await pg.resume();
    const upAt = performance.now();
    let ok = 0;
    for (let i = 0; i < 100 && ok !== 200; i++) {
      ok = (await call('/v1/clusters')).status;
      if (ok !== 200) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(ok, 200);
    assert.deepEqual((await call('/healthz')).body, { status: 'ok' });
    t.diagnostic(`answered again ${(performance.now() - upAt).toFixed(0)} ms after PostgreSQL came back`);
  });
});
