// Platform API benchmark: GET /v1/clusters and GET /v1/clusters/{name} with 1,000 clusters stored,
// requests per second and p50/p99 latency from autocannon running in a second process, side by side
// with a raw floor measured in the same run: a bare Fastify HTTPS server (same TLS key, same response
// bodies, no authentication, no store) listening on the same host address as the API (the host's
// address on the VM network, which the platform URL names), on another port, so both requests take
// the same path through the kernel. Returns Markdown for docs/benchmarks.md.
//
// The 1,000 cluster records are written to the store directly (they are rows, no VMs exist), with
// no tasks: what is measured is the API's authentication, authorisation, store reads and JSON.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import Fastify from 'fastify';
import { SCOPES } from '@anodyne/identity';
import { startTestPlatform, https } from '@anodyne/platform/testing';
import { storeClusterRows } from './lib.mjs';

const require = createRequire(import.meta.url);
const AUTOCANNON = require.resolve('autocannon/autocannon.js');
const CLUSTERS = 1000;

/** autocannon in its own process; its JSON result. */
export function load(url, token, seconds, connections) {
  return new Promise((resolve, reject) => {
    const args = [
      AUTOCANNON,
      '-j',
      '-c',
      String(connections),
      '-d',
      String(seconds),
      ...(token ? ['-H', `authorization=Bearer ${token}`] : []),
      url,
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_TLS_REJECT_UNAUTHORIZED: '0' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => (out += b));
    child.stderr.on('data', (b) => (err += b));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`autocannon exited ${code}: ${err.slice(-500)}`));
      const r = JSON.parse(out);
      if (r.non2xx > 0 || r.errors > 0) return reject(new Error(`autocannon saw ${r.non2xx} non-2xx and ${r.errors} errors on ${url}`));
      resolve({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, total: r.requests.total, bytes: r.throughput.average });
    });
  });
}

export async function benchApi({ seconds = 10, connections = 16, log = (s) => process.stderr.write(s) } = {}) {
  const tp = await startTestPlatform('ba', '10.198.15.0/24', 19_081);
  let raw;
  try {
    const p = tp.platform;
    await p.identity.createUser({ username: 'bench', password: 'bench-password', groups: [SCOPES.admin] });
    const token = (await p.identity.token({ grant_type: 'password', username: 'bench', password: 'bench-password' })).access_token;
    await storeClusterRows(p.store, CLUSTERS, 'c');
    const list = await https(p.url, p.caPem, 'GET', '/v1/clusters', { token });
    if (list.status !== 200 || list.body.length !== CLUSTERS)
      throw new Error(`expected ${CLUSTERS} clusters, got ${list.status} ${String(list.text).slice(0, 200)}`);
    const one = await https(p.url, p.caPem, 'GET', '/v1/clusters/c-0500', { token });
    if (one.status !== 200) throw new Error(`GET one cluster: ${one.status}`);

    // The raw floor: the same TLS and the same bodies from a bare Fastify route, on the API's own
    // address (another port): loopback would be a different path from the one the API is measured on.
    const apiUrl = p.url;
    const host = new URL(apiUrl).hostname;
    const serving = (await p.creds.get('/platform/api-server', { actor: 'bench' })).value;
    raw = Fastify({ logger: false, https: { cert: serving.certificate, key: serving.private_key } });
    raw.get('/v1/clusters', (_req, reply) => reply.type('application/json').send(list.text));
    raw.get('/v1/clusters/:name', (_req, reply) => reply.type('application/json').send(one.text));
    await raw.listen({ host, port: 0 });
    const rawUrl = `https://${host}:${raw.server.address().port}`;

    const rows = [];
    // A write every 100 ms while the API is loaded: kept views (ADR 0021) are built again after each.
    const churning = async (run) => {
      let i = 0;
      const timer = setInterval(
        () =>
          void p.store.db
            .updateTable('clusters')
            .set({ updated_at: new Date(Date.now() + i++).toISOString() })
            .where('name', '=', 'c-0001')
            .execute(),
        100,
      );
      try {
        return await run();
      } finally {
        clearInterval(timer);
      }
    };
    for (const [label, path, churn] of [
      [`GET /v1/clusters (${CLUSTERS} clusters, admin sees all)`, '/v1/clusters', false],
      ['GET /v1/clusters/{name}', '/v1/clusters/c-0500', false],
      [`GET /v1/clusters (${CLUSTERS}), the store written every 100 ms`, '/v1/clusters', true],
      ['GET /v1/clusters/{name}, the store written every 100 ms', '/v1/clusters/c-0500', true],
    ]) {
      const floor = await load(`${rawUrl}${path}`, undefined, seconds, connections);
      const measure = () => load(`${apiUrl}${path}`, token, seconds, connections);
      const api = churn ? await churning(measure) : await measure();
      log(`${label}: API ${api.rps.toFixed(0)} req/s p50 ${api.p50} ms p99 ${api.p99} ms; raw ${floor.rps.toFixed(0)} req/s\n`);
      rows.push({ label, api, floor });
    }
    const kb = (Buffer.byteLength(list.text) / 1024).toFixed(0);
    return [
      '## Platform API',
      '',
      `${CLUSTERS} cluster records written to the store directly (rows only: no VMs, no tasks; the local provider creates`,
      'nothing because nothing is deployed), read through the real HTTPS API with an admin token (every request',
      'verifies the JWT and checks scopes; the views are read from the store and serialised once and then kept until the',
      'store changes, docs/adr/0021: the last two rows write to the store every 100 ms while they are measured, so the',
      `views are built again after each write). Load: autocannon in a second process, ${connections}`,
      `connections, one ${seconds} s run per row and side (\`--runs\` does not apply here). Raw floor: a bare Fastify HTTPS`,
      `server with the API's certificate and key returning the same bodies (${kb} KiB for the list), no authentication`,
      `and no store, measured in the same run just before the API. Both listen on the same address, ${host} (the host's`,
      'address on the VM network, which the platform URL names), on different ports, so both requests take the same path.',
      "The last column divides the raw floor's requests per second by the API's.",
      '',
      '| request | API req/s | API p50 ms | API p99 ms | raw req/s | raw p50 ms | raw p99 ms | raw ÷ API req/s |',
      '|---|---|---|---|---|---|---|---|',
      ...rows.map(
        ({ label, api, floor }) =>
          `| ${label} | ${api.rps.toFixed(0)} | ${api.p50} | ${api.p99} | ${floor.rps.toFixed(0)} | ${floor.p50} | ${floor.p99} | ${(floor.rps / api.rps).toFixed(1)} |`,
      ),
      '',
    ].join('\n');
  } finally {
    await raw?.close();
    await tp.stop();
  }
}
