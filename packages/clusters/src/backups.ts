// Cluster backups: a sealed etcd snapshot plus the cluster's record and manifest; restore onto the same cluster or into a new one.
import { createHash, randomBytes } from 'node:crypto';
import { AnodyneError, ConflictError, InputError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import { open, seal, type ArtifactStore, type BackupKeys } from '@anodyne/backup';
import type { Director, EventSink, InstanceAgent, Task } from '@anodyne/director';
import { storeQuery, type BackupsTable, type Store } from '@anodyne/store';
import { access, isAdmin, readsAll, type Actor } from './access.js';
import { SCOPES } from '@anodyne/identity';
import { deploymentName } from './cluster.js';
import type { ClusterLifecycle } from './lifecycle.js';
import type { ClusterRecords } from './records.js';
import { endpointRequest } from './availability.js';
import { replay, type ChangeRecorder, type EtcdAccess, type EtcdChange } from './changelog.js';
import type { ClusterBinds } from './binds.js';

/** One file of a backup, as its manifest lists it. */
export interface BackupFile {
  name: string;
  /** Bytes and sha256 of the content (before sealing). */
  size: number;
  sha256: string;
  /** Bytes and sha256 of the sealed artifact in the store. */
  sealed_size: number;
  sealed_sha256: string;
}

/** What a backup holds: written beside its artifacts, and kept in its record. */
export interface BackupManifest {
  format: 1;
  id: string;
  kind: 'cluster';
  cluster: string;
  plan: string;
  workers: number;
  release: string | null;
  kubernetes_version: string | null;
  created_at: string;
  /** The etcd member the snapshot was taken from, and what the snapshot holds. */
  etcd: { member: string; revision: number; total_keys: number; hash: number };
  key_id: string;
  files: BackupFile[];
}

/** What a platform backup holds: the database as the driver copied it, and which encryption keys it needs. */
export interface PlatformBackupManifest {
  format: 1;
  id: string;
  kind: 'platform';
  driver: 'sqlite' | 'postgres';
  created_at: string;
  /** The schema of the copy (its applied migrations). */
  migrations: string[];
  counts: { clusters: number; users: number; tasks: number; credentials: number };
  /**
   * The credential store's key ring the copy's secrets are sealed with (ids only, never a key): the
   * platform it is restored into needs the same key file; the artifact is sealed with a key derived from it.
   */
  key_ring: { active: string; ids: string[] };
  key_id: string;
  files: BackupFile[];
}

/** What the platform gives the backups of itself. */
export interface PlatformBackupSource {
  snapshot(): Promise<{ driver: 'sqlite' | 'postgres'; data: Buffer }>;
  migrations(): Promise<string[]>;
  /** Keys derived from the credential store's key ring (they survive the database). */
  keys: BackupKeys;
  keyRing(): { active: string; ids: string[] };
}

/** A backup as the API shows it. */
export interface BackupView {
  id: string;
  kind: string;
  /** The cluster it is of (null for a backup of the platform). */
  cluster: string | null;
  owner: string;
  state: string;
  task_id: number | null;
  location: string;
  size_bytes: number;
  created_at: string;
  finished_at: string | null;
  error: string | null;
  /** Taken by the cluster's schedule (its retention may remove it). */
  scheduled: boolean;
  manifest: BackupManifest | PlatformBackupManifest | null;
}

/** A backup schedule as the API shows and takes it: a cluster's, or the platform's (`cluster` null). */
export interface BackupScheduleView {
  cluster: string | null;
  every_minutes: number;
  keep_last: number;
  keep_days: number | null;
  point_in_time: boolean;
  next_at: string;
  last_backup: string | null;
  last_error: string | null;
}

export interface BackupScheduleInput {
  every_minutes: number;
  keep_last: number;
  keep_days?: number | null;
  point_in_time?: boolean;
}

/** Where a restore goes: onto the cluster (or into a new one), and how far past the snapshot. */
export interface RestoreInput {
  cluster?: string;
  to_revision?: number;
  to_time?: string;
}

/** The platform's own schedule is kept with the clusters' under a key no cluster can have. */
const PLATFORM_SCHEDULE = '';

/** The scheduler acts for the platform, with the rights of an admin. */
const SCHEDULER: Actor = { name: 'backup-scheduler', scopes: [SCOPES.admin] };

export interface ClusterBackupsOptions {
  store: Store;
  director: Director;
  records: ClusterRecords;
  lifecycle: ClusterLifecycle;
  binds: ClusterBinds;
  artifacts: ArtifactStore;
  keys: BackupKeys;
  clock: Clock;
  logger: Logger;
  versionOf: (release: string) => string | null;
  /** The record of etcd's changes after backups (point-in-time recovery). */
  recorder: ChangeRecorder;
  etcdAccess: (cluster: string) => Promise<EtcdAccess>;
  /** Backups of the platform itself (its database); absent where the composition root gives none. */
  platform?: PlatformBackupSource;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const SNAPSHOT = 'etcd.snapshot';
const RECORD = 'cluster.json';

function view(r: BackupsTable): BackupView {
  return {
    id: r.id,
    kind: r.kind,
    cluster: r.kind === 'platform' ? null : r.target,
    owner: r.owner,
    state: r.state,
    task_id: r.task_id,
    location: r.location,
    size_bytes: Number(r.size_bytes),
    created_at: r.created_at,
    finished_at: r.finished_at,
    error: r.error,
    scheduled: Number(r.scheduled) === 1,
    manifest: r.manifest ? (JSON.parse(r.manifest) as BackupManifest | PlatformBackupManifest) : null,
  };
}

/**
 * Backups of clusters (BOSH Backup and Restore's model): the etcd job's backup script takes a
 * snapshot on one healthy master; the platform seals it (AES-256-GCM, a key from the credential
 * store) with the cluster's record and writes both to the artifact store, with a manifest of
 * sizes and sha256s. A restore checks every artifact before it stops anything.
 */
export class ClusterBackups {
  constructor(private readonly o: ClusterBackupsOptions) {}

  private now(): string {
    return this.o.clock.now().toISOString();
  }

  private async row(id: string): Promise<BackupsTable> {
    const r = await storeQuery('reading a backup', () =>
      this.o.store.db.selectFrom('backups').selectAll().where('id', '=', id).executeTakeFirst(),
    );
    if (!r) throw new NotFoundError('ANODYNE_E_BACKUP_NOT_FOUND', `backup ${id} not found`, { details: { id } });
    return r;
  }

  /** A backup the caller may see: an admin or reader of all, or the owner of the cluster it was taken of. */
  private async visible(a: Actor, id: string): Promise<BackupsTable> {
    const r = await this.row(id);
    if (!access.canSee(a, r.owner)) throw new NotFoundError('ANODYNE_E_BACKUP_NOT_FOUND', `backup ${id} not found`, { details: { id } });
    return r;
  }

  async list(a: Actor, cluster?: string): Promise<BackupView[]> {
    let q = this.o.store.db.selectFrom('backups').selectAll();
    if (!readsAll(a)) q = q.where('owner', '=', a.name);
    if (cluster) q = q.where('target', '=', cluster);
    const rows = await storeQuery('listing backups', () => q.orderBy('created_at', 'desc').orderBy('id', 'desc').execute());
    return rows.map(view);
  }

  async get(a: Actor, id: string): Promise<BackupView> {
    return view(await this.visible(a, id));
  }

  /** The record of a backup being taken: a new id (time and random), where its artifacts go, running. */
  private newRow(kind: 'cluster' | 'platform', target: string, owner: string, scheduled: boolean): BackupsTable {
    const id = `bk-${this.now().replace(/[-:T]/g, '').slice(0, 14)}-${randomBytes(3).toString('hex')}`;
    return {
      id,
      kind,
      target,
      owner,
      state: 'running',
      task_id: null,
      location: `${this.o.artifacts.location.replace(/\/$/, '')}/${id}`,
      manifest: null,
      size_bytes: 0,
      error: null,
      created_at: this.now(),
      finished_at: null,
      scheduled: scheduled ? 1 : 0,
    };
  }

  /** Starts a backup of a cluster (its owner, or an admin): a task that holds the cluster's lock while it runs. */
  async create(a: Actor, cluster: string, scheduled = false): Promise<{ backup: BackupView; task: Task }> {
    const c = await this.o.records.row(cluster);
    access.assertChanges(a, cluster, c.owner);
    await this.o.records.assertIdle(c);
    const row = this.newRow('cluster', cluster, c.owner, scheduled);
    const task = await this.o.director.runDeploymentTask(
      'backup',
      deploymentName(cluster),
      `back up cluster ${cluster}`,
      a.name,
      (signal, sink) => this.take(row, signal, sink),
    );
    await storeQuery('recording a backup', () =>
      this.o.store.db
        .insertInto('backups')
        .values({ ...row, task_id: task.id })
        .execute(),
    );
    return { backup: view({ ...row, task_id: task.id }), task };
  }

  private async take(row: BackupsTable, signal: AbortSignal, sink: EventSink): Promise<unknown> {
    try {
      const c = await this.o.records.row(row.target);
      const deployment = deploymentName(row.target);
      // One healthy member: a master whose agent says its etcd is running (its /health: a leader, no alarm).
      await sink.event({ stage: 'Choosing an etcd member', state: 'started' });
      let chosen: { agent: InstanceAgent; instance: string } | undefined;
      for (const r of (await this.o.director.instances(deployment)).filter((x) => x.group_name === 'master')) {
        const agent = this.o.director.agentOf(r);
        const s = await agent.state().catch(() => undefined);
        if (s?.processes.some((p) => p.job === 'etcd' && p.state === 'running')) {
          chosen = { agent, instance: `master/${r.idx}` };
          break;
        }
      }
      if (!chosen)
        throw new ConflictError('ANODYNE_E_ETCD_UNHEALTHY', `no etcd member of cluster ${row.target} is healthy: nothing to back up from`);
      await sink.event({ stage: 'Choosing an etcd member', state: 'finished', instance: chosen.instance });
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');

      await sink.event({ stage: 'Taking an etcd snapshot', instance: chosen.instance, state: 'started' });
      await chosen.agent.runScript('backup');
      const snapshot = await chosen.agent.download('etcd', SNAPSHOT);
      const status = JSON.parse((await chosen.agent.download('etcd', 'etcd.status.json')).toString('utf8')) as {
        hash: number;
        revision: number;
        totalKey: number;
      };
      await chosen.agent.clearArtifacts();
      await sink.event({
        stage: 'Taking an etcd snapshot',
        instance: chosen.instance,
        state: 'finished',
        message: `revision ${status.revision}`,
      });

      await sink.event({ stage: 'Sealing and storing artifacts', state: 'started' });
      const record = Buffer.from(
        JSON.stringify({ cluster: c, manifest: await this.o.director.manifest(deployment).catch(() => null) }, null, 2),
      );
      const key = await this.o.keys.current();
      const files: BackupFile[] = [];
      for (const [name, plain] of [
        [SNAPSHOT, snapshot],
        [RECORD, record],
      ] as const) {
        const sealed = seal(plain, key);
        await this.o.artifacts.put(`${row.id}/${name}.sealed`, sealed);
        files.push({ name, size: plain.length, sha256: sha256(plain), sealed_size: sealed.length, sealed_sha256: sha256(sealed) });
      }
      const params = JSON.parse(c.parameters) as { workers?: number };
      const manifest: BackupManifest = {
        format: 1,
        id: row.id,
        kind: 'cluster',
        cluster: row.target,
        plan: c.plan,
        workers: params.workers ?? 0,
        release: c.release,
        kubernetes_version: c.release ? (this.o.versionOf(c.release) ?? null) : null,
        created_at: row.created_at,
        etcd: { member: chosen.instance, revision: status.revision, total_keys: status.totalKey, hash: status.hash },
        key_id: key.id,
        files,
      };
      await this.o.artifacts.put(`${row.id}/manifest.json`, Buffer.from(JSON.stringify(manifest, null, 2)));
      const size = files.reduce((n, f) => n + f.sealed_size, 0);
      await sink.event({ stage: 'Sealing and storing artifacts', state: 'finished', message: `${size} bytes to ${row.location}` });
      await this.finish(row.id, { state: 'done', manifest: JSON.stringify(manifest), size_bytes: size });
      if (await this.pointInTime(row.target)) await this.o.recorder.start(row.target, status.revision + 1);
      return { backup: row.id, etcd_revision: status.revision, size_bytes: size };
    } catch (err) {
      await this.finish(row.id, { state: 'failed', error: (err as Error).message.slice(0, 1000) });
      throw err;
    }
  }

  private async finish(id: string, patch: Partial<BackupsTable>): Promise<void> {
    await storeQuery('recording a backup', () =>
      this.o.store.db
        .updateTable('backups')
        .set({ ...patch, finished_at: this.now() })
        .where('id', '=', id)
        .execute(),
    );
  }

  /**
   * Starts a backup of the platform itself (admins): a consistent copy of its database, sealed with
   * a key derived from the credential store's key file, so that it opens where the database is lost.
   */
  async createPlatform(a: Actor, scheduled = false): Promise<{ backup: BackupView; task: Task }> {
    access.assertAdmin(a, 'backing up the platform');
    const source = this.o.platform;
    if (!source) throw new ConflictError('ANODYNE_E_CONFLICT', 'this platform cannot back itself up');
    const row = this.newRow('platform', 'platform', a.name, scheduled);
    const id = row.id;
    const task = await this.o.director.runTask('backup', 'back up the platform database', a.name, async (_signal, sink) => {
      try {
        await sink.event({ stage: 'Copying the database', state: 'started' });
        // The copy holds this backup's own record: as "done", with the manifest it will have.
        const [migrations, counts] = await Promise.all([source.migrations(), this.counts()]);
        const key = await source.keys.current();
        const manifest: PlatformBackupManifest = {
          format: 1,
          id,
          kind: 'platform',
          driver: 'sqlite',
          created_at: row.created_at,
          migrations,
          counts,
          key_ring: source.keyRing(),
          key_id: key.id,
          files: [],
        };
        const snap = await source.snapshot();
        manifest.driver = snap.driver;
        await sink.event({ stage: 'Copying the database', state: 'finished', message: `${snap.data.length} bytes (${snap.driver})` });
        await sink.event({ stage: 'Sealing and storing artifacts', state: 'started' });
        const sealed = seal(snap.data, key);
        await this.o.artifacts.put(`${id}/database.sealed`, sealed);
        manifest.files.push({
          name: 'database',
          size: snap.data.length,
          sha256: sha256(snap.data),
          sealed_size: sealed.length,
          sealed_sha256: sha256(sealed),
        });
        await this.o.artifacts.put(`${id}/manifest.json`, Buffer.from(JSON.stringify(manifest, null, 2)));
        await sink.event({
          stage: 'Sealing and storing artifacts',
          state: 'finished',
          message: `${sealed.length} bytes to ${row.location}`,
        });
        await this.finish(id, { state: 'done', manifest: JSON.stringify(manifest), size_bytes: sealed.length });
        return { backup: id, ...counts, size_bytes: sealed.length };
      } catch (err) {
        await this.finish(id, { state: 'failed', error: (err as Error).message.slice(0, 1000) });
        throw err;
      }
    });
    await storeQuery('recording a backup', () =>
      this.o.store.db
        .insertInto('backups')
        .values({ ...row, task_id: task.id })
        .execute(),
    );
    return { backup: view({ ...row, task_id: task.id }), task };
  }

  private async counts(): Promise<PlatformBackupManifest['counts']> {
    const n = async (table: 'clusters' | 'identity_users' | 'tasks' | 'credentials') =>
      Number(
        (
          await this.o.store.db
            .selectFrom(table)
            .select((eb) => eb.fn.countAll<number>().as('n'))
            .executeTakeFirst()
        )?.n ?? 0,
      );
    const [clusters, users, tasks, credentials] = await Promise.all([n('clusters'), n('identity_users'), n('tasks'), n('credentials')]);
    return { clusters, users, tasks, credentials };
  }

  /** Deletes a backup's artifacts, then its record (its owner, or an admin). */
  async delete(a: Actor, id: string): Promise<void> {
    const r = await this.visible(a, id);
    if (!isAdmin(a)) {
      if (r.kind === 'platform') access.assertAdmin(a, 'deleting a backup of the platform');
      access.assertChanges(a, r.target, r.owner);
    }
    if (r.state === 'running') throw new ConflictError('ANODYNE_E_CONFLICT', `backup ${id} is still being taken`, { details: { id } });
    for (const o of await this.o.artifacts.list(`${id}/`)) await this.o.artifacts.delete(o.key);
    await storeQuery('deleting a backup', () => this.o.store.db.deleteFrom('backups').where('id', '=', id).execute());
  }

  /**
   * Reads a backup's artifacts and checks each against its manifest (size, sha256) and its seal,
   * before anything is stopped: a damaged or foreign artifact is refused with its code.
   */
  private async load(r: BackupsTable): Promise<{ manifest: BackupManifest; snapshot: Buffer; record: Buffer }> {
    if (r.state !== 'done' || !r.manifest) {
      throw new ConflictError('ANODYNE_E_CONFLICT', `backup ${r.id} is ${r.state}: only a finished backup can be restored`, {
        details: { id: r.id },
      });
    }
    const manifest = JSON.parse(r.manifest) as BackupManifest;
    const out = await checkArtifacts(this.o.artifacts, this.o.keys, r.id, manifest.files);
    const snapshot = out.get(SNAPSHOT);
    const record = out.get(RECORD);
    if (!snapshot || !record) throw new AnodyneError('ANODYNE_E_BACKUP_CORRUPT', `backup ${r.id} lacks its snapshot or record`);
    return { manifest, snapshot, record };
  }

  /**
   * Restores a backup onto the cluster it was taken of, or (with `into`, a name no cluster has)
   * into a new cluster of the same plan, workers and release. Every artifact is checked first.
   */
  async restore(a: Actor, id: string, input: RestoreInput = {}): Promise<Task> {
    const r = await this.visible(a, id);
    if (r.kind === 'platform') {
      throw new ConflictError(
        'ANODYNE_E_CONFLICT',
        `backup ${id} is of the platform: it is restored offline, into a platform that is not running (anodyne server --restore-platform ${id})`,
        {
          details: { id },
        },
      );
    }
    const into = input.cluster;
    const target = into ?? r.target;
    const { manifest, snapshot } = await this.load(r);
    const changes = await this.changesFor(manifest, input);
    if (await this.o.records.exists(target)) {
      const c = await this.o.records.row(target);
      access.assertChanges(a, target, c.owner);
      await this.o.records.assertIdle(c);
      if (into !== undefined && into !== r.target) {
        throw new ConflictError(
          'ANODYNE_E_CLUSTER_EXISTS',
          `cluster ${into} exists: a backup is restored into a new cluster, or onto the cluster it was taken of`,
          {
            details: { name: into },
          },
        );
      }
      const ref: { task?: number } = {};
      const task = await this.o.director.runDeploymentTask(
        'restore',
        deploymentName(target),
        `restore backup ${id} onto cluster ${target}`,
        a.name,
        (signal, sink) => this.restoreEtcd(target, manifest, snapshot, changes, signal, sink, ref),
      );
      ref.task = task.id;
      return task;
    }
    if (into === undefined) {
      throw new NotFoundError('ANODYNE_E_CLUSTER_NOT_FOUND', `cluster ${target} is gone: name a new cluster to restore backup ${id} into`, {
        details: { name: target },
      });
    }
    // A new cluster like the one backed up, then its etcd from the snapshot: one task that waits for both.
    const created = await this.o.lifecycle.create(a.name, {
      name: into,
      plan_name: manifest.plan,
      ...(manifest.kubernetes_version ? { kubernetes_version: manifest.kubernetes_version } : {}),
      parameters: { kubernetes_worker_instances: manifest.workers },
    });
    return this.o.director.runTask('restore', `restore backup ${id} into new cluster ${into}`, a.name, async (signal, sink) => {
      await sink.event({ stage: 'Creating the cluster', state: 'started', message: `task ${created.last_task_id}` });
      const made = await this.o.director.wait(created.last_task_id!);
      if (made.state !== 'done') {
        throw new AnodyneError('ANODYNE_E_INTERNAL', `creating cluster ${into} ended ${made.state}: ${made.error?.message ?? ''}`, {
          details: { task: made.id },
        });
      }
      await sink.event({ stage: 'Creating the cluster', state: 'finished' });
      const inner = await this.o.director.runDeploymentTask(
        'restore',
        deploymentName(into),
        `restore backup ${id} onto cluster ${into}`,
        a.name,
        (s2, k2) => this.restoreEtcd(into, manifest, snapshot, changes, s2, k2),
      );
      await sink.event({ stage: 'Restoring etcd', state: 'started', message: `task ${inner.id}` });
      const done = await this.o.director.wait(inner.id);
      if (done.state !== 'done') {
        throw new AnodyneError(
          done.error?.code === 'ANODYNE_E_RESTORE_FAILED' ? 'ANODYNE_E_RESTORE_FAILED' : 'ANODYNE_E_INTERNAL',
          done.error?.message ?? `restore ended ${done.state}`,
          {
            details: { task: done.id },
          },
        );
      }
      await sink.event({ stage: 'Restoring etcd', state: 'finished' });
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
      return { cluster: into, create_task: made.id, restore_task: inner.id, ...(done.result as object) };
    });
  }

  /**
   * The recorded changes to replay after the snapshot for a point-in-time restore (none without a
   * target). Refused before anything is stopped when the target is before the backup, or the
   * record does not reach it without a hole.
   */
  private async changesFor(manifest: BackupManifest, input: RestoreInput): Promise<EtcdChange[]> {
    if (input.to_revision === undefined && input.to_time === undefined) return [];
    if (input.to_revision !== undefined && input.to_time !== undefined)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'give to_revision or to_time, not both', { details: { key: 'to_time' } });
    const time = input.to_time === undefined ? undefined : Date.parse(input.to_time);
    if (time !== undefined && Number.isNaN(time))
      throw new InputError('ANODYNE_E_INVALID_INPUT', `to_time ${input.to_time} is not an instant`, { details: { key: 'to_time' } });
    const base = manifest.etcd.revision;
    if ((input.to_revision !== undefined && input.to_revision < base) || (time !== undefined && time < Date.parse(manifest.created_at))) {
      throw new InputError(
        'ANODYNE_E_INVALID_INPUT',
        `backup ${manifest.id} holds revision ${base} of ${manifest.created_at}: restore an earlier backup to go before it`,
        {
          details: { key: input.to_revision !== undefined ? 'to_revision' : 'to_time' },
        },
      );
    }
    // A restore of the cluster after this backup ended its line of history: what came after that
    // restore builds on the restored state, not on this backup (a backup taken after it reaches there).
    const restoredAt = await this.restoredAfter(manifest.cluster, manifest.created_at);
    if (restoredAt !== undefined && time !== undefined && time >= Date.parse(restoredAt)) {
      throw new InputError(
        'ANODYNE_E_INVALID_INPUT',
        `cluster ${manifest.cluster} was restored at ${restoredAt}, after backup ${manifest.id}: to reach a later instant restore a backup taken after that`,
        { details: { key: 'to_time', restored_at: restoredAt } },
      );
    }
    await this.o.recorder.flushNow(manifest.cluster);
    const changes = await this.o.recorder.changesBetween(manifest.cluster, base, {
      ...(input.to_revision !== undefined ? { revision: input.to_revision } : {}),
      ...(time !== undefined ? { time } : {}),
      ...(restoredAt !== undefined ? { before: Date.parse(restoredAt) } : {}),
    });
    let expected = base + 1;
    for (const c of changes) {
      if (c.rev > expected) {
        throw new ConflictError(
          'ANODYNE_E_BACKUP_RECORD_GAP',
          `the change record of ${manifest.cluster} has no revision ${expected}: it cannot reach past it`,
          {
            details: { revision: expected },
          },
        );
      }
      expected = c.rev + 1;
    }
    if (input.to_revision !== undefined && expected <= input.to_revision) {
      throw new ConflictError(
        'ANODYNE_E_BACKUP_RECORD_GAP',
        `the change record of ${manifest.cluster} reaches revision ${expected - 1}, not ${input.to_revision}`,
        {
          details: { revision: expected - 1 },
        },
      );
    }
    return changes;
  }

  /** When the first restore onto the cluster that began after `since` began (undefined: none did). */
  private async restoredAfter(cluster: string, since: string): Promise<string | undefined> {
    const r = await storeQuery("reading a cluster's restores", () =>
      this.o.store.db
        .selectFrom('tasks')
        .select('started_at')
        .where('type', '=', 'restore')
        .where('deployment', '=', deploymentName(cluster))
        .where('state', '=', 'done')
        .where('started_at', '>', since)
        .orderBy('started_at')
        .limit(1)
        .executeTakeFirst(),
    );
    return r?.started_at ?? undefined;
  }

  /**
   * Puts the snapshot on every master, stops them, restores each member with this cluster's
   * member list (prepared beside the data first; a failure there changes nothing), puts the
   * restored data in place on all, and starts them together; the API servers and controllers
   * come back on the restored state and kubelets resync with it.
   */
  private async restoreEtcd(
    cluster: string,
    manifest: BackupManifest,
    snapshot: Buffer,
    changes: EtcdChange[],
    signal: AbortSignal,
    sink: EventSink,
    ref: { task?: number } = {},
  ): Promise<unknown> {
    const deployment = deploymentName(cluster);
    // The record of this cluster's changes starts again after the restore (a new line of history),
    // where its schedule asks for one (the leader records: this replica may not).
    const recording = await this.pointInTime(cluster);
    await this.o.recorder.stop(cluster);
    const masters: { agent: InstanceAgent; name: string }[] = (await this.o.director.instances(deployment))
      .filter((x) => x.group_name === 'master')
      .map((row) => ({ agent: this.o.director.agentOf(row), name: `master/${row.idx}` }));
    const each = async (stage: string, f: (m: (typeof masters)[number]) => Promise<void>) => {
      await sink.event({ stage, state: 'started' });
      await Promise.all(
        masters.map(async (m) => {
          await f(m);
          await sink.event({ stage, instance: m.name, state: 'info', message: 'done' });
        }),
      );
      await sink.event({ stage, state: 'finished' });
    };
    const step = (m: (typeof masters)[number], name: 'prepare' | 'commit' | 'undo') =>
      m.agent
        .upload('etcd', 'step', Buffer.from(name))
        .then(() => m.agent.runScript('restore'))
        .then(() => undefined);

    await each('Placing the snapshot', (m) => m.agent.upload('etcd', SNAPSHOT, snapshot));
    if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
    // Nothing they would finish on a graceful stop survives the restore: killed at once (etcd's data on
    // disk is safe from SIGKILL, and the undo below puts it back as it was).
    await each('Stopping masters', (m) => m.agent.stop({ immediate: true }));
    let committed = false;
    try {
      await each('Restoring etcd members', (m) => step(m, 'prepare'));
      await each('Putting restored data in place', (m) => step(m, 'commit'));
      committed = true;
    } catch (err) {
      // Nothing restored is left half in place: every member gets the data it had, and runs again.
      await sink.event({ stage: 'Undoing', state: 'started', message: (err as Error).message.slice(0, 300) });
      await Promise.all(masters.map((m) => step(m, 'undo').catch(() => undefined)));
      await Promise.all(masters.map((m) => m.agent.start().catch(() => undefined)));
      await sink.event({ stage: 'Undoing', state: 'finished' });
      throw new AnodyneError(
        'ANODYNE_E_RESTORE_FAILED',
        `restoring cluster ${cluster} failed, and its etcd has its data from before: ${(err as Error).message}`,
        {
          details: { cluster },
        },
      );
    }
    await each('Starting masters', (m) => m.agent.start());
    await each('Waiting for masters', async (m) => {
      const deadline = this.o.clock.nowMs() + 300_000;
      while (
        !(await m.agent.state().then(
          (s) => s.healthy,
          () => false,
        ))
      ) {
        if (this.o.clock.nowMs() > deadline)
          throw new AnodyneError('ANODYNE_E_RESTORE_FAILED', `${m.name} is not healthy 300 s after the restore`);
        await this.o.clock.sleep(500);
      }
    });
    await Promise.all(masters.map((m) => m.agent.clearArtifacts().catch(() => undefined)));
    let revision = manifest.etcd.revision;
    if (changes.length > 0) {
      await sink.event({
        stage: 'Replaying recorded changes',
        state: 'started',
        message: `${changes.length} changes after revision ${revision}`,
      });
      await replay(await this.o.etcdAccess(cluster), changes);
      revision = changes[changes.length - 1]!.rev;
      const at = new Date(changes[changes.length - 1]!.at).toISOString();
      await sink.event({
        stage: 'Replaying recorded changes',
        state: 'finished',
        message: `up to revision ${revision} (recorded at ${at})`,
      });
    }
    // Kubelets keep the pod statuses they last reported and would not send them again: restarted, they
    // report every pod afresh and finish deletions the restored state still shows as pending.
    const workers = (await this.o.director.instances(deployment)).filter((x) => x.group_name === 'worker');
    await sink.event({ stage: 'Restarting kubelets', state: 'started' });
    await Promise.all(
      workers.map(async (w) => {
        await this.o.director.agentOf(w).restartJob('kubelet');
        await sink.event({ stage: 'Restarting kubelets', instance: `worker/${w.idx}`, state: 'info', message: 'done' });
      }),
    );
    await sink.event({ stage: 'Restarting kubelets', state: 'finished' });
    // The API answers from the restored state through the cluster's endpoint.
    const e = await this.o.binds.endpoint(cluster);
    const deadline = this.o.clock.nowMs() + 120_000;
    for (;;) {
      const ok = await endpointRequest(e, 'GET', '/api/v1/namespaces/default').then(
        (x) => x.status === 200,
        () => false,
      );
      if (ok) break;
      if (this.o.clock.nowMs() > deadline)
        throw new AnodyneError('ANODYNE_E_RESTORE_FAILED', `the API of ${cluster} does not answer 120 s after the restore`);
      await this.o.clock.sleep(500);
    }
    // A restore begins a new line of history that no earlier backup can reach into: where the schedule keeps a
    // record, the restore takes the new line's first backup itself (counted as scheduled), and the record runs
    // from its revision on — so every instant after the restore can be reached, not only those after the next
    // scheduled backup.
    let baseBackup: string | undefined;
    if (recording) {
      const c = await this.o.records.row(cluster);
      const row = { ...this.newRow('cluster', cluster, c.owner, true), task_id: ref.task ?? null };
      await storeQuery('recording a backup', () => this.o.store.db.insertInto('backups').values(row).execute());
      await sink.event({ stage: 'Backing up the restored state', state: 'started', message: `backup ${row.id}` });
      try {
        await this.take(row, signal, sink);
        baseBackup = row.id;
        await sink.event({ stage: 'Backing up the restored state', state: 'finished' });
      } catch (err) {
        // The restore itself is done: the backup is marked failed, and the next scheduled one starts the record.
        await sink.event({ stage: 'Backing up the restored state', state: 'failed', message: (err as Error).message.slice(0, 300) });
        this.o.logger.warn({ cluster, backup: row.id, err: (err as Error).message }, 'the backup after a restore failed');
      }
    }
    this.o.logger.info({ cluster, backup: manifest.id, revision, replayed: changes.length, committed }, 'cluster restored from a backup');
    return {
      ...(baseBackup ? { base_backup: baseBackup } : {}),
      backup: manifest.id,
      etcd_revision: manifest.etcd.revision,
      replayed_changes: changes.length,
      restored_to_revision: revision,
      masters: masters.length,
    };
  }

  // ------------------------------------------------------------------ schedules

  async schedule(a: Actor, cluster: string): Promise<BackupScheduleView> {
    const c = await this.o.records.row(cluster);
    access.assertSees(a, cluster, c.owner);
    return this.readSchedule(cluster);
  }

  /** Sets (or replaces) a cluster's schedule: its owner or an admin; the first backup is due one interval from now. */
  async setSchedule(a: Actor, cluster: string, s: BackupScheduleInput): Promise<BackupScheduleView> {
    const c = await this.o.records.row(cluster);
    access.assertChanges(a, cluster, c.owner);
    await this.writeSchedule(a, cluster, s);
    if (!s.point_in_time) await this.o.recorder.stop(cluster);
    return this.readSchedule(cluster);
  }

  async deleteSchedule(a: Actor, cluster: string): Promise<void> {
    const c = await this.o.records.row(cluster);
    access.assertChanges(a, cluster, c.owner);
    await this.removeSchedule(cluster);
    await this.o.recorder.stop(cluster);
  }

  /** The platform's own backup schedule (admins; 404 when it has none). */
  async platformSchedule(a: Actor): Promise<BackupScheduleView> {
    access.assertAdmin(a, "the platform's backup schedule");
    return this.readSchedule(PLATFORM_SCHEDULE);
  }

  /** Sets (or replaces) the platform's backup schedule: admins; the first backup is due one interval from now. */
  async setPlatformSchedule(a: Actor, s: BackupScheduleInput): Promise<BackupScheduleView> {
    access.assertAdmin(a, "scheduling the platform's backups");
    if (!this.o.platform) throw new ConflictError('ANODYNE_E_CONFLICT', 'this platform cannot back itself up');
    if (s.point_in_time)
      throw new InputError('ANODYNE_E_INVALID_INPUT', "point_in_time is for clusters (etcd's changes), not the platform's database", {
        details: { key: 'point_in_time' },
      });
    await this.writeSchedule(a, PLATFORM_SCHEDULE, s);
    return this.readSchedule(PLATFORM_SCHEDULE);
  }

  async deletePlatformSchedule(a: Actor): Promise<void> {
    access.assertAdmin(a, "the platform's backup schedule");
    await this.removeSchedule(PLATFORM_SCHEDULE);
  }

  private async readSchedule(key: string): Promise<BackupScheduleView> {
    const r = await storeQuery('reading a backup schedule', () =>
      this.o.store.db.selectFrom('backup_schedules').selectAll().where('cluster', '=', key).executeTakeFirst(),
    );
    if (!r) {
      const whose = key === PLATFORM_SCHEDULE ? 'the platform has' : `cluster ${key} has`;
      throw new NotFoundError('ANODYNE_E_NOT_FOUND', `${whose} no backup schedule`, {
        details: key === PLATFORM_SCHEDULE ? {} : { cluster: key },
      });
    }
    const { updated_by: _by, updated_at: _at, point_in_time, cluster, ...v } = r;
    return { cluster: cluster === PLATFORM_SCHEDULE ? null : cluster, ...v, point_in_time: Number(point_in_time) === 1 };
  }

  private async writeSchedule(a: Actor, key: string, s: BackupScheduleInput): Promise<void> {
    const bad = (k: string, why: string) => new InputError('ANODYNE_E_INVALID_INPUT', `${k} ${why}`, { details: { key: k } });
    if (!Number.isInteger(s.every_minutes) || s.every_minutes < 5 || s.every_minutes > 43_200)
      throw bad('every_minutes', 'must be 5 to 43200');
    if (!Number.isInteger(s.keep_last) || s.keep_last < 1 || s.keep_last > 1000) throw bad('keep_last', 'must be 1 to 1000');
    const days = s.keep_days ?? null;
    if (days !== null && (!Number.isInteger(days) || days < 1 || days > 3650)) throw bad('keep_days', 'must be 1 to 3650 (or null)');
    const row = {
      cluster: key,
      every_minutes: s.every_minutes,
      keep_last: s.keep_last,
      keep_days: days,
      point_in_time: s.point_in_time === true ? 1 : 0,
      next_at: new Date(this.o.clock.nowMs() + s.every_minutes * 60_000).toISOString(),
      last_backup: null,
      last_error: null,
      updated_by: a.name,
      updated_at: this.now(),
    };
    await storeQuery('setting a backup schedule', () =>
      this.o.store.db.transaction().execute(async (tx) => {
        await tx.deleteFrom('backup_schedules').where('cluster', '=', key).execute();
        await tx.insertInto('backup_schedules').values(row).execute();
      }),
    );
  }

  private async removeSchedule(key: string): Promise<void> {
    await this.readSchedule(key);
    await storeQuery('deleting a backup schedule', () =>
      this.o.store.db.deleteFrom('backup_schedules').where('cluster', '=', key).execute(),
    );
  }

  /**
   * One pass of the scheduler: takes the backups that are due (a busy cluster is tried again in
   * a minute; a cluster that is gone loses its schedule), then applies every schedule's
   * retention to the backups schedules took. Returns what it started and removed.
   */
  async runSchedules(): Promise<{ started: string[]; removed: string[] }> {
    const now = this.o.clock.nowMs();
    const started: string[] = [];
    const removed: string[] = [];
    const all = await storeQuery('reading backup schedules', () => this.o.store.db.selectFrom('backup_schedules').selectAll().execute());
    for (const s of all) {
      if (Date.parse(s.next_at) > now) continue;
      const patch: { next_at: string; last_backup?: string; last_error: string | null } = {
        next_at: new Date(now + s.every_minutes * 60_000).toISOString(),
        last_error: null,
      };
      try {
        const platform = s.cluster === PLATFORM_SCHEDULE;
        if (!platform && !(await this.o.records.exists(s.cluster))) {
          await this.o.store.db.deleteFrom('backup_schedules').where('cluster', '=', s.cluster).execute();
          await this.o.recorder.stop(s.cluster);
          continue;
        }
        const { backup } = platform ? await this.createPlatform(SCHEDULER, true) : await this.create(SCHEDULER, s.cluster, true);
        patch.last_backup = backup.id;
        started.push(backup.id);
      } catch (err) {
        patch.last_error = (err as Error).message.slice(0, 500);
        if (err instanceof AnodyneError && (err.code === 'ANODYNE_E_CLUSTER_BUSY' || err.code === 'ANODYNE_E_DEPLOYMENT_LOCKED'))
          patch.next_at = new Date(now + 60_000).toISOString();
        this.o.logger.warn({ cluster: s.cluster, err: patch.last_error }, 'scheduled backup not started');
      }
      await this.o.store.db.updateTable('backup_schedules').set(patch).where('cluster', '=', s.cluster).execute();
    }
    for (const s of all) {
      const platform = s.cluster === PLATFORM_SCHEDULE;
      const taken = await this.o.store.db
        .selectFrom('backups')
        .selectAll()
        .where('kind', '=', platform ? 'platform' : 'cluster')
        .where('target', '=', platform ? 'platform' : s.cluster)
        .where('scheduled', '=', 1)
        .where('state', '!=', 'running')
        .orderBy('created_at', 'desc')
        .orderBy('id', 'desc')
        .execute();
      const oldest = s.keep_days === null ? -Infinity : now - s.keep_days * 86_400_000;
      for (const [i, b] of taken.entries()) {
        if (i < s.keep_last && Date.parse(b.created_at) >= oldest) continue;
        await this.delete(SCHEDULER, b.id);
        removed.push(b.id);
      }
      if (platform) continue;
      // The change record before the oldest backup left can no longer be replayed onto anything.
      const left = await this.o.store.db
        .selectFrom('backups')
        .select('manifest')
        .where('kind', '=', 'cluster')
        .where('target', '=', s.cluster)
        .where('state', '=', 'done')
        .execute();
      const revisions = left.filter((b) => b.manifest).map((b) => (JSON.parse(b.manifest!) as BackupManifest).etcd.revision);
      if (revisions.length > 0) await this.o.recorder.prune(s.cluster, Math.min(...revisions));
    }
    return { started, removed };
  }

  private async pointInTime(cluster: string): Promise<boolean> {
    const r = await this.o.store.db
      .selectFrom('backup_schedules')
      .select('point_in_time')
      .where('cluster', '=', cluster)
      .executeTakeFirst();
    return Number(r?.point_in_time ?? 0) === 1;
  }

  /** At start: records again the changes of every cluster whose schedule asks for it, from its newest backup on. */
  async resumeRecording(): Promise<string[]> {
    const resumed: string[] = [];
    const schedules = await this.o.store.db.selectFrom('backup_schedules').select('cluster').where('point_in_time', '=', 1).execute();
    for (const { cluster } of schedules) {
      const newest = await this.o.store.db
        .selectFrom('backups')
        .select('manifest')
        .where('target', '=', cluster)
        .where('state', '=', 'done')
        .orderBy('created_at', 'desc')
        .executeTakeFirst();
      if (!newest?.manifest) continue;
      await this.o.recorder.start(cluster, (JSON.parse(newest.manifest) as BackupManifest).etcd.revision + 1);
      resumed.push(cluster);
    }
    return resumed;
  }

  /** Refuses a name that cannot be a cluster's before anything is read. */
  static checkName(name: unknown): void {
    if (typeof name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/.test(name))
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'a cluster name is lowercase letters, digits and dashes', {
        details: { key: 'cluster' },
      });
  }
}

/**
 * Reads a backup's artifacts and checks each against its manifest entry (size, sha256 of the
 * sealed bytes), opens its seal and checks the content's sha256: a changed byte or a cut artifact
 * is ANODYNE_E_BACKUP_CORRUPT, a key this platform lacks ANODYNE_E_BACKUP_WRONG_KEY. Contents by name.
 */
export async function checkArtifacts(
  artifacts: ArtifactStore,
  keys: BackupKeys,
  id: string,
  files: BackupFile[],
): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const f of files) {
    const sealed = await artifacts.get(`${id}/${f.name}.sealed`);
    if (sealed.length !== f.sealed_size) {
      throw new AnodyneError(
        'ANODYNE_E_BACKUP_CORRUPT',
        `artifact ${f.name} of backup ${id} has ${sealed.length} bytes, its manifest says ${f.sealed_size}`,
        {
          details: { file: f.name, size: sealed.length, expected: f.sealed_size },
        },
      );
    }
    if (sha256(sealed) !== f.sealed_sha256) {
      throw new AnodyneError('ANODYNE_E_BACKUP_CORRUPT', `artifact ${f.name} of backup ${id} does not match its sha256`, {
        details: { file: f.name },
      });
    }
    const plain = await open(sealed, keys);
    if (sha256(plain) !== f.sha256) {
      throw new AnodyneError('ANODYNE_E_BACKUP_CORRUPT', `artifact ${f.name} of backup ${id} opens to other content than was sealed`, {
        details: { file: f.name },
      });
    }
    out.set(f.name, plain);
  }
  return out;
}
