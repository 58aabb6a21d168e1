// The platform's database: a Kysely Store over SQLite or PostgreSQL, opening and migrating it, and coded driver errors.
import { mkdirSync, existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  sql,
  type MigrationProvider,
  type MigrationResult,
  type SqliteDatabase,
  type KyselyPlugin,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type QueryId,
  type QueryResult,
  type RootOperationNode,
  type UnknownRow,
} from 'kysely';
import { AnodyneError, InputError, PreconditionError, UnavailableError, InternalError, exec, type Logger } from '@anodyne/common';
import type { Database } from './schema.js';
import { migrations, type Dialect } from './migrations/index.js';
import { LocalSignals, PgSignals, type Signals } from './signals.js';

export type StoreOptions =
  | { driver: 'sqlite'; path: string; logger?: Logger }
  | { driver: 'postgres'; url: string; poolSize?: number; connectTimeoutMs?: number; logger?: Logger };

const MIGRATION_TABLE = 'anodyne_migration';
const MIGRATION_LOCK_TABLE = 'anodyne_migration_lock';

/**
 * Maps a driver error to an Anodyne error with a stable code. Errors already coded pass
 * through. Call it wherever a query's failure leaves this package.
 */
export function mapStoreError(err: unknown, context = 'database'): AnodyneError {
  if (err instanceof AnodyneError) return err;
  const e = err as { code?: string; message?: string; errors?: unknown[] };
  const code = e?.code ?? '';
  const message = e?.message ?? String(err);
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT' || /file is not a database|malformed/i.test(message)) {
    return new InternalError('ANODYNE_E_STORE_CORRUPT', `${context}: the database file is corrupt or not a database (${message})`, {
      cause: err,
    });
  }
  if (
    code === 'SQLITE_CANTOPEN' ||
    code === 'SQLITE_READONLY' ||
    code === 'SQLITE_BUSY' ||
    code === 'SQLITE_IOERR' ||
    code === 'SQLITE_PERM'
  ) {
    return new UnavailableError('ANODYNE_E_STORE_UNAVAILABLE', `${context}: cannot use the database file (${message})`, {
      cause: err,
      details: { driverCode: code },
    });
  }
  const network = [
    'ECONNREFUSED',
    'ECONNRESET',
    'ETIMEDOUT',
    'ENOTFOUND',
    'EHOSTUNREACH',
    'EPIPE',
    'EAI_AGAIN',
    '57P01',
    '57P02',
    '57P03',
    '53300',
    '08006',
    '08001',
    '08004',
  ];
  const nested = Array.isArray(e?.errors) ? (e.errors as { code?: string }[]).map((x) => x?.code ?? '') : [];
  if (
    network.includes(code) ||
    nested.some((c) => network.includes(c)) ||
    /timeout exceeded when trying to connect|Connection terminated|connect ECONNREFUSED/i.test(message)
  ) {
    return new UnavailableError('ANODYNE_E_STORE_UNAVAILABLE', `${context}: the database server cannot be reached (${message || code})`, {
      cause: err,
      details: { driverCode: code || nested[0] || '' },
    });
  }
  if (code === '28P01' || code === '28000' || code === '3D000') {
    return new UnavailableError('ANODYNE_E_STORE_UNAVAILABLE', `${context}: the database server refused the connection (${message})`, {
      cause: err,
      details: { driverCode: code },
      retryable: false,
    });
  }
  return new InternalError('ANODYNE_E_INTERNAL', `${context}: ${message}`, { cause: err });
}

/**
 * The platform's database: one Kysely instance over SQLite (embedded default) or
 * PostgreSQL (HA). Open it with `openStore`, which checks the connection and migrates.
 */
/** A consistent copy of a whole database: SQLite's own serialization of its file, or pg_dump's SQL. */
export interface DatabaseSnapshot {
  driver: Dialect;
  data: Buffer;
}

export class Store {
  readonly db: Kysely<Database>;
  readonly dialect: Dialect;
  /** Notices to the other replicas of this database (and to this process) that something changed. */
  readonly signals: Signals;

  constructor(
    db: Kysely<Database>,
    dialect: Dialect,
    private readonly options?: StoreOptions,
    private readonly sqlite?: BetterSqlite3.Database,
    private readonly writes?: WriteCounter,
  ) {
    this.db = db;
    this.dialect = dialect;
    this.signals =
      options?.driver === 'postgres'
        ? new PgSignals(
            options.url,
            async (channel, payload) => void (await sql`select pg_notify(${channel}, ${payload})`.execute(this.db)),
            options.logger,
          )
        : new LocalSignals();
  }

  /**
   * A number that changes whenever this process writes to the database (after each write), or
   * undefined where others may write to it too (PostgreSQL: other replicas, other tools). What a
   * reader computed from the database stays true while the number stays the same: read models
   * may keep it that long (ADR 0021).
   */
  changeCounter(): number | undefined {
    return this.sqlite && this.writes ? this.writes.count : undefined;
  }

  /**
   * A consistent copy of the whole database while it serves: SQLite serializes its file under a
   * read transaction; PostgreSQL's pg_dump takes one snapshot (its SQL drops and recreates each table).
   */
  async snapshot(): Promise<DatabaseSnapshot> {
    if (this.sqlite) {
      // The running replicas' own rows stay out (a copy in memory, cleared, serialized again). An image of a
      // WAL database opens in memory only as a rollback-journal one (header bytes 18 and 19); the platform
      // that opens the restored file turns WAL on again.
      const image = this.sqlite.serialize();
      image[18] = 1;
      image[19] = 1;
      const copy = new BetterSqlite3(image);
      try {
        const has = copy.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?");
        for (const t of RUNTIME_TABLES) if (has.get(t)) copy.prepare(`DELETE FROM ${t}`).run();
        return { driver: 'sqlite', data: copy.serialize() };
      } finally {
        copy.close();
      }
    }
    if (this.options?.driver !== 'postgres') throw new InternalError('ANODYNE_E_INTERNAL', 'this store cannot take a snapshot');
    const { url, env } = pgConnection(this.options.url);
    try {
      const excluded = RUNTIME_TABLES.map((t) => `--exclude-table-data=${t}`);
      const r = await exec(['pg_dump', '--no-owner', '--no-privileges', '--clean', '--if-exists', ...excluded, `--dbname=${url}`], {
        env,
        timeoutMs: 600_000,
      });
      return { driver: 'postgres', data: Buffer.from(r.stdout, 'utf8') };
    } catch (err) {
      throw new UnavailableError('ANODYNE_E_STORE_UNAVAILABLE', `pg_dump failed: ${(err as Error).message.slice(0, 300)}`, { cause: err });
    }
  }

  private migrator(): Migrator {
    const all = migrations(this.dialect);
    const provider: MigrationProvider = { getMigrations: () => Promise.resolve(all) };
    return new Migrator({ db: this.db, provider, migrationTableName: MIGRATION_TABLE, migrationLockTableName: MIGRATION_LOCK_TABLE });
  }

  /** Names of all migrations this version knows, in order. */
  static knownMigrations(): string[] {
    return Object.keys(migrations('sqlite')).sort();
  }

  /** Names of migrations already applied to this database, in order. */
  async appliedMigrations(): Promise<string[]> {
    try {
      const infos = await this.migrator().getMigrations();
      const known = infos.filter((m) => m.executedAt !== undefined).map((m) => m.name);
      const unknown = await this.unknownAppliedMigrations();
      return [...known, ...unknown].sort();
    } catch (err) {
      throw mapStoreError(err, 'reading migrations');
    }
  }

  /** Migrations recorded in the database that this version does not know (a newer schema). */
  private async unknownAppliedMigrations(): Promise<string[]> {
    const tables = await this.db.introspection.getTables();
    if (!tables.some((t) => t.name === MIGRATION_TABLE)) return [];
    const rows = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)}`.execute(this.db);
    const known = new Set(Store.knownMigrations());
    return rows.rows.map((r) => r.name).filter((n) => !known.has(n));
  }

  /**
   * Brings the schema to `target` (a migration name) or to the latest. Running it again
   * is a no-op. Refuses a database whose schema is newer than this version.
   * Returns the names of migrations applied by this call.
   */
  async migrate(target?: string): Promise<string[]> {
    let unknown: string[];
    try {
      unknown = await this.unknownAppliedMigrations();
    } catch (err) {
      throw mapStoreError(err, 'reading migrations');
    }
    if (unknown.length > 0) {
      throw new PreconditionError(
        'ANODYNE_E_STORE_SCHEMA_TOO_NEW',
        `the database has migrations this version of Anodyne does not know (${unknown.join(', ')}); upgrade Anodyne or use another database`,
        { details: { unknown } },
      );
    }
    if (target !== undefined && !Store.knownMigrations().includes(target)) {
      throw new InputError('ANODYNE_E_INVALID_INPUT', `unknown migration ${target}`, { details: { target } });
    }
    const migrator = this.migrator();
    let results: MigrationResult[] | undefined;
    let error: unknown;
    try {
      ({ results, error } = target === undefined ? await migrator.migrateToLatest() : await migrator.migrateTo(target));
    } catch (err) {
      throw mapStoreError(err, 'migrating');
    }
    if (error) {
      const mapped = mapStoreError(error, 'migrating');
      if (mapped.code !== 'ANODYNE_E_INTERNAL') throw mapped;
      const failed = results?.find((r) => r.status === 'Error')?.migrationName;
      throw new InternalError(
        'ANODYNE_E_STORE_MIGRATION_FAILED',
        `migration ${failed ?? '?'} failed: ${error instanceof Error ? error.message : JSON.stringify(error)}`,
        { cause: error, details: { migration: failed } },
      );
    }
    return (results ?? []).filter((r) => r.status === 'Success' && r.direction === 'Up').map((r) => r.migrationName);
  }

  /** A cheap round trip; throws a coded error when the database cannot be used. */
  async ping(): Promise<void> {
    try {
      await sql`select 1`.execute(this.db);
    } catch (err) {
      throw mapStoreError(err, 'ping');
    }
  }

  async close(): Promise<void> {
    await this.signals.close();
    await this.db.destroy();
  }
}

/**
 * Counts the writes this process sends (inserts, updates, deletes, raw SQL), once when a write is
 * sent and once when it has run: a read that ran in between sees another number afterwards.
 */
class WriteCounter implements KyselyPlugin {
  count = 0;

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (WRITES.has(args.node.kind)) {
      this.count++;
      this.pending.add(args.queryId);
    }
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    if (this.pending.delete(args.queryId)) this.count++;
    return Promise.resolve(args.result);
  }

  private readonly pending = new WeakSet<QueryId>();
}
const WRITES = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'RawNode', 'MergeQueryNode']);

function createKysely(options: StoreOptions): { db: Kysely<Database>; sqlite?: BetterSqlite3.Database; writes?: WriteCounter } {
  if (options.driver === 'sqlite') {
    if (!options.path)
      throw new InputError('ANODYNE_E_STORE_CONFIG_INVALID', 'store.path is required for the sqlite driver', {
        details: { key: 'store.path' },
      });
    const dir = dirname(options.path);
    try {
      if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new UnavailableError(
        'ANODYNE_E_STORE_UNAVAILABLE',
        `cannot create the directory of the database file ${options.path}: ${(err as Error).message}`,
        { cause: err, retryable: false },
      );
    }
    let database: BetterSqlite3.Database;
    try {
      database = new BetterSqlite3(options.path);
      database.pragma('journal_mode = WAL');
      database.pragma('foreign_keys = ON');
      database.pragma('busy_timeout = 5000');
    } catch (err) {
      throw mapStoreError(err, `opening ${options.path}`);
    }
    const writes = new WriteCounter();
    return {
      db: new Kysely<Database>({ dialect: new SqliteDialect({ database: keepingStatements(database) }), plugins: [writes] }),
      sqlite: database,
      writes,
    };
  }
  if (!options.url)
    throw new InputError('ANODYNE_E_STORE_CONFIG_INVALID', 'store.url is required for the postgres driver', {
      details: { key: 'store.url' },
    });
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
  });
  // An idle client losing its server must not crash the process; the next query reports it.
  pool.on('error', (err) => options.logger?.warn({ err: err.message }, 'postgres pool client error'));
  // Nor a client that is checked out between two statements (a transaction, a replica's heartbeat)
  // when the server ends its connection (57P01 on a shutdown): the pool listens only to idle ones.
  pool.on('connect', (client) =>
    client.on('error', (err) => options.logger?.warn({ err: err.message }, 'postgres connection lost while in use')),
  );
  return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }) };
}

/** A PostgreSQL URL without its password (which goes to PGPASSWORD, not onto a command line). */
function pgConnection(raw: string): { url: string; env: NodeJS.ProcessEnv } {
  const u = new URL(raw);
  const password = decodeURIComponent(u.password);
  u.password = '';
  return { url: u.toString(), env: { ...process.env, ...(password ? { PGPASSWORD: password } : {}) } };
}

/**
 * Tables of the running replicas (who runs, who leads, request counts): not data of the platform, so
 * snapshots leave their rows out and a restored platform starts with none (ADR 0024).
 */
const RUNTIME_TABLES = ['platform_replicas', 'platform_leases', 'rate_limits'] as const;

/**
 * Loads a snapshot into the database `options` names, which the platform is not using: for SQLite
 * the file is written anew (its journal files removed); for PostgreSQL the dump runs in one
 * transaction (it drops and recreates every table). Refused when the snapshot is of the other driver.
 */
export async function restoreSnapshot(options: StoreOptions, snap: DatabaseSnapshot): Promise<void> {
  if (snap.driver !== options.driver) {
    throw new InputError('ANODYNE_E_INVALID_INPUT', `the snapshot is of a ${snap.driver} database, this store is ${options.driver}`, {
      details: { key: 'store.driver' },
    });
  }
  if (options.driver === 'sqlite') {
    mkdirSync(dirname(options.path), { recursive: true });
    for (const f of [`${options.path}-wal`, `${options.path}-shm`]) rmSync(f, { force: true });
    const tmp = `${options.path}.restoring`;
    writeFileSync(tmp, snap.data, { mode: 0o600 });
    renameSync(tmp, options.path);
    return;
  }
  const { url, env } = pgConnection(options.url);
  try {
    await exec(['psql', '--quiet', '--no-psqlrc', '-v', 'ON_ERROR_STOP=1', '--single-transaction', `--dbname=${url}`], {
      env,
      input: snap.data,
      timeoutMs: 600_000,
    });
  } catch (err) {
    throw new UnavailableError('ANODYNE_E_STORE_UNAVAILABLE', `loading the snapshot failed: ${(err as Error).message.slice(0, 300)}`, {
      cause: err,
    });
  }
}

/**
 * better-sqlite3 with its prepared statements kept by SQL text. Kysely prepares every query anew,
 * and preparing costs more than running most of them (a 1,000-row read: 1.2 ms to prepare, 1.8 ms
 * to run). A statement still being iterated is not handed out twice; SQLite re-prepares kept
 * statements by itself after a schema change. Bounded: the oldest goes past 500.
 */
function keepingStatements(db: BetterSqlite3.Database): SqliteDatabase {
  const kept = new Map<string, BetterSqlite3.Statement>();
  return {
    close: () => db.close(),
    prepare: (text: string) => {
      const hit = kept.get(text);
      if (hit && !hit.busy) return hit;
      const statement = db.prepare(text);
      if (!hit) {
        if (kept.size >= 500) kept.delete(kept.keys().next().value!);
        kept.set(text, statement);
      }
      return statement;
    },
  };
}

/**
 * Opens the store, checks that it answers and (unless `migrate: false`) brings the schema to
 * the latest version. Failures are coded: ANODYNE_E_STORE_UNAVAILABLE (cannot reach or open),
 * ANODYNE_E_STORE_CORRUPT (not a database), ANODYNE_E_STORE_SCHEMA_TOO_NEW.
 */
export async function openStore(options: StoreOptions, { migrate = true }: { migrate?: boolean } = {}): Promise<Store> {
  const { db, sqlite, writes } = createKysely(options);
  const store = new Store(db, options.driver, options, sqlite, writes);
  try {
    await store.ping();
    if (migrate) {
      const applied = await store.migrate();
      if (applied.length > 0) options.logger?.info({ applied }, 'database migrated');
    }
    return store;
  } catch (err) {
    await store.close().catch(() => undefined);
    throw mapStoreError(err, 'opening the store');
  }
}

/** Current instant as stored in timestamp columns. */
export function isoNow(clock: { now(): Date } = { now: () => new Date() }): string {
  return clock.now().toISOString();
}

/**
 * Runs one query (or transaction) and maps its failure with `mapStoreError`, naming what was
 * being done: the one wrapper every package uses at its store boundary.
 */
export async function storeQuery<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw mapStoreError(err, what);
  }
}
