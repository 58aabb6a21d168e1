// Property-based contract test: requests generated from the served OpenAPI document, answers checked against it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Ajv, type ValidateFunction } from 'ajv';
import { SCOPES } from '@anodyne/identity';
import { skipUnless } from '@anodyne/common';
import { startTestPlatform, https, type TestPlatform } from './testing/index.js';
import { resolveRefs, validValue, type OpenApiDoc, type Schema } from './testing/openapi.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_500 + (process.pid % 90);
const RUNS = Number(process.env['ANODYNE_CONTRACT_REQUESTS'] ?? 1500);

// Records that exist (see before()), so that generated names often find something.
const KNOWN = ['ct-other', 'ct-net', 'ct-client', 'ct-manage', '1', '2'];

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
      tp = await startTestPlatform('ct', '10.198.17.0/24', PORT);
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
      const raw = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/openapi.json')).body as OpenApiDoc;
      const doc = resolveRefs(raw, raw);
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
            Object.fromEntries((o.op.parameters ?? []).filter((p) => p.in === 'path').map((p) => [p.name, validValue(p.schema, KNOWN)])),
          ),
          query: fc.record(
            Object.fromEntries((o.op.parameters ?? []).filter((p) => p.in === 'query').map((p) => [p.name, validValue(p.schema, KNOWN)])),
            // Optional ones now and then; those the document requires, always.
            { requiredKeys: (o.op.parameters ?? []).filter((p) => p.in === 'query' && p.required).map((p) => p.name) },
          ),
          body: validValue(o.op.requestBody?.content?.['application/json']?.schema, KNOWN),
        }),
      );
      const problems: string[] = [];
      const byStatus = new Map<number, number>();
      const refusals = new Map<string, number>();
      let checked = 0;
      let jsonAnswers = 0;
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
          const media = String(res.headers['content-type'] ?? '')
            .split(';')[0]!
            .trim();
          if (media === 'application/json') jsonAnswers++;
          // Pages and files (the sign-in page, the console) are answered with a media type the document names.
          else if (media && declared.content && !declared.content[media]) problems.push(`${where}: ${media} is not a declared media type`);
          if (schema && res.status !== 204 && media === 'application/json') {
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
      assert.ok(
        checked >= jsonAnswers * 0.95 && checked >= RUNS * 0.8,
        `almost every JSON answer had a documented body to check (${checked} of ${jsonAnswers})`,
      );
      assert.deepEqual(problems.slice(0, 15), [], `${problems.length} answers the document does not describe`);
      assert.ok(
        [...byStatus.keys()].some((s) => s >= 200 && s < 300),
        'some requests succeeded',
      );
      assert.deepEqual(await tp.platform.provider.listVms(), [], 'no request built anything');
    });

    it('requests the document calls invalid are refused with 4xx in the documented error shape', async () => {
      const raw = (await https(tp.platform.url, tp.platform.caPem, 'GET', '/openapi.json')).body as OpenApiDoc;
      const doc = resolveRefs(raw, raw);
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
