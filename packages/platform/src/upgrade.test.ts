// Releases side by side: a cluster created on the older Kubernetes minor, upgraded through the API to the newer one.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, skipUnless } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { startTestPlatform, https, type HttpResult, type TestPlatform } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_700 + (process.pid % 90);

interface ClusterBody {
  name: string;
  kubernetes_version: string;
  release: string;
  last_task_id: number;
  last_action_state: string;
}

describe('Kubernetes releases side by side and upgrades between them', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: string;
  let kubeDir: string;
  const call = (method: string, path: string, body?: unknown): Promise<HttpResult> =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: admin,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });

  before(async () => {
    tp = await startTestPlatform('up', '10.198.14.0/24', PORT);
    await tp.platform.identity.createUser({ username: 'up-admin', password: 'up-admin-password', groups: [SCOPES.admin] });
    admin = (await tp.platform.identity.token({ grant_type: 'password', username: 'up-admin', password: 'up-admin-password' }))
      .access_token;
    kubeDir = mkdtempSync(join(tmpdir(), 'anodyne-up-kube-'));
  });
  after(async () => {
    rmSync(kubeDir, { recursive: true, force: true });
    await tp.stop();
  });

  it('a 1.33 cluster is upgraded to 1.34: every node reports the new version, what was written before is still there', async (t) => {
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

    const del = await call('DELETE', '/v1/clusters/up1');
    assert.equal(del.status, 202);
    assert.equal((await tp.platform.director.wait((del.body as ClusterBody).last_task_id)).state, 'done');
  });
});
