// The registry with the real CNCF Distribution server and skopeo: tokens, grants, quota, delete, garbage collection, restart.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { exec, silentLogger, systemClock, ManualClock, type AnodyneError, UnauthenticatedError } from '@anodyne/common';
import { openStore, AuditLog, type Store } from '@anodyne/store';
import { SCOPES } from '@anodyne/identity';
import { type ApiError } from '@anodyne/client';
import { imageArchive, pushImage, readImageArchive, registryRequest } from '@anodyne/client/node';
import { RegistryFront, RegistryProcess, RegistryService, RegistryTokenSigner, socketUpstream } from './index.js';

const SERVICE = 'anodyne-registry';
const ACCEPT = { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' };
const ISSUER = 'test-issuer';
const USERS: Record<string, { password: string; groups: string[] }> = {
  alice: { password: 'alice-pw', groups: [SCOPES.manage] },
  bob: { password: 'bob-pw', groups: [SCOPES.manage] },
  admin: { password: 'admin-pw', groups: [SCOPES.admin] },
};

/** A CA, a token-signing certificate and a serving certificate for 127.0.0.1, made with openssl. */
async function certificates(dir: string) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const f = (n: string) => join(dir, n);
  await exec(['openssl', 'req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-subj', '/CN=test-ca', '-days', '2']);
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const leaf of ['token', 'serving', 'foreign']) {
    await exec(['openssl', 'req', ...ec, '-keyout', f(`${leaf}.key`), '-out', f(`${leaf}.csr`), '-subj', `/CN=${leaf}`]);
    if (leaf === 'foreign')
      await exec(['openssl', 'x509', '-req', '-in', f(`${leaf}.csr`), '-key', f(`${leaf}.key`), '-out', f(`${leaf}.crt`), '-days', '2']);
    else
      await exec([
        'openssl',
        'x509',
        '-req',
        '-in',
        f(`${leaf}.csr`),
        '-CA',
        f('ca.crt'),
        '-CAkey',
        f('ca.key'),
        '-CAcreateserial',
        '-out',
        f(`${leaf}.crt`),
        '-days',
        '2',
        '-extfile',
        f('san.ext'),
      ]);
  }
  const read = (n: string) => readFileSync(f(n), 'utf8');
  return {
    ca: read('ca.crt'),
    token: { certificate: read('token.crt'), private_key: read('token.key') },
    serving: { cert: read('serving.crt'), key: read('serving.key') },
    foreign: { certificate: read('foreign.crt'), private_key: read('foreign.key') },
  };
}

describe('image registry (Distribution behind the front server)', () => {
  let dir: string;
  let store: Store;
  let proc: RegistryProcess;
  let front: RegistryFront;
  let tokenServer: Server;
  let service: RegistryService;
  let signer: RegistryTokenSigner;
  let certs: Awaited<ReturnType<typeof certificates>>;
  let registry: string;
  let gcRunning = false;
  const certDir = () => join(dir, 'skopeo-certs');

  const actor = (name: string) => ({ name, userName: name, scopes: USERS[name]!.groups });
  const tokenFor = async (user: string, scope: string) =>
    (await service.token(await service.fromPassword(user, USERS[user]!.password), SERVICE, [scope])).token;
  const archive = (tag: string, size = 4096) =>
    readImageArchive(
      imageArchive({
        files: [
          { name: 'data/blob.bin', data: randomBytes(size) },
          { name: 'data/tag', data: Buffer.from(tag) },
        ],
        entrypoint: ['/bin/true'],
        tag,
      }),
    );
  const skopeo = (args: string[]) => exec(['skopeo', '--command-timeout', '60s', ...args], { timeoutMs: 90_000, okCodes: [0, 1] });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-registry-'));
    certs = await certificates(dir);
    store = await openStore({ driver: 'sqlite', path: join(dir, 'anodyne.db') });
    signer = new RegistryTokenSigner(certs.token, { issuer: ISSUER, service: SERVICE, clock: systemClock, ttlSeconds: 300 });
    const callers = {
      bearer: () => Promise.reject(new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', 'no bearer tokens here')),
      password: (u: string, p: string) =>
        USERS[u]?.password === p
          ? Promise.resolve({ username: u, groups: USERS[u].groups })
          : Promise.reject(new UnauthenticatedError('ANODYNE_E_BAD_CREDENTIALS', 'bad credentials')),
      client: () => Promise.resolve(undefined),
      cluster: (name: string, password: string) => Promise.resolve(name === 'c1' && password === 'node-pw' ? 'bob' : undefined),
    };
    // The token endpoint (the API serves it on the platform), for skopeo.
    tokenServer = createServer({ cert: certs.serving.cert, key: certs.serving.key }, (req, res) => {
      const u = new URL(req.url ?? '/', 'https://x');
      service
        .caller(req.headers.authorization)
        .then((c) => service.token(c, u.searchParams.get('service') ?? undefined, u.searchParams.getAll('scope')))
        .then(
          (t) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(t)),
          (e: AnodyneError) => res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ code: e.code })),
        );
    });
    await new Promise<void>((r) => tokenServer.listen(0, '127.0.0.1', r));
    const realm = `https://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token`;
    proc = new RegistryProcess({
      dir: join(dir, 'registry'),
      realm,
      service: SERVICE,
      issuer: ISSUER,
      tokenRootPem: certs.ca,
      logger: silentLogger(),
    });
    await proc.start();
    front = new RegistryFront({ socket: proc.socket, tls: certs.serving, logger: silentLogger(), available: () => !gcRunning });
    await front.listen('127.0.0.1', 0);
    const address = `127.0.0.1:${(front.server.address() as AddressInfo).port}`;
    registry = `https://${address}`;
    service = new RegistryService({
      store,
      audit: new AuditLog(store, systemClock),
      clock: systemClock,
      logger: silentLogger(),
      signer,
      address,
      defaultQuotaBytes: null,
      callers,
      upstream: socketUpstream(proc.socket, signer),
    });
    front.serve(service);
    await exec(['mkdir', '-p', certDir()]);
    writeFileSync(join(certDir(), 'ca.crt'), certs.ca);
  });

  after(async () => {
    await front?.close();
    await proc?.stop();
    await new Promise((r) => tokenServer?.close(r));
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a front not yet given its service tells clients to come back', async () => {
    const early = new RegistryFront({ socket: proc.socket, tls: certs.serving, logger: silentLogger(), available: () => true });
    await early.listen('127.0.0.1', 0);
    try {
      const r = await registryRequest(`https://127.0.0.1:${(early.server.address() as AddressInfo).port}/v2/`, {
        method: 'GET',
        caPem: certs.ca,
      });
      assert.equal(r.status, 503);
      assert.equal(r.headers['retry-after'], '5');
      assert.match(r.body.toString(), /ANODYNE_E_REGISTRY_UNAVAILABLE/);
      assert.match(r.body.toString(), /the registry is starting/);
    } finally {
      await early.close();
    }
  });

  it('an owner pushes into their own project (made on first use); skopeo pulls it with their password', async () => {
    const token = await tokenFor('alice', 'repository:alice/hello:pull,push');
    const pushed = await pushImage({ registry, caPem: certs.ca, repository: 'alice/hello', tag: '1', archive: archive('1'), token });
    assert.match(pushed.digest, /^sha256:/);
    const [image] = await service.images(actor('alice'), 'alice');
    assert.equal(image?.repository, 'alice/hello');
    assert.deepEqual(image?.tags, ['1']);
    assert.equal(image?.digest, pushed.digest);
    const p = await service.project(actor('alice'), 'alice');
    assert.equal(p.owner, 'alice');
    assert.ok(p.used_bytes >= 4096, `usage counts the layer: ${p.used_bytes}`);
    const r = await skopeo([
      'inspect',
      '--cert-dir',
      certDir(),
      '--creds',
      'alice:alice-pw',
      `docker://${registry.slice(8)}/alice/hello:1`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { Digest: string }).Digest, pushed.digest);
  });

  it('another user gets no access to a private project until granted; a cluster acts for its owner, pull only', async () => {
    const ref = `docker://${registry.slice(8)}/alice/hello:1`;
    const denied = await skopeo(['inspect', '--cert-dir', certDir(), '--creds', 'bob:bob-pw', ref]);
    assert.notEqual(denied.code, 0, 'bob may not pull alice/hello');
    assert.match(denied.stderr, /unauthorized|denied|authentication required/i);
    const pushToken = await tokenFor('bob', 'repository:alice/hello:pull,push');
    await assert.rejects(
      pushImage({ registry, caPem: certs.ca, repository: 'alice/hello', tag: 'evil', archive: archive('evil'), token: pushToken }),
      (e: ApiError) => e.code === 'ANODYNE_E_REGISTRY_DENIED',
    );
    const nodeCaller = await service.fromPassword('cluster/c1', 'node-pw');
    assert.deepEqual((await service.token(nodeCaller, SERVICE, ['repository:alice/hello:pull'])).token.length > 0, true);
    assert.equal((await service.allowed(nodeCaller, 'alice')).size, 0, "bob's cluster cannot pull alice's images");
    await service.grant(actor('alice'), 'alice', 'user:bob', ['pull']);
    const ok = await skopeo(['inspect', '--cert-dir', certDir(), '--creds', 'bob:bob-pw', ref]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual([...(await service.allowed(nodeCaller, 'alice'))], ['pull'], "bob's cluster pulls what bob may");
    await assert.rejects(service.fromPassword('cluster/c1', 'wrong'), (e: AnodyneError) => e.code === 'ANODYNE_E_BAD_CREDENTIALS');
    await service.revoke(actor('alice'), 'alice', 'user:bob');
    assert.notEqual((await skopeo(['inspect', '--cert-dir', certDir(), '--creds', 'bob:bob-pw', ref])).code, 0, 'revoked');
  });

  it('refuses a token that is expired, or signed by a key the platform CA did not certify', async () => {
    const get = (token: string) =>
      registryRequest(`${registry}/v2/alice/hello/manifests/1`, { method: 'HEAD', token, caPem: certs.ca, headers: ACCEPT });
    const access = [{ type: 'repository', name: 'alice/hello', actions: ['pull'] }];
    assert.equal((await get(signer.sign('alice', access).token)).status, 200, 'a good token works');
    const past = new ManualClock(Date.now() - 3_600_000);
    const expired = new RegistryTokenSigner(certs.token, { issuer: ISSUER, service: SERVICE, clock: past, ttlSeconds: 300 });
    assert.equal((await get(expired.sign('alice', access).token)).status, 401);
    const foreign = new RegistryTokenSigner(certs.foreign, { issuer: ISSUER, service: SERVICE, clock: systemClock, ttlSeconds: 300 });
    assert.equal((await get(foreign.sign('alice', access).token)).status, 401);
    assert.equal((await get('not-a-token')).status, 401);
  });

  it('the quota refuses an oversized push with a clear code and keeps the earlier images', async () => {
    const used = (await service.project(actor('alice'), 'alice')).used_bytes;
    await assert.rejects(
      service.updateProject(actor('alice'), 'alice', { quota_bytes: 1 }),
      (e: AnodyneError) => e.code === 'ANODYNE_E_SCOPE_REQUIRED',
    );
    await service.updateProject(actor('admin'), 'alice', { quota_bytes: used + 64 * 1024 });
    const token = await tokenFor('alice', 'repository:alice/big:pull,push');
    await assert.rejects(
      pushImage({ registry, caPem: certs.ca, repository: 'alice/big', tag: '1', archive: archive('big', 256 * 1024), token }),
      (e: ApiError) => e.code === 'ANODYNE_E_REGISTRY_QUOTA_EXCEEDED' && /quota|may store/.test(e.message),
    );
    const small = await pushImage({
      registry,
      caPem: certs.ca,
      repository: 'alice/big',
      tag: 'small',
      archive: archive('small', 1024),
      token,
    });
    assert.ok(small.digest);
    const still = await registryRequest(`${registry}/v2/alice/hello/manifests/1`, {
      method: 'HEAD',
      token: await tokenFor('alice', 'repository:alice/hello:pull'),
      caPem: certs.ca,
      headers: ACCEPT,
    });
    assert.equal(still.status, 200, 'the earlier image is kept');
    await service.updateProject(actor('admin'), 'alice', { quota_bytes: null });
  });

  it('deleting an image and collecting garbage frees its blobs; a restarted registry loses nothing', async () => {
    const token = await tokenFor('alice', 'repository:alice/gone:pull,push');
    await pushImage({ registry, caPem: certs.ca, repository: 'alice/gone', tag: '1', archive: archive('gone', 2 * 1024 * 1024), token });
    const before = proc.storedBytes();
    await assert.rejects(
      service.deleteImage(actor('bob'), 'alice/gone:1'),
      (e: AnodyneError) => e.code === 'ANODYNE_E_REGISTRY_PROJECT_NOT_FOUND',
    );
    const deleted = await service.deleteImage(actor('alice'), 'alice/gone:1');
    assert.deepEqual(deleted.tags, ['1']);
    gcRunning = true;
    const during = await registryRequest(`${registry}/v2/`, { method: 'GET', caPem: certs.ca });
    assert.equal(during.status, 503, 'the front answers 503 while garbage is collected');
    const report = await proc.collectGarbage();
    gcRunning = false;
    const after = proc.storedBytes();
    console.log(`# registry gc: ${before} → ${after} bytes stored (${report.blobsDeleted} blobs deleted)`);
    assert.ok(before - after >= 2 * 1024 * 1024, `the 2 MiB layer is freed: ${before} → ${after}`);
    const gone = await registryRequest(`${registry}/v2/alice/gone/manifests/1`, {
      method: 'HEAD',
      token,
      caPem: certs.ca,
      headers: ACCEPT,
    });
    assert.equal(gone.status, 404);
    await proc.stop();
    await proc.start();
    const kept = await registryRequest(`${registry}/v2/alice/hello/manifests/1`, {
      method: 'HEAD',
      token: await tokenFor('alice', 'repository:alice/hello:pull'),
      caPem: certs.ca,
      headers: ACCEPT,
    });
    assert.equal(kept.status, 200, 'the registry restarted keeps its images');
    const audit = await new AuditLog(store, systemClock).list({ limit: 200 });
    for (const action of ['registry.push', 'registry.delete', 'registry.token'])
      assert.ok(
        audit.some((e) => e.action === action),
        `${action} is audited`,
      );
    assert.ok(
      audit.some((e) => e.action === 'registry.token' && e.result === 'denied'),
      'refused token requests are audited as denied',
    );
  });

  // Last: it closes the registry the suite shares.
  it('closed while it collects garbage, the registry is not started again afterwards', async () => {
    const gc = proc.collectGarbage().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 20));
    await proc.close();
    await gc;
    assert.equal(proc.running, false, 'no registry outlives its close');
  });

  it('refuses bad archives and references before anything is sent', () => {
    assert.throws(
      () => readImageArchive(Buffer.from('not a tar at all'.repeat(64))),
      (e: ApiError) => e.code === 'ANODYNE_E_IMAGE_ARCHIVE_INVALID',
    );
    const good = imageArchive({ files: [{ name: 'x', data: Buffer.from('x') }], entrypoint: ['/x'], tag: '1' });
    assert.throws(
      () => readImageArchive(good.subarray(0, 1024)),
      (e: ApiError) => e.code === 'ANODYNE_E_IMAGE_ARCHIVE_INVALID',
    );
    // A blob whose bytes do not match its name: a corrupt archive.
    const corrupt = Buffer.from(good);
    const at = corrupt.indexOf(Buffer.from('{"architecture"')) + 3;
    corrupt.writeUInt8(corrupt.readUInt8(at) ^ 1, at);
    assert.throws(
      () => readImageArchive(corrupt),
      (e: ApiError) => e.code === 'ANODYNE_E_IMAGE_ARCHIVE_INVALID',
    );
  });
});
