// Tests of the S3 artifact store against a real SeaweedFS S3 gateway: objects, pages of lists, big objects, refusals, timeouts.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnodyneError, hasCode, skipUnless } from '@anodyne/common';
import { S3ArtifactStore, type S3StoreOptions } from './s3.js';
import { findWeed, startSeaweed, type TestSeaweed } from './testing/seaweed.js';

function weedBuilt(): boolean {
  try {
    findWeed();
    return true;
  } catch {
    return false;
  }
}

const skip = skipUnless(weedBuilt(), 'SeaweedFS is not built: run release/tools.sh seaweedfs (make test builds it)');

describe('S3 artifact store on a real SeaweedFS', { skip }, () => {
  let dir: string;
  let seaweed: TestSeaweed;
  let base: S3StoreOptions;
  const store = (extra: Partial<S3StoreOptions> = {}) => new S3ArtifactStore({ ...base, ...extra });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-seaweed-'));
    seaweed = await startSeaweed(dir);
    const { endpoint, bucket, accessKeyId, secretAccessKey } = seaweed;
    base = { endpoint, bucket, accessKeyId, secretAccessKey, timeoutMs: 10_000 };
  });
  after(async () => {
    await seaweed?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('puts, gets and replaces an object; location names bucket and prefix', async () => {
    const s = store({ prefix: 'roundtrip' });
    assert.equal(s.location, `s3://${seaweed.bucket}/roundtrip`);
    await s.put('b1/manifest.json', Buffer.from('{"v":1}'));
    assert.equal((await s.get('b1/manifest.json')).toString(), '{"v":1}');
    await s.put('b1/manifest.json', Buffer.from('{"v":2}'));
    assert.equal((await s.get('b1/manifest.json')).toString(), '{"v":2}');
    assert.deepEqual(await s.list(''), [{ key: 'b1/manifest.json', size: 7 }]);
  });

  it('lists across pages with continuation tokens (25 objects, 10 a page), sorted, with sizes', async () => {
    const s = store({ prefix: 'paged', maxKeys: 10 });
    const keys = Array.from({ length: 25 }, (_, i) => `backup-${String(i).padStart(2, '0')}/part.bin`);
    for (const [i, key] of keys.entries()) await s.put(key, Buffer.alloc(i, 'x'));
    const listed = await s.list('');
    assert.deepEqual(
      listed.map((o) => o.key),
      keys,
    );
    assert.deepEqual(
      listed.map((o) => o.size),
      keys.map((_, i) => i),
    );
    assert.deepEqual(
      await s.list('backup-2'),
      keys.slice(20).map((key, i) => ({ key, size: 20 + i })),
    );
  });

  it('keeps nested prefixes apart, and stores with other prefixes apart', async () => {
    const s = store({ prefix: 'tenants/a' });
    const other = store({ prefix: 'tenants/ab' });
    await s.put('b1/etcd/snapshot.db', Buffer.from('snap'));
    await s.put('b1/manifest.json', Buffer.from('m'));
    await s.put('b10/manifest.json', Buffer.from('m10'));
    await other.put('b1/manifest.json', Buffer.from('other'));
    assert.deepEqual(
      (await s.list('b1/')).map((o) => o.key),
      ['b1/etcd/snapshot.db', 'b1/manifest.json'],
    );
    assert.deepEqual(
      (await s.list('b1')).map((o) => o.key),
      ['b1/etcd/snapshot.db', 'b1/manifest.json', 'b10/manifest.json'],
    );
    assert.deepEqual(await s.list('b1/etcd/'), [{ key: 'b1/etcd/snapshot.db', size: 4 }]);
    assert.deepEqual(await other.list(''), [{ key: 'b1/manifest.json', size: 5 }]);
    assert.deepEqual(await s.list('nothing-here/'), []);
  });

  it('deletes idempotently; a missing object is ANODYNE_E_BACKUP_NOT_FOUND', async () => {
    const s = store({ prefix: 'deletes' });
    await s.put('b2/file', Buffer.from('gone soon'));
    await s.delete('b2/file');
    await s.delete('b2/file');
    await s.delete('never/was');
    await assert.rejects(s.get('b2/file'), (err: unknown) => {
      assert.ok(hasCode(err, 'ANODYNE_E_BACKUP_NOT_FOUND'), String(err));
      assert.equal(err.kind, 'not_found');
      assert.match(err.message, /b2\/file/);
      return true;
    });
    assert.deepEqual(await s.list(''), []);
  });

  it('round-trips a 5 MiB object byte for byte', async () => {
    const s = store();
    const body = randomBytes(5 * 1024 * 1024);
    await s.put('big/blob.bin', body);
    const back = await s.get('big/blob.bin');
    assert.equal(back.length, body.length);
    assert.ok(back.equals(body), 'same bytes');
    assert.deepEqual(await s.list('big/'), [{ key: 'big/blob.bin', size: body.length }]);
  });

  it('ensureBucket creates a missing bucket and is idempotent; a missing bucket is named in the error', async () => {
    const s = store({ bucket: 'anodyne-second' });
    await assert.rejects(s.put('x/y', Buffer.from('1')), (err: unknown) => {
      assert.ok(hasCode(err, 'ANODYNE_E_BACKUP_STORE_UNAVAILABLE'), String(err));
      assert.match(err.message, /anodyne-second/);
      return true;
    });
    await s.ensureBucket();
    await s.ensureBucket();
    await s.put('x/y', Buffer.from('1'));
    assert.deepEqual(await s.list(''), [{ key: 'x/y', size: 1 }]);
  });

  it('a wrong secret key is refused with an error naming the bucket, never the secret', async () => {
    const wrong = `wrong-${randomBytes(8).toString('hex')}`;
    const s = store({ secretAccessKey: wrong });
    for (const call of [() => s.get('b1/manifest.json'), () => s.put('b1/x', Buffer.from('x')), () => s.list('')]) {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(hasCode(err, 'ANODYNE_E_BACKUP_STORE_UNAVAILABLE'), String(err));
        assert.equal(err.retryable, false);
        assert.match(err.message, new RegExp(`refused access to bucket ${seaweed.bucket}`));
        assert.ok(!JSON.stringify({ m: err.message, d: err.details }).includes(wrong), 'no secret in the error');
        return true;
      });
    }
  });

  it('refuses bad options and keys with ANODYNE_E_INVALID_INPUT', async () => {
    const bad: Partial<S3StoreOptions>[] = [
      { bucket: 'Upper_Case' },
      { bucket: 'ab' },
      { bucket: '192.168.1.1' },
      { bucket: 'a..b' },
      { endpoint: 'ftp://127.0.0.1:1' },
      { endpoint: 'http://127.0.0.1:1/path' },
      { endpoint: 'not a url' },
      { prefix: '../up' },
      { secretAccessKey: '' },
      { maxKeys: 0 },
      { timeoutMs: -1 },
    ];
    for (const extra of bad)
      assert.throws(
        () => store(extra),
        (err: unknown) => hasCode(err, 'ANODYNE_E_INVALID_INPUT') && !err.message.includes(seaweed.secretAccessKey),
        JSON.stringify(extra),
      );
    await assert.rejects(store().put('../escape', Buffer.from('x')), (err: unknown) => hasCode(err, 'ANODYNE_E_INVALID_INPUT'));
    await assert.rejects(store().get('/abs'), (err: unknown) => hasCode(err, 'ANODYNE_E_INVALID_INPUT'));
  });
});

describe('S3 artifact store without a store to talk to', () => {
  let silent: Server;
  let port: number;
  const sockets: Socket[] = [];
  const opts = { bucket: 'anodyne-test', accessKeyId: 'AKNOBODY', secretAccessKey: 'not-a-real-secret' };

  before(async () => {
    // Accepts connections and never answers.
    silent = createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    port = (silent.address() as { port: number }).port;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  it('an endpoint that does not answer is ANODYNE_E_BACKUP_STORE_UNAVAILABLE within timeoutMs', async () => {
    const s = new S3ArtifactStore({ ...opts, endpoint: `http://127.0.0.1:${port}`, timeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(s.get('b1/manifest.json'), (err: unknown) => {
      assert.ok(err instanceof AnodyneError && err.code === 'ANODYNE_E_BACKUP_STORE_UNAVAILABLE', String(err));
      assert.equal(err.retryable, true);
      assert.match(err.message, /does not answer.*300 ms/);
      assert.ok(!err.message.includes('not-a-real-secret'));
      return true;
    });
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  });

  it('a closed port is ANODYNE_E_BACKUP_STORE_UNAVAILABLE at once', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const s = new S3ArtifactStore({ ...opts, endpoint: `http://127.0.0.1:${closedPort}`, timeoutMs: 5000 });
    await assert.rejects(
      s.list(''),
      (err: unknown) => hasCode(err, 'ANODYNE_E_BACKUP_STORE_UNAVAILABLE') && /ECONNREFUSED/.test(err.message),
    );
  });
});
