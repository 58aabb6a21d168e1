// Releases side by side: a cluster created on the older Kubernetes minor, upgraded through the API to the newer one.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { exec, skipUnless } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { BUILTIN_PLANS, type ClusterEndpoint } from '@anodyne/clusters';
import { startTestPlatform, https, type HttpResult, type TestPlatform } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_700 + (process.pid % 90);

interface Availability {
  target: string;
  requests: number;
  failed: number;
  longest_gap_ms: number;
}

interface ClusterBody {
  name: string;
  kubernetes_version: string;
  release: string;
  last_task_id: number;
  last_action_state: string;
}

/** The release's busybox image as the cluster's containerd knows it. */
async function busyboxRef(kubectl: (...args: string[]) => Promise<string>): Promise<string> {
  const out = await kubectl('get', 'nodes', '-o', 'jsonpath={.items[0].status.images[*].names}');
  const ref = /anodyne\.local\/busybox:[^" \],]+/.exec(out)?.[0];
  assert.ok(ref, `the busybox image is on the node: ${out}`);
  return ref;
}

/**
 * Calls the app through its Service from the API server's service proxy (it picks a ready
 * endpoint, as in-cluster clients do through kube-proxy), every 100 ms, counting failures.
 */
function serviceLoop(e: ClusterEndpoint): { stop(): Promise<{ requests: number; failed: number; lastError?: string }> } {
  let running = true;
  const counts = { requests: 0, failed: 0, lastError: undefined as string | undefined };
  const u = new URL('/api/v1/namespaces/default/services/app:80/proxy/', e.server);
  const once = () =>
    new Promise<void>((resolve) => {
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'GET',
          ca: e.admin.ca,
          cert: e.admin.certificate,
          key: e.admin.private_key,
          timeout: 5000,
        },
        (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => {
            counts.requests++;
            if (res.statusCode !== 200 || !body.includes('hello from anodyne busybox')) {
              counts.failed++;
              counts.lastError = `${res.statusCode} ${body.slice(0, 120)}`;
            }
            resolve();
          });
        },
      );
      req.on('error', (err) => {
        counts.requests++;
        counts.failed++;
        counts.lastError = err.message;
        resolve();
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.end();
    });
  const done = (async () => {
    while (running) {
      await once();
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return counts;
    },
  };
}

describe('Kubernetes releases side by side and upgrades between them', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: string;
  let kubeDir: string;
  let badRelease: string | undefined;
  const call = (method: string, path: string, body?: unknown): Promise<HttpResult> =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: admin,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });

  before(async () => {
    // Short watch times, so that a canary that cannot become healthy fails in a minute, not five.
    const plans = BUILTIN_PLANS.map((p) =>
      p.name === 'small' ? { ...p, update: { canaryWatchTime: '1000-45000', updateWatchTime: '1000-120000' } } : p,
    );
    tp = await startTestPlatform('up', '10.198.18.0/24', PORT, {}, { plans });
    await tp.platform.identity.createUser({ username: 'up-admin', password: 'up-admin-password', groups: [SCOPES.admin] });
    admin = (await tp.platform.identity.token({ grant_type: 'password', username: 'up-admin', password: 'up-admin-password' }))
      .access_token;
    kubeDir = mkdtempSync(join(tmpdir(), 'anodyne-up-kube-'));
  });
  after(async () => {
    rmSync(kubeDir, { recursive: true, force: true });
    if (badRelease) rmSync(badRelease, { recursive: true, force: true });
    await tp.stop();
  });

  it('a 1.33 cluster is upgraded to 1.34 (every node reports it, what was written is kept); scaling touches only workers, drains them and respects PodDisruptionBudgets', async (t) => {
    const releases = (await call('GET', '/v1/releases')).body as { key: string; kubernetes_version: string; default: boolean }[];
    const minors = releases.map((r) => r.kubernetes_version.split('.').slice(0, 2).join('.'));
    assert.ok(minors.includes('1.33') && minors.includes('1.34'), `both minors are registered: ${JSON.stringify(releases)}`);
    assert.equal(releases[0]!.default, true);
    const newest = releases[0]!;
    const older = releases.find((r) => r.kubernetes_version.startsWith('1.33.'))!;

    // Bad versions are refused before any task.
    const tasksBefore = (await tp.platform.director.tasks.list()).length;
    const unknown = await call('POST', '/v1/clusters', { name: 'nov', plan_name: 'small', kubernetes_version: '1.20' });
    assert.equal(unknown.status, 400, unknown.text);
    assert.equal((unknown.body as { code: string }).code, 'ANODYNE_E_KUBERNETES_VERSION_UNKNOWN');
    assert.equal((await tp.platform.director.tasks.list()).length, tasksBefore);

    const created = await call('POST', '/v1/clusters', {
      name: 'up1',
      plan_name: 'small',
      kubernetes_version: '1.33',
      parameters: { kubernetes_worker_instances: 1 },
    });
    assert.equal(created.status, 202, created.text);
    const c = created.body as ClusterBody;
    assert.equal(c.kubernetes_version, older.kubernetes_version);
    assert.equal(c.release, older.key);
    assert.equal((await tp.platform.director.wait(c.last_task_id)).state, 'done');

    const kubeconfig = join(kubeDir, 'up1.yaml');
    writeFileSync(kubeconfig, ((await call('GET', '/v1/clusters/up1/kubeconfig')).body as { kubeconfig: string }).kubeconfig, {
      mode: 0o600,
    });
    const kubectl = async (...args: string[]) => (await exec([tp.platform.releaseKubectl, '--kubeconfig', kubeconfig, ...args])).stdout;
    const nodeVersions = async () => {
      const out = await kubectl('get', 'nodes', '-o', 'jsonpath={range .items[*]}{.status.nodeInfo.kubeletVersion}{"\\n"}{end}');
      return out.split('\n').filter(Boolean);
    };
    const serverVersion = async () =>
      (JSON.parse(await kubectl('version', '-o', 'json')) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion;
    assert.equal(await serverVersion(), `v${older.kubernetes_version}`);
    assert.deepEqual(await nodeVersions(), [`v${older.kubernetes_version}`]);
    await kubectl('create', 'configmap', 'before-upgrade', '--from-literal=written=on-1.33');

    // Skipping back is refused before any task; the upgrade itself rolls every instance onto the newest release.
    const down = await call('POST', '/v1/clusters/up1/upgrade', { kubernetes_version: '1.32' });
    assert.equal(down.status, 400, down.text);
    const up = await call('POST', '/v1/clusters/up1/upgrade', {});
    assert.equal(up.status, 202, up.text);
    const upTask = await tp.platform.director.wait((up.body as ClusterBody).last_task_id);
    assert.equal(upTask.state, 'done', JSON.stringify(upTask.error));
    // The platform measured the API's availability through the cluster's endpoint while the task rolled it.
    const upAvailability = (upTask.result as { availability?: Availability }).availability;
    assert.ok(upAvailability && upAvailability.requests > 5, `availability measured: ${JSON.stringify(upTask.result)}`);
    t.diagnostic(`API during the upgrade (one master, so its restart is a gap): ${JSON.stringify(upAvailability)}`);
    const after = (await call('GET', '/v1/clusters/up1')).body as ClusterBody;
    assert.equal(after.kubernetes_version, newest.kubernetes_version);
    assert.equal(after.release, newest.key);
    const updated = (await tp.platform.director.tasks.events(upTask.id)).filter(
      (e) => e.stage.startsWith('Updating') && e.state === 'finished',
    );
    t.diagnostic(`upgrade ${older.kubernetes_version} → ${newest.kubernetes_version}: ${updated.length} instances updated`);
    assert.ok(updated.length >= 2, 'the master and the worker were both updated');

    assert.equal(await serverVersion(), `v${newest.kubernetes_version}`);
    let versions = await nodeVersions();
    for (let i = 0; i < 60 && versions.some((v) => v !== `v${newest.kubernetes_version}`); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      versions = await nodeVersions();
    }
    assert.deepEqual(versions, [`v${newest.kubernetes_version}`]);
    assert.equal(await kubectl('get', 'configmap', 'before-upgrade', '-o', 'jsonpath={.data.written}'), 'on-1.33');

    // Going back down a minor is refused; the release in use cannot be deleted, an unused one can be listed as such.
    const back = await call('POST', '/v1/clusters/up1/upgrade', { kubernetes_version: '1.33' });
    assert.equal(back.status, 400);
    assert.equal((back.body as { code: string }).code, 'ANODYNE_E_VERSION_DOWNGRADE');
    const inUse = await call('DELETE', `/v1/releases/${newest.key}`);
    assert.equal(inUse.status, 409);
    const listed = (await call('GET', '/v1/releases')).body as { key: string; clusters: number }[];
    assert.equal(listed.find((r) => r.key === newest.key)?.clusters, 1);
    assert.equal(listed.find((r) => r.key === older.key)?.clusters, 0);

    // Scaling touches only workers: the master's bundle (and so its processes) stays as it was.
    const masterHash = async () =>
      (await tp.platform.director.instances('cluster-up1')).find((r) => r.group_name === 'master')?.bundle_hash;
    const before = await masterHash();
    const grow = await call('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 2 });
    assert.equal(grow.status, 202, grow.text);
    assert.equal((await tp.platform.director.wait((grow.body as ClusterBody).last_task_id)).state, 'done');
    assert.equal(await masterHash(), before, 'scaling up left the master alone');
    const masterEvents = (await tp.platform.director.tasks.events((grow.body as ClusterBody).last_task_id)).filter(
      (e) => e.instance === 'master/0',
    );
    assert.deepEqual(masterEvents, [], 'no step of the scale-up touched master/0');

    // A bad release (its kubelet cannot start): the master goes first and is fine (it runs no kubelet); the first
    // worker, the canary, never becomes healthy and is put back on the bundle it ran; worker-1 is never touched.
    const good = await tp.platform.clusters.releases.get(newest.key);
    const badKey = 'kubernetes-v1.34.99-bad0bad0bad0';
    badRelease = join(dirname(good.dir), badKey);
    rmSync(badRelease, { recursive: true, force: true }); // left by a run that was killed
    mkdirSync(join(badRelease, 'bin'), { recursive: true });
    for (const f of readdirSync(join(good.dir, 'bin'))) {
      if (f !== 'kubelet') symlinkSync(join('..', '..', good.key, 'bin', f), join(badRelease, 'bin', f));
    }
    writeFileSync(join(badRelease, 'bin', 'kubelet'), '#!/bin/sh\necho "this kubelet cannot start" >&2\nexit 1\n', { mode: 0o755 });
    symlinkSync(join('..', good.key, 'images'), join(badRelease, 'images'));
    const goodManifest = JSON.parse(readFileSync(join(good.dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(badRelease, 'manifest.json'), JSON.stringify({ ...goodManifest, release: badKey, kubernetes: 'v1.34.99' }, null, 2));
    await tp.platform.clusters.releases.register([{ key: badKey, version: '1.34.99', dir: badRelease, manifestSha256: '0'.repeat(64) }]);
    const workerHashes = async () =>
      Object.fromEntries(
        (await tp.platform.director.instances('cluster-up1')).filter((r) => r.group_name === 'worker').map((r) => [r.idx, r.bundle_hash]),
      );
    const workersBefore = await workerHashes();
    const bad = await call('POST', '/v1/clusters/up1/upgrade', { kubernetes_version: '1.34.99' });
    assert.equal(bad.status, 202, bad.text);
    const badTask = await tp.platform.director.wait((bad.body as ClusterBody).last_task_id);
    assert.equal(badTask.state, 'error');
    assert.equal(badTask.error?.code, 'ANODYNE_E_CANARY_FAILED');
    assert.match(badTask.error?.message ?? '', /rolled back to its previous bundle/);
    t.diagnostic(`bad canary: ${badTask.error?.message}`);
    assert.deepEqual(await workerHashes(), workersBefore, 'worker/0 runs its previous bundle again; worker/1 was not touched');
    const badEvents = await tp.platform.director.tasks.events(badTask.id);
    assert.ok(badEvents.some((e) => e.stage === 'Rolling back canary' && e.instance === 'worker/0' && e.state === 'finished'));
    assert.ok(!badEvents.some((e) => e.instance === 'worker/1'), 'no step touched worker/1');
    assert.equal(
      ((await call('GET', '/v1/clusters/up1')).body as ClusterBody).kubernetes_version,
      newest.kubernetes_version,
      'the cluster still runs its release',
    );
    for (
      let i = 0;
      i < 60 &&
      !/^(True ){1}True$/.test(
        (await kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}')).trim(),
      );
      i++
    )
      await new Promise((r) => setTimeout(r, 1000));
    assert.equal(
      (await kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}')).trim(),
      'True True',
      'both nodes Ready',
    );
    assert.deepEqual(await nodeVersions(), [`v${newest.kubernetes_version}`, `v${newest.kubernetes_version}`]);

    // The master went first and runs the bad release's bundle (its programs work); going back to the cluster's
    // release puts it back, and the master's bundle is what it was before the bad upgrade.
    const fix = await call('POST', '/v1/clusters/up1/upgrade', { kubernetes_version: newest.kubernetes_version });
    assert.equal(fix.status, 202, fix.text);
    assert.equal((await tp.platform.director.wait((fix.body as ClusterBody).last_task_id)).state, 'done');
    assert.equal(await masterHash(), before, 'the master is back on its bundle');

    // An app with a PodDisruptionBudget, one replica on each worker, called through its Service all along.
    const app = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'app', namespace: 'default' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'app' } },
        template: {
          metadata: { labels: { app: 'app' } },
          spec: {
            affinity: {
              podAntiAffinity: {
                requiredDuringSchedulingIgnoredDuringExecution: [
                  { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { app: 'app' } } },
                ],
              },
            },
            terminationGracePeriodSeconds: 10,
            containers: [
              {
                name: 'web',
                image: await busyboxRef(kubectl),
                imagePullPolicy: 'Never',
                readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 1 },
                // Leave the Service's endpoints before stopping, as a well-behaved app does.
                lifecycle: { preStop: { exec: { command: ['sleep', '3'] } } },
              },
            ],
          },
        },
      },
    };
    const budget = (minAvailable: number) => ({
      apiVersion: 'policy/v1',
      kind: 'PodDisruptionBudget',
      metadata: { name: 'app', namespace: 'default' },
      spec: { minAvailable, selector: { matchLabels: { app: 'app' } } },
    });
    const service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'app', namespace: 'default' },
      spec: { selector: { app: 'app' }, ports: [{ port: 80, targetPort: 8080 }] },
    };
    const apply = async (o: unknown) => {
      const f = join(kubeDir, 'obj.json');
      writeFileSync(f, JSON.stringify(o));
      await kubectl('apply', '-f', f);
    };
    await apply(app);
    await apply(service);
    await apply(budget(2));
    await kubectl('rollout', 'status', 'deployment/app', '--timeout=120s');
    const podNodes = async () =>
      (await kubectl('get', 'pods', '-l', 'app=app', '-o', 'jsonpath={range .items[*]}{.spec.nodeName}{"\\n"}{end}'))
        .split('\n')
        .filter(Boolean)
        .sort();
    assert.deepEqual(await podNodes(), ['worker-0', 'worker-1']);

    // A budget that allows no disruption: the scale-down is refused before any task, nothing changes.
    for (let i = 0; i < 30 && (await kubectl('get', 'pdb', 'app', '-o', 'jsonpath={.status.expectedPods}')) !== '2'; i++)
      await new Promise((r) => setTimeout(r, 500));
    const tasksBeforeRefusal = (await tp.platform.director.tasks.list()).length;
    const refused = await call('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 1 });
    assert.equal(refused.status, 409, refused.text);
    assert.equal((refused.body as { code: string }).code, 'ANODYNE_E_DISRUPTION_NOT_ALLOWED');
    assert.equal((await tp.platform.director.tasks.list()).length, tasksBeforeRefusal, 'no task started');
    assert.equal(
      ((await call('GET', '/v1/clusters/up1')).body as { parameters: { kubernetes_worker_instances: number } }).parameters
        .kubernetes_worker_instances,
      2,
    );

    // A budget that allows one: worker-1 is drained (its pod moves) before its VM goes, and its Node goes too.
    await apply(budget(1));
    for (let i = 0; i < 30 && (await kubectl('get', 'pdb', 'app', '-o', 'jsonpath={.status.disruptionsAllowed}')) !== '1'; i++)
      await new Promise((r) => setTimeout(r, 500));
    const loop = serviceLoop(await tp.platform.clusters.binds.endpoint('up1'));
    const shrink = await call('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 1 });
    assert.equal(shrink.status, 202, shrink.text);
    const shrinkTask = await tp.platform.director.wait((shrink.body as ClusterBody).last_task_id);
    assert.equal(shrinkTask.state, 'done');
    const shrinkAvailability = (shrinkTask.result as { availability: Availability }).availability;
    t.diagnostic(`API during the scale-down: ${JSON.stringify(shrinkAvailability)}`);
    assert.ok(shrinkAvailability.requests > 5);
    assert.equal(shrinkAvailability.failed, 0, 'the API answered all along: the master was not touched');
    const counted = await loop.stop();
    t.diagnostic(
      `app through its Service during the scale-down: ${counted.requests} requests, ${counted.failed} failed${counted.lastError ? ` (${counted.lastError})` : ''}`,
    );
    assert.ok(counted.requests > 10, 'the loop ran');
    assert.equal(counted.failed, 0, 'no request to the app failed while its pod moved');
    assert.equal(await masterHash(), before, 'scaling down left the master alone');
    assert.deepEqual(
      (await kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}')).split(' '),
      ['worker-0'],
      'the Node of worker-1 is gone',
    );
    const lifecycle = (await tp.platform.director.tasks.events((shrink.body as ClusterBody).last_task_id)).map(
      (e) => `${e.instance ?? ''} ${e.message ?? e.stage}`,
    );
    assert.ok(lifecycle.includes('worker/1 before remove'), `worker/1 was drained before it went:\n${lifecycle.join('\n')}`);

    // Repave: every VM onto a fresh root, rolling; etcd's data (on its persistent disk) and the objects stay.
    // (With one worker left, the budget would rightly hold its drain back: it goes first.)
    await kubectl('delete', 'pdb', 'app');
    const vmIds = async () => (await tp.platform.director.instances('cluster-up1')).map((r) => r.vm_id).sort();
    const oldVms = await vmIds();
    const repave = await call('POST', '/v1/clusters/up1/recreate');
    assert.equal(repave.status, 202, repave.text);
    const repaveTask = await tp.platform.director.wait((repave.body as ClusterBody).last_task_id);
    assert.equal(repaveTask.state, 'done', JSON.stringify(repaveTask.error));
    const newVms = await vmIds();
    assert.equal(newVms.filter((id) => oldVms.includes(id)).length, 0, 'every VM is new');
    t.diagnostic(`repave: ${JSON.stringify((repaveTask.result as { availability?: Availability }).availability)}`);
    for (
      let i = 0;
      i < 60 &&
      (await kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}')).trim() !== 'True';
      i++
    )
      await new Promise((r) => setTimeout(r, 1000));
    assert.equal(
      await kubectl('get', 'configmap', 'before-upgrade', '-o', 'jsonpath={.data.written}'),
      'on-1.33',
      'the objects survived the repave',
    );

    const del = await call('DELETE', '/v1/clusters/up1');
    assert.equal(del.status, 202);
    assert.equal((await tp.platform.director.wait((del.body as ClusterBody).last_task_id)).state, 'done');
  });
});
