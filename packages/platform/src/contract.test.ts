// Property-based contract test: requests generated from the served OpenAPI document, answers checked against it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Ajv, type ValidateFunction } from 'ajv';
import { SCOPES } from '@anodyne/identity';
import { skipUnless } from '@anodyne/common';
import { startTestPlatform, https, type TestPlatform } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_800 + (process.pid % 90);
const RUNS = Number(process.env['ANODYNE_CONTRACT_REQUESTS'] ?? 1500);

type Schema = Record<string, unknown> & {
  type?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  enum?: unknown[];
  anyOf?: Schema[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  $ref?: string;
  nullable?: boolean;
  additionalProperties?: boolean | Schema;
};
interface Parameter {
  in: string;
  name: string;
  required?: boolean;
  schema?: Schema;
}
interface Operation {
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
  responses: Record<string, { content?: Record<string, { schema?: Schema }> }>;
}
interface Doc {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

// Records that exist (see before()), so that generated names often find something.
const KNOWN = ['ct-other', 'ct-net', 'ct-client', 'ct-manage', '1', '2'];

/** Values that satisfy a schema (the document's idea of a valid request). */
function valid(s: Schema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!s || depth > 5) return fc.constant({});
  if (s.enum) return fc.constantFrom(...s.enum);
  if (s['const'] !== undefined) return fc.constant(s['const']);
  if (s.anyOf) return fc.oneof(...s.anyOf.map((x) => valid(x, depth + 1)));
  switch (s.type) {
    case 'string': {
      const min = s.minLength ?? 0;
      const max = Math.min(s.maxLength ?? 40, 40);
      if (s.pattern) {
        const re = new RegExp(s.pattern);
        const known = KNOWN.filter((k) => re.test(k) && k.length >= min && k.length <= (s.maxLength ?? Infinity));
        const gen = fc.stringMatching(re).filter((x) => x.length >= min && x.length <= (s.maxLength ?? Infinity));
        return known.length > 0 ? fc.oneof(fc.constantFrom(...known), gen) : gen;
      }
      return fc.string({ minLength: min, maxLength: Math.max(min, max) });
    }
    case 'integer':
      return fc
        .integer({ min: Math.max(s.minimum ?? -5, -5), max: Math.min(s.maximum ?? 20, 20) })
        .filter((x) => x >= (s.minimum ?? -Infinity));
    case 'number':
      return fc.double({ noNaN: true, noDefaultInfinity: true });
    case 'boolean':
      return fc.boolean();
    case 'array': {
      const item = valid(s.items, depth + 1);
      const opts = { minLength: s.minItems ?? 0, maxLength: Math.min(s.maxItems ?? 3, 3) };
      return s['uniqueItems'] ? fc.uniqueArray(item, { ...opts, selector: (x) => JSON.stringify(x) }) : fc.array(item, opts);
    }
    case 'object': {
      const props = Object.entries(s.properties ?? {});
      return fc.record(Object.fromEntries(props.map(([k, v]) => [k, valid(v, depth + 1)])), {
        requiredKeys: (s.required ?? []).filter((k) => s.properties?.[k]),
      });
    }
    default:
      return fc.constant(null);
  }
}

/** The document with every `$ref` to its components replaced by the schema it names. */
function resolve<T>(v: T, doc: Doc, depth = 0): T {
  if (Array.isArray(v)) return (v as unknown[]).map((x) => resolve(x, doc, depth)) as T;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o['$ref'] === 'string' && depth < 20) {
      const name = o['$ref'].replace('#/components/schemas/', '');
      return resolve(doc.components?.schemas?.[name] as T, doc, depth + 1);
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, resolve(x, doc, depth)])) as T;
  }
  return v;
}

describe(
  'the API keeps its OpenAPI document: generated requests, answers checked against it',
  { skip: skipUnless(isRoot, 'needs root') },
  () => {
    let tp: TestPlatform;
    let tokens: { admin: string; manage: string };
    const issue = async () => {
      const t = (u: string) =>
        tp.platform.identity.token({ grant_type: 'password', username: u, password: `${u}-password` }).then((x) => x.access_token);
      return { admin: await t('ct-admin'), manage: await t('ct-manage') };
    };

    before(async () => {
      tp = await startTestPlatform('ct', '10.198.13.0/24', PORT);
      const p = tp.platform;
      await p.identity.createUser({ username: 'ct-admin', password: 'ct-admin-password', groups: [SCOPES.admin] });
      await p.identity.createUser({ username: 'ct-manage', password: 'ct-manage-password', groups: [SCOPES.manage] });
      await p.identity.createUser({ username: 'ct-other', password: 'ct-other-password', groups: [SCOPES.manage] });
      await p.clusters.profiles.create({ name: 'ct-net', pod_cidr: '10.222.0.0/16', service_cidr: '10.223.0.0/16' });
      await p.identity.createClient({
        clientId: 'ct-client',
        secret: 'ct-client-secret-0123456789',
        scopes: [SCOPES.manage],
        grantTypes: ['client_credentials'],
      });
      // Valid cluster requests are judged in full but build nothing: nobody here may have a cluster.
      for (const owner of ['ct-admin', 'ct-manage']) await p.clusters.quotas.set(owner, 0, 0);
      tokens = await issue();
    });
    after(async () => {
      await tp.stop();
    });

    it(`${RUNS} requests the document calls valid, as admin and as a manage user: every answer is one the document declares`, async (t) => {
      const raw = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/openapi.json')).body as Doc;
      const doc = resolve(raw, raw);
      const ajv = new Ajv({ strict: false, allErrors: true });
      const validators = new Map<string, ValidateFunction>();
      const validator = (key: string, schema: Schema) => {
        let v = validators.get(key);
        if (!v) validators.set(key, (v = ajv.compile(schema)));
        return v;
      };
      // The broker (basic auth) and the token endpoint (its own grammar) have their own suites.
      const ops = Object.entries(doc.paths)
        .flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method: method.toUpperCase(), op })))
        .filter((o) => !o.path.startsWith('/v2/') && o.path !== '/oauth/token' && o.path !== '/v1/token-keys');
      assert.ok(ops.length >= 25, `${ops.length} operations`);

      const requestArb = fc.constantFrom(...ops).chain((o) =>
        fc.record({
          o: fc.constant(o),
          who: fc.constantFrom<'admin' | 'manage'>('admin', 'manage'),
          params: fc.record(
            Object.fromEntries((o.op.parameters ?? []).filter((p) => p.in === 'path').map((p) => [p.name, valid(p.schema)])),
          ),
          query: fc.record(
            Object.fromEntries((o.op.parameters ?? []).filter((p) => p.in === 'query').map((p) => [p.name, valid(p.schema)])),
            { requiredKeys: [] },
          ),
          body: valid(o.op.requestBody?.content?.['application/json']?.schema),
        }),
      );
      const problems: string[] = [];
      const byStatus = new Map<number, number>();
      const refusals = new Map<string, number>();
      let checked = 0;
      await fc.assert(
        fc.asyncProperty(requestArb, async (r) => {
          const path = r.o.path.replace(/\{([^}]+)\}/g, (_, k: string) =>
            encodeURIComponent(String((r.params as Record<string, unknown>)[k])),
          );
          const qs = new URLSearchParams(
            Object.entries(r.query as Record<string, unknown>).map(([k, v]): [string, string] => [k, String(v)]),
          ).toString();
          const hasBody = r.o.op.requestBody !== undefined;
          const res = await https(tp.platform.url, tp.platform.caPem, r.o.method, `${path}${qs ? `?${qs}` : ''}`, {
            token: tokens[r.who],
            ...(hasBody ? { body: JSON.stringify(r.body), headers: { 'content-type': 'application/json' } } : {}),
          });
          byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
          const where = `${r.o.method} ${path}${qs ? `?${qs}` : ''} as ${r.who}${hasBody ? ` ${JSON.stringify(r.body).slice(0, 160)}` : ''} → ${res.status}`;
          const declared =
            r.o.op.responses[String(res.status)] ??
            r.o.op.responses[`${String(res.status)[0]}XX`] ??
            r.o.op.responses[`${String(res.status)[0]}xx`];
          if (!declared) {
            problems.push(`${where}: status not in the document`);
            return true;
          }
          if (res.status >= 500) problems.push(`${where}: ${res.text.slice(0, 200)}`);
          // A request the document calls valid is not refused by schema validation.
          const code = (res.body as { code?: string } | undefined)?.code;
          if (res.status >= 400) refusals.set(`${res.status} ${code}`, (refusals.get(`${res.status} ${code}`) ?? 0) + 1);
          if (
            res.status === 400 &&
            code === 'ANODYNE_E_INVALID_INPUT' &&
            /^(body|params|querystring)/.test((res.body as { message: string }).message)
          ) {
            problems.push(`${where}: refused a request the document calls valid: ${(res.body as { message: string }).message}`);
          }
          const schema = declared.content?.['application/json']?.schema;
          if (schema && res.status !== 204 && (res.headers['content-type'] ?? '').includes('json')) {
            const v = validator(`${r.o.method} ${r.o.path} ${res.status}`, schema);
            checked++;
            if (!v(res.body)) problems.push(`${where}: body does not match the document: ${ajv.errorsText(v.errors)}`);
          }
          return true;
        }),
        { numRuns: RUNS },
      );
      t.diagnostic(
        `statuses: ${JSON.stringify(Object.fromEntries([...byStatus].sort((a, b) => a[0] - b[0])))}; ${checked} bodies checked against their schema`,
      );
      t.diagnostic(`refusals: ${JSON.stringify(Object.fromEntries(refusals))}`);
      assert.ok(checked >= RUNS * 0.9, 'almost every answer had a documented body to check');
      assert.deepEqual(problems.slice(0, 15), [], `${problems.length} answers the document does not describe`);
      assert.ok(
        [...byStatus.keys()].some((s) => s >= 200 && s < 300),
        'some requests succeeded',
      );
      assert.deepEqual(await tp.platform.provider.listVms(), [], 'no request built anything');
    });

    it('requests the document calls invalid are refused with 4xx in the documented error shape', async () => {
      const raw = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/openapi.json')).body as Doc;
      const doc = resolve(raw, raw);
      const withBodies = Object.entries(doc.paths)
        .flatMap(([path, methods]) =>
          Object.entries(methods)
            .filter(([, op]) => op.requestBody?.content?.['application/json']?.schema?.type === 'object')
            .map(([method, op]) => ({ path, method: method.toUpperCase(), schema: op.requestBody!.content!['application/json']!.schema! })),
        )
        .filter((o) => !o.path.startsWith('/v2/') && !o.path.includes('{'));
      assert.ok(withBodies.length >= 5);
      for (const o of withBodies) {
        // An unknown property where the document allows none, and a wrong type for the whole body.
        const bodies: unknown[] = [[1, 2, 3]];
        if (o.schema.additionalProperties === false) bodies.push({ 'not-a-field': true });
        for (const body of bodies) {
          const res = await https(tp.platform.url, tp.platform.caPem, o.method, o.path, {
            token: tokens.admin,
            body: JSON.stringify(body),
            headers: { 'content-type': 'application/json' },
          });
          assert.ok(res.status >= 400 && res.status < 500, `${o.method} ${o.path} ${JSON.stringify(body)} → ${res.status}`);
          const b = res.body as Record<string, unknown>;
          if (o.path !== '/oauth/token')
            assert.deepEqual(Object.keys(b).sort(), ['code', 'details', 'message'], `${o.method} ${o.path}: ${res.text}`);
        }
      }
    });
  },
);
