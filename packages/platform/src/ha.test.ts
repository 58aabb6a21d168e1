// Platform HA: three `anodyne server` replicas on a real PostgreSQL, behind a real haproxy (root).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger, skipUnless, systemClock } from '@anodyne/common';
import { LocalProvider } from '@anodyne/providers';
import { openStore } from '@anodyne/store';
import { startPostgres, type TestPostgres } from '@anodyne/store/testing';
import { SCOPES } from '@anodyne/identity';
import { removeStaleProviders, awaitQuietHost } from '@anodyne/providers/testing';
import {
  https,
  removeProviderLeftovers,
  segmentPoolBeside,
  startHaproxy,
  startServer,
  stopServer,
  type HttpResult,
  type ServerProcess,
} from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const BASE = 18_100 + (process.pid % 90);
const PORTS = [BASE, BASE + 100, BASE + 200];
const LB_PORT = BASE + 300;
const NETWORK = '10.198.14.0/24';
// Its clusters' segments from a pool of its own (the default pool is every platform's on this host).
const SEGMENT_POOL = segmentPoolBeside(NETWORK);
const GATEWAY = '10.198.14.1';

type Replica = ServerProcess;

interface ReplicasBody {
  self: string;
  leader: { holder: string; term: number; expires_at: string } | null;
  replicas: { id: string; url: string; leader: boolean }[];
}

describe('platform HA: three replicas on PostgreSQL behind haproxy', { skip: skipUnless(isRoot, 'needs root') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-ha-'));
  const tag = `ha${(process.pid % 1296).toString(36)}`;
  const lbUrl = `https://${GATEWAY}:${LB_PORT}`;
  let db: TestPostgres;
  let dbUrl = '';
  let haproxy: ChildProcess | undefined;
  let ca = '';
  let password = '';
  let token = '';
  const replicas: Replica[] = PORTS.map((port, i) => ({ name: `r${i}`, port, url: `https://${GATEWAY}:${port}`, child: undefined }));

  const env = (port: number) => ({
    ...process.env,
    ANODYNE_DATA_DIR: dir,
    ANODYNE_STORE_DRIVER: 'postgres',
    ANODYNE_STORE_URL: dbUrl,
    ANODYNE_PROVIDER_NETWORK: NETWORK,
    ANODYNE_PROVIDER_TAG: tag,
    ANODYNE_PROVIDER_SEGMENT_POOL: SEGMENT_POOL,
    ANODYNE_PROVIDER_SEGMENT_PREFIX: '27',
    ANODYNE_SERVER_PORT: String(port),
    ANODYNE_SERVER_PUBLIC_URL: lbUrl,
    // haproxy names each client in a PROXY header (its connections come from the gateway address).
    ANODYNE_SERVER_PROXY_PROTOCOL_FROM: GATEWAY,
    ANODYNE_REGISTRY_ENABLED: 'false',
    ANODYNE_DIRECTOR_HEALTH_INTERVAL_SECONDS: '2',
    ANODYNE_DIRECTOR_RESURRECT_AFTER_SECONDS: '5',
    ANODYNE_LOG_LEVEL: 'warn',
  });

  async function start(r: Replica): Promise<void> {
    const out = await startServer(r, env(r.port), dir);
    password ||= /password: (\S+)/.exec(out)?.[1] ?? '';
  }
  const kill9 = (r: Replica) => stopServer(r, 'SIGKILL');

  const call = (url: string, method: string, path: string, body?: unknown, bearer = token): Promise<HttpResult> =>
    https(url, ca, method, path, { ...(bearer ? { token: bearer } : {}), ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const lb = (method: string, path: string, body?: unknown) => call(lbUrl, method, path, body);
  const view = async (url: string) => {
    const r = await call(url, 'GET', '/v1/platform/replicas');
    assert.equal(r.status, 200, r.text);
    return r.body as ReplicasBody;
  };
  const passwordGrant = (url: string, username: string, pw: string) =>
    call(url, 'POST', '/oauth/token', { grant_type: 'password', username, password: pw }, '');
  const waitTask = async (id: number, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = (await lb('GET', `/v1/tasks/${id}`)).body as { state: string; error: { code: string } | null };
      if (['done', 'error', 'cancelled'].includes(t.state)) return t;
      if (Date.now() > deadline) throw new Error(`task ${id} still ${t.state}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  /** Waits (15 s at most) for a leader other than `was` whose lease holds; undefined if none came. */
  const newLeader = async (was: string, killedAt: number): Promise<ReplicasBody | undefined> => {
    for (;;) {
      const v = await view(lbUrl).catch(() => undefined);
      if (v?.leader && v.leader.holder !== was && Date.parse(v.leader.expires_at) > Date.now()) return v;
      if (Date.now() - killedAt > 15_000) return undefined;
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const leaderOf = (v: ReplicasBody) => replicas.find((r) => v.replicas.some((x) => x.id === v.leader?.holder && x.url === r.url));

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    await removeStaleProviders([NETWORK, SEGMENT_POOL]);
    db = await startPostgres();
    dbUrl = await db.createDatabase('anodyne_ha');
    // One after the other: the first makes the key file, the CA and the first admin; the others find them.
    for (const r of replicas) await start(r);
    ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    haproxy = await startHaproxy(dir, [{ bind: `${GATEWAY}:${LB_PORT}`, servers: replicas, sendProxy: true }], ca);
    const t = await passwordGrant(lbUrl, 'admin', password);
    assert.equal(t.status, 200, t.text);
    token = (t.body as { access_token: string }).access_token;
  });

  after(async () => {
    // What the replicas said, when one of them stopped on its own (its last lines, for the failure's log).
    for (const r of replicas) {
      const log = join(dir, `${r.name}.log`);
      const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
      if (r.child && r.child.exitCode !== null) console.log(`${r.name}:\n${text.split('\n').slice(-40).join('\n')}`);
    }
    for (const r of replicas) if (r.child && r.child.exitCode === null) await kill9(r);
    if (haproxy && haproxy.exitCode === null) {
      const exited = new Promise((res) => haproxy!.once('exit', res));
      haproxy.kill('SIGTERM');
      await exited;
    }
    await removeProviderLeftovers(dir, tag, NETWORK);
    await db?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every replica serves the whole API and knows the others; exactly one leads', async () => {
    const views = await Promise.all(replicas.map((r) => view(r.url)));
    const ids = views.map((v) => v.self);
    assert.equal(new Set(ids).size, 3, 'three replicas, three ids');
    for (const v of views) {
      assert.deepEqual(v.replicas.map((r) => r.id).sort(), [...ids].sort());
      assert.equal(v.replicas.filter((r) => r.leader).length, 1);
      assert.equal(v.leader?.holder, views[0]!.leader?.holder);
    }
    assert.equal(views[0]!.leader?.holder, ids[0], 'the first to start leads');
    // A token issued by one replica is good on every other (one issuer: the load balancer's URL).
    for (const r of replicas) assert.equal((await call(r.url, 'GET', '/v1/clusters')).status, 200);
  });

  it('reads through any replica see writes made through another; an event stream on one follows a task run by another', async () => {
    const made = await call(replicas[0]!.url, 'POST', '/v1/users', {
      username: 'ha-user',
      password: 'ha-user-password',
      groups: [SCOPES.manage],
    });
    assert.equal(made.status, 201, made.text);
    for (const r of replicas.slice(1)) {
      const u = await call(r.url, 'GET', '/v1/users');
      assert.ok(
        (u.body as { username: string }[]).some((x) => x.username === 'ha-user'),
        `${r.name} sees the new user`,
      );
    }
    const started = await call(replicas[0]!.url, 'POST', '/v1/backups', { platform: true });
    assert.equal(started.status, 202, started.text);
    const taskId = (started.body as { task: { id: number } }).task.id;
    const stream = await https(replicas[2]!.url, ca, 'GET', `/v1/tasks/${taskId}/events`, {
      token,
      headers: { accept: 'text/event-stream' },
    });
    assert.equal(stream.status, 200);
    assert.match(stream.text, /event: task_event\ndata: \{[^\n]*"stage":"Copying the database"/);
    assert.match(stream.text, /event: task_done\ndata: \{[^\n]*"state":"done"/);
  });

  it('50 tasks asked round-robin through the load balancer: each runs exactly once, on every replica', async (t) => {
    const ids: number[] = [];
    for (let i = 0; i < 50; i += 5) {
      const batch = await Promise.all(Array.from({ length: 5 }, () => lb('POST', '/v1/backups', { platform: true })));
      for (const b of batch) {
        assert.equal(b.status, 202, b.text);
        ids.push((b.body as { task: { id: number } }).task.id);
      }
    }
    for (const id of ids) assert.equal((await waitTask(id)).state, 'done');
    // Executions counted from what each run leaves: its steps in the task's log, and its artifact.
    for (const id of ids) {
      const events = (await lb('GET', `/v1/tasks/${id}/events`)).body as { stage: string; state: string }[];
      assert.equal(events.filter((e) => e.stage === 'Copying the database' && e.state === 'started').length, 1, `task ${id} ran once`);
    }
    const store = await openStore({ driver: 'postgres', url: dbUrl }, { migrate: false });
    try {
      const rows = await store.db.selectFrom('tasks').select('runner').where('id', 'in', ids).execute();
      const runners = new Map<string, number>();
      for (const r of rows) runners.set(r.runner ?? 'none', (runners.get(r.runner ?? 'none') ?? 0) + 1);
      t.diagnostic(`tasks per replica: ${[...runners.values()].join(', ')}`);
      assert.equal(runners.size, 3, `every replica ran some: ${JSON.stringify([...runners])}`);
      const backups = await store.db
        .selectFrom('backups')
        .select('id')
        .where('kind', '=', 'platform')
        .where('state', '=', 'done')
        .execute();
      assert.equal(backups.length, 51, 'one backup per task (and the one before)');
    } finally {
      await store.close();
    }
  });

  it('a lockout after 5 wrong passwords holds when the attempts are spread over the replicas', async () => {
    const made = await lb('POST', '/v1/users', { username: 'ha-locked', password: 'ha-locked-password', groups: [SCOPES.manage] });
    assert.equal(made.status, 201, made.text);
    for (let i = 0; i < 5; i++) {
      const r = await passwordGrant(replicas[i % 3]!.url, 'ha-locked', 'wrong-password');
      assert.equal(r.status, 401, r.text);
    }
    for (const r of replicas) {
      const locked = await passwordGrant(r.url, 'ha-locked', 'ha-locked-password');
      assert.equal((locked.body as { code: string }).code, 'ANODYNE_E_ACCOUNT_LOCKED', `${r.name}: ${locked.text}`);
    }
  });

  it('kill -9 of the leader: another leads within 15 s, in a new term; its running task ends with a code; the platform serves on', async (t) => {
    const before = await view(lbUrl);
    const leader = leaderOf(before)!;
    assert.ok(leader, 'the leader is one of ours');
    // A task on the leader, killed while it runs (a platform backup is short: the leader is killed as soon as it is asked).
    const started = await call(leader.url, 'POST', '/v1/backups', { platform: true });
    assert.equal(started.status, 202, started.text);
    const killedAt = Date.now();
    await kill9(leader);
    const taskId = (started.body as { task: { id: number } }).task.id;
    const after = await newLeader(before.leader!.holder, killedAt);
    const took = Date.now() - killedAt;
    t.diagnostic(`a new leader ${took} ms after kill -9 of the old one`);
    assert.ok(after, `a new leader within 15 s (${took} ms)`);
    assert.equal(after.leader!.term, before.leader!.term + 1);
    assert.equal(after.replicas.length, 2, 'the killed replica is no longer listed');
    // The task ended: done if it finished before the kill, otherwise ended with the code that says why.
    const ended = await waitTask(taskId, 30_000);
    if (ended.state !== 'done') assert.equal(ended.error?.code, 'ANODYNE_E_REPLICA_LOST');
    t.diagnostic(`the interrupted task: ${ended.state}${ended.error ? ` ${ended.error.code}` : ''}`);
    // Asked again through the load balancer, it runs on a live replica.
    const again = await lb('POST', '/v1/backups', { platform: true });
    assert.equal(again.status, 202, again.text);
    assert.equal((await waitTask((again.body as { task: { id: number } }).task.id)).state, 'done');
    // The killed replica comes back and follows.
    await start(leader);
    const back = await view(leader.url);
    assert.equal(back.replicas.length, 3);
    assert.notEqual(back.leader?.holder, back.self, 'it does not take the lead back');
  });

  it('kill -9 of the leader during a cluster create: a new leader within 15 s, the create resumed by a live replica, the cluster ready; resurrection works after; the delete leaves nothing', async (t) => {
    const before = await view(lbUrl);
    const leader = leaderOf(before)!;
    const created = await call(leader.url, 'POST', '/v1/clusters', {
      name: 'ha-c1',
      plan_name: 'small',
      parameters: { kubernetes_worker_instances: 1 },
    });
    assert.equal(created.status, 202, created.text);
    const taskId = (created.body as { last_task_id: number }).last_task_id;
    type Ev = { stage: string; state: string; message?: string };
    const events = async () => (await lb('GET', `/v1/tasks/${taskId}/events`)).body as Ev[];
    for (let i = 0; i < 1200 && !(await events()).some((e) => /^Updating instance/.test(e.stage)); i++)
      await new Promise((r) => setTimeout(r, 50));
    const killedAt = Date.now();
    await kill9(leader);
    const after = await newLeader(before.leader!.holder, killedAt);
    t.diagnostic(`a new leader ${Date.now() - killedAt} ms after kill -9 of the old one, during the create`);
    assert.ok(after, 'a new leader within 15 s');
    const done = await waitTask(taskId, 300_000);
    assert.equal(done.state, 'done', JSON.stringify(done));
    const resumed = (await events()).filter((e) => e.stage === 'Taking over' && /^resumed by/.test(e.message ?? ''));
    assert.equal(resumed.length, 1, 'resumed once');
    const by = /^resumed by replica (\S+)/.exec(resumed[0]!.message!)![1];
    assert.ok(
      after.replicas.some((r) => r.id === by),
      `resumed by a live replica (${by})`,
    );
    t.diagnostic(`the create: ${Date.now() - killedAt} ms from the kill to done, resumed by ${by}`);
    type Vm = { instance: string; vm_id: string | null; health: string };
    const vms = async () => (await lb('GET', '/v1/clusters/ha-c1/vms')).body as Vm[];
    const healthy = async (n: number) => {
      for (let i = 0; i < 300; i++) {
        const v = await vms();
        if (v.length === n && v.every((x) => x.health === 'running')) return v;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.fail(`not all running: ${JSON.stringify(await vms())}`);
    };
    const running = await healthy(2);
    const cluster = (await lb('GET', '/v1/clusters/ha-c1')).body as { last_action_state: string };
    assert.equal(cluster.last_action_state, 'succeeded');

    // The worker's VM is deleted behind the platform's back: the new leader's resurrector makes it again.
    const provider = new LocalProvider({
      dataDir: join(dir, 'provider'),
      tag,
      network: NETWORK,
      agentCommand: ['true'],
      logger: silentLogger(),
      clock: systemClock,
    });
    const lost = running.find((v) => v.instance === 'worker/0')!;
    await provider.deleteVm(lost.vm_id!);
    const lostAt = Date.now();
    let back: Vm | undefined;
    for (let i = 0; i < 360 && !back; i++) {
      back = (await vms()).find((v) => v.instance === 'worker/0' && v.vm_id !== null && v.vm_id !== lost.vm_id && v.health === 'running');
      if (!back) await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(back, `worker/0 resurrected: ${JSON.stringify(await vms())}`);
    t.diagnostic(`worker/0 resurrected by the new leader in ${Date.now() - lostAt} ms`);

    const del = await lb('DELETE', '/v1/clusters/ha-c1');
    assert.equal(del.status, 202, del.text);
    assert.equal((await waitTask((del.body as { last_task_id: number }).last_task_id, 120_000)).state, 'done');
    assert.equal((await lb('GET', '/v1/clusters/ha-c1')).status, 404);
    assert.deepEqual(await provider.listVms({ deployment: 'cluster-ha-c1' }), [], 'no VM of it is left');
    await start(leader);
  });

  it('PostgreSQL stopped under load: every replica answers 503 with a code, then recovers by itself', async (t) => {
    // Clients keep calling through the load balancer all along: every answer is a 200 or a 503 with the code.
    const seen = new Map<string, number>();
    let loading = true;
    const load = (async () => {
      while (loading) {
        const a = await lb('GET', '/v1/clusters').catch((err: Error) => ({ status: 0, body: { code: err.message } }) as HttpResult);
        const key = a.status === 200 ? '200' : `${a.status} ${(a.body as { code?: string } | null)?.code ?? ''}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 500));
      await pgDown();
    } finally {
      loading = false;
      await load;
    }
    t.diagnostic(`answers through the load balancer: ${[...seen].map(([k, n]) => `${k}: ${n}`).join(', ')}`);
    assert.deepEqual([...seen.keys()].sort(), ['200', '503 ANODYNE_E_STORE_UNAVAILABLE']);
    for (const r of replicas) assert.equal(r.child!.exitCode, null, `${r.name} still runs`);
    const leaders = (await view(lbUrl)).replicas.filter((r) => r.leader);
    assert.equal(leaders.length, 1);
  });

  async function pgDown(): Promise<void> {
    await db.pause();
    try {
      for (const r of replicas) {
        const h = await call(r.url, 'GET', '/healthz');
        assert.equal(h.status, 503, `${r.name}: ${h.text}`);
        assert.equal((h.body as { code: string }).code, 'ANODYNE_E_STORE_UNAVAILABLE');
        const c = await call(r.url, 'GET', '/v1/clusters');
        assert.equal(c.status, 503, `${r.name}: ${c.text}`);
      }
    } finally {
      await db.resume();
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const answers = await Promise.all(replicas.map((r) => call(r.url, 'GET', '/v1/platform/replicas').catch(() => undefined)));
      const ok = answers.every((a) => a?.status === 200 && (a.body as ReplicasBody).replicas.length === 3);
      if (ok) break;
      if (Date.now() > deadline) assert.fail(`not recovered: ${answers.map((a) => `${a?.status} ${a?.text.slice(0, 200)}`).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    await new Promise((r) => setTimeout(r, 500));
  }

  // Last: it spends this address's token requests for the minute.
  it("the token requests' rate limit per client holds across the replicas, and sees each client behind the balancer (PROXY protocol)", async () => {
    const grant = (url: string, from?: string) =>
      https(url, ca, 'POST', '/oauth/token', {
        body: JSON.stringify({ grant_type: 'password', username: 'nobody-at-all', password: 'wrong-password' }),
        ...(from ? { localAddress: from } : {}),
      });
    const count = (answers: number[]) => {
      const limited = answers.filter((s) => s === 429).length;
      assert.ok(limited >= 1, `some were refused: ${answers.join(' ')}`);
      assert.ok(answers.length - limited <= 60, `at most 60 answered: ${answers.join(' ')}`);
    };
    // One client through the balancer (haproxy connects to the replicas from the gateway; its PROXY header names 127.0.0.2).
    const viaBalancer: number[] = [];
    for (let i = 0; i < 61; i++) viaBalancer.push((await grant(lbUrl, '127.0.0.2')).status);
    count(viaBalancer);
    // Another client through the same balancer has a count of its own.
    assert.equal((await grant(lbUrl, '127.0.0.3')).status, 401, 'another client is not limited');
    // Direct requests (from the gateway's address, with no header) spread over the replicas count together.
    const direct: number[] = [];
    for (let i = 0; i < 61; i++) direct.push((await grant(replicas[i % 3]!.url)).status);
    count(direct);
    const r = await passwordGrant(replicas[1]!.url, 'admin', password);
    assert.equal(r.status, 429);
    assert.equal((r.body as { code: string }).code, 'ANODYNE_E_RATE_LIMITED');
  });
});
