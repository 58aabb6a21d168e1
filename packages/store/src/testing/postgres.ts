// A real PostgreSQL server for tests: Debian's binaries, a fresh data directory, a free loopback port, pause and resume.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, chownSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { exec } from '@anodyne/common';

/** A real PostgreSQL server started for tests: own data directory, free loopback port. */
export interface TestPostgres {
  /** Connection string of the initial `anodyne` database. */
  url: string;
  port: number;
  /** The server's data directory (for tests that inspect what reaches the disk). */
  dataDir: string;
  /** Creates an empty database and returns its URL; for test isolation. */
  createDatabase(name?: string): Promise<string>;
  /** Stops the server with a fast shutdown (it can be started again) */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Stops the server and removes its data directory. */
  stop(): Promise<void>;
}

function findBinDir(): string {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) throw new Error('PostgreSQL server is not installed (run make test, which installs it)');
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  const v = versions[0];
  if (!v) throw new Error('no PostgreSQL server binaries under ' + root);
  return join(root, v, 'bin');
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** PostgreSQL refuses to run as root; as root we run it as the `postgres` system user. */
async function serverUser(): Promise<{ uid: number; gid: number } | Record<string, never>> {
  if (userInfo().uid !== 0) return {};
  const { stdout: uid } = await exec(['id', '-u', 'postgres']);
  const { stdout: gid } = await exec(['id', '-g', 'postgres']);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`postgres exited with code ${child.exitCode}`);
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    try {
      await client.connect();
      await client.query('select 1');
      await client.end();
      return;
    } catch (err) {
      last = err;
      await client.end().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`postgres not ready after ${timeoutMs} ms: ${String(last)}`);
}

/**
 * Starts Debian's PostgreSQL on a free loopback port with a fresh data directory
 * (trust authentication on loopback only). Always call `stop()`, in an `after` hook.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = findBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-pg-'));
  const data = join(dir, 'data');
  const sock = dir;
  const user = await serverUser();
  if ('uid' in user) chownSync(dir, user.uid, user.gid);
  await exec([join(bin, 'initdb'), '-D', data, '-U', 'anodyne', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C'], {
    timeoutMs: 60_000,
    cwd: dir,
    ...user,
  });
  const port = await freePort();
  const url = `postgres://anodyne@127.0.0.1:${port}/postgres`;
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const argv = [
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      sock,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=200',
    ];
    const c = spawn(join(bin, 'postgres'), argv, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir, ...user });
    c.stderr?.resume();
    child = c;
    await waitReady(url, c, 30_000);
  };
  const halt = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    // SIGINT is PostgreSQL's fast shutdown: disconnect clients, stop cleanly.
    c.kill('SIGINT');
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const onExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.once('exit', onExit);
  await start();
  let counter = 0;
  return {
    url,
    port,
    dataDir: data,
    async createDatabase(name?: string) {
      const db = name ?? `t${process.pid}_${++counter}_${Math.random().toString(36).slice(2, 8)}`;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`create database "${db}"`);
      } finally {
        await client.end();
      }
      return `postgres://anodyne@127.0.0.1:${port}/${db}`;
    },
    pause: halt,
    resume: start,
    async stop() {
      await halt();
      process.removeListener('exit', onExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
