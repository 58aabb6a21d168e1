// Releases side by side: a cluster created on the older Kubernetes minor, upgraded through the API to the newer one.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { exec, skipUnless } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { BUILTIN_PLANS } from '@anodyne/clusters';
import type { AvailabilityReport } from '@anodyne/director';
import { startTestPlatform, https, type HttpResult, type TestPlatform, tokenSource, holdQuietHost } from './testing/index.js';
import {
  appLoop,
  aroundFailure,
  vmLogDirs,
  configMapLoop,
  deployApp,
  eventLoopWatch,
  line,
  until,
  budget,
  apply,
  type Kubectl,
} from './testing/workloads.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_300 + (process.pid % 90);

interface ClusterBody {
  name: string;
  kubernetes_version: string;
  release: string;
  last_task_id: number;
  last_action_state: string;
}

describe('Kubernetes releases side by side and upgrades between them', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: () => Promise<string>;
  let kubeDir: string;
  let badRelease: string | undefined;
  // Client loops still running when a test fails are stopped at the end, so that the process can exit.
  const loops: { stop(): Promise<AvailabilityReport> }[] = [];
  const track = <T extends { stop(): Promise<AvailabilityReport> }>(l: T): T => (loops.push(l), l);
  const call = async (method: string, path: string, body?: unknown): Promise<HttpResult> =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: await admin(),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const releasesNow = async () => {
    const releases = (await call('GET', '/v1/releases')).body as { key: string; kubernetes_version: string; default: boolean }[];
    const minors = releases.map((r) => r.kubernetes_version.split('.').slice(0, 2).join('.'));
    assert.ok(minors.includes('1.33') && minors.includes('1.34'), `both minors are registered: ${JSON.stringify(releases)}`);
    assert.equal(releases[0]!.default, true);
    return { newest: releases[0]!, older: releases.find((r) => r.kubernetes_version.startsWith('1.33.'))! };
  };
  /** kubectl with the cluster's admin kubeconfig, and helpers over it. */
  const kube = async (cluster: string) => {
    const kubeconfig = join(kubeDir, `${cluster}.yaml`);
    const got = (await call('GET', `/v1/clusters/${cluster}/kubeconfig`)).body as { kubeconfig: string };
    writeFileSync(kubeconfig, got.kubeconfig, { mode: 0o600 });
    const kubectl: Kubectl = async (...args) => (await exec([tp.platform.releaseKubectl, '--kubeconfig', kubeconfig, ...args])).stdout;
    const nodeVersions = async () =>
      (await kubectl('get', 'nodes', '-o', 'jsonpath={range .items[*]}{.status.nodeInfo.kubeletVersion}{"\\n"}{end}'))
        .split('\n')
        .filter(Boolean);
    const serverVersion = async () =>
      (JSON.parse(await kubectl('version', '-o', 'json')) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion;
    const readyNodes = async () =>
      (await kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}'))
        .split(' ')
        .filter((x) => x === 'True').length;
    const podNodes = async () =>
      (await kubectl('get', 'pods', '-l', 'app=app', '-o', 'jsonpath={range .items[*]}{.spec.nodeName}{"\\n"}{end}'))
        .split('\n')
        .filter(Boolean)
        .sort();
    return { kubectl, nodeVersions, serverVersion, readyNodes, podNodes, endpoint: await tp.platform.clusters.binds.endpoint(cluster) };
  };
  const runTask = async (method: string, path: string, body?: unknown) => {
    const r = await call(method, path, body);
    assert.equal(r.status, 202, r.text);
    return tp.platform.director.wait((r.body as ClusterBody).last_task_id);
  };
  const refused = async (method: string, path: string, body: unknown, status: number, code: string) => {
    const before = (await tp.platform.director.tasks.list()).length;
    const r = await call(method, path, body);
    assert.equal(r.status, status, r.text);
    assert.equal((r.body as { code: string }).code, code);
    assert.equal((await tp.platform.director.tasks.list()).length, before, `no task started for ${method} ${path}`);
  };
  /** Every process of the cluster's masters: pid and restarts, by instance/job/process. */
  const masterProcesses = async (deployment: string) => {
    const out: Record<string, string> = {};
    for (const r of (await tp.platform.director.instances(deployment)).filter((x) => x.group_name === 'master')) {
      for (const p of (await tp.platform.director.agentState(r)).processes)
        out[`master/${r.idx} ${p.job}/${p.name}`] = `pid ${p.pid} restarts ${p.restarts}`;
    }
    return out;
  };

  let release = () => {};
  before(async () => {
    release = holdQuietHost(); // suites that start VMs wait until it ends
    // Short watch times, so that a canary that cannot become healthy fails in a minute, not five.
    const plans = BUILTIN_PLANS.map((p) =>
      p.name === 'small'
        ? { ...p, update: { canaryWatchTime: '1000-45000', updateWatchTime: '1000-120000', drainTimeoutSeconds: 120 } }
        : p,
    );
    // A VM that dies is recreated 5 s after the health monitor finds it gone.
    tp = await startTestPlatform('up', '10.198.18.0/24', PORT, { ANODYNE_DIRECTOR_RESURRECT_AFTER_SECONDS: '5' }, { plans });
    await tp.platform.identity.createUser({ username: 'up-admin', password: 'up-admin-password', groups: [SCOPES.admin] });
    admin = tokenSource(tp, 'up-admin', 'up-admin-password');
    kubeDir = mkdtempSync(join(tmpdir(), 'anodyne-up-kube-'));
  });
  after(async () => {
    release();
    await Promise.all(loops.map((l) => l.stop()));
    rmSync(kubeDir, { recursive: true, force: true });
    if (badRelease) rmSync(badRelease, { recursive: true, force: true });
    await tp.stop();
  });

  it('a 3-master, 3-worker cluster on 1.33 upgrades to 1.34 with no failed request to its API or to an app under a PodDisruptionBudget; a resurrected worker comes back on the cluster’s release', async (t) => {
    const { newest, older } = await releasesNow();

    // Versions that are not offered, or not allowed, are refused before any task.
    await refused(
      'POST',
      '/v1/clusters',
      { name: 'nov', plan_name: 'ha', kubernetes_version: '1.20' },
      400,
      'ANODYNE_E_KUBERNETES_VERSION_UNKNOWN',
    );

    const created = await call('POST', '/v1/clusters', {
      name: 'ha1',
      plan_name: 'ha',
      kubernetes_version: '1.33',
      parameters: { kubernetes_worker_instances: 3 },
    });
    assert.equal(created.status, 202, created.text);
    const c = created.body as ClusterBody;
    assert.equal(c.kubernetes_version, older.kubernetes_version);
    assert.equal(c.release, older.key);
    const createTask = await tp.platform.director.wait(c.last_task_id);
    assert.equal(createTask.state, 'done', JSON.stringify(createTask.error));
    const k = await kube('ha1');
    assert.equal(await k.serverVersion(), `v${older.kubernetes_version}`);
    await until('3 nodes Ready', async () => (await k.readyNodes()) === 3, 120_000);
    assert.deepEqual(await k.nodeVersions(), Array(3).fill(`v${older.kubernetes_version}`));

    // A worker's VM dies while the platform's newest release is 1.34: the resurrector recreates it on the
    // cluster's own release, 1.33.
    const rows = await tp.platform.director.instances('cluster-ha1');
    const lost = rows.find((r) => r.group_name === 'worker' && r.idx === 2)!;
    await tp.platform.provider.deleteVm(lost.vm_id!);
    await until(
      'worker/2 resurrected',
      async () => {
        const now = (await tp.platform.director.instanceViews('cluster-ha1')).find((r) => r.instance === 'worker/2')!;
        return now.vm_id !== null && now.vm_id !== lost.vm_id && now.health === 'running';
      },
      180_000,
    );
    const back = (await tp.platform.director.instances('cluster-ha1')).find((r) => r.group_name === 'worker' && r.idx === 2)!;
    assert.equal(back.bundle_hash, lost.bundle_hash, 'the resurrected worker runs the bundle it ran, of its release');
    await until('3 nodes Ready after the resurrection', async () => (await k.readyNodes()) === 3, 120_000);
    const resurrectedVersion = (await k.kubectl('get', 'node', 'worker-2', '-o', 'jsonpath={.status.nodeInfo.kubeletVersion}')).trim();
    t.diagnostic(`worker/2 resurrected on ${resurrectedVersion} (platform newest ${newest.kubernetes_version})`);
    assert.equal(resurrectedVersion, `v${older.kubernetes_version}`);

    // An app of three replicas, two of which must always be up, and objects written before the upgrade.
    await deployApp(k.kubectl, kubeDir, 3, 2);
    for (let i = 0; i < 10; i++)
      await k.kubectl('create', 'configmap', `before-${i}`, `--from-literal=written=on-${older.kubernetes_version}`);

    // The upgrade, with a client of the API and a client of the app running all along.
    const api = track(configMapLoop(k.endpoint));
    const app = track(appLoop(k.endpoint));
    const stalls = eventLoopWatch();
    const started = Date.now();
    const upTask = await runTask('POST', '/v1/clusters/ha1/upgrade', {});
    const took = Date.now() - started;
    const [apiCount, appCount] = [await api.stop(), await app.stop()];
    t.diagnostic(
      `upgrade 3+3 ${older.kubernetes_version} → ${newest.kubernetes_version}: ${(took / 1000).toFixed(1)} s, task ${upTask.state}`,
    );
    t.diagnostic(`API client (ConfigMap create/read/delete): ${line(apiCount)}`);
    t.diagnostic(`app client (through its Service): ${line(appCount)}`);
    t.diagnostic(stalls.stop());
    const measured = (upTask.result as { availability?: AvailabilityReport } | null)?.availability;
    t.diagnostic(`the platform's own probe: ${measured ? line(measured) : 'none'}`);
    // On a failure: the task's steps, the cluster's events and the VMs' warnings around it, in the
    // diagnostics and in the assertion's message (which is what a CI summary keeps).
    let around = '';
    if (apiCount.failed + appCount.failed > 0) {
      const upEvents = await tp.platform.director.tasks.events(upTask.id);
      const logDirs = await vmLogDirs(tp.platform, 'cluster-ha1');
      const lines = (await Promise.all([apiCount, appCount].map((r) => aroundFailure(r, upEvents, k.kubectl, logDirs)))).flat();
      for (const l of lines) t.diagnostic(l);
      around = `\n${lines.join('\n')}`;
    }
    assert.equal(upTask.state, 'done', JSON.stringify(upTask.error));
    assert.ok(apiCount.requests > 100 && appCount.requests > 50, 'both loops ran through the upgrade');
    assert.equal(apiCount.failed, 0, `no request to the cluster API failed: ${line(apiCount)}${around}`);
    assert.equal(appCount.failed, 0, `no request to the app failed: ${line(appCount)}${around}`);
    assert.equal(measured?.failed, 0, `the platform counted no failure either: ${measured ? line(measured) : 'none'}`);

    // Masters one at a time, each with etcd's members healthy before it stopped and after it came back; then workers.
    const events = await tp.platform.director.tasks.events(upTask.id);
    const updated = events
      .filter((e) => e.stage.startsWith('Updating') && e.state === 'finished' && /^(master|worker)\//.test(e.instance ?? ''))
      .map((e) => e.instance);
    // Masters first, etcd's leader last among them (whichever it was), then the workers in order.
    assert.deepEqual([...updated.slice(0, 3)].sort(), ['master/0', 'master/1', 'master/2']);
    assert.deepEqual(updated.slice(3), ['worker/0', 'worker/1', 'worker/2']);
    t.diagnostic(`masters rolled in the order ${updated.slice(0, 3).join(', ')} (etcd's leader last)`);
    for (const m of ['master/0', 'master/1', 'master/2']) {
      const notes = events.filter((e) => e.instance === m).map((e) => e.message ?? '');
      assert.ok(notes.includes(`etcd: 2 other members healthy before ${m} stops`), `${m}: ${notes.join(' | ')}`);
      assert.ok(notes.includes(`etcd: 3 of 3 members healthy after ${m}`), `${m}: ${notes.join(' | ')}`);
    }

    const after = (await call('GET', '/v1/clusters/ha1')).body as ClusterBody;
    assert.equal(after.kubernetes_version, newest.kubernetes_version);
    assert.equal(after.release, newest.key);
    assert.equal(await k.serverVersion(), `v${newest.kubernetes_version}`);
    await until(
      'every kubelet reports the new version',
      async () => (await k.nodeVersions()).every((v) => v === `v${newest.kubernetes_version}`),
      60_000,
    );
    assert.equal((await k.nodeVersions()).length, 3);
    for (let i = 0; i < 10; i++)
      assert.equal(await k.kubectl('get', 'configmap', `before-${i}`, '-o', 'jsonpath={.data.written}'), `on-${older.kubernetes_version}`);
    assert.equal((await k.kubectl('get', 'configmaps', '-o', 'name')).split('\n').filter((n) => n.startsWith('configmap/loop-')).length, 0);

    // Back down a minor, or to an unknown version: refused before any task.
    await refused('POST', '/v1/clusters/ha1/upgrade', { kubernetes_version: '1.33' }, 400, 'ANODYNE_E_VERSION_DOWNGRADE');
    await refused('POST', '/v1/clusters/ha1/upgrade', { kubernetes_version: '1.32' }, 400, 'ANODYNE_E_KUBERNETES_VERSION_UNKNOWN');
    assert.equal((await runTask('DELETE', '/v1/clusters/ha1')).state, 'done');
  });

  it('scaling touches only workers and drains them under PodDisruptionBudgets; a bad canary is rolled back; a repave keeps the data', async (t) => {
    const { newest } = await releasesNow();
    const created = await call('POST', '/v1/clusters', { name: 'up1', plan_name: 'small', parameters: { kubernetes_worker_instances: 1 } });
    assert.equal(created.status, 202, created.text);
    assert.equal((created.body as ClusterBody).kubernetes_version, newest.kubernetes_version, 'the default is the newest');
    assert.equal((await tp.platform.director.wait((created.body as ClusterBody).last_task_id)).state, 'done');
    const k = await kube('up1');
    await until('the node is Ready', async () => (await k.readyNodes()) === 1, 120_000);
    await k.kubectl('create', 'configmap', 'before-repave', '--from-literal=written=yes');
    await deployApp(k.kubectl, kubeDir, 2, 1);

    // Up 1 → 3 and down again, with both clients running: the masters' processes are the same ones throughout.
    const masterHash = async () =>
      (await tp.platform.director.instances('cluster-up1')).find((r) => r.group_name === 'master')?.bundle_hash;
    const hashBefore = await masterHash();
    const processesBefore = await masterProcesses('cluster-up1');
    let api = track(configMapLoop(k.endpoint));
    let app = track(appLoop(k.endpoint));
    const grow = await runTask('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 3 });
    assert.equal(grow.state, 'done', JSON.stringify(grow.error));
    await until('3 nodes Ready', async () => (await k.readyNodes()) === 3, 120_000);
    assert.deepEqual(
      (await tp.platform.director.tasks.events(grow.id)).filter((e) => e.instance === 'master/0'),
      [],
      'no step of the scale-up touched master/0',
    );

    // The app moves onto the new workers (worker-0 cordoned a moment): the scale-down must move it back.
    await k.kubectl('cordon', 'worker-0');
    await k.kubectl('rollout', 'restart', 'deployment/app');
    await k.kubectl('rollout', 'status', 'deployment/app', '--timeout=120s');
    await k.kubectl('uncordon', 'worker-0');
    await until(
      'the old pods are gone',
      async () => (await k.podNodes()).length === 2,
      60_000,
      () => k.kubectl('get', 'pods', '-l', 'app=app', '-o', 'wide'),
    );
    assert.deepEqual(await k.podNodes(), ['worker-1', 'worker-2']);

    // A budget that allows no disruption: the scale-down is refused before any task, nothing changes.
    await apply(k.kubectl, kubeDir, budget(2));
    await until(
      'the budget allows no disruption',
      async () => (await k.kubectl('get', 'pdb', 'app', '-o', 'jsonpath={.status.disruptionsAllowed}')) === '0',
      30_000,
    );
    await refused('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 1 }, 409, 'ANODYNE_E_DISRUPTION_NOT_ALLOWED');
    const params = ((await call('GET', '/v1/clusters/up1')).body as { parameters: { kubernetes_worker_instances: number } }).parameters;
    assert.equal(params.kubernetes_worker_instances, 3);

    // A budget that allows one: each removed worker is drained (its pod moves) before its VM goes, and its Node goes too.
    await apply(k.kubectl, kubeDir, budget(1));
    await until(
      'the budget allows one',
      async () => (await k.kubectl('get', 'pdb', 'app', '-o', 'jsonpath={.status.disruptionsAllowed}')) === '1',
      30_000,
    );
    const shrink = await runTask('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 1 });
    const [apiCount, appCount] = [await api.stop(), await app.stop()];
    t.diagnostic(`API client during scale 1 → 3 → 1: ${line(apiCount)}`);
    t.diagnostic(`app client during scale 1 → 3 → 1: ${line(appCount)}`);
    assert.equal(shrink.state, 'done', JSON.stringify(shrink.error));
    assert.ok(apiCount.requests > 50 && appCount.requests > 20, 'both loops ran');
    assert.equal(apiCount.failed, 0, `no request to the cluster API failed: ${line(apiCount)}`);
    assert.equal(appCount.failed, 0, `no request to the app failed while its pods moved: ${line(appCount)}`);
    assert.equal(await masterHash(), hashBefore, 'the master runs the bundle it ran');
    assert.deepEqual(await masterProcesses('cluster-up1'), processesBefore, 'the master runs the very processes it ran');
    assert.deepEqual(
      (await k.kubectl('get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}')).split(' '),
      ['worker-0'],
      'the Nodes of worker-1 and worker-2 are gone',
    );
    await until(
      'the moved pods alone are left',
      async () => (await k.podNodes()).length === 2,
      60_000,
      () => k.kubectl('get', 'pods', '-l', 'app=app', '-o', 'wide'),
    );
    assert.deepEqual(await k.podNodes(), ['worker-0', 'worker-0']);
    const lifecycle = (await tp.platform.director.tasks.events(shrink.id)).map((e) => `${e.instance ?? ''} ${e.message ?? e.stage}`);
    for (const w of ['worker/1', 'worker/2'])
      assert.ok(lifecycle.includes(`${w} before remove`), `${w} was drained before it went:\n${lifecycle.join('\n')}`);

    // Back to two workers for the canary: a bad release (its kubelet cannot start). The master goes first and
    // is fine (it runs no kubelet); the first worker, the canary, never becomes healthy and is put back on the
    // bundle it ran; worker-1 is never touched.
    await k.kubectl('delete', 'pdb', 'app');
    assert.equal((await runTask('PATCH', '/v1/clusters/up1', { kubernetes_worker_instances: 2 })).state, 'done');
    const good = await tp.platform.clusters.releases.get(newest.key);
    const badKey = 'kubernetes-v1.34.99-bad0bad0bad0';
    badRelease = join(dirname(good.dir), badKey);
    rmSync(badRelease, { recursive: true, force: true }); // left by a run that was killed
    mkdirSync(join(badRelease, 'bin'), { recursive: true });
    for (const f of readdirSync(join(good.dir, 'bin'))) {
      if (f !== 'kubelet') symlinkSync(join('..', '..', good.key, 'bin', f), join(badRelease, 'bin', f));
    }
    writeFileSync(join(badRelease, 'bin', 'kubelet'), '#!/bin/sh\necho "this kubelet cannot start" >&2\nexit 1\n', { mode: 0o755 });
    for (const d of readdirSync(good.dir))
      if (d !== 'bin' && d !== 'manifest.json') symlinkSync(join('..', good.key, d), join(badRelease, d));
    const goodManifest = JSON.parse(readFileSync(join(good.dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(badRelease, 'manifest.json'), JSON.stringify({ ...goodManifest, release: badKey, kubernetes: 'v1.34.99' }, null, 2));
    await tp.platform.clusters.releases.register([{ key: badKey, version: '1.34.99', dir: badRelease, manifestSha256: '0'.repeat(64) }]);
    const workerHashes = async () =>
      Object.fromEntries(
        (await tp.platform.director.instances('cluster-up1')).filter((r) => r.group_name === 'worker').map((r) => [r.idx, r.bundle_hash]),
      );
    const workersBefore = await workerHashes();
    const badTask = await runTask('POST', '/v1/clusters/up1/upgrade', { kubernetes_version: '1.34.99' });
    assert.equal(badTask.state, 'error');
    assert.equal(badTask.error?.code, 'ANODYNE_E_CANARY_FAILED');
    assert.match(badTask.error?.message ?? '', /rolled back to its previous bundle/);
    // It failed as soon as the kubelet had spent its restarts, saying how it exits and what it wrote.
    assert.match(
      badTask.error?.message ?? '',
      /worker\/0 failed: kubelet\/kubelet exited \d+ times \(last exit code 1\): .*this kubelet cannot start/,
    );
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
    await until('both nodes Ready', async () => (await k.readyNodes()) === 2, 60_000);
    assert.deepEqual(await k.nodeVersions(), [`v${newest.kubernetes_version}`, `v${newest.kubernetes_version}`]);

    // The master went first and runs the bad release's bundle (its programs work); going back to the cluster's
    // release puts it back, and the master's bundle is what it was before the bad upgrade.
    assert.equal((await runTask('POST', '/v1/clusters/up1/upgrade', { kubernetes_version: newest.kubernetes_version })).state, 'done');
    assert.equal(await masterHash(), hashBefore, 'the master is back on its bundle');

    // Repave: every VM onto a fresh root, rolling; etcd's data (on its persistent disk) and the objects stay.
    const vmIds = async () => (await tp.platform.director.instances('cluster-up1')).map((r) => r.vm_id).sort();
    const oldVms = await vmIds();
    api = track(configMapLoop(k.endpoint));
    app = track(appLoop(k.endpoint));
    const repave = await runTask('POST', '/v1/clusters/up1/recreate');
    const [apiRepave, appRepave] = [await api.stop(), await app.stop()];
    assert.equal(repave.state, 'done', JSON.stringify(repave.error));
    t.diagnostic(`repave (one master, so its restart is a gap): API ${line(apiRepave)}; app ${line(appRepave)}`);
    const newVms = await vmIds();
    assert.equal(newVms.filter((id) => oldVms.includes(id)).length, 0, 'every VM is new');
    await until('both nodes Ready after the repave', async () => (await k.readyNodes()) === 2, 60_000);
    assert.equal(
      await k.kubectl('get', 'configmap', 'before-repave', '-o', 'jsonpath={.data.written}'),
      'yes',
      'the objects survived the repave',
    );

    assert.equal((await runTask('DELETE', '/v1/clusters/up1')).state, 'done');
  });
});
