// Tests of the store on SQLite and PostgreSQL: migrations, binary columns, transactions, the audit log, coded failures.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { AnodyneError, ManualClock } from '@anodyne/common';
import { openStore, restoreSnapshot, Store, type StoreOptions } from './store.js';
import { AuditLog } from './audit.js';
import { RateLimits } from './ratelimits.js';
import { startPostgres, freePort, type TestPostgres } from './testing/index.js';

/** The same suite for every dialect: `fresh()` gives options for an empty database. */
function storeSuite(name: string, setup: () => Promise<{ fresh: () => Promise<StoreOptions>; teardown: () => Promise<void> }>): void {
  describe(`store on ${name}`, () => {
    let fresh: () => Promise<StoreOptions>;
    let teardown: () => Promise<void> = () => Promise.resolve();
    before(async () => ({ fresh, teardown } = await setup()));
    after(async () => teardown());

    it('migrates an empty database to the latest schema', async () => {
      const store = await openStore(await fresh(), { migrate: false });
      try {
        const applied = await store.migrate();
        assert.deepEqual(applied, Store.knownMigrations());
        assert.deepEqual(await store.appliedMigrations(), Store.knownMigrations());
        const tables = (await store.db.introspection.getTables()).map((t) => t.name);
        for (const t of [
          'platform_meta',
          'audit_events',
          'credentials',
          'credential_versions',
          'deployments',
          'instances',
          'tasks',
          'identity_users',
          'identity_memberships',
          'identity_clients',
          'clusters',
          'quotas',
          'network_profiles',
        ])
          assert.ok(tables.includes(t), `table ${t}`);
      } finally {
        await store.close();
      }
    });

    it('a snapshot taken while it serves loads into another database with every row, and into nothing of the other driver', async () => {
      const source = await openStore(await fresh());
      const target = await fresh();
      try {
        await source.db.insertInto('platform_meta').values({ key: 'snap', value: 'before', updated_at: 'now' }).execute();
        await source.db
          .insertInto('releases')
          .values({
            key: 'kubernetes-v1.34.4-abc',
            kubernetes_version: '1.34.4',
            dir: '/d',
            manifest_sha256: 'f'.repeat(64),
            registered_at: 'now',
          })
          .execute();
        // The running replicas' rows are not data: a restored platform starts with none.
        const at = new Date().toISOString();
        await source.db
          .insertInto('platform_replicas')
          .values({ id: 'r1', host: 'h', pid: 1, url: 'u', started_at: at, seen_at: at })
          .execute();
        await source.db
          .insertInto('platform_leases')
          .values({ name: 'leader', holder: 'r1', term: 3, acquired_at: at, expires_at: at })
          .execute();
        await source.db.insertInto('rate_limits').values({ key: 'token:x', window_start: at, count: 5 }).execute();
        const snap = await source.snapshot();
        assert.equal(snap.driver, source.dialect);
        // Written after the snapshot: not in it.
        await source.db.updateTable('platform_meta').set({ value: 'after' }).where('key', '=', 'snap').execute();
        await restoreSnapshot(target, snap);
        const restored = await openStore(target);
        try {
          assert.deepEqual(await restored.appliedMigrations(), Store.knownMigrations());
          assert.equal(
            (await restored.db.selectFrom('platform_meta').select('value').where('key', '=', 'snap').executeTakeFirst())?.value,
            'before',
          );
          assert.equal((await restored.db.selectFrom('releases').selectAll().execute()).length, 1);
          for (const t of ['platform_replicas', 'platform_leases', 'rate_limits'] as const)
            assert.equal((await restored.db.selectFrom(t).selectAll().execute()).length, 0, `${t} is empty`);
          assert.equal((await source.db.selectFrom('platform_replicas').selectAll().execute()).length, 1, 'the source keeps its own');
        } finally {
          await restored.close();
        }
        const other = target.driver === 'sqlite' ? 'postgres' : 'sqlite';
        await assert.rejects(
          restoreSnapshot(target, { driver: other, data: Buffer.from('x') }),
          (e: { code?: string }) => e.code === 'ANODYNE_E_INVALID_INPUT',
        );
      } finally {
        await source.close();
      }
    });

    it('a migration run twice is a no-op', async () => {
      const opts = await fresh();
      const first = await openStore(opts);
      await first.db.insertInto('platform_meta').values({ key: 'k', value: 'v', updated_at: 'now' }).execute();
      await first.close();
      const second = await openStore(opts);
      try {
        assert.deepEqual(await second.migrate(), []);
        const row = await second.db.selectFrom('platform_meta').selectAll().where('key', '=', 'k').executeTakeFirst();
        assert.equal(row?.value, 'v');
      } finally {
        await second.close();
      }
    });

    it('a database from an older schema migrates forward and keeps its data', async () => {
      const opts = await fresh();
      const old = await openStore(opts, { migrate: false });
      const firstName = Store.knownMigrations()[0]!;
      assert.deepEqual(await old.migrate(firstName), [firstName]);
      await old.db.insertInto('platform_meta').values({ key: 'installed', value: 'v0', updated_at: '2026-01-01T00:00:00.000Z' }).execute();
      const oldTables = (await old.db.introspection.getTables()).map((t) => t.name);
      assert.ok(!oldTables.includes('credentials'));
      await old.close();

      const upgraded = await openStore(opts);
      try {
        assert.deepEqual(await upgraded.appliedMigrations(), Store.knownMigrations());
        const row = await upgraded.db.selectFrom('platform_meta').selectAll().executeTakeFirstOrThrow();
        assert.equal(row.value, 'v0');
        await upgraded.db
          .insertInto('credentials')
          .values({ id: 'c1', name: '/x', type: 'value', created_at: 'a', updated_at: 'a' })
          .execute();
      } finally {
        await upgraded.close();
      }
    });

    it('refuses a database whose schema is newer than this version', async () => {
      const opts = await fresh();
      const s = await openStore(opts);
      await sql`insert into anodyne_migration (name, timestamp) values ('9999_from_the_future', '2030-01-01')`.execute(s.db);
      await s.close();
      await assert.rejects(
        openStore(opts),
        (err: unknown) =>
          err instanceof AnodyneError && err.code === 'ANODYNE_E_STORE_SCHEMA_TOO_NEW' && err.message.includes('9999_from_the_future'),
      );
    });

    it('stores and reads binary columns, and rolls back failed transactions', async () => {
      const store = await openStore(await fresh());
      try {
        const bytes = Buffer.from([0, 1, 2, 255, 254, 0]);
        await store.db
          .insertInto('credentials')
          .values({ id: 'c1', name: '/a', type: 'value', created_at: 't', updated_at: 't' })
          .execute();
        await store.db
          .insertInto('credential_versions')
          .values({
            id: 'v1',
            credential_id: 'c1',
            version: 1,
            type: 'value',
            key_id: 'k',
            nonce: bytes,
            ciphertext: bytes,
            params: '{}',
            params_hash: 'h',
            transitional: 0,
            expires_at: null,
            ca_name: null,
            created_at: 't',
          })
          .execute();
        const row = await store.db.selectFrom('credential_versions').selectAll().executeTakeFirstOrThrow();
        assert.ok(Buffer.from(row.ciphertext).equals(bytes));
        await assert.rejects(
          store.db.transaction().execute(async (tx) => {
            await tx.insertInto('credentials').values({ id: 'c2', name: '/b', type: 'value', created_at: 't', updated_at: 't' }).execute();
            await tx.insertInto('credentials').values({ id: 'c3', name: '/b', type: 'value', created_at: 't', updated_at: 't' }).execute();
          }),
        );
        const names = (await store.db.selectFrom('credentials').select('name').execute()).map((r) => r.name);
        assert.deepEqual(names, ['/a']);
        // Deleting a credential removes its versions with it.
        await store.db.deleteFrom('credentials').where('id', '=', 'c1').execute();
        assert.equal((await store.db.selectFrom('credential_versions').selectAll().execute()).length, 0);
      } finally {
        await store.close();
      }
    });

    it('says when this process changed the database (SQLite), or that it cannot (PostgreSQL)', async () => {
      const store = await openStore(await fresh());
      try {
        const before = store.changeCounter();
        if (name !== 'SQLite') return assert.equal(before, undefined, 'other replicas may write: no counter');
        assert.equal(typeof before, 'number');
        await store.db.selectFrom('credentials').selectAll().execute();
        await sql`select 1`.execute(store.db).catch(() => undefined);
        const afterReads = store.changeCounter()!;
        await store.db
          .insertInto('credentials')
          .values({ id: 'g1', name: '/g', type: 'value', created_at: 't', updated_at: 't' })
          .execute();
        const afterInsert = store.changeCounter()!;
        assert.ok(afterInsert > afterReads, 'an insert changes it');
        await store.db.selectFrom('credentials').selectAll().execute();
        assert.equal(store.changeCounter(), afterInsert, 'a read does not');
        await store.db.updateTable('credentials').set({ updated_at: 'u' }).where('id', '=', 'g1').execute();
        const afterUpdate = store.changeCounter()!;
        assert.ok(afterUpdate > afterInsert, 'an update changes it');
        await store.db.transaction().execute((tx) => tx.deleteFrom('credentials').where('id', '=', 'g1').execute());
        assert.ok(store.changeCounter()! > afterUpdate, 'a delete in a transaction changes it');
      } finally {
        await store.close();
      }
    });

    it('keeps an audit log, newest first, filterable', async () => {
      const store = await openStore(await fresh());
      try {
        const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
        const audit = new AuditLog(store, clock);
        await audit.record({ actor: 'alice', action: 'cluster.create', target: 'prod', result: 'ok', details: { plan: 'small' } });
        await clock.advance(1000);
        await audit.record({ actor: 'bob', action: 'credential.read', target: '/c/x', result: 'denied' });
        const all = await audit.list();
        assert.equal(all.length, 2);
        assert.equal(all[0]?.actor, 'bob');
        assert.equal(all[1]?.at, '2026-01-01T00:00:00.000Z');
        assert.deepEqual(all[1]?.details, { plan: 'small' });
        const alice = await audit.list({ actor: 'alice' });
        assert.deepEqual(
          alice.map((e) => e.action),
          ['cluster.create'],
        );
      } finally {
        await store.close();
      }
    });

    it('counts requests per key in the database: hits at once all count, a new window starts again at 1', async () => {
      const store = await openStore(await fresh());
      try {
        const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
        // Two counters on one database stand for two replicas.
        const [a, b] = [new RateLimits(store, clock), new RateLimits(store, clock)];
        const counts = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).hit('token:10.0.0.1', 60_000)));
        assert.deepEqual(
          [...counts].sort((x, y) => x - y),
          [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        );
        assert.equal(await a.hit('token:10.0.0.2', 60_000), 1, 'each key counts alone');
        await clock.advance(30_000);
        assert.equal(await b.hit('token:10.0.0.1', 60_000), 11, 'the same window');
        await clock.advance(30_001);
        assert.equal(await a.hit('token:10.0.0.1', 60_000), 1, 'a new window');
        assert.equal(await a.prune(60_000), 1, "the other key's window has ended: pruned");
        assert.equal(await b.hit('token:10.0.0.2', 60_000), 1);
      } finally {
        await store.close();
      }
    });

    it("notices reach every follower of their channel: on PostgreSQL another replica's too, on SQLite this process's", async () => {
      const options = await fresh();
      const a = await openStore(options);
      // Another replica on PostgreSQL; on SQLite one process writes the database, so the followers are its own.
      const b = options.driver === 'postgres' ? await openStore(options) : a;
      try {
        const seen: string[] = [];
        const other: string[] = [];
        let got: () => void = () => undefined;
        const stop = b.signals.subscribe('anodyne_test', (p) => {
          if (p !== '') seen.push(p);
          if (seen.length === 2) got();
        });
        b.signals.subscribe('anodyne_other', (p) => p !== '' && other.push(p));
        const both = new Promise<void>((r) => (got = r));
        // The listening connection opens at the first follower: notices go out until one arrives.
        const sender = setInterval(() => void a.signals.notify('anodyne_test', `n${seen.length}`), 100);
        try {
          await Promise.race([both, new Promise((_, rej) => setTimeout(() => rej(new Error(`seen ${seen.join(' ')}`)), 10_000))]);
        } finally {
          clearInterval(sender);
        }
        assert.deepEqual(seen.slice(0, 2), ['n0', 'n1']);
        assert.deepEqual(other, [], 'only the followers of the channel are told');
        stop();
        const before = seen.length;
        await a.signals.notify('anodyne_test', 'after');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(seen.length, before, 'a follower that stopped is not told');
        assert.throws(() => a.signals.subscribe('bad channel; drop table tasks', () => undefined), /not a channel name/);
      } finally {
        if (b !== a) await b.close();
        await a.close();
      }
    });
  });
}

storeSuite('SQLite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-store-'));
  let n = 0;
  return Promise.resolve({
    fresh: () => Promise.resolve({ driver: 'sqlite', path: join(dir, `db${++n}`, 'anodyne.db') } as const),
    teardown: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })),
  });
});

storeSuite('PostgreSQL', async () => {
  const server: TestPostgres = await startPostgres();
  return {
    fresh: async () => ({ driver: 'postgres', url: await server.createDatabase() }),
    teardown: () => server.stop(),
  };
});

describe('store failures', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-store-bad-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a corrupt SQLite file gives ANODYNE_E_STORE_CORRUPT, not a stack trace', async () => {
    const path = join(dir, 'corrupt.db');
    writeFileSync(path, Buffer.alloc(8192, 0x5a));
    await assert.rejects(openStore({ driver: 'sqlite', path }), (err: unknown) => {
      assert.ok(err instanceof AnodyneError);
      assert.equal(err.code, 'ANODYNE_E_STORE_CORRUPT');
      assert.match(err.message, /corrupt or not a database/);
      return true;
    });
  });

  it('an unusable SQLite path gives ANODYNE_E_STORE_UNAVAILABLE', async () => {
    const file = join(dir, 'plainfile');
    writeFileSync(file, 'x');
    await assert.rejects(
      openStore({ driver: 'sqlite', path: join(file, 'sub', 'a.db') }),
      (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_STORE_UNAVAILABLE',
    );
  });

  it('an unreachable PostgreSQL gives ANODYNE_E_STORE_UNAVAILABLE, retryable', async () => {
    const port = await freePort();
    await assert.rejects(
      openStore({ driver: 'postgres', url: `postgres://anodyne@127.0.0.1:${port}/x`, connectTimeoutMs: 2000 }),
      (err: unknown) => {
        assert.ok(err instanceof AnodyneError);
        assert.equal(err.code, 'ANODYNE_E_STORE_UNAVAILABLE');
        assert.equal(err.retryable, true);
        return true;
      },
    );
  });

  it('a missing connection setting is a config error naming the key', async () => {
    await assert.rejects(
      openStore({ driver: 'postgres', url: '' }),
      (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_STORE_CONFIG_INVALID' && err.details['key'] === 'store.url',
    );
  });

  it('PostgreSQL going away and coming back: queries fail coded, then recover', async () => {
    const server = await startPostgres();
    const store = await openStore({ driver: 'postgres', url: await server.createDatabase(), connectTimeoutMs: 1000 });
    const notices: string[] = [];
    store.signals.subscribe('anodyne_test', (p) => notices.push(p));
    try {
      for (let i = 0; i < 50 && !notices.includes('before'); i++) {
        await store.signals.notify('anodyne_test', 'before');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(notices.includes('before'), 'the listener is up');
      await server.pause();
      await store.signals.notify('anodyne_test', 'lost'); // not sent, and it does not throw
      await assert.rejects(store.ping(), (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_STORE_UNAVAILABLE');
      await server.resume();
      let ok = false;
      for (let i = 0; i < 20 && !ok; i++) {
        ok = await store.ping().then(
          () => true,
          () => false,
        );
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(ok, 'store answers again after the server returns');
      // The listener comes back by itself, says that notices may have been missed, and hears new ones.
      for (let i = 0; i < 100 && !notices.includes('after'); i++) {
        await store.signals.notify('anodyne_test', 'after');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(notices.includes('after'), `notices after the return: ${notices.join(',')}`);
      assert.ok(notices.lastIndexOf('') > notices.indexOf('before'), 'told that notices may have been missed');
      assert.ok(!notices.includes('lost'));
    } finally {
      await store.close();
      await server.stop();
    }
  });
});
