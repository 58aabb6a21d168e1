// The platform's image registry with real clusters: a user pushes with the CLI, their cluster pulls with no action of
// theirs, another user's cluster is refused until granted, skopeo pulls with a token, quota, delete, gc, restart.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { exec, skipUnless } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { imageArchive, registryRequest } from '@anodyne/client/node';
import { startTestPlatform, https, kubectlOf, tokenSource, type TestPlatform, awaitQuietHost } from './testing/index.js';
import { apply, until, type Kubectl } from './testing/workloads.js';

const isRoot = process.getuid?.() === 0;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(REPO, 'bin', 'anodyne');
const PORT = 20_000 + (process.pid % 90);
const ACCEPT = { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' };

describe('the image registry with real clusters', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: () => Promise<string>;
  let address: string;
  const marker = randomBytes(8).toString('hex');
  const homes: Record<string, Record<string, string>> = {};
  const cli = (user: string, ...args: string[]) =>
    exec([BIN, ...args], { env: homes[user]!, okCodes: [0, 1, 2, 3, 4], timeoutMs: 180_000 });
  const call = async (method: string, path: string, body?: unknown) =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: await admin(),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const kubectlFor = (cluster: string) => kubectlOf(tp, admin, cluster);
  /** An OCI image archive: busybox (a static binary) serving a page over HTTP on 8080. */
  const webImage = (tag: string, padding = 0) =>
    imageArchive({
      files: [
        { name: 'bin/busybox', data: readFileSync('/bin/busybox'), mode: 0o755 },
        { name: 'www/index.html', data: Buffer.from(`hello from ${marker} ${tag}\n`) },
        ...(padding ? [{ name: 'pad.bin', data: randomBytes(padding) }] : []),
      ],
      entrypoint: ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'],
      tag,
    });
  const deploy = (kubectl: Kubectl, image: string) =>
    apply(kubectl, tp.dir, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'default' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: {
            containers: [
              { name: 'web', image, imagePullPolicy: 'Always', readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 1 } },
            ],
          },
        },
      },
    });
  const served = async (kubectl: Kubectl) => {
    const pod = (await kubectl('get', 'pods', '-l', 'app=web', '-o', 'jsonpath={.items[0].metadata.name}')).trim();
    return kubectl('get', '--raw', `/api/v1/namespaces/default/pods/${pod}:8080/proxy/`);
  };

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    tp = await startTestPlatform('rg', '10.198.23.0/24', PORT, { ANODYNE_REGISTRY_PUSH_RELEASE_IMAGES: 'true' });
    await tp.platform.identity.createUser({ username: 'rg-admin', password: 'rg-admin-password', groups: [SCOPES.admin] });
    for (const u of ['alice', 'bob']) {
      await tp.platform.identity.createUser({ username: u, password: `${u}-password`, groups: [SCOPES.manage] });
      const home = join(tp.dir, `home-${u}`);
      mkdirSync(home, { recursive: true });
      homes[u] = { ...(process.env as Record<string, string>), HOME: home, ANODYNE_SESSION_FILE: join(home, 'session.json') };
    }
    homes['rg-admin'] = { ...(process.env as Record<string, string>), ANODYNE_SESSION_FILE: join(tp.dir, 'admin-session.json') };
    admin = tokenSource(tp, 'rg-admin', 'rg-admin-password');
    for (const u of ['alice', 'bob', 'rg-admin']) {
      const r = await cli(u, 'login', '-a', tp.platform.url, '-u', u, '-p', `${u}-password`, '--ca-cert', tp.platform.caFile);
      assert.equal(r.code, 0, r.stderr);
    }
    address = tp.platform.registry!.address;
  });
  after(async () => {
    await tp?.stop();
  });

  it('a user pushes with the CLI; their cluster pulls it (imagePullPolicy Always) with no action of theirs and serves', async () => {
    // Both clusters are made while the image is pushed.
    const made = await Promise.all(
      [
        ['ra', 'alice'],
        ['rb', 'bob'],
      ].map(async ([name, owner]) => {
        const t = await tp.platform.identity.token({ grant_type: 'password', username: owner!, password: `${owner}-password` });
        const r = await https(tp.platform.url, tp.platform.caPem, 'POST', '/v1/clusters', {
          token: t.access_token,
          body: JSON.stringify({ name, plan_name: 'small', parameters: { kubernetes_worker_instances: 1 } }),
        });
        assert.equal(r.status, 202, r.text);
        return (r.body as { last_task_id: number }).last_task_id;
      }),
    );
    writeFileSync(join(tp.dir, 'web.tar'), webImage('1'));
    const push = await cli('alice', 'images', 'push', join(tp.dir, 'web.tar'), '--name', 'web:1');
    assert.equal(push.code, 0, push.stderr);
    assert.match(push.stdout, new RegExp(`Pushed ${address.replace(/\./g, '\\.')}/alice/web:1 \\(sha256:`));
    const list = await cli('alice', 'images', 'list', 'alice');
    assert.match(list.stdout, /alice\/web\s+1\s+sha256:/);
    for (const id of made) {
      const t = await tp.platform.director.wait(id);
      assert.equal(t.state, 'done', JSON.stringify(t.error));
    }
    const kubectl = await kubectlFor('ra');
    await deploy(kubectl, `${address}/alice/web:1`);
    await kubectl('rollout', 'status', 'deployment/web', '--timeout=120s');
    assert.equal((await served(kubectl)).trim(), `hello from ${marker} 1`);
  });

  it('a cluster set to run only registry images refuses another image at once, naming it; its own images still run', async () => {
    const kubectl = await kubectlFor('ra');
    const cfg = join(tp.dir, 'ra.kubeconfig');
    const tryCreate = (name: string, image: string) =>
      exec([tp.platform.releaseKubectl, '--kubeconfig', cfg, 'create', 'deployment', name, `--image=${image}`], { okCodes: [0, 1] });
    const set = await cli('alice', 'image-policy', 'ra', '--registry-only');
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /runs only images from/);
    assert.equal((await cli('bob', 'image-policy', 'ra', '--any')).code, 4, "bob cannot change alice's cluster (not found)");
    let refused = '';
    // A new policy is in force once the API servers have read it (about a second).
    await until(
      'the policy in force',
      async () => {
        const r = await tryCreate('outside', 'docker.io/library/nginx:1');
        if (r.code === 0) {
          await kubectl('delete', 'deployment', 'outside');
          return false;
        }
        refused = r.stderr;
        return true;
      },
      30_000,
    );
    assert.match(refused, /image docker\.io\/library\/nginx:1 is not from the platform registry/);
    const inside = await tryCreate('inside', `${address}/alice/web:1`);
    assert.equal(inside.code, 0, inside.stderr);
    await kubectl('delete', 'deployment', 'inside');
    assert.equal((await cli('alice', 'image-policy', 'ra', '--any')).code, 0);
    await until(
      'the policy gone',
      async () => {
        const r = await tryCreate('outside', 'docker.io/library/nginx:1');
        if (r.code === 0) await kubectl('delete', 'deployment', 'outside');
        return r.code === 0;
      },
      30_000,
    );
  });

  it('skopeo pulls it with a token from the identity (the user password); a wrong password or token is refused', async () => {
    const certDir = join(tp.dir, 'skopeo-certs');
    mkdirSync(certDir, { recursive: true });
    writeFileSync(join(certDir, 'ca.crt'), tp.platform.caPem);
    const skopeo = (...args: string[]) => exec(['skopeo', '--command-timeout', '60s', ...args], { okCodes: [0, 1], timeoutMs: 90_000 });
    const copy = await skopeo(
      'copy',
      '--src-cert-dir',
      certDir,
      '--src-creds',
      'alice:alice-password',
      `docker://${address}/alice/web:1`,
      `oci:${join(tp.dir, 'pulled')}:1`,
    );
    assert.equal(copy.code, 0, copy.stderr);
    const index = JSON.parse(readFileSync(join(tp.dir, 'pulled', 'index.json'), 'utf8')) as { manifests: unknown[] };
    assert.equal(index.manifests.length, 1);
    const wrong = await skopeo('inspect', '--cert-dir', certDir, '--creds', 'alice:not-her-password', `docker://${address}/alice/web:1`);
    assert.notEqual(wrong.code, 0);
    const token = await https(
      tp.platform.url,
      tp.platform.caPem,
      'GET',
      '/v1/registry/token?service=anodyne-registry&scope=repository:alice/web:pull',
      {
        headers: { authorization: `Basic ${Buffer.from('alice:not-her-password').toString('base64')}` },
      },
    );
    assert.equal(token.status, 401);
    assert.equal((token.body as { code: string }).code, 'ANODYNE_E_BAD_CREDENTIALS');
    const forged = await registryRequest(`https://${address}/v2/alice/web/manifests/1`, {
      method: 'GET',
      token: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.AAAA',
      caPem: tp.platform.caPem,
      headers: ACCEPT,
    });
    assert.equal(forged.status, 401);
  });

  it("another user's cluster cannot pull it (an auth error) until access is granted", async () => {
    const kubectl = await kubectlFor('rb');
    await deploy(kubectl, `${address}/alice/web:1`);
    let waiting = '';
    await until(
      'an image pull error',
      async () => {
        // Nothing to read until the Deployment's pod exists (kubectl's jsonpath fails on an empty list).
        waiting = await kubectl(
          'get',
          'pods',
          '-l',
          'app=web',
          '-o',
          'jsonpath={.items[0].status.containerStatuses[0].state.waiting}',
        ).catch(() => '');
        return /ErrImagePull|ImagePullBackOff/.test(waiting);
      },
      90_000,
    );
    const events = await kubectl('get', 'events', '--field-selector', 'reason=Failed', '-o', 'jsonpath={.items[*].message}');
    console.log(`# bob's cluster pulling alice/web:1: ${events.slice(0, 300)}`);
    assert.match(events, /401|403|unauthorized|authorization failed|denied/i, 'the pull fails on authorization');
    const grant = await cli('alice', 'projects', 'grant', 'alice', 'user:bob');
    assert.equal(grant.code, 0, grant.stderr);
    // The kubelet retries with a back-off: a new pod pulls at once.
    await kubectl('delete', 'pods', '-l', 'app=web', '--wait=false');
    await kubectl('rollout', 'status', 'deployment/web', '--timeout=120s');
    assert.equal((await served(kubectl)).trim(), `hello from ${marker} 1`);
  });

  it('the quota refuses an oversized push with a clear error and keeps earlier images', async () => {
    const used = ((await call('GET', '/v1/registry/projects/alice')).body as { used_bytes: number }).used_bytes;
    const set = await cli('rg-admin', 'projects', 'update', 'alice', '--quota', String(used + 256 * 1024));
    assert.equal(set.code, 0, set.stderr);
    writeFileSync(join(tp.dir, 'big.tar'), webImage('big', 1024 * 1024));
    const big = await cli('alice', 'images', 'push', join(tp.dir, 'big.tar'), '--name', 'big:1');
    assert.notEqual(big.code, 0);
    assert.match(big.stderr, /ANODYNE_E_REGISTRY_QUOTA_EXCEEDED/);
    const list = await cli('alice', 'images', 'list', 'alice', '--json');
    const images = JSON.parse(list.stdout) as { repository: string }[];
    assert.deepEqual(
      images.map((i) => i.repository),
      ['alice/web'],
    );
    assert.equal((await cli('rg-admin', 'projects', 'update', 'alice', '--quota', 'none')).code, 0);
  });

  it("the release's images are in the public library project", async () => {
    await until(
      'library images',
      async () => ((await call('GET', '/v1/registry/images?project=library')).body as unknown[]).length >= 3,
      120_000,
    );
    const list = await cli('bob', 'images', 'list', 'library');
    assert.match(list.stdout, /library\/busybox/);
  });

  it('deleting an image and collecting garbage frees its blobs; the registry restarted loses nothing', async () => {
    writeFileSync(join(tp.dir, 'gone.tar'), webImage('gone', 512 * 1024));
    const pushed = await cli('alice', 'images', 'push', join(tp.dir, 'gone.tar'), '--name', 'gone:1');
    assert.equal(pushed.code, 0, pushed.stderr);
    const before = tp.platform.registry!.process.storedBytes();
    const denied = await cli('bob', 'images', 'delete', 'alice/gone:1');
    assert.notEqual(denied.code, 0, 'bob may pull alice (granted) but not delete');
    const del = await cli('alice', 'images', 'delete', `${address}/alice/gone:1`);
    assert.equal(del.code, 0, del.stderr);
    const gc = await cli('rg-admin', 'images', 'gc', '--wait');
    assert.equal(gc.code, 0, gc.stderr + gc.stdout);
    const after = tp.platform.registry!.process.storedBytes();
    console.log(`# registry gc: ${before} → ${after} bytes stored`);
    assert.ok(before - after >= 512 * 1024, `the deleted image's layer is freed (${before} → ${after})`);
    await tp.restart();
    address = tp.platform.registry!.address;
    const list = await cli('alice', 'images', 'list', 'alice', '--json');
    assert.deepEqual(
      (JSON.parse(list.stdout) as { repository: string; tags: string[] }[]).map((i) => `${i.repository}:${i.tags.join(',')}`),
      ['alice/web:1'],
    );
    const t = await tp.platform.identity.token({ grant_type: 'password', username: 'alice', password: 'alice-password' });
    const token = (
      await https(
        tp.platform.url,
        tp.platform.caPem,
        'GET',
        '/v1/registry/token?service=anodyne-registry&scope=repository:alice/web:pull',
        {
          token: t.access_token,
        },
      )
    ).body as { token: string };
    const head = await registryRequest(`https://${address}/v2/alice/web/manifests/1`, {
      method: 'HEAD',
      token: token.token,
      caPem: tp.platform.caPem,
      headers: ACCEPT,
    });
    assert.equal(head.status, 200, 'the image survived the restart');
    const audit = ((await call('GET', '/v1/audit?limit=500')).body as { action: string; result: string }[]).map(
      (e) => `${e.action}:${e.result}`,
    );
    for (const a of ['registry.push:ok', 'registry.delete:ok', 'registry.token:denied', 'registry.token:ok', 'registry.gc:ok'])
      assert.ok(audit.includes(a), `${a} is audited`);
  });
  it('a robot account (an OAuth client) pushes with its id and secret where it is granted, and nowhere else', async () => {
    const made = await call('POST', '/v1/clients', {
      client_id: 'ci-bot',
      client_secret: 'ci-bot-secret-0123456789',
      scopes: [],
      grant_types: ['client_credentials'],
    });
    assert.equal(made.status, 201, made.text);
    const certDir = join(tp.dir, 'skopeo-certs');
    const push = (creds: string) =>
      exec(
        [
          'skopeo',
          '--command-timeout',
          '60s',
          'copy',
          '--dest-cert-dir',
          certDir,
          '--dest-creds',
          creds,
          `oci:${join(tp.dir, 'pulled')}:1`,
          `docker://${address}/alice/ci:1`,
        ],
        { okCodes: [0, 1], timeoutMs: 90_000 },
      );
    const before = await push('ci-bot:ci-bot-secret-0123456789');
    assert.notEqual(before.code, 0, 'no grant, no push');
    assert.equal((await cli('alice', 'projects', 'grant', 'alice', 'client:ci-bot', '--push')).code, 0);
    assert.notEqual((await push('ci-bot:not-the-secret')).code, 0, 'a wrong secret is refused');
    const after = await push('ci-bot:ci-bot-secret-0123456789');
    assert.equal(after.code, 0, after.stderr);
    const images = JSON.parse((await cli('alice', 'images', 'list', 'alice', '--json')).stdout) as {
      repository: string;
      pushed_by: string;
    }[];
    assert.equal(images.find((i) => i.repository === 'alice/ci')?.pushed_by, 'ci-bot');
  });
});
