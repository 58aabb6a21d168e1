// Sealed artifacts and the local artifact store: round trips, and every kind of damage refused with its code.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnodyneError } from '@anodyne/common';
import { LocalArtifactStore, open, seal, sealedKeyId, type BackupKeys } from './index.js';

const code = (c: string) => (err: unknown) => err instanceof AnodyneError && err.code === c;
const keys: BackupKeys = {
  current: () => Promise.resolve({ id: 'k2', secret: 'the second key' }),
  byId: (id) => Promise.resolve(id === 'k1' ? { id, secret: 'the first key' } : id === 'k2' ? { id, secret: 'the second key' } : undefined),
};

describe('sealed artifacts', () => {
  const plain = randomBytes(100_000);

  it('opens what it sealed, with the current key or an earlier one, and hides the content', async () => {
    const sealed = seal(plain, await keys.current());
    assert.equal(sealedKeyId(sealed), 'k2');
    assert.deepEqual(await open(sealed, keys), plain);
    assert.ok(!sealed.includes(plain.subarray(0, 64)), 'the content is not in the clear');
    const older = seal(plain, { id: 'k1', secret: 'the first key' });
    assert.deepEqual(await open(older, keys), plain);
    assert.notDeepEqual(seal(plain, await keys.current()), sealed, 'a fresh salt and IV every time');
  });

  it('refuses a changed byte anywhere, a cut, a foreign key, a changed header and what is no artifact', async () => {
    const sealed = seal(plain, await keys.current());
    for (const at of [30, Math.floor(sealed.length / 2), sealed.length - 1]) {
      const bad = Buffer.from(sealed);
      bad[at]! ^= 0x40;
      await assert.rejects(open(bad, keys), code('ANODYNE_E_BACKUP_CORRUPT'), `byte ${at}`);
    }
    await assert.rejects(open(sealed.subarray(0, sealed.length - 100), keys), code('ANODYNE_E_BACKUP_CORRUPT'));
    await assert.rejects(open(sealed.subarray(0, 20), keys), code('ANODYNE_E_BACKUP_CORRUPT'));
    await assert.rejects(open(seal(plain, { id: 'elsewhere', secret: 'x' }), keys), code('ANODYNE_E_BACKUP_WRONG_KEY'));
    // The same key id with another secret: it does not authenticate.
    await assert.rejects(open(seal(plain, { id: 'k1', secret: 'not the first key' }), keys), code('ANODYNE_E_BACKUP_CORRUPT'));
    await assert.rejects(open(Buffer.from('hello, not an artifact at all'), keys), code('ANODYNE_E_BACKUP_CORRUPT'));
  });
});

describe('local artifact store', () => {
  let dir: string;
  let store: LocalArtifactStore;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-artifacts-'));
    store = new LocalArtifactStore(join(dir, 'backups'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('puts, gets, lists by prefix and deletes, with private files', async () => {
    assert.equal(store.location, `file://${join(dir, 'backups')}`);
    await store.put('bk-1/a.sealed', Buffer.from('one'));
    await store.put('bk-1/b.sealed', Buffer.from('two!'));
    await store.put('bk-2/a.sealed', Buffer.from('three'));
    assert.deepEqual((await store.get('bk-1/b.sealed')).toString(), 'two!');
    assert.deepEqual(await store.list('bk-1/'), [
      { key: 'bk-1/a.sealed', size: 3 },
      { key: 'bk-1/b.sealed', size: 4 },
    ]);
    assert.equal(statSync(join(dir, 'backups', 'bk-1', 'a.sealed')).mode & 0o777, 0o600);
    await store.put('bk-1/a.sealed', Buffer.from('replaced'));
    assert.equal((await store.get('bk-1/a.sealed')).toString(), 'replaced');
    assert.deepEqual(readdirSync(join(dir, 'backups', 'bk-1')).sort(), ['a.sealed', 'b.sealed'], 'no partial file left');
    await store.delete('bk-1/a.sealed');
    await store.delete('bk-1/a.sealed');
    await assert.rejects(store.get('bk-1/a.sealed'), code('ANODYNE_E_BACKUP_NOT_FOUND'));
  });

  it('refuses keys that are not plain relative paths', async () => {
    for (const key of ['../x', '/etc/passwd', 'a/../../b', 'a//b', '', 'a b']) {
      await assert.rejects(async () => store.put(key, Buffer.from('x')), code('ANODYNE_E_INVALID_INPUT'), key);
    }
  });
});
