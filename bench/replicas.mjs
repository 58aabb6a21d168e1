// Platform replicas benchmark (#21): API requests per second and p99 with 1, 2 and 3 `anodyne server` replicas on
// one PostgreSQL behind a real haproxy, 1,000 clusters stored, beside one replica on SQLite behind the same haproxy
// (the single-process figure), measured in the same run with the same load (autocannon in a second process).
//
// Every replica is a real `anodyne server` process, as in the HA suite. The 1,000 cluster records are written to
// each database before its replicas start (rows only: no VMs, no tasks), so what is measured is the API's
// authentication, authorisation, store reads and JSON; on SQLite the views are then kept until the store changes
// (docs/adr/0021), on PostgreSQL they are read on every request (other replicas write the same database).
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '@anodyne/store';
import { startPostgres } from '@anodyne/store/testing';
import { https, removeProviderLeftovers, startHaproxy, startServer, stopServer } from '@anodyne/platform/testing';
import { load } from './api.mjs';
import { storeClusterRows } from './lib.mjs';

const CLUSTERS = 1000;
const NETWORK = '10.198.25.0/24';
const GATEWAY = '10.198.25.1';

export async function benchReplicas({ seconds = 10, connections = 16, log = (s) => process.stderr.write(s) } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-bench-replicas-'));
  const tag = `br${(process.pid % 1296).toString(36)}`;
  const base = 19_300 + (process.pid % 50);
  const env = (dataDir, port, store) => ({
    ...process.env,
    ANODYNE_DATA_DIR: dataDir,
    ANODYNE_PROVIDER_NETWORK: NETWORK,
    ANODYNE_PROVIDER_TAG: tag,
    ANODYNE_SERVER_PORT: String(port),
    ANODYNE_SERVER_PUBLIC_URL: `https://${GATEWAY}:${base + 90}`,
    ANODYNE_REGISTRY_ENABLED: 'false',
    ANODYNE_LOG_LEVEL: 'warn',
    ...store,
  });
  const pg = await startPostgres();
  const passwords = new Map(); // the admin's, per data directory (printed by its first start only)
  let running = [];
  let haproxy;
  const stopAll = async () => {
    if (haproxy && haproxy.exitCode === null) {
      const exited = new Promise((r) => haproxy.once('exit', r));
      haproxy.kill('SIGTERM');
      await exited;
    }
    haproxy = undefined;
    for (const s of running) await stopServer(s, 'SIGTERM');
    running = [];
  };
  /** Starts `n` replicas of one database (the first alone: it makes the key file, CA and admin), measures both paths. */
  const measure = async (label, dataDir, n, store) => {
    const servers = Array.from({ length: n }, (_, i) => ({
      name: `${label.replace(/\W+/g, '-')}-${i}`,
      port: base + i,
      url: `https://${GATEWAY}:${base + i}`,
      child: undefined,
    }));
    for (const s of servers) {
      running.push(s);
      const out = await startServer(s, env(dataDir, s.port, store), dir);
      if (!passwords.has(dataDir)) passwords.set(dataDir, /password: (\S+)/.exec(out)?.[1]);
    }
    const password = passwords.get(dataDir);
    const ca = readFileSync(join(dataDir, 'ca.pem'), 'utf8');
    const lb = `${GATEWAY}:${base + 90}`;
    haproxy = await startHaproxy(dir, [{ bind: lb, servers }], ca);
    const lbUrl = `https://${lb}`;
    const t = await https(lbUrl, ca, 'POST', '/oauth/token', {
      body: JSON.stringify({ grant_type: 'password', username: 'admin', password }),
    });
    if (t.status !== 200) throw new Error(`no token: ${t.status} ${t.text.slice(0, 200)}`);
    const token = t.body.access_token;
    const list = await https(lbUrl, ca, 'GET', '/v1/clusters', { token });
    if (list.status !== 200 || list.body.length !== CLUSTERS) throw new Error(`expected ${CLUSTERS} clusters: ${list.status}`);
    const out = {};
    for (const [key, path] of [
      ['list', '/v1/clusters'],
      ['one', '/v1/clusters/c-0500'],
    ]) {
      out[key] = await load(`${lbUrl}${path}`, token, seconds, connections);
      log(`${label}, ${path}: ${out[key].rps.toFixed(0)} req/s p99 ${out[key].p99} ms\n`);
    }
    await stopAll();
    return { label, ...out };
  };
  try {
    const rows = [];
    // One replica on SQLite: the rows are written before it starts (it keeps its views until it writes itself).
    const sqliteDir = join(dir, 'sqlite');
    mkdirSync(sqliteDir);
    const sqlite = await openStore({ driver: 'sqlite', path: join(sqliteDir, 'anodyne.db') });
    await storeClusterRows(sqlite, CLUSTERS, 'c');
    await sqlite.close();
    rows.push(await measure('SQLite, 1 replica', sqliteDir, 1, { ANODYNE_STORE_DRIVER: 'sqlite' }));
    await removeProviderLeftovers(sqliteDir, tag, NETWORK);

    const dbUrl = await pg.createDatabase('anodyne_bench');
    const store = await openStore({ driver: 'postgres', url: dbUrl });
    await storeClusterRows(store, CLUSTERS, 'c');
    await store.close();
    const pgDir = join(dir, 'postgres');
    mkdirSync(pgDir);
    const pgStore = { ANODYNE_STORE_DRIVER: 'postgres', ANODYNE_STORE_URL: dbUrl };
    for (const n of [1, 2, 3]) rows.push(await measure(`PostgreSQL, ${n} replica${n > 1 ? 's' : ''}`, pgDir, n, pgStore));
    await removeProviderLeftovers(pgDir, tag, NETWORK);

    const single = rows[0];
    const cell = (r, k) => `${r[k].rps.toFixed(0)} | ${r[k].p99} | ${(r[k].rps / single[k].rps).toFixed(2)}`;
    return [
      '## Platform replicas',
      '',
      `\`anodyne server\` processes on one database behind a real haproxy (TCP, round robin, health checks), ${CLUSTERS}`,
      'cluster records stored (rows only), read with an admin token through the balancer: autocannon in a second',
      `process, ${connections} connections, one ${seconds} s run per cell. The first row is one replica on SQLite (views`,
      'kept until the store changes, docs/adr/0021); the others are 1, 2 and 3 replicas on one PostgreSQL, which read',
      'the store on every request because other replicas write it. The last column of each pair divides by the SQLite',
      'row. Everything (replicas, PostgreSQL, haproxy, autocannon) shares the same 2 cores: a replica added here adds no',
      'CPU, so these rows measure what replication costs, not what it would gain on machines of their own.',
      '',
      `| setup | list of ${CLUSTERS} req/s | p99 ms | ÷ SQLite | one cluster req/s | p99 ms | ÷ SQLite |`,
      '|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.label} | ${cell(r, 'list')} | ${cell(r, 'one')} |`),
      '',
    ].join('\n');
  } finally {
    await stopAll();
    await removeProviderLeftovers(join(dir, 'sqlite'), tag, NETWORK).catch(() => undefined);
    await removeProviderLeftovers(join(dir, 'postgres'), tag, NETWORK).catch(() => undefined);
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
