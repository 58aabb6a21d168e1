// The platform's HTTPS API end to end: discovery, OpenAPI, authorisation matrix, clusters, TLS only, service broker (root).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, importJWK, generateKeyPair, type JWK } from 'jose';
import { Validator } from '@seriousme/openapi-schema-validator';
import { ManualClock, exec, silentLogger, skipUnless } from '@anodyne/common';
import { Identity, SCOPES } from '@anodyne/identity';
import { locateRelease } from '@anodyne/release';
import { startTestPlatform, https, type TestPlatform, type HttpResult, awaitQuietHost } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const PORT = 19_100 + (process.pid % 90);

describe('platform API over HTTPS', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let call: (
    method: string,
    path: string,
    options?: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> },
  ) => Promise<HttpResult>;
  const tokens: Record<string, string> = {};
  /** The CLI client's password grant, as `anodyne login` sends it. */
  const login = (username: string, password: string) =>
    call('POST', '/oauth/token', {
      raw: new URLSearchParams({ grant_type: 'password', username, password, client_id: 'anodyne_cli' }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    tp = await startTestPlatform('api', '10.198.9.0/24', PORT);
    const p = tp.platform;
    call = (method, path, o = {}) =>
      https(p.url, p.caPem, method, path, {
        ...(o.token ? { token: o.token } : {}),
        ...(o.headers ? { headers: o.headers } : {}),
        ...(o.raw !== undefined ? { body: o.raw } : o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
      });
    await p.identity.createUser({ username: 'alice', password: 'alice-password', groups: [SCOPES.manage] });
    await p.identity.createUser({ username: 'bob', password: 'bob-password', groups: [SCOPES.manage] });
    await p.identity.createUser({ username: 'reader', password: 'reader-password', groups: [SCOPES.adminRead] });
    await p.identity.createUser({ username: 'nobody', password: 'nobody-password', groups: [] });
    await p.identity.createUser({ username: 'root', password: 'root-password', groups: [SCOPES.admin] });
    for (const u of ['alice', 'bob', 'reader', 'nobody', 'root']) {
      const r = await login(u, `${u}-password`);
      assert.equal(r.status, 200, r.text);
      tokens[u] = (r.body as { access_token: string }).access_token;
    }
  });
  after(async () => {
    await tp.stop();
  });

  it('serves identity discovery, JWKS, userinfo, health and metrics', async () => {
    const d = (await call('GET', '/.well-known/openid-configuration')).body as Record<string, unknown>;
    assert.equal(d['issuer'], tp.platform.url);
    // Discovery advertises only endpoints that answer: each one is served here.
    for (const key of Object.keys(d).filter((k) => k.endsWith('_endpoint') || k === 'jwks_uri')) {
      const path = new URL(String(d[key])).pathname;
      const r = await call(
        key === 'token_endpoint' ? 'POST' : 'GET',
        path,
        key === 'userinfo_endpoint' ? { token: tokens['alice'] } : undefined,
      );
      assert.notEqual(r.status, 404, `${key} ${path} is served`);
    }
    assert.equal(d['authorization_endpoint'], `${tp.platform.url}/oauth/authorize`);
    assert.deepEqual(d['code_challenge_methods_supported'], ['S256'], 'PKCE with S256 only');
    const keys = (await call('GET', '/token_keys')).body as { keys: JWK[] };
    assert.ok(keys.keys.length >= 1 && keys.keys.every((k) => k.kid && !('d' in k)));
    const me = (await call('GET', '/userinfo', { token: tokens['alice'] })).body as { user_name: string; groups: string[] };
    assert.equal(me.user_name, 'alice');
    assert.deepEqual((await call('GET', '/healthz')).body, { status: 'ok' });
    const m = await call('GET', '/metrics');
    assert.match(m.text, /anodyne_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+/);
  });

  it('one replica alone leads: the replicas view shows it, alive and leading, in term 1; owners may not see it', async () => {
    const r = await call('GET', '/v1/platform/replicas', { token: tokens['root'] });
    assert.equal(r.status, 200, r.text);
    const v = r.body as {
      self: string;
      leader: { holder: string; term: number; expires_at: string } | null;
      replicas: { id: string; pid: number; url: string; leader: boolean }[];
    };
    assert.equal(v.self, tp.platform.replicas.id);
    assert.deepEqual(
      v.replicas.map((x) => [x.id, x.pid, x.url, x.leader]),
      [[v.self, process.pid, tp.platform.url, true]],
    );
    assert.equal(v.leader?.holder, v.self);
    assert.equal(v.leader?.term, 1);
    assert.ok(Date.parse(v.leader.expires_at) > Date.now(), 'the lease is current');
    assert.equal(tp.platform.replicas.isLeader(), true);
    assert.equal((await call('GET', '/v1/platform/replicas', { token: tokens['alice'] })).status, 403);
  });

  it('the OpenAPI document validates and lists every route of the server', async () => {
    const doc = (await call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    const result = await new Validator().validate(doc);
    assert.equal(result.valid, true, JSON.stringify(result.errors ?? null).slice(0, 2000));
    const routes = tp.platform.app.anodyneRoutes;
    assert.ok(routes.length >= 25, `${routes.length} routes`);
    for (const r of routes) {
      const path = r.url.replace(/:([A-Za-z_]+)/g, '{$1}');
      assert.ok(doc.paths[path]?.[r.method.toLowerCase()], `${r.method} ${path} is in the OpenAPI document`);
    }
  });

  it('authorisation matrix: every protected route refuses missing, expired, forged, wrong-audience and wrong-scope tokens', async () => {
    const p = tp.platform;
    // An expired token, signed by the platform's real key (an Identity whose clock is an hour behind).
    const past = new Identity({
      store: p.store,
      creds: p.creds,
      clock: new ManualClock(Date.now() - 3_600_000),
      logger: silentLogger(),
      issuer: p.url,
    });
    await past.init();
    const expired = (await past.token({ grant_type: 'password', username: 'root', password: 'root-password' })).access_token;
    // Signed by another key (same kid), and signed by the real key for another audience.
    const keys = (await p.creds.get<'json'>('/platform/identity/signing-keys', { actor: 'test' })).value as unknown as {
      keys: { kid: string; privateJwk: JWK }[];
    };
    const real = keys.keys[keys.keys.length - 1]!;
    const now = Math.floor(Date.now() / 1000);
    const claims = { scope: [SCOPES.admin], user_name: 'root', client_id: 'anodyne_cli', token_use: 'access' };
    const forged = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: real.kid })
      .setIssuer(p.url)
      .setAudience('anodyne')
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign((await generateKeyPair('ES256')).privateKey);
    const wrongAud = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: real.kid })
      .setIssuer(p.url)
      .setAudience('someone-else')
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(await importJWK(real.privateJwk, 'ES256'));
    const protectedRoutes = p.app.anodyneRoutes.filter((r) => r.scopes !== undefined);
    assert.ok(protectedRoutes.length >= 20);
    const concrete = (url: string) =>
      url.replace(':name', 'no-such-cluster').replace(':id', '999999').replace(':username', 'nobody').replace(':owner', 'alice');
    for (const r of protectedRoutes) {
      const path = concrete(r.url);
      const cases: [string, string | undefined, number, string][] = [
        ['no token', undefined, 401, 'ANODYNE_E_TOKEN_MISSING'],
        ['expired', expired, 401, 'ANODYNE_E_TOKEN_EXPIRED'],
        ['another key', forged, 401, 'ANODYNE_E_TOKEN_INVALID'],
        ['wrong audience', wrongAud, 401, 'ANODYNE_E_TOKEN_INVALID'],
      ];
      if (r.scopes!.length > 0) cases.push(['no scope', tokens['nobody'], 403, 'ANODYNE_E_SCOPE_REQUIRED']);
      if (r.scopes!.length > 0 && !r.scopes!.includes(SCOPES.adminRead))
        cases.push(['read-only scope', tokens['reader'], 403, 'ANODYNE_E_SCOPE_REQUIRED']);
      if (r.scopes!.length > 0 && !r.scopes!.includes(SCOPES.manage))
        cases.push(['manage scope on an admin route', tokens['alice'], 403, 'ANODYNE_E_SCOPE_REQUIRED']);
      for (const [label, token, status, code] of cases) {
        const res = await call(r.method, path, {
          ...(token ? { token } : {}),
          ...(['POST', 'PUT', 'PATCH'].includes(r.method) ? { body: {} } : {}),
        });
        assert.equal(res.status, status, `${r.method} ${r.url} with ${label}: ${res.text}`);
        assert.equal((res.body as { code: string }).code, code, `${r.method} ${r.url} with ${label}`);
      }
    }
  });

  it('admins rotate the signing key (older tokens stay valid) and reset passwords', async () => {
    const kidOf = (jwt: string) => (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
    const rotated = await call('POST', '/v1/token-keys', { token: tokens['root'] });
    assert.equal(rotated.status, 200, rotated.text);
    const kid = (rotated.body as { kid: string }).kid;
    assert.notEqual(kidOf(tokens['alice']!), kid);
    assert.ok(
      ((await call('GET', '/token_keys')).body as { keys: { kid: string }[] }).keys.some((k) => k.kid === kid),
      'the new key is published',
    );
    assert.equal((await call('GET', '/v1/clusters', { token: tokens['alice'] })).status, 200, 'a token of the previous key still works');
    const fresh = await login('bob', 'bob-password');
    assert.equal(kidOf((fresh.body as { access_token: string }).access_token), kid, 'new tokens use the new key');
    assert.equal((await call('PUT', '/v1/users/bob', { token: tokens['root'], body: { password: 'bob-new-password' } })).status, 200);
    assert.equal((await login('bob', 'bob-password')).status, 401, 'the old password stops working');
    assert.equal((await login('bob', 'bob-new-password')).status, 200);
    assert.equal((await call('PUT', '/v1/users/bob', { token: tokens['root'], body: {} })).status, 400, 'an empty change is refused');
    assert.equal((await call('PUT', '/v1/users/bob', { token: tokens['root'], body: { password: 'bob-password' } })).status, 200);
  });

  it('bad input gets 4xx with clear codes before any task starts', async () => {
    const before = (await tp.platform.director.tasks.list()).length;
    const post = (body: unknown, token = tokens['bob']!) =>
      call('POST', '/v1/clusters', typeof body === 'string' ? { token, raw: body } : { token, body });
    const cases: [string, Promise<HttpResult>, number, string][] = [
      ['malformed JSON', post('{"name": "x", '), 400, 'ANODYNE_E_INVALID_INPUT'],
      ['unknown plan', post({ name: 'ok-name', plan_name: 'gigantic' }), 400, 'ANODYNE_E_PLAN_NOT_FOUND'],
      ['name not DNS-1123', post({ name: 'Bad_Name', plan_name: 'small' }), 400, 'ANODYNE_E_INVALID_INPUT'],
      [
        'too many workers for the plan',
        post({ name: 'big', plan_name: 'small', parameters: { kubernetes_worker_instances: 9 } }),
        400,
        'ANODYNE_E_INVALID_INPUT',
      ],
      ['unknown field', post({ name: 'x1', plan_name: 'small', colour: 'red' }), 400, 'ANODYNE_E_INVALID_INPUT'],
      ['body too large', post({ name: 'x2', plan_name: 'small', pad: 'x'.repeat(300_000) }), 413, 'ANODYNE_E_BODY_TOO_LARGE'],
      ['unknown route', call('GET', '/v1/nothing', { token: tokens['bob'] }), 404, 'ANODYNE_E_ROUTE_NOT_FOUND'],
      ['bad task id', call('GET', '/v1/tasks/abc', { token: tokens['bob'] }), 400, 'ANODYNE_E_INVALID_INPUT'],
      [
        'unknown network profile',
        post({ name: 'np', plan_name: 'small', network_profile_name: 'nope' }),
        400,
        'ANODYNE_E_NETWORK_PROFILE_NOT_FOUND',
      ],
      [
        'bad profile CIDR',
        call('POST', '/v1/network-profiles', {
          token: tokens['root'],
          body: { name: 'bad', pod_cidr: '10.0.0.0/30', service_cidr: '10.1.0.0/16' },
        }),
        400,
        'ANODYNE_E_INVALID_INPUT',
      ],
      [
        "a profile segment pool outside the provider's",
        call('POST', '/v1/network-profiles', {
          token: tokens['root'],
          body: { name: 'bad', pod_cidr: '10.210.0.0/16', service_cidr: '10.100.0.0/16', segment_pool: '10.200.0.0/24' },
        }),
        400,
        'ANODYNE_E_INVALID_INPUT',
      ],
      [
        'a method the path does not take',
        call('PUT', '/v1/clusters', { token: tokens['bob'], body: {} }),
        405,
        'ANODYNE_E_METHOD_NOT_ALLOWED',
      ],
      ['a path segment too long', call('GET', `/v1/clusters/${'a'.repeat(200)}`, { token: tokens['bob'] }), 414, 'ANODYNE_E_URI_TOO_LONG'],
      [
        'a body of another content type',
        call('POST', '/v1/clusters', { token: tokens['bob'], raw: '<cluster/>', headers: { 'content-type': 'application/xml' } }),
        415,
        'ANODYNE_E_UNSUPPORTED_MEDIA_TYPE',
      ],
    ];
    for (const [label, pending, status, code] of cases) {
      const r = await pending;
      assert.equal(r.status, status, `${label}: ${r.text}`);
      assert.equal((r.body as { code: string }).code, code, label);
      assert.ok((r.body as { message: string }).message.length > 0);
    }
    const wrongMethod = await call('DELETE', '/v1/plans', { token: tokens['bob'] });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers['allow'], 'GET, HEAD', 'a 405 says which methods the path takes');
    // Over quota: bob may have no clusters at all.
    assert.equal((await call('PUT', '/v1/quotas/bob', { token: tokens['root'], body: { max_clusters: 0, max_workers: 10 } })).status, 200);
    const over = await post({ name: 'bobs', plan_name: 'small' });
    assert.equal(over.status, 403, over.text);
    assert.equal((over.body as { code: string }).code, 'ANODYNE_E_QUOTA_EXCEEDED');
    assert.equal((await tp.platform.director.tasks.list()).length, before, 'no task started');
    assert.deepEqual((await call('GET', '/v1/clusters', { token: tokens['root'] })).body, []);
  });

  it('a manage user creates a cluster, sees only their own, binds, and kubectl works with Anodyne tokens', async (t) => {
    // An admin offers a network profile with non-default ranges; alice's cluster uses it.
    const profile = await call('POST', '/v1/network-profiles', {
      token: tokens['root'],
      body: {
        name: 'narrow',
        description: 'test ranges',
        pod_cidr: '10.210.0.0/16',
        service_cidr: '10.100.0.0/16',
        default_deny_namespaces: true,
        // The fourth /27 of the suite's segment pool (segmentPoolBeside: 10.199.9.0/24).
        segment_pool: '10.199.9.96/27',
      },
    });
    assert.equal(profile.status, 201, profile.text);
    assert.equal((profile.body as { segment_pool: string }).segment_pool, '10.199.9.96/27');
    const profiles = (await call('GET', '/v1/network-profiles', { token: tokens['alice'] })).body as {
      default_deny_namespaces: boolean | null;
    }[];
    assert.equal(profiles.length, 1);
    assert.equal(profiles[0]!.default_deny_namespaces, true, "the profile's NetworkPolicy default, as given");
    const started = performance.now();
    const created = await call('POST', '/v1/clusters', {
      token: tokens['alice'],
      body: { name: 'team-a', plan_name: 'small', network_profile_name: 'narrow', parameters: { kubernetes_worker_instances: 1 } },
    });
    assert.equal(created.status, 202, created.text);
    const c = created.body as {
      name: string;
      uuid: string;
      last_action: string;
      last_action_state: string;
      last_task_id: number;
      plan_name: string;
    };
    assert.equal(c.last_action, 'CREATE');
    assert.equal(c.last_action_state, 'in progress');
    assert.equal(c.plan_name, 'small');
    // Duplicate names are refused while the first is being built.
    const dup = await call('POST', '/v1/clusters', { token: tokens['root'], body: { name: 'team-a', plan_name: 'small' } });
    assert.equal(dup.status, 409);
    assert.equal((dup.body as { code: string }).code, 'ANODYNE_E_CLUSTER_EXISTS');
    // Another manage user neither lists nor reads it; admin.read sees it but may not change it.
    assert.deepEqual((await call('GET', '/v1/clusters', { token: tokens['bob'] })).body, []);
    const hidden = await call('GET', '/v1/clusters/team-a', { token: tokens['bob'] });
    assert.equal(hidden.status, 404);
    assert.equal((hidden.body as { code: string }).code, 'ANODYNE_E_CLUSTER_NOT_FOUND');
    assert.equal((await call('DELETE', '/v1/clusters/team-a', { token: tokens['bob'] })).status, 404);
    assert.equal(((await call('GET', '/v1/clusters', { token: tokens['reader'] })).body as unknown[]).length, 1);
    assert.equal((await call('GET', `/v1/tasks/${c.last_task_id}`, { token: tokens['bob'] })).status, 404);
    // The task's event log, live (SSE) until it ends.
    const sse = await call('GET', `/v1/tasks/${c.last_task_id}/events`, {
      token: tokens['alice'],
      headers: { accept: 'text/event-stream' },
    });
    assert.equal(sse.headers['content-type'], 'text/event-stream');
    assert.match(sse.text, /event: task_event\n/);
    assert.match(sse.text, /event: task_done\ndata: \{"id":\d+,"type":"deploy".*"state":"done"/);
    const ready = (await call('GET', '/v1/clusters/team-a', { token: tokens['alice'] })).body as {
      last_action_state: string;
      kubernetes_master_ips: string[];
      parameters: { kubernetes_master_port: number };
    };
    assert.equal(ready.last_action_state, 'succeeded');
    assert.equal(ready.kubernetes_master_ips.length, 1);
    // Its segment was cut from the profile's share of the pool: its load balancer and VMs live there.
    for (const ip of [...ready.kubernetes_master_ips, ...(await tp.platform.director.instances('cluster-team-a')).map((r) => r.ip!)])
      assert.ok(Number(ip.split('.')[3]) >= 96 && Number(ip.split('.')[3]) < 128 && ip.startsWith('10.199.9.'), `${ip} in 10.199.9.96/27`);
    t.diagnostic(`cluster created through the API in ${(performance.now() - started).toFixed(0)} ms`);
    // The profile's NetworkPolicy default reached the masters' add-on job (the small plan has none of its own).
    const addons = (await tp.platform.director.manifest('cluster-team-a')).instance_groups
      .find((g) => g.name === 'master')!
      .jobs.find((j) => j.name === 'cluster-addons')!;
    assert.equal(addons.properties?.['default_deny_namespaces'], true);
    // The view counts its VMs by the health monitor's last finding (a pass every 2 s here): all running soon.
    type Health = Record<'running' | 'failing' | 'unresponsive' | 'missing' | 'stopped' | 'pending', number>;
    const instances = (await tp.platform.director.instances('cluster-team-a')).length;
    let health: Health | undefined;
    for (let i = 0; i < 60 && health?.running !== instances; i++) {
      health = ((await call('GET', '/v1/clusters/team-a', { token: tokens['alice'] })).body as { health: Health }).health;
      if (health.running !== instances) await new Promise((r) => setTimeout(r, 500));
    }
    assert.deepEqual(health, { running: instances, failing: 0, unresponsive: 0, missing: 0, stopped: 0, pending: 0 });
    // Other owner: every cluster route a manage user may call answers bob 404 on alice's cluster, and so does every task route on its task.
    const manageRoutes = tp.platform.app.anodyneRoutes.filter(
      (r) => r.scopes?.includes(SCOPES.manage) && (r.url.includes(':name') || r.url.includes(':id')),
    );
    assert.ok(manageRoutes.length >= 8, `${manageRoutes.length} owner-scoped routes`);
    // Backup routes take a backup's id: one of alice's cluster.
    const taken = (await call('POST', '/v1/backups', { token: tokens['alice'], body: { cluster: 'team-a' } })).body as {
      backup: { id: string };
      task: { id: number };
    };
    assert.equal((await tp.platform.director.wait(taken.task.id)).state, 'done');
    for (const r of manageRoutes) {
      const id = r.url.startsWith('/v1/backups/') ? taken.backup.id : String(c.last_task_id);
      const path = r.url.replace(':name', 'team-a').replace(':id', id);
      const body =
        r.method === 'PATCH'
          ? { kubernetes_worker_instances: 1 }
          : r.method === 'PUT' && r.url.startsWith('/v1/tasks')
            ? { state: 'cancelled' }
            : r.method === 'PUT' && r.url.endsWith('/backup-schedule')
              ? { every_minutes: 60, keep_last: 1 }
              : r.method === 'PUT' && r.url.endsWith('/image-policy')
                ? { registry_only: false }
                : ['POST', 'PUT'].includes(r.method)
                  ? {}
                  : undefined;
      const res = await call(r.method, path, { token: tokens['bob'], ...(body ? { body } : {}) });
      assert.equal(res.status, 404, `other owner: ${r.method} ${path}: ${res.text}`);
      assert.match((res.body as { code: string }).code, /^ANODYNE_E_(CLUSTER|TASK|BACKUP)_NOT_FOUND$/, `${r.method} ${path}`);
    }
    assert.equal(
      ((await call('GET', '/v1/tasks', { token: tokens['bob'] })).body as unknown[]).length,
      0,
      "bob lists none of alice's tasks",
    );
    assert.equal((await call('GET', '/v1/clusters/team-a', { token: tokens['alice'] })).status, 200, 'alice still has her cluster');
    for (const verb of ['POST /v1/clusters/team-a/binds', 'DELETE /v1/clusters/team-a', 'PATCH /v1/clusters/team-a']) {
      const [m, path] = verb.split(' ') as [string, string];
      const r = await call(m, path, { token: tokens['reader'], ...(m === 'PATCH' ? { body: { kubernetes_worker_instances: 2 } } : {}) });
      assert.equal(r.status, 403, `admin.read: ${verb}`);
    }
    assert.equal(
      (await call('GET', '/v1/clusters/team-a/kubeconfig', { token: tokens['reader'] })).status,
      403,
      'admin.read gets no credentials',
    );

    // alice logs in with the CLI (from a clean home), binds with get-credentials, and kubectl uses `anodyne get-token`.
    const home = join(tp.dir, 'home-alice');
    mkdirSync(home, { recursive: true });
    const env = { ...process.env, HOME: home, KUBECONFIG: join(home, '.kube', 'config') };
    const cli = (...args: string[]) => exec([join(REPO, 'bin', 'anodyne'), ...args], { env, timeoutMs: 60_000 });
    await cli('login', '-a', tp.platform.url, '-u', 'alice', '-p', 'alice-password', '--ca-cert', tp.platform.caFile);
    assert.match((await cli('get-credentials', 'team-a')).stdout, /context team-a selected/);
    const kubectl = locateRelease().bin('kubectl');
    let nodes = '';
    for (let i = 0; i < 40 && !/worker-0\s+Ready/.test(nodes); i++) {
      nodes = await exec([kubectl, 'get', 'nodes', '--no-headers'], { env, timeoutMs: 30_000 }).then(
        (r) => r.stdout,
        (e: Error) => e.message,
      );
      if (!/worker-0\s+Ready/.test(nodes)) await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(nodes, /worker-0\s+Ready/);
    const whoami = await exec([kubectl, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'], { env, timeoutMs: 30_000 });
    assert.equal(whoami.stdout, 'anodyne:alice', 'the API server validated an Anodyne token');
    // What the cluster's API server refuses: a forged bearer, a refresh token (same issuer and audience),
    // and the token of a user holding no cluster scope; bob's valid token authenticates but has no binding.
    const refresh = await login('alice', 'alice-password');
    const refreshToken = (refresh.body as { refresh_token: string }).refresh_token;
    assert.ok(refreshToken, 'the CLI client gets a refresh token');
    const asBearer = (token: string) =>
      exec([kubectl, 'get', 'nodes', `--token=${token}`, '--kubeconfig', join(home, '.kube', 'config')], {
        env,
        okCodes: [0, 1],
        timeoutMs: 30_000,
      });
    for (const [label, token, expected] of [
      ['forged', `${tokens['bob']}x`, /Unauthorized/],
      ['refresh token', refreshToken, /Unauthorized/],
      ['no cluster scope', tokens['nobody']!, /Unauthorized/],
      ['unbound user', tokens['bob']!, /Forbidden/],
    ] as const) {
      const r = await asBearer(token);
      assert.equal(r.code, 1, `${label} is refused`);
      assert.match(r.stderr, expected, `${label}: ${r.stderr}`);
    }
    // The admin kubeconfig is for admins only; it works.
    const adminCfg = await call('GET', '/v1/clusters/team-a/kubeconfig', { token: tokens['root'] });
    assert.equal(adminCfg.status, 200);
    writeFileSync(join(tp.dir, 'admin.kubeconfig'), (adminCfg.body as { kubeconfig: string }).kubeconfig, { mode: 0o600 });
    assert.match(
      (await exec([kubectl, '--kubeconfig', join(tp.dir, 'admin.kubeconfig'), 'get', 'clusterrolebindings', '-o', 'name'])).stdout,
      /anodyne:user:alice/,
    );
    // The profile's ranges are the cluster's: the kubernetes Service and cluster DNS live in 10.100.0.0/16.
    assert.equal(
      (
        await exec([
          kubectl,
          '--kubeconfig',
          join(tp.dir, 'admin.kubeconfig'),
          'get',
          'service',
          'kubernetes',
          '-o',
          'jsonpath={.spec.clusterIP}',
        ])
      ).stdout,
      '10.100.0.1',
    );
    assert.equal(
      (
        await exec([
          kubectl,
          '--kubeconfig',
          join(tp.dir, 'admin.kubeconfig'),
          '-n',
          'kube-system',
          'get',
          'service',
          'kube-dns',
          '-o',
          'jsonpath={.spec.clusterIP}',
        ])
      ).stdout,
      '10.100.0.10',
    );
    assert.equal((await call('DELETE', '/v1/network-profiles/narrow', { token: tokens['root'] })).status, 409, 'a profile in use is kept');

    // Certificates: listed with expiry; a rotation issues new leaves (same CAs) and rolls them out.
    const certs = (await call('GET', '/v1/clusters/team-a/certificates', { token: tokens['alice'] })).body as {
      name: string;
      is_ca: boolean;
      version: number;
      expires_at: string;
    }[];
    assert.ok(certs.some((c) => c.name === 'ca' && c.is_ca));
    assert.ok(
      certs.some((c) => c.name === 'apiserver' && !c.is_ca && c.version === 1 && Date.parse(c.expires_at) > Date.now() + 300 * 86_400_000),
    );
    const serial = () =>
      new Promise<string>((res, rej) => {
        const s = tlsConnect(
          { host: ready.kubernetes_master_ips[0]!, port: ready.parameters.kubernetes_master_port, rejectUnauthorized: false },
          () => {
            res(s.getPeerCertificate().serialNumber);
            s.end();
          },
        );
        s.on('error', rej);
      });
    const before = await serial();
    const rot = await call('POST', '/v1/clusters/team-a/rotate-certificates', { token: tokens['alice'] });
    assert.equal(rot.status, 202, rot.text);
    assert.equal((await tp.platform.director.wait((rot.body as { last_task_id: number }).last_task_id)).state, 'done');
    assert.notEqual(await serial(), before, 'the API server serves its new certificate');
    assert.equal(
      (
        (await call('GET', '/v1/clusters/team-a/certificates', { token: tokens['alice'] })).body as { name: string; version: number }[]
      ).find((c) => c.name === 'apiserver')?.version,
      2,
    );
    let again = '';
    for (let i = 0; i < 40 && !/worker-0\s+Ready/.test(again); i++) {
      again = await exec([kubectl, 'get', 'nodes', '--no-headers'], { env, timeoutMs: 30_000 }).then(
        (r) => r.stdout,
        (e: Error) => e.message,
      );
      if (!/worker-0\s+Ready/.test(again)) await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(again, /worker-0\s+Ready/, 'kubectl works after the rotation (the CA is unchanged)');
    assert.equal((await call('POST', '/v1/clusters/team-a/upgrade', { token: tokens['alice'] })).status, 403, 'upgrades are for admins');
    const up = await call('POST', '/v1/clusters/team-a/upgrade', { token: tokens['root'] });
    assert.equal(up.status, 202);
    const upId = (up.body as { last_task_id: number }).last_task_id;
    assert.equal((await tp.platform.director.wait(upId)).state, 'done');
    // The owner follows an admin's task on their cluster; other users do not see it.
    assert.equal(
      (await call('GET', `/v1/tasks/${upId}`, { token: tokens['alice'] })).status,
      200,
      'alice reads the upgrade of her cluster',
    );
    assert.ok(
      ((await call('GET', '/v1/tasks', { token: tokens['alice'] })).body as { id: number }[]).some((x) => x.id === upId),
      'and lists it',
    );
    assert.equal((await call('GET', `/v1/tasks/${upId}`, { token: tokens['bob'] })).status, 404);

    // A fleet upgrade is one server-side task; every cluster is checked before it starts.
    assert.equal(
      (await call('POST', '/v1/upgrades', { token: tokens['alice'], body: { clusters: ['team-a'] } })).status,
      403,
      'fleet upgrades are for admins',
    );
    const unknown = await call('POST', '/v1/upgrades', { token: tokens['root'], body: { clusters: ['team-a', 'no-such'] } });
    assert.equal(unknown.status, 404, 'an unknown cluster is refused before any task');
    assert.equal((unknown.body as { code: string }).code, 'ANODYNE_E_CLUSTER_NOT_FOUND');
    assert.equal(
      (await call('POST', '/v1/upgrades', { token: tokens['root'], body: { clusters: ['team-a'], max_in_flight: 0 } })).status,
      400,
    );
    const fleet = await call('POST', '/v1/upgrades', {
      token: tokens['root'],
      body: { clusters: ['team-a'], canaries: 1, max_in_flight: 2 },
    });
    assert.equal(fleet.status, 202);
    const fleetTask = await tp.platform.director.wait((fleet.body as { id: number }).id);
    assert.equal(fleetTask.state, 'done', JSON.stringify(fleetTask.error));
    const outcome = (fleetTask.result as { clusters: { name: string; state: string; task_id: number }[] }).clusters;
    assert.deepEqual(
      outcome.map((x) => [x.name, x.state]),
      [['team-a', 'done']],
    );
    assert.equal(
      (await tp.platform.director.tasks.get(outcome[0]!.task_id)).type,
      'deploy',
      'the cluster was upgraded by a task of its own',
    );

    // The audit log records the mutating calls and the credential read, with who and result.
    const audit = (await call('GET', '/v1/audit?limit=1000', { token: tokens['root'] })).body as {
      actor: string;
      action: string;
      target: string;
      result: string;
    }[];
    assert.ok(audit.some((e) => e.actor === 'alice' && e.action === 'cluster.create' && e.result === 'ok'));
    assert.ok(audit.some((e) => e.actor === 'alice' && e.action === 'cluster.bind' && e.target === 'team-a' && e.result === 'ok'));
    assert.ok(audit.some((e) => e.actor === 'reader' && e.action === 'cluster.delete' && e.result === 'denied'));
    assert.ok(audit.some((e) => e.actor === 'root' && e.action === 'credential.read'));
    assert.equal((await call('GET', '/v1/audit', { token: tokens['alice'] })).status, 403);

    // Automation: an admin creates an OAuth client; its client_credentials token reads (admin.read) but cannot change.
    const client = await call('POST', '/v1/clients', {
      token: tokens['root'],
      body: {
        client_id: 'ci-bot',
        client_secret: 'ci-bot-secret-0123456789',
        scopes: [SCOPES.adminRead],
        grant_types: ['client_credentials'],
      },
    });
    assert.equal(client.status, 201, client.text);
    const cc = await call('POST', '/oauth/token', {
      raw: 'grant_type=client_credentials',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from('ci-bot:ci-bot-secret-0123456789').toString('base64')}`,
      },
    });
    assert.equal(cc.status, 200, cc.text);
    const botToken = (cc.body as { access_token: string }).access_token;
    assert.equal(((await call('GET', '/v1/clusters', { token: botToken })).body as unknown[]).length, 1);
    assert.equal((await call('DELETE', '/v1/clusters/team-a', { token: botToken })).status, 403);
    assert.ok(
      ((await call('GET', '/v1/clients', { token: tokens['root'] })).body as { client_id: string; confidential: boolean }[]).some(
        (c) => c.client_id === 'ci-bot' && c.confidential,
      ),
    );

    // Deleting a user takes their binding out of every cluster: a later user of that name inherits nothing.
    await tp.platform.identity.createUser({ username: 'ops2', password: 'ops2-password', groups: [SCOPES.admin] });
    const ops2 = await login('ops2', 'ops2-password');
    const bindings = () =>
      exec([kubectl, '--kubeconfig', join(tp.dir, 'admin.kubeconfig'), 'get', 'clusterrolebindings', '-o', 'name']).then((r) => r.stdout);
    const b2 = await call('POST', '/v1/clusters/team-a/binds', { token: (ops2.body as { access_token: string }).access_token, body: {} });
    assert.equal(b2.status, 200, b2.text);
    assert.match(await bindings(), /anodyne:user:ops2/);
    assert.equal((await call('DELETE', '/v1/users/ops2', { token: tokens['root'] })).status, 204);
    const after = await bindings();
    assert.doesNotMatch(after, /anodyne:user:ops2/, "the deleted user's binding is gone");
    assert.match(after, /anodyne:user:alice/, 'other users keep theirs');
    // Every secret the platform holds, gathered before the delete removes the cluster's own.
    const secrets = new Set<string>([
      ...Object.values(tokens),
      refreshToken,
      'alice-password',
      'ops2-password',
      'ci-bot-secret-0123456789',
      botToken,
    ]);
    const collect = (v: unknown, key = ''): void => {
      if (typeof v === 'string') {
        if (!/^(password|private_key|d|value|secret)$/.test(key)) return;
        // A PEM is searched line by line (a log would escape its newlines).
        for (const line of v.split('\n')) if (line.length >= 16 && !line.startsWith('-----')) secrets.add(line);
      } else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v as Record<string, unknown>)) collect(x, k);
      }
    };
    const held = await tp.platform.creds.list('/');
    assert.ok(
      held.some((m) => m.name.startsWith('/deployments/cluster-team-a/')),
      "the cluster's credentials are among them",
    );
    for (const m of held)
      collect((await tp.platform.creds.get(m.name, { actor: 'test' })).value, m.type === 'password' || m.type === 'value' ? 'value' : '');
    assert.ok(secrets.size > 40, `${secrets.size} secret values to look for`);

    // Delete: 202, then gone; nothing of it remains.
    const del = await call('DELETE', '/v1/clusters/team-a', { token: tokens['alice'] });
    assert.equal(del.status, 202);
    const delTask = (del.body as { last_task_id: number }).last_task_id;
    assert.equal((await tp.platform.director.wait(delTask)).state, 'done');
    assert.equal((await call('GET', '/v1/clusters/team-a', { token: tokens['alice'] })).status, 404);
    assert.deepEqual(await tp.platform.provider.listVms(), []);
    // Reads never write: the record goes by the platform's reaper (at most 10 s later), not by the GET.
    const record = () => tp.platform.store.db.selectFrom('clusters').select('name').where('name', '=', 'team-a').executeTakeFirst();
    let left = await record();
    for (let i = 0; i < 30 && left; i++) {
      await new Promise((r) => setTimeout(r, 500));
      left = await record();
    }
    assert.equal(left, undefined, "the deleted cluster's record is reaped");
    // The whole create/bind/rotate/upgrade/delete run, logged at debug level, holds none of them.
    const logs = tp.logs();
    assert.ok(logs.split('\n').length > 50, 'the platform logged the run');
    const leaked = [...secrets].filter((x) => logs.includes(x));
    assert.deepEqual(
      leaked.map((x) => `${x.slice(0, 6)}…`),
      [],
      'no secret value appears in the logs',
    );
  });

  it('TLS only: plain HTTP and TLS below 1.2 get no answer', async () => {
    const u = new URL(tp.platform.url);
    const plain = await new Promise<string>((res) => {
      const sock = netConnect({ host: u.hostname, port: Number(u.port) }, () => sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
      sock.on('close', () => res(got));
      sock.on('error', () => res(got));
      sock.setTimeout(5000, () => sock.destroy());
    });
    assert.doesNotMatch(plain, /^HTTP\/1\.[01] 2/, 'no HTTP answer over plain TCP');
    await assert.rejects(
      new Promise<void>((res, rej) => {
        const s = tlsConnect(
          { host: u.hostname, port: Number(u.port), ca: tp.platform.caPem, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' },
          () => {
            s.end();
            res();
          },
        );
        s.on('error', rej);
      }),
      'TLS 1.1 is refused',
    );
    assert.equal(statSync(tp.platform.caFile).mode & 0o022, 0, 'the CA file is not writable by others');
    const keyFile = join(tp.dir, 'keys', 'encryption.key');
    assert.ok(existsSync(keyFile));
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'the encryption key file is 0600');
  });

  it('Open Service Broker: catalog, provision, poll, bind (kubeconfig works), unbind (revoked), deprovision', async (t) => {
    const info = (await call('GET', '/v1/broker', { token: tokens['root'] })).body as { url: string; username: string; password: string };
    const basic = `Basic ${Buffer.from(`${info.username}:${info.password}`).toString('base64')}`;
    const osb = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
      call(method, path, {
        headers: { authorization: basic, 'x-broker-api-version': '2.17', ...headers },
        ...(body !== undefined ? { body } : {}),
      });
    assert.equal(
      (await call('GET', '/v2/catalog', { headers: { authorization: basic } })).status,
      412,
      'the API version header is required',
    );
    assert.equal(
      (await call('GET', '/v2/catalog', { headers: { authorization: 'Basic eDp5', 'x-broker-api-version': '2.17' } })).status,
      401,
    );
    // The spec's order: the version header, then credentials, both before the body is read or validated.
    const junk = { raw: '{not json', headers: { 'content-type': 'application/json' } };
    const noVersion = await call('PUT', '/v2/service_instances/x?accepts_incomplete=true', {
      ...junk,
      headers: { ...junk.headers, authorization: basic },
    });
    assert.equal(noVersion.status, 412, noVersion.text);
    assert.equal(typeof (noVersion.body as { description?: string }).description, 'string', 'OSB errors carry a description');
    const badCreds = await call('PUT', '/v2/service_instances/x?accepts_incomplete=true', {
      ...junk,
      headers: { ...junk.headers, authorization: 'Basic eDp5', 'x-broker-api-version': '2.17' },
    });
    assert.equal(badCreds.status, 401, badCreds.text);
    const invalid = await call('PUT', '/v2/service_instances/x?accepts_incomplete=true', {
      ...junk,
      headers: { ...junk.headers, authorization: basic, 'x-broker-api-version': '2.17' },
    });
    assert.equal(invalid.status, 400, invalid.text);
    assert.equal(typeof (invalid.body as { description?: string }).description, 'string', `a 400 in the OSB shape: ${invalid.text}`);
    const catalog = (await osb('GET', '/v2/catalog')).body as { services: { id: string; plans: { id: string; name: string }[] }[] };
    const service = catalog.services[0]!;
    const small = service.plans.find((p) => p.name === 'small')!;
    const iid = '6a1f3c1e-0b8e-4f3a-9f1e-2d3c4b5a6978';
    const body = { service_id: service.id, plan_id: small.id, organization_guid: 'org', space_guid: 'space', parameters: { workers: 1 } };
    assert.equal((await osb('PUT', `/v2/service_instances/${iid}`, body)).status, 422, 'asynchronous only');
    const started = performance.now();
    const prov = await osb('PUT', `/v2/service_instances/${iid}?accepts_incomplete=true`, body);
    assert.equal(prov.status, 202, prov.text);
    const operation = (prov.body as { operation: string }).operation;
    let state = 'in progress';
    for (let i = 0; i < 240 && state === 'in progress'; i++) {
      state = ((await osb('GET', `/v2/service_instances/${iid}/last_operation?operation=${operation}`)).body as { state: string }).state;
      if (state === 'in progress') await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(state, 'succeeded');
    t.diagnostic(`provisioned through the broker in ${(performance.now() - started).toFixed(0)} ms`);
    // GET of the instance, and a PATCH that changes nothing (no operation).
    const fetched = await osb('GET', `/v2/service_instances/${iid}`);
    assert.deepEqual(fetched.body, { service_id: service.id, plan_id: small.id, parameters: { workers: 1 } });
    assert.equal((await osb('GET', '/v2/service_instances/6a1f3c1e-0000-0000-0000-000000000000')).status, 404);
    const noop = await osb('PATCH', `/v2/service_instances/${iid}?accepts_incomplete=true`, { service_id: service.id, plan_id: small.id });
    assert.equal(noop.status, 200, noop.text);
    const bound = await osb('PUT', `/v2/service_instances/${iid}/service_bindings/b-1?accepts_incomplete=true`, {
      service_id: service.id,
      plan_id: small.id,
    });
    assert.equal(bound.status, 201, bound.text);
    const again = await osb('PUT', `/v2/service_instances/${iid}/service_bindings/b-1?accepts_incomplete=true`, {
      service_id: service.id,
      plan_id: small.id,
    });
    assert.equal(again.status, 200, `the same bind again: 200 with credentials: ${again.text}`);
    assert.ok((again.body as { credentials?: { kubeconfig?: string } }).credentials?.kubeconfig);
    const other = await osb('PUT', `/v2/service_instances/${iid}/service_bindings/b-1?accepts_incomplete=true`, {
      service_id: service.id,
      plan_id: small.id,
      bind_resource: { app_guid: 'another-app' },
    });
    assert.equal(other.status, 409, `another bind on the same id: 409: ${other.text}`);
    // Unbind and deprovision must name the service and plan.
    assert.equal(
      (await osb('DELETE', `/v2/service_instances/${iid}/service_bindings/b-1`)).status,
      400,
      'unbind without service_id/plan_id',
    );
    assert.equal(
      (await osb('DELETE', `/v2/service_instances/${iid}?accepts_incomplete=true`)).status,
      400,
      'deprovision without service_id/plan_id',
    );
    const kc = join(tp.dir, 'osb.kubeconfig');
    writeFileSync(kc, (bound.body as { credentials: { kubeconfig: string } }).credentials.kubeconfig, { mode: 0o600 });
    const kubectl = locateRelease().bin('kubectl');
    const get = () => exec([kubectl, '--kubeconfig', kc, 'get', 'namespaces', '-o', 'name'], { okCodes: [0, 1], timeoutMs: 30_000 });
    const ok = await get();
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /namespace\/kube-system/);
    assert.equal(
      (await osb('DELETE', `/v2/service_instances/${iid}/service_bindings/b-1?service_id=${service.id}&plan_id=${small.id}`)).status,
      200,
    );
    let revoked = false;
    for (let i = 0; i < 20 && !revoked; i++) {
      revoked = (await get()).code !== 0;
      if (!revoked) await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(revoked, 'the unbound credential no longer works');
    assert.equal(
      (await osb('DELETE', `/v2/service_instances/${iid}/service_bindings/b-1?service_id=${service.id}&plan_id=${small.id}`)).status,
      410,
      'unbinding again: 410 Gone',
    );
    // A resize runs; while it does, another change is a 422 ConcurrencyError.
    const resize = await osb('PATCH', `/v2/service_instances/${iid}?accepts_incomplete=true`, {
      service_id: service.id,
      plan_id: small.id,
      parameters: { workers: 2 },
    });
    assert.equal(resize.status, 202, resize.text);
    const during = await osb('DELETE', `/v2/service_instances/${iid}?accepts_incomplete=true&service_id=${service.id}&plan_id=${small.id}`);
    assert.equal(during.status, 422, during.text);
    assert.equal((during.body as { error?: string }).error, 'ConcurrencyError');
    let resized = 'in progress';
    for (let i = 0; i < 240 && resized === 'in progress'; i++) {
      resized = (
        (await osb('GET', `/v2/service_instances/${iid}/last_operation?operation=${(resize.body as { operation: string }).operation}`))
          .body as { state: string }
      ).state;
      if (resized === 'in progress') await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(resized, 'succeeded');
    const deprov = await osb('DELETE', `/v2/service_instances/${iid}?accepts_incomplete=true&service_id=${service.id}&plan_id=${small.id}`);
    assert.equal(deprov.status, 202);
    const op = (deprov.body as { operation: string }).operation;
    let last = 200;
    for (let i = 0; i < 120 && last !== 410; i++) {
      last = (await osb('GET', `/v2/service_instances/${iid}/last_operation?operation=${op}`)).status;
      if (last !== 410) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(last, 410, 'gone after deprovision');
    assert.deepEqual(await tp.platform.provider.listVms(), []);
  });
});
