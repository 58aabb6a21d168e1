import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { SCOPES } from '@anodyne/identity';
import { startTestPlatform, https, type TestPlatform } from './testing/index.js';
import { skipUnless } from '@anodyne/common';

const isRoot = process.getuid?.() === 0;
const PORT = 19_900 + (process.pid % 90);
const REQUESTS = Number(process.env['ANODYNE_FUZZ_REQUESTS'] ?? 10_000);

interface JsonSchema { type?: string | string[]; properties?: Record<string, JsonSchema>; required?: string[]; items?: JsonSchema; enum?: unknown[]; const?: unknown; anyOf?: JsonSchema[]; pattern?: string; minimum?: number; maximum?: number }
interface Operation { parameters?: { in: string; name: string; schema?: JsonSchema }[]; requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }

/** Values shaped like a schema (sometimes right, often subtly wrong): the fuzzer's "plausible" input. */
function fromSchema(s: JsonSchema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!s || depth > 4) return fc.jsonValue({ maxDepth: 2 });
  if (s.const !== undefined) return fc.oneof(fc.constant(s.const), fc.string());
  if (s.enum) return fc.oneof(fc.constantFrom(...s.enum), fc.string());
  if (s.anyOf) return fc.oneof(...s.anyOf.map((x) => fromSchema(x, depth + 1)));
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case 'string': return fc.oneof(fc.string({ maxLength: 80 }), fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$/), fc.constantFrom('small', 'ha', 'password', 'client_credentials', 'refresh_token', 'pks.clusters.admin', '10.0.0.0/16', '', 'x'.repeat(300)));
    case 'integer': return fc.oneof(fc.integer(), fc.integer({ min: -1, max: 5 }), fc.constant(2 ** 53), fc.double());
    case 'number': return fc.double();
    case 'boolean': return fc.boolean();
    case 'array': return fc.array(fromSchema(s.items, depth + 1), { maxLength: 5 });
    case 'object': {
      const props = Object.entries(s.properties ?? {});
      return fc.record(Object.fromEntries(props.map(([k, v]) => [k, fromSchema(v, depth + 1)])), { requiredKeys: [] }).chain((o) =>
        fc.oneof(fc.constant(o), fc.record({ extra: fc.jsonValue({ maxDepth: 1 }) }).map((e) => ({ ...o, ...e }))));
    }
    default: return fc.jsonValue({ maxDepth: 3 });
  }
}

const segment = fc.oneof(
  fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  fc.integer({ min: -5, max: 10 ** 12 }).map(String),
  fc.string({ maxLength: 60, unit: 'grapheme' }).map((x) => encodeURIComponent(x)),
  fc.constantFrom('..', '%2e%2e', '%00', 'a'.repeat(2000), 'null', '{name}', '%ff%fe'),
);

describe('input hardening: generated requests against every route', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let tokens: string[];

  before(async () => {
    tp = await startTestPlatform('fz', '10.198.11.0/24', PORT);
    const p = tp.platform;
    await p.identity.createUser({ username: 'fuzzer', password: 'fuzzer-password', groups: [SCOPES.manage] });
    await p.identity.createUser({ username: 'fuzz-reader', password: 'fuzz-reader-password', groups: [SCOPES.adminRead] });
    // The fuzzer may not create clusters (quota 0): inputs are judged, no VM is ever built.
    await p.clusters.setQuota('fuzzer', 0, 0);
    tokens = [
      (await p.identity.token({ grant_type: 'password', username: 'fuzzer', password: 'fuzzer-password' })).access_token,
      (await p.identity.token({ grant_type: 'password', username: 'fuzz-reader', password: 'fuzz-reader-password' })).access_token,
    ];
  });
  after(async () => {
    await tp.stop();
  });

  it(`${REQUESTS} generated requests from the OpenAPI schemas: no 5xx, the server stays up`, async (t) => {
    const doc = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, Operation>> };
    const ops = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method: method.toUpperCase(), op })));
    assert.ok(ops.length >= 30);
    // A fresh connection per request: the server may close one after a malformed request (414, 431).
    const agent = new Agent({ keepAlive: false, maxSockets: 8, ca: tp.platform.caPem });
    const errors = new Map<string, number>();
    const send = (method: string, path: string, headers: Record<string, string>, body?: Buffer) => new Promise<number>((resolve) => {
      const u = new URL(path, tp.platform.url);
      const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent, timeout: 30_000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        errors.set(e.code ?? e.message, (errors.get(e.code ?? e.message) ?? 0) + 1);
        resolve(-1);
      });
      req.end(body);
    });
    const requestArb = fc.record({
      op: fc.constantFrom(...ops),
      params: fc.array(segment, { minLength: 3, maxLength: 3 }),
      query: fc.dictionary(fc.stringMatching(/^[a-z_]{1,12}$/), fc.oneof(fc.string({ maxLength: 20 }), fc.integer().map(String)), { maxKeys: 3 }),
      auth: fc.constantFrom('none', 'manage', 'reader', 'garbage', 'basic'),
      bodyKind: fc.constantFrom('schema', 'json', 'bytes', 'none', 'form'),
      schemaBody: fc.constant(null),
      json: fc.jsonValue({ maxDepth: 4 }),
      bytes: fc.uint8Array({ maxLength: 512 }),
      contentType: fc.constantFrom('application/json', 'application/x-www-form-urlencoded', 'text/plain', 'application/json; charset=latin1', ''),
      seed: fc.integer(),
    });
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    let n = 0;
    await fc.assert(fc.asyncProperty(requestArb, async (r) => {
      let i = 0;
      const path = r.op.path.replace(/\{[^}]+\}/g, () => r.params[i++] ?? 'x') + (Object.keys(r.query).length ? `?${new URLSearchParams(r.query).toString()}` : '');
      const headers: Record<string, string> = {};
      if (r.auth === 'manage') headers['authorization'] = `Bearer ${tokens[0]}`;
      if (r.auth === 'reader') headers['authorization'] = `Bearer ${tokens[1]}`;
      if (r.auth === 'garbage') headers['authorization'] = `Bearer ${Buffer.from(String(r.seed)).toString('base64')}.x.y`;
      if (r.auth === 'basic') headers['authorization'] = 'Basic YnJva2VyOm5vdC10aGUtcGFzc3dvcmQ=';
      headers['x-broker-api-version'] = '2.17';
      let body: Buffer | undefined;
      const schema = r.op.op.requestBody?.content?.['application/json']?.schema;
      if (r.bodyKind === 'schema') body = Buffer.from(JSON.stringify(fc.sample(fromSchema(schema), { numRuns: 1, seed: r.seed })[0] ?? {}));
      if (r.bodyKind === 'json') body = Buffer.from(JSON.stringify(r.json) ?? 'null');
      if (r.bodyKind === 'bytes') body = Buffer.from(r.bytes);
      if (r.bodyKind === 'form') body = Buffer.from(new URLSearchParams(r.query).toString());
      if (body && r.contentType) headers['content-type'] = r.contentType;
      const status = await send(r.op.method, path, headers, body);
      n++;
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 500 || status < 0) failures.push(`${status} ${r.op.method} ${path} ${r.bodyKind} ${body?.toString('utf8').slice(0, 200) ?? ''}`);
      return true;
    }), { numRuns: REQUESTS });
    agent.destroy();
    t.diagnostic(`${n} requests; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; connection errors ${JSON.stringify(Object.fromEntries(errors))}`);
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failures`);
    assert.deepEqual((await https(tp.platform.url, tp.platform.caPem, 'GET', '/healthz')).body, { status: 'ok' });
    assert.deepEqual(await tp.platform.provider.listVms(), [], 'no input built anything');
  });

  it('oversized bodies, deep JSON, bad UTF-8 and header floods are refused cleanly', async (t) => {
    const p = tp.platform;
    const call = (path: string, body: Buffer | string, headers: Record<string, string> = {}) => https(p.url, p.caPem, 'POST', path, { body, headers: { authorization: `Bearer ${tokens[0]}`, ...headers } });
    // Refused by its Content-Length before the body is read: the server answers while the client is still sending.
    const big = await new Promise<number | string>((resolve) => {
      const u = new URL('/v1/clusters', p.url);
      const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', ca: p.caPem, headers: { 'content-type': 'application/json', 'content-length': String(5 * 1024 * 1024), authorization: `Bearer ${tokens[0]}` } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        req.destroy();
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      req.on('socket', (sock) => sock.on('error', () => undefined));
      req.write(Buffer.alloc(64 * 1024, 0x61));
    });
    assert.equal(big, 413);
    t.diagnostic('oversized: 413');
    const deep = await call('/v1/clusters', '['.repeat(100_000) + ']'.repeat(100_000)).then((r) => r.status, (e: NodeJS.ErrnoException) => e.code);
    assert.equal(deep, 400);
    t.diagnostic('deep: 400');
    const badUtf8 = await call('/v1/clusters', Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x7d])).then((r) => r.status, (e: NodeJS.ErrnoException) => e.code);
    assert.equal(badUtf8, 400);
    t.diagnostic('utf8: 400');
    // 2,000 headers on a raw TLS connection: the server answers 431 (or closes) and keeps serving others.
    const u = new URL(p.url);
    const flood = await new Promise<string>((resolve) => {
      const sock = tlsConnect({ host: u.hostname, port: Number(u.port), ca: p.caPem, servername: u.hostname }, () => {
        const lines = ['GET /healthz HTTP/1.1', `Host: ${u.host}`, ...Array.from({ length: 2000 }, (_, i) => `X-Flood-${i}: ${'y'.repeat(20)}`), '', ''];
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
