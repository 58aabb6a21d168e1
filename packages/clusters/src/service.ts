import { randomUUID } from 'node:crypto';
import { request } from 'node:https';
import { ConflictError, InputError, NotFoundError, QuotaError, UnavailableError, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type Store, type ClustersTable, type NetworkProfilesTable } from '@anodyne/store';
import type { Director, InstanceView, Task, TaskState } from '@anodyne/director';
import { BUILTIN_PLANS, adminKubeconfig, validatePlans, clusterManifest, deploymentName, type ClusterRequest, type OidcTrust, type Plan } from './cluster.js';

/** What the service needs of the credential store: the cluster's admin certificate. */
export interface ClusterCredentials {
  adminCertificate(deployment: string, actor: string): Promise<{ ca: string; certificate: string; private_key: string }>;
  /** The deployment's certificates (latest versions) with their expiry. */
  certificates(deployment: string): Promise<{ name: string; expires_at: string | null; is_ca: boolean; version: number }[]>;
  /** New versions of every leaf certificate (CAs are kept, so trust does not change). */
  regenerateLeaves(deployment: string, actor: string): Promise<number>;
}

export interface ClusterServiceOptions {
  store: Store;
  director: Director;
  credentials: ClusterCredentials;
  clock: Clock;
  logger: Logger;
  plans?: Plan[];
  /** The issuer every cluster's API servers trust (users' kubeconfigs carry its tokens). */
  oidc?: OidcTrust;
  /** Quota for owners without one of their own. */
  defaultQuota?: { maxClusters: number; maxWorkers: number };
}

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
  parameters: {
    kubernetes_master_host: string;
    kubernetes_master_port: number;
    kubernetes_worker_instances: number;
    pod_cidr?: string;
    service_cidr?: string;
  };
}

export interface CreateClusterInput {
  name: string;
  plan_name: string;
  network_profile_name?: string;
  parameters?: { kubernetes_master_host?: string; kubernetes_worker_instances?: number; pod_cidr?: string; service_cidr?: string };
}

interface Parameters { workers: number; externalHostname?: string; podCidr?: string; serviceCidr?: string }

const taskStateToAction = (s: TaskState | undefined): ActionState => (s === 'done' ? 'succeeded' : s === 'error' || s === 'cancelled' ? 'failed' : 'in progress');

/**
 * Clusters as teams see them: requests by plan, owned by a user, with quotas, turned into
 * director deployments. Every check happens before a task starts; a refused request leaves
 * nothing behind.
 */
export class ClusterService {
  readonly plans: Plan[];
  private readonly quota: { maxClusters: number; maxWorkers: number };
  private readonly endpoints = new Map<string, { key: string; lbs: Record<string, { ip: string; port: number }> }>();

  constructor(private readonly o: ClusterServiceOptions) {
    this.plans = validatePlans(o.plans ?? BUILTIN_PLANS);
    this.quota = o.defaultQuota ?? { maxClusters: 10, maxWorkers: 50 };
  }


  private now(): string {
    return this.o.clock.now().toISOString();
  }

  private request(name: string, p: Parameters, plan: string): ClusterRequest {
    return {
      name, plan, workers: p.workers,
      ...(p.externalHostname ? { externalHostname: p.externalHostname } : {}),
      network: { ...(p.podCidr ? { podCidr: p.podCidr } : {}), ...(p.serviceCidr ? { serviceCidr: p.serviceCidr } : {}) },
      ...(this.o.oidc ? { oidc: this.o.oidc } : {}),
    };
  }

  // ---------------------------------------------------------------- network profiles

  async networkProfiles(): Promise<NetworkProfilesTable[]> {
    return storeQuery('listing network profiles', () => this.o.store.db.selectFrom('network_profiles').selectAll().orderBy('name').execute());
  }

  async networkProfile(name: string): Promise<NetworkProfilesTable> {
    const p = await storeQuery('reading a network profile', () => this.o.store.db.selectFrom('network_profiles').selectAll().where('name', '=', name).executeTakeFirst());
    if (!p) throw new InputError('ANODYNE_E_NETWORK_PROFILE_NOT_FOUND', `unknown network profile ${JSON.stringify(name)}`, { details: { key: 'network_profile_name' } });
    return p;
  }

  /** An admin offers named pod and service ranges; they are checked like a cluster request's. */
  async createNetworkProfile(input: { name: string; description?: string; pod_cidr: string; service_cidr: string }): Promise<NetworkProfilesTable> {
    clusterManifest({ name: 'profile-check', plan: this.plans[0]!.name, workers: 0, network: { podCidr: input.pod_cidr, serviceCidr: input.service_cidr } }, this.plans);
    const exists = await storeQuery('reading a network profile', () => this.o.store.db.selectFrom('network_profiles').select('name').where('name', '=', input.name).executeTakeFirst());
    if (exists) throw new ConflictError('ANODYNE_E_CONFLICT', `network profile ${input.name} exists`, { details: { name: input.name } });
    const row: NetworkProfilesTable = { name: input.name, description: input.description ?? '', pod_cidr: input.pod_cidr, service_cidr: input.service_cidr, created_at: this.now() };
    await storeQuery('creating a network profile', () => this.o.store.db.insertInto('network_profiles').values(row).execute());
    return row;
  }

  async deleteNetworkProfile(name: string): Promise<void> {
    await this.networkProfile(name);
    const users = await storeQuery('reading clusters', () => this.o.store.db.selectFrom('clusters').select('name').where('network_profile', '=', name).execute());
    if (users.length > 0) throw new ConflictError('ANODYNE_E_CONFLICT', `network profile ${name} is used by ${users.map((u) => u.name).join(', ')}`, { details: { clusters: users.map((u) => u.name) } });
    await storeQuery('deleting a network profile', () => this.o.store.db.deleteFrom('network_profiles').where('name', '=', name).execute());
  }

  async quotaOf(owner: string): Promise<{ owner: string; max_clusters: number; max_workers: number }> {
    const row = await storeQuery('reading a quota', () => this.o.store.db.selectFrom('quotas').selectAll().where('owner', '=', owner).executeTakeFirst());
    return row ?? { owner, max_clusters: this.quota.maxClusters, max_workers: this.quota.maxWorkers };
  }

  async setQuota(owner: string, maxClusters: number, maxWorkers: number): Promise<void> {
    if (!Number.isInteger(maxClusters) || maxClusters < 0 || !Number.isInteger(maxWorkers) || maxWorkers < 0) throw new InputError('ANODYNE_E_INVALID_INPUT', 'quotas are whole numbers ≥ 0');
    await storeQuery('setting a quota', () => this.o.store.db.insertInto('quotas').values({ owner, max_clusters: maxClusters, max_workers: maxWorkers })
      .onConflict((oc) => oc.column('owner').doUpdateSet({ max_clusters: maxClusters, max_workers: maxWorkers })).execute());
  }

  async usage(owner: string): Promise<{ owner: string; clusters: number; workers: number }> {
    const rows = await this.rows({ owner });
    return { owner, clusters: rows.length, workers: rows.reduce((n, r) => n + (JSON.parse(r.parameters) as Parameters).workers, 0) };
  }

  private async checkQuota(owner: string, addClusters: number, addWorkers: number): Promise<void> {
    const [quota, used] = await Promise.all([this.quotaOf(owner), this.usage(owner)]);
    if (used.clusters + addClusters > quota.max_clusters) throw new QuotaError('ANODYNE_E_QUOTA_EXCEEDED', `${owner} may have ${quota.max_clusters} clusters and has ${used.clusters}`, { details: { quota, usage: used } });
    if (used.workers + addWorkers > quota.max_workers) throw new QuotaError('ANODYNE_E_QUOTA_EXCEEDED', `${owner} may have ${quota.max_workers} workers in all and has ${used.workers}; this asks for ${addWorkers} more`, { details: { quota, usage: used } });
  }

  /** Starts creating a cluster (asynchronous): validated, quota-checked, recorded, then a director task. */
  async create(owner: string, input: CreateClusterInput): Promise<ClusterView> {
    const plan = this.plans.find((p) => p.name === input.plan_name);
    if (!plan) throw new InputError('ANODYNE_E_PLAN_NOT_FOUND', `unknown plan ${JSON.stringify(input.plan_name)}; plans: ${this.plans.map((p) => p.name).join(', ')}`, { details: { key: 'plan_name' } });
    const profile = input.network_profile_name ? await this.networkProfile(input.network_profile_name) : undefined;
    if (profile && (input.parameters?.pod_cidr || input.parameters?.service_cidr)) throw new InputError('ANODYNE_E_INVALID_INPUT', 'give either a network profile or pod/service CIDRs, not both', { details: { key: 'network_profile_name' } });
    const podCidr = profile?.pod_cidr ?? input.parameters?.pod_cidr;
    const serviceCidr = profile?.service_cidr ?? input.parameters?.service_cidr;
    const params: Parameters = {
      workers: input.parameters?.kubernetes_worker_instances ?? plan.defaultWorkers,
      ...(input.parameters?.kubernetes_master_host ? { externalHostname: input.parameters.kubernetes_master_host } : {}),
      ...(podCidr ? { podCidr } : {}),
      ...(serviceCidr ? { serviceCidr } : {}),
    };
    const manifest = clusterManifest(this.request(input.name, params, plan.name), this.plans); // validates name, workers, CIDRs
    await this.reapDeleted(input.name);
    const existing = await storeQuery('reading a cluster', () => this.o.store.db.selectFrom('clusters').select('name').where('name', '=', input.name).executeTakeFirst());
    if (existing) throw new ConflictError('ANODYNE_E_CLUSTER_EXISTS', `cluster ${input.name} exists`, { details: { name: input.name } });
    await this.checkQuota(owner, 1, params.workers);
    const row: ClustersTable = { name: input.name, uuid: randomUUID(), plan: plan.name, owner, parameters: JSON.stringify(params), last_action: 'CREATE', last_task_id: null, network_profile: profile?.name ?? null, created_at: this.now(), updated_at: this.now() };
    await storeQuery('recording a cluster', () => this.o.store.db.insertInto('clusters').values(row).execute());
    try {
      const task = await this.o.director.deploy(manifest, owner);
      await this.setTask(input.name, 'CREATE', task.id);
    } catch (err) {
      await storeQuery('removing a cluster record', () => this.o.store.db.deleteFrom('clusters').where('name', '=', input.name).execute());
      throw err;
    }
    return this.get(input.name);
  }

  private async setTask(name: string, action: string, taskId: number): Promise<void> {
    await storeQuery('updating a cluster', () => this.o.store.db.updateTable('clusters').set({ last_action: action, last_task_id: taskId, updated_at: this.now() }).where('name', '=', name).execute());
  }

  /**
   * Cluster records, without those whose delete has finished. Reading never writes: such records
   * are removed by `reapDeleted` (the platform runs it at start and periodically; a create of the
   * same name runs it first).
   */
  private async rows(filter: { owner?: string; name?: string } = {}): Promise<ClustersTable[]> {
    let q = this.o.store.db.selectFrom('clusters').selectAll();
    if (filter.owner) q = q.where('owner', '=', filter.owner);
    if (filter.name !== undefined) q = q.where('name', '=', filter.name);
    const rows = await storeQuery('listing clusters', () => q.orderBy('name').execute());
    const deleted = await this.finishedDeletes(rows);
    return rows.filter((r) => !deleted.has(r.name));
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
      await storeQuery('removing a cluster record', () => this.o.store.db.deleteFrom('clusters').where('name', '=', n).where('last_action', '=', 'DELETE').execute());
      this.endpoints.delete(n);
    }
    if (done.length > 0) this.o.logger.info({ clusters: done }, 'deleted clusters\' records removed');
    return done;
  }

  private async row(name: string): Promise<ClustersTable> {
    const [r] = await this.rows({ name });
    if (!r) throw new NotFoundError('ANODYNE_E_CLUSTER_NOT_FOUND', `cluster ${name} not found`, { details: { name } });
    return r;
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
    if (!task || ['done', 'error', 'cancelled'].includes(task.state)) this.endpoints.set(r.name, { key, lbs });
    return lbs;
  }

  private async views(rows: ClustersTable[]): Promise<ClusterView[]> {
    const tasks = await this.o.director.tasks.getMany(rows.flatMap((r) => (r.last_task_id !== null ? [r.last_task_id] : [])));
    return Promise.all(rows.map((r) => this.view(r, r.last_task_id !== null ? tasks.get(r.last_task_id) : undefined)));
  }

  private async view(r: ClustersTable, task: Task | undefined): Promise<ClusterView> {
    const p = JSON.parse(r.parameters) as Parameters;
    const api = (await this.endpointOf(r, task))['api'];
    return {
      name: r.name, plan_name: r.plan, uuid: r.uuid, owner: r.owner,
      last_action: r.last_action as ClusterView['last_action'],
      last_action_state: taskStateToAction(task?.state),
      last_action_description: task ? `${r.last_action.toLowerCase()} ${task.state}${task.error ? `: ${task.error.message}` : ''}` : `${r.last_action.toLowerCase()} queued`,
      last_task_id: r.last_task_id,
      kubernetes_master_ips: api ? [api.ip] : [],
      network_profile_name: r.network_profile,
      parameters: {
        kubernetes_master_host: p.externalHostname ?? api?.ip ?? '',
        kubernetes_master_port: api?.port ?? 6443,
        kubernetes_worker_instances: p.workers,
        ...(p.podCidr ? { pod_cidr: p.podCidr } : {}),
        ...(p.serviceCidr ? { service_cidr: p.serviceCidr } : {}),
      },
    };
  }

  async list(filter: { owner?: string } = {}): Promise<ClusterView[]> {
    return this.views(await this.rows(filter));
  }

  async get(name: string): Promise<ClusterView> {
    return (await this.views([await this.row(name)]))[0]!;
  }

  private async assertIdle(r: ClustersTable): Promise<void> {
    if (r.last_task_id === null) return;
    const t = await this.o.director.tasks.get(r.last_task_id);
    if (!['done', 'error', 'cancelled'].includes(t.state)) throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${r.name} has task ${t.id} in progress (${t.description})`, { details: { task_id: t.id } });
  }

  /** Scales workers (PATCH). Quota- and plan-checked before the task starts. */
  async update(name: string, patch: { kubernetes_worker_instances?: number }, actor: string): Promise<ClusterView> {
    const r = await this.row(name);
    await this.assertIdle(r);
    if (r.last_action === 'DELETE') throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is being deleted`);
    const p = JSON.parse(r.parameters) as Parameters;
    const workers = patch.kubernetes_worker_instances ?? p.workers;
    const next: Parameters = { ...p, workers };
    const manifest = clusterManifest(this.request(name, next, r.plan), this.plans);
    if (workers > p.workers) await this.checkQuota(r.owner, 0, workers - p.workers);
    const task = await this.o.director.deploy(manifest, actor);
    await storeQuery('updating a cluster', () => this.o.store.db.updateTable('clusters').set({ parameters: JSON.stringify(next), last_action: 'UPDATE', last_task_id: task.id, updated_at: this.now() }).where('name', '=', name).execute());
    return this.get(name);
  }

  /** Re-deploys a cluster with the platform's current release and plan (canaries, rolling). */
  async upgrade(name: string, actor: string): Promise<ClusterView> {
    const r = await this.row(name);
    await this.assertIdle(r);
    if (r.last_action === 'DELETE') throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is being deleted`);
    const manifest = clusterManifest(this.request(name, JSON.parse(r.parameters) as Parameters, r.plan), this.plans);
    const task = await this.o.director.deploy(manifest, actor);
    await this.setTask(name, 'UPDATE', task.id);
    return this.get(name);
  }

  /** Certificates of a cluster with their expiry (no secret material). */
  async certificates(name: string): Promise<{ name: string; expires_at: string | null; is_ca: boolean; version: number }[]> {
    await this.row(name);
    return this.o.credentials.certificates(deploymentName(name));
  }

  /** The cluster's VMs (masters and workers) with what the health monitor last found. */
  async vms(name: string): Promise<InstanceView[]> {
    await this.row(name);
    return this.o.director.instanceViews(deploymentName(name));
  }

  /** New leaf certificates for every component, rolled out instance by instance (CAs unchanged). */
  async rotateCertificates(name: string, actor: string): Promise<ClusterView> {
    const r = await this.row(name);
    await this.assertIdle(r);
    if (r.last_action === 'DELETE') throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is being deleted`);
    const manifest = clusterManifest(this.request(name, JSON.parse(r.parameters) as Parameters, r.plan), this.plans);
    await this.o.credentials.regenerateLeaves(deploymentName(name), actor);
    const task = await this.o.director.deploy(manifest, actor);
    await this.setTask(name, 'UPDATE', task.id);
    return this.get(name);
  }

  /** Starts deleting a cluster; the record goes when the task succeeds. */
  async delete(name: string, actor: string): Promise<ClusterView> {
    const r = await this.row(name);
    if (r.last_action === 'DELETE' && r.last_task_id !== null) {
      const t = await this.o.director.tasks.get(r.last_task_id);
      if (!['error', 'cancelled'].includes(t.state)) return this.view(r, t); // already being deleted
    } else {
      await this.assertIdle(r);
    }
    const hasDeployment = await this.o.director.manifest(deploymentName(name)).then(() => true, () => false);
    const hasInstances = (await this.o.director.instances(deploymentName(name))).length > 0;
    if (!hasDeployment && !hasInstances) {
      // Created and failed before anything existed: nothing to tear down.
      await storeQuery('removing a cluster record', () => this.o.store.db.deleteFrom('clusters').where('name', '=', name).execute());
      this.endpoints.delete(name);
      return { ...(await this.view(r, undefined)), last_action: 'DELETE', last_action_state: 'succeeded', last_action_description: 'deleted' };
    }
    const task = await this.o.director.deleteDeployment(deploymentName(name), actor);
    await this.setTask(name, 'DELETE', task.id);
    return this.get(name);
  }

  /**
   * A credential that can be revoked on its own: a service account bound to cluster-admin and a
   * token for it (the Open Service Broker's bindings). Idempotent per id.
   */
  async serviceAccountKubeconfig(name: string, id: string, fingerprint = ''): Promise<{ kubeconfig: string; created: boolean }> {
    const { server, admin } = await this.endpoint(name);
    const sa = `anodyne-binding-${id}`;
    const path = `/api/v1/namespaces/kube-system/serviceaccounts/${sa}`;
    // A binding id is bound once: the same request again gets a credential for the same account;
    // a different request on the same id is a conflict (the request's fingerprint is on the account).
    const existing = await kubeRequest(server, admin, 'GET', path, undefined, [404]) as { code?: number; metadata?: { annotations?: Record<string, string> } } | null;
    const created = existing?.code === 404;
    if (!created && (existing?.metadata?.annotations?.[BINDING_FINGERPRINT] ?? '') !== fingerprint) {
      throw new ConflictError('ANODYNE_E_BINDING_CONFLICT', `binding ${id} of cluster ${name} exists with other attributes`, { details: { name, id } });
    }
    if (created) {
      await kubeRequest(server, admin, 'POST', '/api/v1/namespaces/kube-system/serviceaccounts', {
        apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, labels: { 'app.kubernetes.io/managed-by': 'anodyne' }, annotations: { [BINDING_FINGERPRINT]: fingerprint } },
      }, [409]);
    }
    await kubeRequest(server, admin, 'POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: sa, labels: { 'app.kubernetes.io/managed-by': 'anodyne' } },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'ServiceAccount', name: sa, namespace: 'kube-system' }],
    }, [409]);
    const tr = await kubeRequest(server, admin, 'POST', `${path}/token`, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 365 * 86_400 } }) as { status: { token: string } };
    return { kubeconfig: tokenKubeconfig({ cluster: name, server, clusterCa: admin.ca, user: sa, token: tr.status.token }), created };
  }

  /**
   * Revokes a service-account credential: its tokens stop working at once. Idempotent; says
   * whether there was one to revoke (the broker answers 410 Gone otherwise).
   */
  async revokeServiceAccount(name: string, id: string): Promise<boolean> {
    const { server, admin } = await this.endpoint(name);
    const sa = `anodyne-binding-${id}`;
    const gone = (r: unknown) => (r as { code?: number } | null)?.code === 404;
    const binding = await kubeRequest(server, admin, 'DELETE', `/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/${sa}`, undefined, [404]);
    const account = await kubeRequest(server, admin, 'DELETE', `/api/v1/namespaces/kube-system/serviceaccounts/${sa}`, undefined, [404]);
    return !(gone(binding) && gone(account));
  }

  /** The owner of a cluster (for authorisation at the edge). */
  async ownerOf(name: string): Promise<string> {
    return (await this.row(name)).owner;
  }

  async task(name: string): Promise<Task | undefined> {
    const r = await this.row(name);
    return r.last_task_id !== null ? this.o.director.tasks.get(r.last_task_id) : undefined;
  }

  private async endpoint(name: string): Promise<{ server: string; admin: { ca: string; certificate: string; private_key: string } }> {
    const v = await this.get(name);
    if (v.last_action === 'CREATE' && v.last_action_state !== 'succeeded') throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is not ready (${v.last_action_description})`);
    const ip = v.kubernetes_master_ips[0];
    if (!ip) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', `cluster ${name} has no API endpoint`);
    const admin = await this.o.credentials.adminCertificate(deploymentName(name), 'clusters');
    return { server: `https://${ip}:${v.parameters.kubernetes_master_port}`, admin };
  }

  /** The admin kubeconfig (client certificate, cluster-admin): for pks.clusters.admin only. */
  async adminKubeconfig(name: string): Promise<string> {
    const { server, admin } = await this.endpoint(name);
    return adminKubeconfig(name, server, admin);
  }

  /**
   * Takes a user's bindings out of every cluster (when the user is deleted), so a later user of
   * the same name inherits nothing. Clusters that cannot be reached are reported, not skipped
   * silently: the caller records them.
   */
  async unbindEverywhere(user: string): Promise<{ unbound: string[]; unreachable: string[] }> {
    const out = { unbound: [] as string[], unreachable: [] as string[] };
    for (const c of await this.list()) {
      if (c.last_action === 'DELETE' || c.kubernetes_master_ips.length === 0) continue;
      try {
        const { server, admin } = await this.endpoint(c.name);
        await kubeRequest(server, admin, 'DELETE', `/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/${bindingName(user)}`, undefined, [404]);
        out.unbound.push(c.name);
      } catch (e) {
        this.o.logger.warn({ cluster: c.name, user, err: (e as Error).message }, 'could not remove a deleted user\'s binding');
        out.unreachable.push(c.name);
      }
    }
    return out;
  }

  /**
   * Binds a user to a cluster: a ClusterRoleBinding of `<prefix><user>` to cluster-admin in
   * the cluster, and a kubeconfig whose user gets tokens from Anodyne (`anodyne get-token`).
   */
  async bind(name: string, user: string, login: { apiUrl: string; caPem: string; token?: string }): Promise<string> {
    if (!this.o.oidc) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', 'the platform has no identity issuer configured for clusters');
    const { server, admin } = await this.endpoint(name);
    const subject = `${this.o.oidc.usernamePrefix}${user}`;
    await kubeRequest(server, admin, 'POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding',
      metadata: { name: bindingName(user), labels: { 'app.kubernetes.io/managed-by': 'anodyne' } },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: subject }],
    }, [409]);
    return userKubeconfig({ cluster: name, server, clusterCa: admin.ca, user, apiUrl: login.apiUrl, apiCaPem: login.caPem });
  }
}

/** The ClusterRoleBinding a bind creates for a user. */
function bindingName(user: string): string {
  return `anodyne:user:${user}`.toLowerCase().replace(/[^a-z0-9:.-]/g, '-');
}

/** A kubeconfig with a bearer token (service-account credentials, e.g. Open Service Broker bindings). */
export function tokenKubeconfig(o: { cluster: string; server: string; clusterCa: string; user: string; token: string }): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return [
    'apiVersion: v1', 'kind: Config', 'clusters:', `- name: ${o.cluster}`, '  cluster:', `    server: ${o.server}`, `    certificate-authority-data: ${b64(o.clusterCa)}`,
    'users:', `- name: ${o.user}`, '  user:', `    token: ${o.token}`,
    'contexts:', `- name: ${o.cluster}`, '  context:', `    cluster: ${o.cluster}`, `    user: ${o.user}`, `current-context: ${o.cluster}`, '',
  ].join('\n');
}

/** A kubeconfig whose credentials come from `anodyne get-token` (client.authentication.k8s.io/v1). */
export function userKubeconfig(o: { cluster: string; server: string; clusterCa: string; user: string; apiUrl: string; apiCaPem: string }): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: ${o.cluster}`,
    '  cluster:',
    `    server: ${o.server}`,
    `    certificate-authority-data: ${b64(o.clusterCa)}`,
    'users:',
    `- name: ${o.user}@${o.cluster}`,
    '  user:',
    '    exec:',
    '      apiVersion: client.authentication.k8s.io/v1',
    '      command: anodyne',
    `      args: [get-token, --api, ${JSON.stringify(o.apiUrl)}]`,
    '      interactiveMode: Never',
    '      provideClusterInfo: false',
    'contexts:',
    `- name: ${o.cluster}`,
    '  context:',
    `    cluster: ${o.cluster}`,
    `    user: ${o.user}@${o.cluster}`,
    `current-context: ${o.cluster}`,
    '',
  ].join('\n');
}

/** One call to a cluster's API server with the admin client certificate. */
/** The annotation on a binding's ServiceAccount that records what the binding was asked with. */
const BINDING_FINGERPRINT = 'anodyne.io/binding-request';

export function kubeRequest(server: string, admin: { ca: string; certificate: string; private_key: string }, method: string, path: string, body?: unknown, okStatuses: number[] = []): Promise<unknown> {
  const url = new URL(path, server);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, ca: admin.ca, cert: admin.certificate, key: admin.private_key, headers: { 'content-type': 'application/json' }, timeout: 15_000 }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => {
        const status = res.statusCode ?? 500;
        if (status < 300 || okStatuses.includes(status)) resolve(text ? JSON.parse(text) as unknown : null);
        else reject(new UnavailableError('ANODYNE_E_UNAVAILABLE', `cluster API ${method} ${path}: ${status} ${text.slice(0, 300)}`));
      });
    });
    req.on('error', (e) => reject(new UnavailableError('ANODYNE_E_UNAVAILABLE', `cluster API unreachable: ${e.message}`, { cause: e })));
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}


