// Cluster records and how the API shows them (PKS field names): reading, the endpoint cache, reaping finished deletes.
import { ConflictError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type ClustersTable, type Store } from '@anodyne/store';
import type { Director, Task, TaskState } from '@anodyne/director';
import { deploymentName } from './cluster.js';

/** PKS's last_action_state. */
export type ActionState = 'in progress' | 'succeeded' | 'failed';

/** A cluster as the /v1 API shows it (PKS field names). */
export interface ClusterView {
  name: string;
  plan_name: string;
  uuid: string;
  owner: string;
  last_action: 'CREATE' | 'UPDATE' | 'DELETE';
  last_action_state: ActionState;
  last_action_description: string;
  last_task_id: number | null;
  kubernetes_master_ips: string[];
  network_profile_name: string | null;
  /** The Kubernetes version of the cluster's release (PKS's kubernetes_version), e.g. `1.34.4`. */
  kubernetes_version: string;
  /** The release the cluster runs (content-addressed key). */
  release: string | null;
  /** Its VMs by what the health monitor last found. */
  health: HealthCounts;
  parameters: {
    kubernetes_master_host: string;
    kubernetes_master_port: number;
    kubernetes_worker_instances: number;
    pod_cidr?: string;
    service_cidr?: string;
    network_isolation: 'segment' | 'shared';
  };
}

export interface HealthCounts {
  running: number;
  failing: number;
  unresponsive: number;
  missing: number;
  stopped: number;
  pending: number;
}

const noHealth = (): HealthCounts => ({ running: 0, failing: 0, unresponsive: 0, missing: 0, stopped: 0, pending: 0 });

/** What a cluster was asked for, as stored in its record. */
export interface Parameters {
  workers: number;
  externalHostname?: string;
  podCidr?: string;
  serviceCidr?: string;
  /** The cluster's VMs are on a network segment of their own (every cluster created since segments exist). */
  segment?: boolean;
  /** The share of the provider's segment pool its segment is cut from (its network profile's); absent: the whole pool. */
  segmentWithin?: string;
  /** Its network profile's NetworkPolicy default for new namespaces, overriding the plan's (absent: the plan's). */
  defaultDenyNamespaces?: boolean;
}

export const FINAL_TASK_STATES: readonly TaskState[] = ['done', 'error', 'cancelled'];

const taskStateToAction = (s: TaskState | undefined): ActionState =>
  s === 'done' ? 'succeeded' : s === 'error' || s === 'cancelled' ? 'failed' : 'in progress';

export interface RecordsOptions {
  /** The Kubernetes version of a release key (the release registry's). */
  versionOf: (key: string | null) => string | null;
  store: Store;
  director: Director;
  clock: Clock;
  logger: Logger;
}

/** The `clusters` table and the views built from it; every other part of the package reads clusters through here. */
export class ClusterRecords {
  private readonly endpoints = new Map<string, { key: string; lbs: Record<string, { ip: string; port: number }> }>();
  /** Views kept while the store's change counter stays the same (ADR 0021); at most VIEW_CACHE entries. */
  private readonly cache = new Map<string, { at: number; value: unknown }>();

  constructor(private readonly o: RecordsOptions) {}

  /**
   * `compute`'s answer, kept while nothing is written to the store: a listing polled by many
   * clients is read and built once per change, not once per request. Kept answers are frozen
   * (every caller gets the same object). Where the store cannot say when it changed, nothing is kept.
   */
  private async cached<T extends object>(key: string, compute: () => Promise<T>): Promise<T> {
    const at = this.o.store.changeCounter();
    if (at === undefined) return compute();
    const hit = this.cache.get(key);
    if (hit?.at === at) return hit.value as T;
    const value = await compute();
    // Kept only when nothing was written while it was being read.
    if (this.o.store.changeCounter() === at) {
      this.cache.delete(key);
      if (this.cache.size >= VIEW_CACHE) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, { at, value: deepFreeze(value) });
    }
    return value;
  }

  now(): string {
    return this.o.clock.now().toISOString();
  }

  /**
   * Cluster records, without those whose delete has finished. Reading never writes: such records
   * are removed by `reapDeleted` (the platform runs it at start and periodically; a create of the
   * same name runs it first).
   */
  async rows(filter: { owner?: string; name?: string } = {}): Promise<ClustersTable[]> {
    let q = this.o.store.db.selectFrom('clusters').selectAll();
    if (filter.owner) q = q.where('owner', '=', filter.owner);
    if (filter.name !== undefined) q = q.where('name', '=', filter.name);
    const rows = await storeQuery('listing clusters', () => q.orderBy('name').execute());
    const deleted = await this.finishedDeletes(rows);
    return rows.filter((r) => !deleted.has(r.name));
  }

  async row(name: string): Promise<ClustersTable> {
    const [r] = await this.rows({ name });
    if (!r) throw new NotFoundError('ANODYNE_E_CLUSTER_NOT_FOUND', `cluster ${name} not found`, { details: { name } });
    return r;
  }

  async exists(name: string): Promise<boolean> {
    const r = await storeQuery('reading a cluster', () =>
      this.o.store.db.selectFrom('clusters').select('name').where('name', '=', name).executeTakeFirst(),
    );
    return r !== undefined;
  }

  async insert(row: ClustersTable): Promise<void> {
    await storeQuery('recording a cluster', () => this.o.store.db.insertInto('clusters').values(row).execute());
  }

  async remove(name: string): Promise<void> {
    await storeQuery('removing a cluster record', () => this.o.store.db.deleteFrom('clusters').where('name', '=', name).execute());
    this.endpoints.delete(name);
  }

  /** Records the task now working on a cluster (and, for a resize, the parameters it deploys; for any redeploy, its release). */
  async setTask(
    name: string,
    action: ClusterView['last_action'],
    taskId: number,
    change: { parameters?: Parameters; release?: string } = {},
  ): Promise<void> {
    const set = {
      last_action: action,
      last_task_id: taskId,
      updated_at: this.now(),
      ...(change.parameters ? { parameters: JSON.stringify(change.parameters) } : {}),
      ...(change.release ? { release: change.release } : {}),
    };
    await storeQuery('updating a cluster', () => this.o.store.db.updateTable('clusters').set(set).where('name', '=', name).execute());
  }

  /** Records the release a cluster runs now (after an upgrade's rollout succeeded). */
  async setRelease(name: string, release: string): Promise<void> {
    await storeQuery("recording a cluster's release", () =>
      this.o.store.db.updateTable('clusters').set({ release, updated_at: this.now() }).where('name', '=', name).execute(),
    );
  }

  /** Names of the given records whose DELETE task is done. */
  private async finishedDeletes(rows: ClustersTable[]): Promise<Set<string>> {
    const deleting = rows.filter((r) => r.last_action === 'DELETE' && r.last_task_id !== null);
    if (deleting.length === 0) return new Set();
    const tasks = await this.o.director.tasks.getMany(deleting.map((r) => r.last_task_id!));
    return new Set(deleting.filter((r) => tasks.get(r.last_task_id!)?.state === 'done').map((r) => r.name));
  }

  /**
   * Removes the records of clusters whose delete has finished (also after a restart cut the
   * follow-up short); returns their names. Explicit, so that no read writes.
   */
  async reapDeleted(name?: string): Promise<string[]> {
    let q = this.o.store.db.selectFrom('clusters').selectAll().where('last_action', '=', 'DELETE');
    if (name !== undefined) q = q.where('name', '=', name);
    const rows = await storeQuery('listing deleted clusters', () => q.execute());
    const done = [...(await this.finishedDeletes(rows))];
    for (const n of done) {
      await storeQuery('removing a cluster record', () =>
        this.o.store.db.deleteFrom('clusters').where('name', '=', n).where('last_action', '=', 'DELETE').execute(),
      );
      this.endpoints.delete(n);
    }
    if (done.length > 0) this.o.logger.info({ clusters: done }, "deleted clusters' records removed");
    return done;
  }

  /** A cluster with a task in progress refuses a second one. */
  async assertIdle(r: ClustersTable): Promise<void> {
    if (r.last_task_id === null) return;
    const t = await this.o.director.tasks.get(r.last_task_id);
    if (!FINAL_TASK_STATES.includes(t.state)) {
      throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${r.name} has task ${t.id} in progress (${t.description})`, {
        details: { task_id: t.id },
      });
    }
  }

  /**
   * A cluster's load balancers, remembered while its last task is finished: they change only
   * through tasks, so a new task (or its end) is a new key. Listings stay fast with many clusters.
   */
  private async endpointOf(r: ClustersTable, task: Task | undefined): Promise<Record<string, { ip: string; port: number }>> {
    const key = `${r.last_task_id}:${task?.state ?? ''}`;
    const hit = this.endpoints.get(r.name);
    if (hit?.key === key) return hit.lbs;
    const lbs = await this.o.director.loadBalancers(deploymentName(r.name)).catch((): Record<string, { ip: string; port: number }> => ({}));
    if (!task || FINAL_TASK_STATES.includes(task.state)) this.endpoints.set(r.name, { key, lbs });
    return lbs;
  }

  async views(rows: ClustersTable[]): Promise<ClusterView[]> {
    const [tasks, health] = await Promise.all([
      this.o.director.tasks.getMany(rows.flatMap((r) => (r.last_task_id !== null ? [r.last_task_id] : []))),
      this.healthOf(rows.map((r) => deploymentName(r.name))),
    ]);
    return Promise.all(
      rows.map((r) =>
        this.view(r, r.last_task_id !== null ? tasks.get(r.last_task_id) : undefined, health.get(deploymentName(r.name)) ?? noHealth()),
      ),
    );
  }

  /** Per deployment, its instances counted by their last health (one query for a whole listing). */
  private async healthOf(deployments: string[]): Promise<Map<string, HealthCounts>> {
    const out = new Map<string, HealthCounts>();
    if (deployments.length === 0) return out;
    // A long listing counts every deployment's instances in one pass (cheaper than a long IN list, and one SQL text).
    const wanted = new Set(deployments);
    const many = deployments.length > 50;
    const rows = await storeQuery('counting instances by health', () => {
      const q = this.o.store.db.selectFrom('instances').select(['deployment', 'health', (eb) => eb.fn.countAll<number>().as('n')]);
      return (many ? q : q.where('deployment', 'in', deployments)).groupBy(['deployment', 'health']).execute();
    });
    for (const r of rows) {
      if (many && !wanted.has(r.deployment)) continue;
      const c = out.get(r.deployment) ?? noHealth();
      const key = (r.health in c ? r.health : 'pending') as keyof HealthCounts;
      c[key] += Number(r.n);
      out.set(r.deployment, c);
    }
    return out;
  }

  /** A cluster as users see it; `health` when the caller counted it already (a listing), else counted here. */
  async view(r: ClustersTable, task: Task | undefined, counted?: HealthCounts): Promise<ClusterView> {
    const health = counted ?? (await this.healthOf([deploymentName(r.name)])).get(deploymentName(r.name)) ?? noHealth();
    const p = JSON.parse(r.parameters) as Parameters;
    const api = (await this.endpointOf(r, task))['api'];
    const description = task
      ? `${r.last_action.toLowerCase()} ${task.state}${task.error ? `: ${task.error.message}` : ''}`
      : `${r.last_action.toLowerCase()} queued`;
    return {
      name: r.name,
      plan_name: r.plan,
      uuid: r.uuid,
      owner: r.owner,
      last_action: r.last_action as ClusterView['last_action'],
      last_action_state: taskStateToAction(task?.state),
      last_action_description: description,
      last_task_id: r.last_task_id,
      kubernetes_master_ips: api ? [api.ip] : [],
      network_profile_name: r.network_profile,
      kubernetes_version: this.o.versionOf(r.release) ?? '',
      release: r.release,
      health,
      parameters: {
        kubernetes_master_host: p.externalHostname ?? api?.ip ?? '',
        kubernetes_master_port: api?.port ?? 6443,
        kubernetes_worker_instances: p.workers,
        ...(p.podCidr ? { pod_cidr: p.podCidr } : {}),
        ...(p.serviceCidr ? { service_cidr: p.serviceCidr } : {}),
        network_isolation: p.segment ? 'segment' : 'shared',
      },
    };
  }

  /** Clusters as users see them, all or one owner's: the same (frozen) array until the store changes. */
  list(filter: { owner?: string } = {}): Promise<readonly ClusterView[]> {
    return this.cached(`list:${filter.owner ?? '*'}`, async () => this.views(await this.rows(filter)));
  }

  /** One cluster as users see it: the same (frozen) object until the store changes. */
  get(name: string): Promise<ClusterView> {
    return this.cached(`one:${name}`, async () => (await this.views([await this.row(name)]))[0]!);
  }
}

/** How many listings and single views `ClusterRecords` keeps (the oldest goes first). */
const VIEW_CACHE = 2000;

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
