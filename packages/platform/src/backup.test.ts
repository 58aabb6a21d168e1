// Cluster backups through the API into a real S3 store (SeaweedFS): back up a 3-master cluster, lose objects, restore; damaged artifacts refused first; into a new cluster.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, skipUnless } from '@anodyne/common';
import { locateRelease } from '@anodyne/release';
import { SCOPES } from '@anodyne/identity';
import { S3ArtifactStore, open, seal } from '@anodyne/backup';
import { startSeaweed, type TestSeaweed } from '@anodyne/backup/testing';
import type { BackupManifest, BackupView, PlatformBackupManifest } from '@anodyne/clusters';
import { backupKeys, storeOptionsOf } from './platform.js';
import { restorePlatform } from './restore.js';
import { startTestPlatform, https, type HttpResult, type TestPlatform, tokenSource, awaitQuietHost } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_400 + (process.pid % 90);

describe('cluster backups and restores through the API', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: () => Promise<string>;
  let kubeDir: string;
  let seaweed: TestSeaweed;
  let s3: S3ArtifactStore;
  const call = async (method: string, path: string, body?: unknown): Promise<HttpResult> =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: await admin(),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const waitTask = async (id: number) => {
    const t = await tp.platform.director.wait(id);
    assert.equal(t.state, 'done', `task ${id} (${t.description}): ${JSON.stringify(t.error)}`);
    return t;
  };
  const kube = async (cluster: string) => {
    const cfg = join(kubeDir, `${cluster}.yaml`);
    writeFileSync(cfg, ((await call('GET', `/v1/clusters/${cluster}/kubeconfig`)).body as { kubeconfig: string }).kubeconfig, {
      mode: 0o600,
    });
    return async (...args: string[]) => (await exec([tp.platform.releaseKubectl, '--kubeconfig', cfg, ...args])).stdout;
  };
  const until = async (what: string, check: () => Promise<boolean>, ms: number) => {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  /** The masters' processes (pid and restarts): a refused restore leaves them as they were. */
  const masterProcesses = async (deployment: string) => {
    const out: Record<string, string> = {};
    for (const r of (await tp.platform.director.instances(deployment)).filter((x) => x.group_name === 'master'))
      for (const p of (await tp.platform.director.agentState(r)).processes) out[`${r.idx} ${p.job}`] = `${p.pid}/${p.restarts}`;
    return out;
  };
  /** Writes the objects a backup must bring back. */
  const writeObjects = async (kubectl: (...a: string[]) => Promise<string>) => {
    await kubectl('create', 'namespace', 'team-a');
    for (let i = 1; i <= 5; i++) await kubectl('-n', 'team-a', 'create', 'configmap', `cm-${i}`, `--from-literal=value=v${i}`);
    await kubectl('-n', 'team-a', 'create', 'secret', 'generic', 'db', '--from-literal=password=s3cr3t-value');
    const image = locateRelease().image('busybox').ref;
    await kubectl('-n', 'team-a', 'create', 'deployment', 'web', `--image=${image}`, '--replicas=2');
    await kubectl(
      '-n',
      'team-a',
      'patch',
      'deployment',
      'web',
      '--type=json',
      '-p',
      '[{"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"}]',
    );
    await kubectl('-n', 'team-a', 'rollout', 'status', 'deployment/web', '--timeout=120s');
  };
  /** Every object written above is there with its value, and the app runs. */
  const checkObjects = async (kubectl: (...a: string[]) => Promise<string>) => {
    for (let i = 1; i <= 5; i++)
      assert.equal(await kubectl('-n', 'team-a', 'get', 'configmap', `cm-${i}`, '-o', 'jsonpath={.data.value}'), `v${i}`);
    const secret = await kubectl('-n', 'team-a', 'get', 'secret', 'db', '-o', 'jsonpath={.data.password}');
    assert.equal(Buffer.from(secret, 'base64').toString(), 's3cr3t-value');
    await kubectl('-n', 'team-a', 'rollout', 'status', 'deployment/web', '--timeout=180s');
    await until(
      'the app’s pods Running',
      async () =>
        (await kubectl('-n', 'team-a', 'get', 'pods', '-l', 'app=web', '-o', 'jsonpath={.items[*].status.phase}')).trim() ===
        'Running Running',
      180_000,
    );
  };

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    kubeDir = mkdtempSync(join(tmpdir(), 'anodyne-bk-kube-'));
    // A real S3 object store: SeaweedFS's S3 gateway, with signed requests only.
    seaweed = await startSeaweed(join(kubeDir, 'seaweed'));
    const s3Options = {
      endpoint: seaweed.endpoint,
      bucket: seaweed.bucket,
      prefix: 'anodyne/',
      accessKeyId: seaweed.accessKeyId,
      secretAccessKey: seaweed.secretAccessKey,
    };
    s3 = new S3ArtifactStore(s3Options);
    tp = await startTestPlatform('bk', '10.198.19.0/24', PORT, {
      ANODYNE_BACKUP_STORE: 's3',
      ANODYNE_BACKUP_S3_ENDPOINT: s3Options.endpoint,
      ANODYNE_BACKUP_S3_BUCKET: s3Options.bucket,
      ANODYNE_BACKUP_S3_PREFIX: s3Options.prefix,
      ANODYNE_BACKUP_S3_ACCESS_KEY_ID: s3Options.accessKeyId,
      ANODYNE_BACKUP_S3_SECRET_ACCESS_KEY: s3Options.secretAccessKey,
    });
    await tp.platform.identity.createUser({ username: 'bk-admin', password: 'bk-admin-password', groups: [SCOPES.admin] });
    admin = tokenSource(tp, 'bk-admin', 'bk-admin-password');
  });
  after(async () => {
    await tp?.stop();
    await seaweed?.stop();
    rmSync(kubeDir, { recursive: true, force: true });
  });

  it('backs up a 3-master cluster, brings back what was deleted and drops what came after; refuses damaged or foreign artifacts before stopping anything; restores into a new cluster after the first is gone', async (t) => {
    const created = await call('POST', '/v1/clusters', { name: 'bk1', plan_name: 'ha', parameters: { kubernetes_worker_instances: 1 } });
    assert.equal(created.status, 202, created.text);
    await waitTask((created.body as { last_task_id: number }).last_task_id);
    const kubectl = await kube('bk1');
    await until('the node Ready', async () => (await kubectl('get', 'nodes', '--no-headers')).includes(' Ready '), 120_000);
    await writeObjects(kubectl);

    // Bad requests are refused before any task.
    const tasksBefore = (await tp.platform.director.tasks.list()).length;
    for (const [body, status] of [
      [{ cluster: 'no-such' }, 404],
      [{ cluster: 'Bad_Name' }, 400],
      [{}, 400],
    ] as const) {
      const r = await call('POST', '/v1/backups', body);
      assert.equal(r.status, status, r.text);
    }
    assert.equal((await tp.platform.director.tasks.list()).length, tasksBefore);

    const started = performance.now();
    const made = await call('POST', '/v1/backups', { cluster: 'bk1' });
    assert.equal(made.status, 202, made.text);
    const { backup, task } = made.body as { backup: BackupView; task: { id: number } };
    assert.equal(backup.state, 'running');
    await waitTask(task.id);
    const shown = (await call('GET', `/v1/backups/${backup.id}`)).body as BackupView;
    const manifest = shown.manifest as BackupManifest;
    t.diagnostic(
      `backup ${backup.id}: ${shown.size_bytes} bytes, etcd revision ${manifest.etcd.revision}, ${(performance.now() - started).toFixed(0)} ms`,
    );
    assert.equal(shown.state, 'done');
    assert.equal(manifest.cluster, 'bk1');
    assert.equal(manifest.plan, 'ha');
    assert.ok(manifest.etcd.revision > 0 && manifest.etcd.total_keys > 0);
    assert.deepEqual(
      manifest.files.map((f) => f.name),
      ['etcd.snapshot', 'cluster.json'],
    );
    const listed = (await call('GET', '/v1/backups?cluster=bk1')).body as BackupView[];
    assert.deepEqual(
      listed.map((x) => x.id),
      [backup.id],
    );
    // The artifacts are in the object store, sealed: nothing of the cluster readable, and each opens to what the manifest says.
    assert.equal(shown.location, `s3://${seaweed.bucket}/anodyne/${backup.id}`);
    assert.deepEqual(
      (await s3.list(`${backup.id}/`)).map((o) => o.key),
      [`${backup.id}/cluster.json.sealed`, `${backup.id}/etcd.snapshot.sealed`, `${backup.id}/manifest.json`],
    );
    const key = `${backup.id}/etcd.snapshot.sealed`;
    const sealedSnapshot = await s3.get(key);
    assert.ok(
      !sealedSnapshot.includes('s3cr3t-value') && !sealedSnapshot.includes('team-a'),
      'nothing of the cluster is readable in the artifact',
    );
    const plain = await open(sealedSnapshot, backupKeys(tp.platform.creds));
    assert.equal(createHash('sha256').update(plain).digest('hex'), manifest.files[0]!.sha256);

    // Lose the namespace and everything in it; write something the backup does not have.
    await kubectl('delete', 'namespace', 'team-a', '--wait=true', '--timeout=120s');
    await kubectl('create', 'configmap', 'after-backup', '--from-literal=x=y');

    // Damaged artifacts: each refused with its code, before any task, with the masters' processes untouched.
    const processes = await masterProcesses('cluster-bk1');
    const refuse = async (what: string, code: string) => {
      const before = (await tp.platform.director.tasks.list()).length;
      const r = await call('POST', `/v1/backups/${backup.id}/restore`);
      assert.equal(r.status, 400, `${what}: ${r.text}`);
      assert.equal((r.body as { code: string }).code, code, what);
      assert.equal((await tp.platform.director.tasks.list()).length, before, `${what}: no task`);
      t.diagnostic(`${what}: ${(r.body as { message: string }).message}`);
    };
    const flipped = Buffer.from(sealedSnapshot);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x01;
    await s3.put(key, flipped);
    await refuse('a flipped byte', 'ANODYNE_E_BACKUP_CORRUPT');
    await s3.put(key, sealedSnapshot.subarray(0, sealedSnapshot.length - 1000));
    await refuse('a truncated artifact', 'ANODYNE_E_BACKUP_CORRUPT');
    // One sealed by another platform (another key), with a manifest that matches it.
    const foreign = seal(plain, { id: '00000000-0000-4000-8000-000000000000', secret: 'another platform’s key' });
    await s3.put(key, foreign);
    const forged: BackupManifest = {
      ...manifest,
      files: manifest.files.map((f) =>
        f.name === 'etcd.snapshot'
          ? { ...f, sealed_size: foreign.length, sealed_sha256: createHash('sha256').update(foreign).digest('hex') }
          : f,
      ),
    };
    await tp.platform.store.db
      .updateTable('backups')
      .set({ manifest: JSON.stringify(forged) })
      .where('id', '=', backup.id)
      .execute();
    await refuse('an artifact sealed with another key', 'ANODYNE_E_BACKUP_WRONG_KEY');
    await tp.platform.store.db
      .updateTable('backups')
      .set({ manifest: JSON.stringify(manifest) })
      .where('id', '=', backup.id)
      .execute();
    await s3.put(key, sealedSnapshot);
    assert.deepEqual(await masterProcesses('cluster-bk1'), processes, 'nothing was stopped');

    // The restore: the namespace, its objects and its app are back; what came after the backup is not.
    const restoredAt = performance.now();
    const restore = await call('POST', `/v1/backups/${backup.id}/restore`);
    assert.equal(restore.status, 202, restore.text);
    await waitTask((restore.body as { id: number }).id);
    t.diagnostic(`restore onto bk1 (3 masters): ${(performance.now() - restoredAt).toFixed(0)} ms`);
    await checkObjects(kubectl);
    assert.match(
      await exec([tp.platform.releaseKubectl, '--kubeconfig', join(kubeDir, 'bk1.yaml'), 'get', 'configmap', 'after-backup'], {
        okCodes: [1],
      }).then((r) => r.stderr),
      /not found/,
    );

    // A schedule with retention: due passes take backups, and of those only the newest is kept (the one asked
    // for above stays). Passes are run here rather than waited for; "due" is moved into the past.
    assert.equal((await call('GET', '/v1/clusters/bk1/backup-schedule')).status, 404);
    const badSchedule = await call('PUT', '/v1/clusters/bk1/backup-schedule', { every_minutes: 1, keep_last: 1 });
    assert.equal(badSchedule.status, 400, 'at least every 5 minutes');
    const set = await call('PUT', '/v1/clusters/bk1/backup-schedule', { every_minutes: 60, keep_last: 1, keep_days: 7 });
    assert.equal(set.status, 200, set.text);
    assert.ok(Date.parse((set.body as { next_at: string }).next_at) > Date.now() + 59 * 60_000);
    const backups = tp.platform.clusters.backups;
    const due = () =>
      tp.platform.store.db
        .updateTable('backup_schedules')
        .set({ next_at: new Date(0).toISOString() })
        .execute();
    assert.deepEqual(await backups.runSchedules(), { started: [], removed: [] }, 'nothing is due yet');
    const taken: string[] = [];
    for (let i = 0; i < 2; i++) {
      await due();
      const pass = await backups.runSchedules();
      assert.equal(pass.started.length, 1);
      taken.push(pass.started[0]!);
      const b = (await call('GET', `/v1/backups/${pass.started[0]}`)).body as BackupView;
      await waitTask(b.task_id!);
    }
    assert.deepEqual((await backups.runSchedules()).removed, [taken[0]], 'the older scheduled backup goes');
    const kept = ((await call('GET', '/v1/backups?cluster=bk1')).body as BackupView[]).map((b) => [b.id, b.scheduled]);
    assert.deepEqual(kept, [
      [taken[1], true],
      [backup.id, false],
    ]);
    assert.equal(((await call('GET', '/v1/clusters/bk1/backup-schedule')).body as { last_backup: string }).last_backup, taken[1]);
    assert.equal((await call('DELETE', `/v1/backups/${taken[1]}`)).status, 204);
    assert.equal((await call('DELETE', '/v1/clusters/bk1/backup-schedule')).status, 204);

    // Point in time: a schedule that also records etcd's changes after each backup; a restore to an instant
    // between two rounds of writes gives exactly the objects of that instant.
    const pitSet = await call('PUT', '/v1/clusters/bk1/backup-schedule', { every_minutes: 60, keep_last: 2, point_in_time: true });
    assert.equal(pitSet.status, 200, pitSet.text);
    assert.equal((pitSet.body as { point_in_time: boolean }).point_in_time, true);
    await due();
    const base = (await backups.runSchedules()).started[0]!;
    await waitTask(((await call('GET', `/v1/backups/${base}`)).body as BackupView).task_id!);
    assert.equal(tp.platform.clusters.recorder.recording('bk1'), true, 'the change record runs after the backup');
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await kubectl('create', 'configmap', 'pit-1', '--from-literal=v=t1');
    await kubectl('create', 'configmap', 'pit-2', '--from-literal=v=t1');
    await sleep(2500);
    const t2 = new Date().toISOString();
    await sleep(2500);
    await kubectl('label', 'configmap', 'pit-1', 'changed=after-t2');
    await kubectl('delete', 'configmap', 'pit-2');
    await kubectl('create', 'configmap', 'pit-3', '--from-literal=v=t3');
    await sleep(3000); // the record is stored every 2 s
    const beforeBackup = await call('POST', `/v1/backups/${base}/restore`, { to_time: '2000-01-01T00:00:00Z' });
    assert.equal(beforeBackup.status, 400, beforeBackup.text);
    const revisionOf = async (id: string) =>
      ((await call('GET', `/v1/backups/${id}`)).body as { manifest: { etcd: { revision: number } } }).manifest.etcd.revision;
    const beyond = await call('POST', `/v1/backups/${base}/restore`, { to_revision: (await revisionOf(base)) + 10_000_000 });
    assert.equal(beyond.status, 409, beyond.text);
    assert.equal((beyond.body as { code: string }).code, 'ANODYNE_E_BACKUP_RECORD_GAP');
    const pitr = await call('POST', `/v1/backups/${base}/restore`, { to_time: t2 });
    assert.equal(pitr.status, 202, pitr.text);
    const pitrTask = await waitTask((pitr.body as { id: number }).id);
    t.diagnostic(`restore to ${t2}: ${JSON.stringify(pitrTask.result)}`);
    assert.ok((pitrTask.result as { replayed_changes: number }).replayed_changes > 0);
    // The schedule keeps a record: the restore took the first backup of the restored state itself.
    const base2 = (pitrTask.result as { base_backup?: string }).base_backup;
    assert.ok(base2, 'the restore names the backup it took');
    const base2View = (await call('GET', `/v1/backups/${base2}`)).body as BackupView & { scheduled: boolean };
    assert.equal(base2View.state, 'done');
    assert.equal(base2View.task_id, pitrTask.id, 'made by the restore task');
    assert.equal(tp.platform.clusters.recorder.recording('bk1'), true, 'the record runs again after the restore');
    assert.equal(await kubectl('get', 'configmap', 'pit-1', '-o', 'jsonpath={.data.v}'), 't1');
    assert.equal(
      await kubectl('get', 'configmap', 'pit-1', '-o', 'jsonpath={.metadata.labels.changed}'),
      '',
      'the later change is not there',
    );
    assert.equal(await kubectl('get', 'configmap', 'pit-2', '-o', 'jsonpath={.data.v}'), 't1', 'deleted after t2: back');
    const pit3 = await exec([tp.platform.releaseKubectl, '--kubeconfig', join(kubeDir, 'bk1.yaml'), 'get', 'configmap', 'pit-3'], {
      okCodes: [1],
    });
    assert.match(pit3.stderr, /not found/, 'created after t2: not there');
    await checkObjects(kubectl);

    // Across that restore: the base backup cannot reach past it (what came after builds on the restored state) —
    // refused before anything stops; the backup the restore took reaches instants after it (pit-4, written after
    // the restore and before any other backup, comes from the record), and none of the changes recorded before
    // the restore (pit-3's create, pit-2's delete) come back with it.
    await kubectl('create', 'configmap', 'pit-4', '--from-literal=v=t4');
    await sleep(2500);
    const across = await call('POST', `/v1/backups/${base}/restore`, { to_time: new Date().toISOString() });
    assert.equal(across.status, 400, across.text);
    assert.match((across.body as { message: string }).message, /was restored at/);
    assert.equal(await kubectl('get', 'configmap', 'pit-4', '-o', 'jsonpath={.data.v}'), 't4', 'nothing stopped');
    const [rev1, rev2] = [await revisionOf(base), await revisionOf(base2)];
    t.diagnostic(`etcd revision of the backup before the restore: ${rev1}; of the one after it: ${rev2}`);
    assert.ok(rev2 > rev1 + 900_000_000, 'revisions after a restore are above every one before it');
    await kubectl('create', 'configmap', 'pit-5', '--from-literal=v=t5');
    await sleep(2500);
    const t5 = new Date().toISOString();
    await sleep(2500);
    await kubectl('delete', 'configmap', 'pit-4');
    await sleep(3000);
    const pitr2 = await call('POST', `/v1/backups/${base2}/restore`, { to_time: t5 });
    assert.equal(pitr2.status, 202, pitr2.text);
    const pitr2Task = await waitTask((pitr2.body as { id: number }).id);
    assert.equal(pitr2Task.state, 'done', JSON.stringify(pitr2Task.error));
    assert.equal(await kubectl('get', 'configmap', 'pit-5', '-o', 'jsonpath={.data.v}'), 't5');
    assert.equal(await kubectl('get', 'configmap', 'pit-4', '-o', 'jsonpath={.data.v}'), 't4', 'deleted after t5: back');
    assert.equal(await kubectl('get', 'configmap', 'pit-2', '-o', 'jsonpath={.data.v}'), 't1', 'not deleted again by the old record');
    const pit3Again = await exec([tp.platform.releaseKubectl, '--kubeconfig', join(kubeDir, 'bk1.yaml'), 'get', 'configmap', 'pit-3'], {
      okCodes: [1],
    });
    assert.match(pit3Again.stderr, /not found/, 'not created again by the old record');
    await checkObjects(kubectl);
    assert.equal((await call('DELETE', '/v1/clusters/bk1/backup-schedule')).status, 204);
    assert.equal(tp.platform.clusters.recorder.recording('bk1'), false);

    // Into a new cluster, once the first is gone.
    const del = await call('DELETE', '/v1/clusters/bk1');
    await waitTask((del.body as { last_task_id: number }).last_task_id);
    const gone = await call('POST', `/v1/backups/${backup.id}/restore`);
    assert.equal(gone.status, 404, 'the cluster is gone: a new one must be named');
    const into = await call('POST', `/v1/backups/${backup.id}/restore`, { cluster: 'bk2' });
    assert.equal(into.status, 202, into.text);
    const intoTask = await waitTask((into.body as { id: number }).id);
    t.diagnostic(`restore into a new cluster bk2: ${JSON.stringify(intoTask.result)}`);
    const kubectl2 = await kube('bk2');
    await checkObjects(kubectl2);
    const cluster2 = (await call('GET', '/v1/clusters/bk2')).body as { plan_name: string; kubernetes_version: string };
    assert.equal(cluster2.plan_name, 'ha');
    assert.equal(cluster2.kubernetes_version, manifest.kubernetes_version);

    // The platform's own schedule (admins): its database backed up by due passes, the newest kept; no point in time.
    assert.equal((await call('GET', '/v1/platform/backup-schedule')).status, 404);
    const platformPit = await call('PUT', '/v1/platform/backup-schedule', { every_minutes: 60, keep_last: 1, point_in_time: true });
    assert.equal(platformPit.status, 400, platformPit.text);
    // keep_days: 0 is refused (not read as "no limit"); null is no age limit.
    const zeroDays = await call('PUT', '/v1/platform/backup-schedule', { every_minutes: 60, keep_last: 1, keep_days: 0 });
    assert.equal(zeroDays.status, 400, zeroDays.text);
    assert.equal((zeroDays.body as { code: string }).code, 'ANODYNE_E_INVALID_INPUT');
    const noAge = await call('PUT', '/v1/platform/backup-schedule', { every_minutes: 60, keep_last: 1, keep_days: null });
    assert.equal(noAge.status, 200, noAge.text);
    assert.equal((noAge.body as { keep_days: number | null }).keep_days, null);
    const platformSet = await call('PUT', '/v1/platform/backup-schedule', { every_minutes: 60, keep_last: 1 });
    assert.equal(platformSet.status, 200, platformSet.text);
    assert.equal((platformSet.body as { cluster: string | null }).cluster, null);
    const platformTaken: string[] = [];
    for (let i = 0; i < 2; i++) {
      await tp.platform.store.db
        .updateTable('backup_schedules')
        .set({ next_at: new Date(0).toISOString() })
        .where('cluster', '=', '')
        .execute();
      const pass = await backups.runSchedules();
      assert.equal(pass.started.length, 1, JSON.stringify(pass));
      platformTaken.push(pass.started[0]!);
      const b = (await call('GET', `/v1/backups/${pass.started[0]}`)).body as BackupView;
      assert.equal(b.cluster, null);
      assert.equal(b.scheduled, true);
      await waitTask(b.task_id!);
    }
    assert.deepEqual((await backups.runSchedules()).removed, [platformTaken[0]], 'the older scheduled platform backup goes');
    const platformKept = ((await call('GET', '/v1/backups')).body as BackupView[]).filter((b) => b.cluster === null).map((b) => b.id);
    assert.deepEqual(platformKept, [platformTaken[1]]);
    assert.equal(((await call('GET', '/v1/platform/backup-schedule')).body as { last_backup: string }).last_backup, platformTaken[1]);
    assert.equal((await call('DELETE', '/v1/platform/backup-schedule')).status, 204);
    assert.equal((await call('GET', '/v1/platform/backup-schedule')).status, 404);
    assert.equal((await call('DELETE', `/v1/backups/${platformTaken[1]}`)).status, 204);

    // The platform itself: a backup of its database; the database lost; restored offline into an empty one with
    // the same key file: clusters, users, tasks, backups and credentials are back, and a cluster still scales.
    const pb = await call('POST', '/v1/backups', { platform: true });
    assert.equal(pb.status, 202, pb.text);
    const platformBackup = (pb.body as { backup: BackupView }).backup;
    assert.equal(platformBackup.cluster, null);
    await waitTask((pb.body as { task: { id: number } }).task.id);
    const pm = ((await call('GET', `/v1/backups/${platformBackup.id}`)).body as BackupView).manifest as PlatformBackupManifest;
    t.diagnostic(`platform backup ${platformBackup.id}: ${JSON.stringify(pm.counts)}, ${pm.driver}, key ring ${pm.key_ring.ids.join(',')}`);
    assert.equal(pm.kind, 'platform');
    assert.ok(pm.counts.clusters >= 1 && pm.counts.users >= 1 && pm.counts.credentials > 10);
    const viaApi = await call('POST', `/v1/backups/${platformBackup.id}/restore`);
    assert.equal(viaApi.status, 409, 'a platform backup is restored offline');
    const tasksAtBackup = (await tp.platform.director.tasks.list()).length;
    await tp.platform.identity.createUser({ username: 'after-backup', password: 'after-backup-password', groups: [SCOPES.manage] });
    await tp.restart(async (config) => {
      await assert.rejects(
        restorePlatform(config, platformBackup.id),
        (e: { code?: string }) => e.code === 'ANODYNE_E_CONFLICT',
        'a database that holds clusters is not replaced without --force',
      );
      const db = storeOptionsOf(config) as { path: string };
      for (const f of [db.path, `${db.path}-wal`, `${db.path}-shm`]) rmSync(f, { force: true });
      const r = await restorePlatform(config, platformBackup.id);
      t.diagnostic(`restored into an empty database: ${JSON.stringify(r)}`);
    });
    const users = ((await call('GET', '/v1/users')).body as { username: string }[]).map((u) => u.username);
    assert.ok(users.includes('bk-admin') && !users.includes('after-backup'), `users as at the backup: ${users.join(', ')}`);
    assert.deepEqual(
      ((await call('GET', '/v1/clusters')).body as { name: string }[]).map((c) => c.name),
      ['bk2'],
    );
    assert.equal((await tp.platform.director.tasks.list()).length, tasksAtBackup, 'the tasks as at the backup');
    assert.equal(((await call('GET', `/v1/backups/${platformBackup.id}`)).body as BackupView).state, 'done');
    const kubectlAfter = await kube('bk2'); // credentials from the restored credential store
    await checkObjects(kubectlAfter);
    const grow = await call('PATCH', '/v1/clusters/bk2', { kubernetes_worker_instances: 2 });
    assert.equal(grow.status, 202, grow.text);
    await waitTask((grow.body as { last_task_id: number }).last_task_id);
    await until(
      '2 nodes Ready',
      async () => (await kubectlAfter('get', 'nodes', '--no-headers')).split('\n').filter((l) => / Ready /.test(l)).length === 2,
      120_000,
    );

    const del2 = await call('DELETE', '/v1/clusters/bk2');
    await waitTask((del2.body as { last_task_id: number }).last_task_id);
    assert.equal((await call('DELETE', `/v1/backups/${backup.id}`)).status, 204);
    assert.deepEqual(await s3.list(`${backup.id}/`), [], 'the artifacts are gone with the backup');
    assert.equal((await call('GET', `/v1/backups/${backup.id}`)).status, 404);
  });
});
