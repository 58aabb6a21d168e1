// The clusters use cases as the edges call them: each takes the caller (an Actor) and applies the access policy first.
import { ConflictError, NotFoundError, UnavailableError, type Clock, type Logger } from '@anodyne/common';
import type { Store } from '@anodyne/store';
import type { CloudCheck, Director, InstanceView, Task, TaskEvent, TaskWatch } from '@anodyne/director';
import { BUILTIN_PLANS, deploymentName, planUpdate, validatePlans, type OidcTrust, type Plan, type RegistryTrust } from './cluster.js';
import { access, type Actor } from './access.js';
import { ClusterRecords, type ClusterView } from './records.js';
import { NetworkProfiles, Quotas, type NetworkProfileView, type Quota, type Usage } from './profiles.js';
import { ClusterLifecycle, type CreateClusterInput, type LeafRotation } from './lifecycle.js';
import { ClusterBinds, type AdminCertificates } from './binds.js';
import { kubeClient, type ClusterEndpoint, type KubeClient } from './kube.js';
import { ClusterCaRotation, type CaRotationSteps } from './rotation.js';
import { ClusterFleet, type FleetUpgradeRequest } from './fleet.js';
import { ReleaseRegistry } from './releases.js';
import { NodeHooks, type EtcdMember } from './nodes.js';
import { apiProbe } from './availability.js';
import { ClusterBackups, type PlatformBackupSource } from './backups.js';
import { ChangeRecorder, etcdLeaderAt, type EtcdAccess, type RecorderRoute } from './changelog.js';
import { ClusterRepair } from './repair.js';
import { ClusterImagePolicy, type ImagePolicyView } from './imagepolicy.js';
import type { ArtifactStore, BackupKeys } from '@anodyne/backup';

/** A plan as the API lists it. */
export interface PlanView {
  name: string;
  description: string;
  masters: number;
  default_workers: number;
  max_workers: number;
  master_vm_type: string;
  worker_vm_type: string;
  /** How rolling changes of the plan's clusters go. */
  update: { canaries: number; max_in_flight: number; canary_watch_time: string; update_watch_time: string; drain_timeout_seconds: number };
  default_deny_namespaces: boolean;
  kubernetes_versions: string[];
}

/**
 * etcd's members of a cluster deployment, one per master, as each master's agent sees its etcd
 * process: running is its /health answering (a leader, no alarm); an agent that does not answer
 * counts as a member that is not healthy.
 */
async function etcdMembers(director: Director, deployment: string): Promise<EtcdMember[]> {
  const masters = (await director.instances(deployment)).filter((r) => r.group_name === 'master');
  return Promise.all(
    masters.map(async (r): Promise<EtcdMember> => {
      const instance = `master/${r.idx}`;
      try {
        const etcd = (await director.agentState(r, 3000)).processes.find((p) => p.job === 'etcd');
        if (!etcd) return { instance, healthy: false, reason: 'no etcd process' };
        return etcd.state === 'running' ? { instance, healthy: true } : { instance, healthy: false, reason: etcd.state };
      } catch {
        return { instance, healthy: false, reason: 'its agent does not answer' };
      }
    }),
  );
}

/** A release as the API lists it. */
export interface ReleaseView {
  key: string;
  kubernetes_version: string;
  registered_at: string;
  /** Clusters that run it. */
  clusters: number;
  /** New clusters get it when they name no version. */
  default: boolean;
}

/** What the service needs of the credential store. */
export interface ClusterCredentials extends AdminCertificates, LeafRotation, CaRotationSteps {
  /** The deployment's certificates (latest versions) with their expiry. */
  certificates(deployment: string): Promise<{ name: string; expires_at: string | null; is_ca: boolean; version: number }[]>;
  /** A client certificate of the deployment's etcd (its CA, certificate and key), for the platform's change record. */
  etcdClient(deployment: string): Promise<{ ca: string; certificate: string; private_key: string }>;
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
  /** The platform's image registry, which every cluster's nodes trust and pull from. */
  registry?: RegistryTrust;
  /** Quota for owners without one of their own. */
  defaultQuota?: { maxClusters: number; maxWorkers: number };
  /** How long draining a worker may wait for PodDisruptionBudgets (default 300 s). */
  drainTimeoutMs?: number;
  /** Where backups' artifacts go, and the keys that seal them. */
  backups: { artifacts: ArtifactStore; keys: BackupKeys; platform?: PlatformBackupSource };
  /** With several platform replicas: the change records run in the leader, the others send it their orders. */
  recorderRoute?: RecorderRoute;
  /** The agent programs the provider's running VMs were started with (a release carrying one is in use). */
  vmAgents?: () => Promise<string[]>;
  /** Builds the client for a cluster's API (default: @kubernetes/client-node with the admin certificate). */
  kubeClient?: (e: ClusterEndpoint) => KubeClient;
  /** Compares the store with the provider and the agents (the platform makes it over its provider). */
  cloudCheck?: CloudCheck;
}

/**
 * Clusters as teams see them: requests by plan, owned by a user, with quotas, turned into
 * director deployments. The parts (records, profiles and quotas, lifecycle, binds) are public
 * for the platform's own jobs; the edges call the methods here, which check the caller first.
 */
export class ClusterService {
  readonly plans: Plan[];
  readonly records: ClusterRecords;
  readonly profiles: NetworkProfiles;
  readonly quotas: Quotas;
  readonly lifecycle: ClusterLifecycle;
  readonly binds: ClusterBinds;
  private readonly imagePolicy: ClusterImagePolicy;
  readonly fleet: ClusterFleet;
  /** The director's instance hooks: workers are drained before they stop and their Nodes go with them. */
  readonly nodes: NodeHooks;
  readonly releases: ReleaseRegistry;
  readonly backups: ClusterBackups;
  readonly repair: ClusterRepair;
  /** Records etcd's changes after backups, for point-in-time restores. */
  readonly recorder: ChangeRecorder;

  constructor(private readonly o: ClusterServiceOptions) {
    this.plans = validatePlans(o.plans ?? BUILTIN_PLANS);
    this.releases = new ReleaseRegistry(o.store, o.clock, o.logger, o.vmAgents);
    const releases = this.releases;
    this.records = new ClusterRecords({
      store: o.store,
      director: o.director,
      clock: o.clock,
      logger: o.logger,
      versionOf: (k) => releases.versionOf(k),
    });
    this.profiles = new NetworkProfiles(o.store, this.records, this.plans, (cidr) => {
      o.director.checkSegmentShare(cidr, 'ANODYNE_E_INVALID_INPUT', 'segment_pool');
    });
    this.quotas = new Quotas(o.store, this.records, o.defaultQuota ?? { maxClusters: 10, maxWorkers: 50 });
    this.lifecycle = new ClusterLifecycle({
      director: o.director,
      records: this.records,
      profiles: this.profiles,
      quotas: this.quotas,
      credentials: o.credentials,
      releases: this.releases,
      nodes: { checkRemoval: (cluster, nodes) => this.nodes.checkRemoval(cluster, nodes) },
      probeFor: (cluster) =>
        this.binds.endpoint(cluster).then(
          () => () => apiProbe(() => this.binds.endpoint(cluster), o.clock),
          () => undefined,
        ),
      plans: this.plans,
      ...(o.oidc ? { oidc: o.oidc } : {}),
      ...(o.registry ? { registry: o.registry } : {}),
      caRotation: new ClusterCaRotation({
        steps: o.credentials,
        endpoint: (cluster) => this.binds.endpoint(cluster),
        client: o.kubeClient ?? ((e) => kubeClient(e)),
        clock: o.clock,
        logger: o.logger,
      }),
    });
    this.imagePolicy = new ClusterImagePolicy({
      ...(o.registry ? { registry: o.registry } : {}),
      endpoint: (cluster) => this.binds.endpoint(cluster),
    });
    this.binds = new ClusterBinds({
      records: this.records,
      credentials: o.credentials,
      logger: o.logger,
      ...(o.oidc ? { oidc: o.oidc } : {}),
      ...(o.kubeClient ? { client: o.kubeClient } : {}),
    });
    /** A deployment's masters with an address, and how to reach their etcd members (in that order). */
    const etcdOf = async (deployment: string) => {
      const masters = (await o.director.instances(deployment)).filter((r) => r.group_name === 'master' && r.ip);
      const access: EtcdAccess = { urls: masters.map((r) => `https://${r.ip}:2379`), ...(await o.credentials.etcdClient(deployment)) };
      return { access, masters };
    };
    this.nodes = new NodeHooks({
      clock: o.clock,
      logger: o.logger,
      ...(o.drainTimeoutMs !== undefined ? { drainTimeoutMs: o.drainTimeoutMs } : {}),
      // The plan's drain timeout (a cluster whose record is gone drains with the default).
      drainTimeoutOf: async (cluster) => {
        const row = await this.records.row(cluster).catch(() => undefined);
        const plan = row && this.plans.find((p) => p.name === row.plan);
        return plan ? planUpdate(plan).drainTimeoutSeconds * 1000 : undefined;
      },
      etcdMembers: (deployment) => etcdMembers(o.director, deployment),
      etcdLeader: async (deployment) => {
        const { access, masters } = await etcdOf(deployment);
        const at = await etcdLeaderAt(access);
        return at === undefined ? undefined : masters[at]!.idx;
      },
      ...(o.kubeClient ? { client: o.kubeClient } : {}),
      // A cluster still being created (or whose first create never finished) has no Nodes to drain.
      endpoint: (cluster) =>
        this.binds.endpoint(cluster).catch((err: unknown) => {
          if (err instanceof ConflictError || err instanceof UnavailableError) return undefined;
          throw err;
        }),
    });
    this.fleet = new ClusterFleet(o.director, this.records, this.lifecycle, this.releases);
    this.repair = new ClusterRepair({ director: o.director, records: this.records, check: o.cloudCheck });
    const etcdAccess = async (cluster: string): Promise<EtcdAccess> => (await etcdOf(deploymentName(cluster))).access;
    this.recorder = new ChangeRecorder({
      artifacts: o.backups.artifacts,
      keys: o.backups.keys,
      access: etcdAccess,
      clock: o.clock,
      logger: o.logger,
      ...(o.recorderRoute ? { route: o.recorderRoute } : {}),
    });
    this.backups = new ClusterBackups({
      recorder: this.recorder,
      etcdAccess,
      ...(o.backups.platform ? { platform: o.backups.platform } : {}),
      store: o.store,
      director: o.director,
      records: this.records,
      lifecycle: this.lifecycle,
      binds: this.binds,
      artifacts: o.backups.artifacts,
      keys: o.backups.keys,
      clock: o.clock,
      logger: o.logger,
      versionOf: (k) => releases.versionOf(k),
    });
  }

  /** The record of a cluster the actor may see (404 for one they may not). */
  private async seen(a: Actor, name: string): Promise<string> {
    const owner = (await this.records.row(name)).owner;
    access.assertSees(a, name, owner);
    return owner;
  }

  private async changed(a: Actor, name: string): Promise<void> {
    const owner = (await this.records.row(name)).owner;
    access.assertChanges(a, name, owner);
  }

  // ---------------------------------------------------------------- clusters

  list(a: Actor): Promise<readonly ClusterView[]> {
    return this.records.list(access.listFilter(a));
  }

  async get(a: Actor, name: string): Promise<ClusterView> {
    const view = await this.records.get(name);
    access.assertSees(a, name, view.owner);
    return view;
  }

  /** Whether the cluster runs only images of the platform registry (and the release's own). */
  async imagePolicyOf(a: Actor, name: string): Promise<ImagePolicyView> {
    await this.seen(a, name);
    return this.imagePolicy.get(name);
  }

  /** Sets it (the owner or an admin): an admission policy in the cluster, in force at once. */
  async setImagePolicy(a: Actor, name: string, registryOnly: boolean): Promise<ImagePolicyView> {
    await this.changed(a, name);
    return this.imagePolicy.set(name, registryOnly);
  }

  /** The caller becomes the owner. */
  create(a: Actor, input: CreateClusterInput): Promise<ClusterView> {
    return this.lifecycle.create(a.name, input);
  }

  async resize(a: Actor, name: string, patch: { kubernetes_worker_instances?: number }): Promise<ClusterView> {
    await this.changed(a, name);
    const workers = patch.kubernetes_worker_instances ?? (await this.records.get(name)).parameters.kubernetes_worker_instances;
    return this.lifecycle.redeploy(name, { kind: 'update', workers }, a.name);
  }

  /** Re-deploys with the platform's current release and plan: admins only. */
  /** To another Kubernetes release (default: the newest the plan offers), version skew checked first: admins only. */
  async upgrade(a: Actor, name: string, to: { kubernetes_version?: string } = {}): Promise<ClusterView> {
    access.assertAdmin(a, `upgrading cluster ${name}`);
    await this.seen(a, name);
    const why = { kind: 'upgrade' as const, ...(to.kubernetes_version !== undefined ? { kubernetesVersion: to.kubernetes_version } : {}) };
    return this.lifecycle.redeploy(name, why, a.name);
  }

  // ---------------------------------------------------------------- releases

  /** The plans as the API shows them, each with the Kubernetes versions it offers (registered releases, newest first). */
  async planViews(): Promise<PlanView[]> {
    const releases = await this.releases.list();
    const minor = (v: string) => v.split('.').slice(0, 2).join('.');
    return this.plans.map((p) => ({
      name: p.name,
      description: p.description,
      masters: p.masters,
      default_workers: p.defaultWorkers,
      max_workers: p.maxWorkers,
      master_vm_type: p.masterVmType,
      worker_vm_type: p.workerVmType,
      update: (({ canaries, maxInFlight, canaryWatchTime, updateWatchTime, drainTimeoutSeconds }) => ({
        canaries,
        max_in_flight: maxInFlight,
        canary_watch_time: canaryWatchTime,
        update_watch_time: updateWatchTime,
        drain_timeout_seconds: drainTimeoutSeconds,
      }))(planUpdate(p)),
      default_deny_namespaces: p.defaultDenyNamespaces ?? false,
      kubernetes_versions: releases
        .filter((r) => !p.kubernetesVersions || p.kubernetesVersions.includes(minor(r.kubernetes_version)))
        .map((r) => r.kubernetes_version),
    }));
  }

  /** The releases clusters can run, newest first, with how many clusters run each. */
  async listReleases(): Promise<ReleaseView[]> {
    const [rows, usage] = await Promise.all([this.releases.list(), this.releases.usage()]);
    return rows.map((r, i) => ({
      key: r.key,
      kubernetes_version: r.kubernetes_version,
      registered_at: r.registered_at,
      clusters: usage.get(r.key) ?? 0,
      default: i === 0,
    }));
  }

  /** Removes a release no cluster runs (and that is not the default): admins only. */
  async deleteRelease(a: Actor, key: string): Promise<void> {
    access.assertAdmin(a, 'deleting a release');
    await this.releases.delete(key);
  }

  /** Upgrades several clusters as one task (canaries, then batches; stops at the first failure): admins only. */
  async upgradeFleet(a: Actor, req: FleetUpgradeRequest): Promise<Task> {
    access.assertAdmin(a, 'a fleet upgrade');
    return this.fleet.upgrade(a.name, req);
  }

  /** Every VM onto a fresh root, rolling (repave): admins, or the owner with the manage scope. */
  async recreate(a: Actor, name: string): Promise<ClusterView> {
    await this.changed(a, name);
    return this.lifecycle.recreate(name, a.name);
  }

  /** New leaf certificates rolled out; with `ca`, every CA and the service-account key too (three rollouts, no downtime). */
  async rotateCertificates(a: Actor, name: string, options: { ca?: boolean } = {}): Promise<ClusterView> {
    await this.changed(a, name);
    if (options.ca) return this.lifecycle.rotateCas(name, a.name);
    return this.lifecycle.redeploy(name, { kind: 'rotate-certificates' }, a.name);
  }

  async delete(a: Actor, name: string): Promise<ClusterView> {
    await this.changed(a, name);
    return this.lifecycle.delete(name, a.name);
  }

  /** Certificates of a cluster with their expiry (no secret material). */
  async certificates(a: Actor, name: string): Promise<{ name: string; expires_at: string | null; is_ca: boolean; version: number }[]> {
    await this.seen(a, name);
    return this.o.credentials.certificates(deploymentName(name));
  }

  /** The cluster's VMs (masters and workers) with what the health monitor last found. */
  async vms(a: Actor, name: string): Promise<InstanceView[]> {
    await this.seen(a, name);
    return this.o.director.instanceViews(deploymentName(name));
  }

  /** Binds the calling user (who may change the cluster) and returns their kubeconfig. */
  async bind(a: Actor, name: string, apiUrl: string): Promise<string> {
    await this.changed(a, name);
    return this.binds.bind(name, access.userOf(a), apiUrl);
  }

  /** The admin kubeconfig (client certificate, cluster-admin): admins only. */
  async adminKubeconfig(a: Actor, name: string): Promise<string> {
    access.assertAdmin(a, 'the admin kubeconfig');
    await this.seen(a, name);
    return this.binds.adminKubeconfig(name);
  }

  // ---------------------------------------------------------------- tasks

  private async clusterOwnerOfTask(t: Task): Promise<string | undefined> {
    const cluster = t.deployment?.startsWith('cluster-') ? t.deployment.slice('cluster-'.length) : undefined;
    return cluster
      ? this.records.row(cluster).then(
          (r) => r.owner,
          () => undefined,
        )
      : undefined;
  }

  /** A task the actor may see: theirs, any on a cluster they own, or any for readers of all. */
  async task(a: Actor, id: number): Promise<Task> {
    const t = await this.o.director.tasks.get(id);
    if (access.canSeeTask(a, t, await this.clusterOwnerOfTask(t))) return t;
    throw new NotFoundError('ANODYNE_E_TASK_NOT_FOUND', `task ${id} not found`, { details: { id } });
  }

  async tasks(a: Actor, q: { cluster?: string; limit?: number }): Promise<Task[]> {
    const filter = access.listFilter(a);
    const own =
      filter.owner !== undefined
        ? { owner: a.name, orDeployments: (await this.records.list({ owner: a.name })).map((c) => deploymentName(c.name)) }
        : {};
    return this.o.director.tasks.list({ ...own, ...(q.cluster ? { deployment: deploymentName(q.cluster) } : {}), limit: q.limit ?? 50 });
  }

  /** Follows a task the actor may see (an event stream): `next(ms)` resolves when it may have changed, from any replica. */
  async watchTask(a: Actor, id: number): Promise<TaskWatch> {
    const t = await this.task(a, id);
    return this.o.director.tasks.watch(t.id);
  }

  async taskEvents(a: Actor, id: number, after = 0): Promise<TaskEvent[]> {
    const t = await this.task(a, id);
    return this.o.director.tasks.events(t.id, after);
  }

  async cancelTask(a: Actor, id: number): Promise<Task> {
    const t = await this.task(a, id);
    access.assertCancels(a, t);
    return this.o.director.tasks.requestCancel(t.id);
  }

  // ---------------------------------------------------------------- network profiles, quotas

  networkProfiles(): Promise<NetworkProfileView[]> {
    return this.profiles.list();
  }

  async quotaOf(a: Actor, owner: string): Promise<Quota> {
    access.assertSeesOwner(a, owner);
    return this.quotas.of(owner);
  }

  async usage(a: Actor, owner: string): Promise<Usage> {
    access.assertSeesOwner(a, owner);
    return this.quotas.usage(owner);
  }
}
