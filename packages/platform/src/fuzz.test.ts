// Fuzz test: requests generated from the OpenAPI schemas against every route, and malformed input, refused cleanly (root).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { SCOPES } from '@anodyne/identity';
import { startTestPlatform, https, type TestPlatform } from './testing/index.js';
import { resolveRefs, validRequest, type OpenApiDoc, type Schema } from './testing/openapi.js';
import { skipUnless } from '@anodyne/common';

const isRoot = process.getuid?.() === 0;
const PORT = 19_600 + (process.pid % 90);
const REQUESTS = Number(process.env['ANODYNE_FUZZ_REQUESTS'] ?? 10_000);

/** Values shaped like a schema (sometimes right, often subtly wrong): the fuzzer's "plausible" input. */
function fromSchema(s: Schema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!s || depth > 4) return fc.jsonValue({ maxDepth: 2 });
  if (s.const !== undefined) return fc.oneof({ arbitrary: fc.constant(s.const), weight: 4 }, fc.string());
  if (s.enum) return fc.oneof({ arbitrary: fc.constantFrom(...s.enum), weight: 4 }, fc.string());
  if (s.anyOf) return fc.oneof(...s.anyOf.map((x) => fromSchema(x, depth + 1)));
  const type: unknown = Array.isArray(s.type) ? (s.type as unknown[])[0] : s.type;
  switch (type) {
    case 'string':
      return fc.oneof(
        fc.string({ maxLength: 80 }),
        fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$/),
        // Often exactly what the schema asks for, so that handlers (not only validation) see input.
        ...(s.pattern
          ? [
              {
                arbitrary: fc
                  .stringMatching(new RegExp(s.pattern))
                  .filter((x) => x.length >= (s.minLength ?? 0) && x.length <= (s.maxLength ?? Infinity)),
                weight: 6,
              },
            ]
          : []),
        ...(!s.pattern && s.minLength
          ? [fc.string({ minLength: s.minLength, maxLength: Math.max(s.minLength, Math.min(s.maxLength ?? 64, 64)) })]
          : []),
        fc.constantFrom(
          'small',
          'ha',
          'password',
          'client_credentials',
          'refresh_token',
          'pks.clusters.admin',
          'pks.clusters.manage',
          '10.0.0.0/16',
          '10.1.0.0/16',
          '',
          'x'.repeat(300),
          ...KNOWN,
        ),
      );
    case 'integer':
      return fc.oneof(
        fc.integer(),
        fc.integer({ min: -1, max: 5 }),
        fc.integer({ min: s.minimum ?? 0, max: Math.min(s.maximum ?? 10, 10) }),
        fc.constant(2 ** 53),
        fc.double(),
      );
    case 'number':
      return fc.double();
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.oneof(
        fc.array(fromSchema(s.items, depth + 1), { maxLength: 5 }),
        fc.uniqueArray(fromSchema(s.items, depth + 1), {
          minLength: s.minItems ?? 0,
          maxLength: s.maxItems ?? 3,
          selector: (x) => JSON.stringify(x),
        }),
      );
    case 'object': {
      const props = Object.entries(s.properties ?? {});
      const record = (requiredKeys: string[]) =>
        fc.record(Object.fromEntries(props.map(([k, v]) => [k, fromSchema(v, depth + 1)])), { requiredKeys });
      return fc.oneof(record([]), { arbitrary: record((s.required ?? []).filter((k) => s.properties?.[k])), weight: 3 }).chain((o) =>
        fc.oneof(
          { arbitrary: fc.constant(o), weight: 3 },
          fc.record({ extra: fc.jsonValue({ maxDepth: 1 }) }).map((e) => ({ ...o, ...e })),
        ),
      );
    }
    default:
      return fc.jsonValue({ maxDepth: 3 });
  }
}

// Names of records that exist (see before()), so handlers that look records up find some.
const KNOWN = ['fz-other', 'fz-net', 'fz-client', '1', '2', '6a1f3c1e-0b8e-4f3a-9f1e-2d3c4b5a6978'];
const segment = fc.oneof(
  fc.constantFrom(...KNOWN),
  fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  fc.integer({ min: -5, max: 10 ** 12 }).map(String),
  fc.string({ maxLength: 60, unit: 'grapheme' }).map((x) => encodeURIComponent(x)),
  fc.constantFrom('..', '%2e%2e', '%00', 'a'.repeat(2000), 'null', '{name}', '%ff%fe'),
);

describe('input hardening: generated requests against every route', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let tokens: string[];
  let brokerBasic: string;
  const issueTokens = async () =>
    Promise.all(
      [
        ['fuzzer', 'fuzzer-password'],
        ['fuzz-reader', 'fuzz-reader-password'],
        ['fuzz-admin', 'fuzz-admin-password'],
      ].map(
        async ([username, password]) =>
          (await tp.platform.identity.token({ grant_type: 'password', username: username!, password: password! })).access_token,
      ),
    );

  before(async () => {
    tp = await startTestPlatform('fz', '10.198.11.0/24', PORT);
    const p = tp.platform;
    await p.identity.createUser({ username: 'fuzzer', password: 'fuzzer-password', groups: [SCOPES.manage] });
    await p.identity.createUser({ username: 'fuzz-reader', password: 'fuzz-reader-password', groups: [SCOPES.adminRead] });
    await p.identity.createUser({ username: 'fuzz-admin', password: 'fuzz-admin-password', groups: [SCOPES.admin] });
    // Records the fuzzer's requests can find (KNOWN): a user, a network profile, an OAuth client, tasks.
    await p.identity.createUser({ username: 'fz-other', password: 'fz-other-password', groups: [SCOPES.manage] });
    await p.clusters.profiles.create({ name: 'fz-net', pod_cidr: '10.220.0.0/16', service_cidr: '10.221.0.0/16' });
    await p.identity.createClient({
      clientId: 'fz-client',
      secret: 'fz-client-secret-0123456789',
      scopes: [SCOPES.manage],
      grantTypes: ['client_credentials'],
    });
    // Nobody the fuzzer acts as may create clusters (quota 0): inputs are judged, no VM is ever built.
    for (const owner of ['fuzzer', 'fuzz-admin', 'osb-broker']) await p.clusters.quotas.set(owner, 0, 0);
    tokens = await issueTokens();
    const broker = (await https(p.url, p.caPem, 'GET', '/v1/broker', { token: tokens[2]! })).body as { username: string; password: string };
    brokerBasic = `Basic ${Buffer.from(`${broker.username}:${broker.password}`).toString('base64')}`;
  });
  after(async () => {
    await tp.stop();
  });

  it(`${REQUESTS} generated requests from the OpenAPI schemas: no 5xx, the server stays up`, async (t) => {
    const raw = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/openapi.json')).body as OpenApiDoc;
    const doc = resolveRefs(raw, raw);
    const ops = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({ path, method: method.toUpperCase(), op })),
    );
    assert.ok(ops.length >= 30);
    // A fresh connection per request: the server may close one after a malformed request (414, 431).
    const agent = new Agent({ keepAlive: false, maxSockets: 8, ca: tp.platform.caPem });
    const errors = new Map<string, number>();
    const send = (method: string, path: string, headers: Record<string, string>, body?: Buffer) =>
      new Promise<number>((resolve) => {
        const u = new URL(path, tp.platform.url);
        const req = request(
          { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent, timeout: 30_000 },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', (e: NodeJS.ErrnoException) => {
          errors.set(e.code ?? e.message, (errors.get(e.code ?? e.message) ?? 0) + 1);
          resolve(-1);
        });
        req.end(body);
      });
    const requestArb = fc.record({
      op: fc.constantFrom(...ops),
      params: fc.array(segment, { minLength: 3, maxLength: 3 }),
      query: fc.dictionary(fc.stringMatching(/^[a-z_]{1,12}$/), fc.oneof(fc.string({ maxLength: 20 }), fc.integer().map(String)), {
        maxKeys: 3,
      }),
      auth: fc.constantFrom('none', 'manage', 'reader', 'admin', 'admin', 'garbage', 'basic', 'broker'),
      // `valid`: what the document calls valid (so every handler is reached); `schema`: shaped like it, often subtly wrong.
      bodyKind: fc.constantFrom('valid', 'valid', 'schema', 'schema', 'schema', 'json', 'bytes', 'none', 'form'),
      schemaBody: fc.constant(null),
      json: fc.jsonValue({ maxDepth: 4 }),
      bytes: fc.uint8Array({ maxLength: 512 }),
      contentType: fc.constantFrom(
        'application/json',
        'application/x-www-form-urlencoded',
        'text/plain',
        'application/json; charset=latin1',
        '',
      ),
      seed: fc.integer(),
    });
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    let n = 0;
    await fc.assert(
      fc.asyncProperty(requestArb, async (r) => {
        let i = 0;
        // A schema-shaped request also gets schema-shaped query parameters (accepts_incomplete, service_id, …).
        const declared = Object.fromEntries(
          (r.op.op.parameters ?? [])
            .filter((q) => q.in === 'query')
            .map((q) => {
              const v = fc.sample(fromSchema(q.schema), { numRuns: 1, seed: r.seed })[0];
              return [q.name, typeof v === 'string' ? v : JSON.stringify(v ?? '')];
            }),
        );
        const good = r.bodyKind === 'valid' ? fc.sample(validRequest(r.op.op, KNOWN), { numRuns: 1, seed: r.seed })[0]! : undefined;
        const goodQuery = Object.fromEntries(Object.entries(good?.query ?? {}).map(([k, v]) => [k, String(v)]));
        const query = r.bodyKind === 'schema' ? { ...r.query, ...declared } : good ? goodQuery : r.query;
        const path =
          r.op.path.replace(/\{([^}]+)\}/g, (_, name: string) =>
            good ? encodeURIComponent(String(good.params[name])) : (r.params[i++] ?? 'x'),
          ) + (Object.keys(query).length ? `?${new URLSearchParams(query).toString()}` : '');
        const headers: Record<string, string> = {};
        if (r.auth === 'manage') headers['authorization'] = `Bearer ${tokens[0]}`;
        if (r.auth === 'reader') headers['authorization'] = `Bearer ${tokens[1]}`;
        if (r.auth === 'garbage') headers['authorization'] = `Bearer ${Buffer.from(String(r.seed)).toString('base64')}.x.y`;
        if (r.auth === 'admin') headers['authorization'] = `Bearer ${tokens[2]}`;
        if (r.auth === 'basic') headers['authorization'] = 'Basic YnJva2VyOm5vdC10aGUtcGFzc3dvcmQ=';
        if (r.auth === 'broker') headers['authorization'] = brokerBasic;
        headers['x-broker-api-version'] = '2.17';
        let body: Buffer | undefined;
        const schema = r.op.op.requestBody?.content?.['application/json']?.schema;
        if (r.bodyKind === 'schema')
          body = Buffer.from(JSON.stringify(fc.sample(fromSchema(schema), { numRuns: 1, seed: r.seed })[0] ?? {}));
        if (good && r.op.op.requestBody) body = Buffer.from(JSON.stringify(good.body));
        if (r.bodyKind === 'json') body = Buffer.from(JSON.stringify(r.json) ?? 'null');
        if (r.bodyKind === 'bytes') body = Buffer.from(r.bytes);
        if (r.bodyKind === 'form') body = Buffer.from(new URLSearchParams(r.query).toString());
        if (body && r.contentType) headers['content-type'] = r.bodyKind === 'schema' || good ? 'application/json' : r.contentType;
        const status = await send(r.op.method, path, headers, body);
        // A rotation keeps only the previous key valid: take fresh tokens, or a second one would lock the fuzzer out.
        if (r.op.path === '/v1/token-keys' && status === 200) tokens = await issueTokens();
        n++;
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status >= 500 || status < 0)
          failures.push(`${status} ${r.op.method} ${path} ${r.bodyKind} ${body?.toString('utf8').slice(0, 200) ?? ''}`);
        return true;
      }),
      { numRuns: REQUESTS },
    );
    agent.destroy();
    // How many requests got through authentication, authorization and validation to each handler.
    const metrics = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/metrics')).text;
    const reached = new Map<string, number>();
    for (const m of metrics.matchAll(/^anodyne_http_handler_calls_total\{method="([A-Z]+)",route="([^"]+)"\} (\d+)$/gm))
      reached.set(`${m[1]} ${m[2]}`, Number(m[3]));
    const perRoute = ops.map((o) => ({
      route: `${o.method} ${o.path}`,
      reached: reached.get(`${o.method} ${o.path.replace(/\{([^}]+)\}/g, ':$1')}`) ?? 0,
    }));
    t.diagnostic(
      `requests that reached each handler:\n${perRoute.map((r) => `  ${String(r.reached).padStart(5)}  ${r.route}`).join('\n')}`,
    );
    t.diagnostic(
      `${n} requests; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; connection errors ${JSON.stringify(Object.fromEntries(errors))}`,
    );
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failures`);
    const never = perRoute.filter((r) => r.reached === 0).map((r) => r.route);
    assert.ok(never.length <= ops.length / 10, `most handlers are reached by generated input; never: ${never.join(', ')}`);
    assert.deepEqual((await https(tp.platform.url, tp.platform.caPem, 'GET', '/healthz')).body, { status: 'ok' });
    assert.deepEqual(await tp.platform.provider.listVms(), [], 'no input built anything');
  });

  it('oversized bodies, deep JSON, bad UTF-8 and header floods are refused cleanly', async (t) => {
    const p = tp.platform;
    const call = (path: string, body: Buffer | string, headers: Record<string, string> = {}) =>
      https(p.url, p.caPem, 'POST', path, { body, headers: { authorization: `Bearer ${tokens[0]}`, ...headers } });
    // Refused by its Content-Length before the body is read: the server answers while the client is still sending.
    const big = await new Promise<number | string>((resolve) => {
      const u = new URL('/v1/clusters', p.url);
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          ca: p.caPem,
          headers: { 'content-type': 'application/json', 'content-length': String(5 * 1024 * 1024), authorization: `Bearer ${tokens[0]}` },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
          req.destroy();
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      req.on('socket', (sock) => sock.on('error', () => undefined));
      req.write(Buffer.alloc(64 * 1024, 0x61));
    });
    assert.equal(big, 413);
    t.diagnostic('oversized: 413');
    const deep = await call('/v1/clusters', '['.repeat(100_000) + ']'.repeat(100_000)).then(
      (r) => r.status,
      (e: NodeJS.ErrnoException) => e.code,
    );
    assert.equal(deep, 400);
    t.diagnostic('deep: 400');
    const badUtf8 = await call('/v1/clusters', Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x7d])).then(
      (r) => r.status,
      (e: NodeJS.ErrnoException) => e.code,
    );
    assert.equal(badUtf8, 400);
    t.diagnostic('utf8: 400');
    // 2,000 headers on a raw TLS connection: the server answers 431 (or closes) and keeps serving others.
    const u = new URL(p.url);
    const flood = await new Promise<string>((resolve) => {
      const sock = tlsConnect({ host: u.hostname, port: Number(u.port), ca: p.caPem, servername: u.hostname }, () => {
        const lines = [
          'GET /healthz HTTP/1.1',
          `Host: ${u.host}`,
          ...Array.from({ length: 2000 }, (_, i) => `X-Flood-${i}: ${'y'.repeat(20)}`),
          '',
          '',
        ];
        sock.write(lines.join('\r\n'), () => undefined);
      });
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString()));
      sock.on('error', () => undefined);
      sock.on('close', () => resolve(got.split('\r\n')[0] ?? ''));
      setTimeout(() => sock.destroy(), 5000).unref();
    });
    assert.ok(flood === '' || /^HTTP\/1\.1 (431|400)/.test(flood), `header flood: ${flood}`);
    assert.deepEqual((await https(p.url, p.caPem, 'GET', '/healthz')).body, { status: 'ok' }, 'still serving');
  });
});
