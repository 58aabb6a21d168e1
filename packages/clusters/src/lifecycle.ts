// Cluster lifecycle: create, resize, upgrade, rotate and delete — each checked in full before a director task starts.
import { randomUUID } from 'node:crypto';
import { ConflictError, InputError } from '@anodyne/common';
import type { ClustersTable } from '@anodyne/store';
import type { AvailabilityProbe, Director } from '@anodyne/director';
import { clusterManifest, deploymentName, type ClusterRequest, type OidcTrust, type Plan, type RegistryTrust } from './cluster.js';
import type { ClusterRecords, ClusterView, Parameters } from './records.js';
import type { NetworkProfiles, Quotas } from './profiles.js';
import type { ClusterRelease, ReleaseRegistry } from './releases.js';
import { nodeName } from './nodes.js';
import type { ClusterCaRotation } from './rotation.js';

export interface CreateClusterInput {
  name: string;
  plan_name: string;
  /** `1.33`, `1.33.13` or `v1.33.13`; absent: the newest the plan offers. */
  kubernetes_version?: string;
  network_profile_name?: string;
  parameters?: { kubernetes_master_host?: string; kubernetes_worker_instances?: number; pod_cidr?: string; service_cidr?: string };
}

/** What the lifecycle needs of the credential store. */
export interface LeafRotation {
  /** New versions of every leaf certificate (CAs are kept, so trust does not change). */
  regenerateLeaves(deployment: string, actor: string): Promise<number>;
}

/** Why a running cluster is deployed again; every kind goes through `redeploy`. */
export type Redeploy =
  | { kind: 'update'; workers: number }
  /** To the requested Kubernetes version (a minor picks its newest patch); absent: the newest the plan offers. */
  | { kind: 'upgrade'; kubernetesVersion?: string }
  | { kind: 'rotate-certificates' };

export interface LifecycleOptions {
  director: Director;
  records: ClusterRecords;
  profiles: NetworkProfiles;
  quotas: Quotas;
  credentials: LeafRotation;
  releases: ReleaseRegistry;
  /** What measures the cluster API's availability while a redeploy rolls it (undefined: the API is not ready). */
  probeFor?: (cluster: string) => Promise<(() => AvailabilityProbe) | undefined>;
  /** Checks a scale-down against the cluster's PodDisruptionBudgets. */
  nodes?: { checkRemoval(cluster: string, nodes: string[]): Promise<void> };
  plans: Plan[];
  oidc?: OidcTrust;
  registry?: RegistryTrust;
  /** Rotates a cluster's CAs (three rollouts in one task). */
  caRotation: ClusterCaRotation;
}

/** The step that records the release a cluster runs, once its upgrade has rolled out. */
const RELEASE_STEP = 'cluster.release';

/**
 * Clusters as teams ask for them, turned into director deployments. Every check happens before a
 * task starts; a refused request leaves nothing behind.
 */
export class ClusterLifecycle {
  constructor(private readonly o: LifecycleOptions) {
    // An upgrade's last step, on every replica (the replica that resumes a deploy ends it the same way).
    o.director.defineStep(RELEASE_STEP, async (args) => {
      const { cluster, release } = args as { cluster: string; release: string };
      await o.records.setRelease(cluster, release);
    });
  }

  private request(name: string, p: Parameters, plan: string, release: ClusterRelease): ClusterRequest {
    return {
      name,
      plan,
      workers: p.workers,
      release,
      ...(p.externalHostname ? { externalHostname: p.externalHostname } : {}),
      network: { ...(p.podCidr ? { podCidr: p.podCidr } : {}), ...(p.serviceCidr ? { serviceCidr: p.serviceCidr } : {}) },
      ...(this.o.oidc ? { oidc: this.o.oidc } : {}),
      ...(this.o.registry ? { registry: this.o.registry } : {}),
      ...(p.segment ? { segment: true, ...(p.segmentWithin ? { segmentWithin: p.segmentWithin } : {}) } : {}),
      ...(p.defaultDenyNamespaces !== undefined ? { defaultDenyNamespaces: p.defaultDenyNamespaces } : {}),
    };
  }

  /** Starts creating a cluster (asynchronous): validated, quota-checked, recorded, then a director task. */
  async create(owner: string, input: CreateClusterInput): Promise<ClusterView> {
    const plan = this.o.plans.find((p) => p.name === input.plan_name);
    if (!plan) {
      const known = this.o.plans.map((p) => p.name).join(', ');
      throw new InputError('ANODYNE_E_PLAN_NOT_FOUND', `unknown plan ${JSON.stringify(input.plan_name)}; plans: ${known}`, {
        details: { key: 'plan_name' },
      });
    }
    const profile = input.network_profile_name ? await this.o.profiles.get(input.network_profile_name) : undefined;
    if (profile && (input.parameters?.pod_cidr || input.parameters?.service_cidr)) {
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'give either a network profile or pod/service CIDRs, not both', {
        details: { key: 'network_profile_name' },
      });
    }
    const podCidr = profile?.pod_cidr ?? input.parameters?.pod_cidr;
    const serviceCidr = profile?.service_cidr ?? input.parameters?.service_cidr;
    const params: Parameters = {
      workers: input.parameters?.kubernetes_worker_instances ?? plan.defaultWorkers,
      ...(input.parameters?.kubernetes_master_host ? { externalHostname: input.parameters.kubernetes_master_host } : {}),
      ...(podCidr ? { podCidr } : {}),
      ...(serviceCidr ? { serviceCidr } : {}),
      // Isolated from every other cluster wherever the provider can (kept for the cluster's life).
      ...(this.o.director.segmentsOffered()
        ? { segment: true, ...(profile?.segment_pool ? { segmentWithin: profile.segment_pool } : {}) }
        : {}),
      ...(profile && profile.default_deny_namespaces !== null ? { defaultDenyNamespaces: profile.default_deny_namespaces === 1 } : {}),
    };
    const release = await this.o.releases.resolve(input.kubernetes_version, plan.kubernetesVersions);
    const manifest = clusterManifest(this.request(input.name, params, plan.name, release), this.o.plans); // validates name, workers, CIDRs
    await this.o.records.reapDeleted(input.name);
    if (await this.o.records.exists(input.name))
      throw new ConflictError('ANODYNE_E_CLUSTER_EXISTS', `cluster ${input.name} exists`, { details: { name: input.name } });
    await this.o.quotas.check(owner, 1, params.workers);
    const now = this.o.records.now();
    const row: ClustersTable = {
      name: input.name,
      uuid: randomUUID(),
      plan: plan.name,
      owner,
      parameters: JSON.stringify(params),
      last_action: 'CREATE',
      last_task_id: null,
      network_profile: profile?.name ?? null,
      release: release.key,
      created_at: now,
      updated_at: now,
    };
    await this.o.records.insert(row);
    try {
      const task = await this.o.director.deploy(manifest, owner);
      await this.o.records.setTask(input.name, 'CREATE', task.id);
    } catch (err) {
      await this.o.records.remove(input.name);
      throw err;
    }
    return this.o.records.get(input.name);
  }

  /** A cluster that may be changed now (no task running, not being deleted): its row, parameters and release. */
  private async changeable(name: string) {
    const r = await this.o.records.row(name);
    await this.o.records.assertIdle(r);
    if (r.last_action === 'DELETE') throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is being deleted`);
    const running = r.release ? await this.o.releases.get(r.release) : undefined;
    return { r, current: JSON.parse(r.parameters) as Parameters, running };
  }

  /** The release a change that keeps it uses: the cluster's own (a record from before releases: the newest). */
  private async kept(running: { key: string; kubernetes_version: string } | undefined): Promise<ClusterRelease> {
    return running ? { key: running.key, version: running.kubernetes_version } : this.o.releases.resolve(undefined);
  }

  /**
   * Deploys a running cluster again: a resize (quota- and plan-checked), an upgrade to another
   * Kubernetes release (version skew checked), or new leaf certificates rolled out instance by
   * instance. A resize and a rotation keep the cluster's release.
   */
  async redeploy(name: string, why: Redeploy, actor: string): Promise<ClusterView> {
    const { r, current, running } = await this.changeable(name);
    const next: Parameters = why.kind === 'update' ? { ...current, workers: why.workers } : current;
    const plan = this.o.plans.find((p) => p.name === r.plan);
    let release: ClusterRelease;
    if (why.kind === 'upgrade') {
      release = await this.o.releases.resolve(why.kubernetesVersion, plan?.kubernetesVersions);
      if (running) this.o.releases.checkUpgrade(running.kubernetes_version, release.version);
    } else {
      release = await this.kept(running);
    }
    const manifest = clusterManifest(this.request(name, next, r.plan, release), this.o.plans);
    if (next.workers > current.workers) await this.o.quotas.check(r.owner, 0, next.workers - current.workers);
    if (next.workers < current.workers && this.o.nodes) {
      const going = Array.from({ length: current.workers - next.workers }, (_, k) =>
        nodeName({ group: 'worker', index: next.workers + k }),
      );
      await this.o.nodes.checkRemoval(name, going);
    }
    if (why.kind === 'rotate-certificates') await this.o.credentials.regenerateLeaves(deploymentName(name), actor);
    const probe = await this.o.probeFor?.(name);
    // The record names the release the cluster runs: a new one once the rollout has succeeded (a
    // canary that failed was rolled back, and the cluster still runs what it ran).
    const changesRelease = running?.key !== release.key;
    const task = await this.o.director.deploy(manifest, actor, {
      ...(probe ? { probe } : {}),
      ...(changesRelease && running ? { then: { step: RELEASE_STEP, args: { cluster: name, release: release.key } } } : {}),
    });
    await this.o.records.setTask(name, 'UPDATE', task.id, {
      ...(why.kind === 'update' ? { parameters: next } : {}),
      ...(changesRelease && !running ? { release: release.key } : {}),
    });
    return this.o.records.get(name);
  }

  /**
   * Rotates every CA of a cluster and its service-account key with no downtime: the new CAs
   * trusted everywhere, then signing every certificate, then the old ones dropped, each rolled out
   * instance by instance, as one task that holds the deployment throughout. A rotation that
   * stopped midway resumes where it was. The cluster's API availability is measured throughout.
   */
  async rotateCas(name: string, actor: string): Promise<ClusterView> {
    const rotation = this.o.caRotation;
    const { r, current, running } = await this.changeable(name);
    const release = await this.kept(running);
    const manifest = clusterManifest(this.request(name, current, r.plan, release), this.o.plans);
    const probe = await this.o.probeFor?.(name);
    const task = await this.o.director.runConvergingTask(
      'rotate_ca',
      deploymentName(name),
      `rotate the CAs of cluster ${name}`,
      actor,
      (converge, signal, sink) => rotation.run(name, manifest, actor, converge, signal, sink),
      probe ? { probe } : {},
    );
    await this.o.records.setTask(name, 'UPDATE', task.id, running ? {} : { release: release.key });
    return this.o.records.get(name);
  }

  /**
   * Repaves a cluster: every VM onto a fresh root, one at a time with the same rules as an update
   * (masters first, canaries, workers drained first), from the cluster's stored manifest.
   */
  async recreate(name: string, actor: string): Promise<ClusterView> {
    const r = await this.o.records.row(name);
    await this.o.records.assertIdle(r);
    if (r.last_action === 'DELETE') throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is being deleted`);
    const probe = await this.o.probeFor?.(name);
    const task = await this.o.director.recreate(deploymentName(name), {}, actor, probe ? { probe } : {});
    await this.o.records.setTask(name, 'UPDATE', task.id);
    return this.o.records.get(name);
  }

  /** Starts deleting a cluster; the record goes when the task succeeds. Asking again while it runs is the same delete. */
  async delete(name: string, actor: string): Promise<ClusterView> {
    const r = await this.o.records.row(name);
    if (r.last_action === 'DELETE' && r.last_task_id !== null) {
      const t = await this.o.director.tasks.get(r.last_task_id);
      if (!['error', 'cancelled'].includes(t.state)) return this.o.records.view(r, t); // already being deleted
    } else {
      await this.o.records.assertIdle(r);
    }
    const hasDeployment = await this.o.director.manifest(deploymentName(name)).then(
      () => true,
      () => false,
    );
    const hasInstances = (await this.o.director.instances(deploymentName(name))).length > 0;
    if (!hasDeployment && !hasInstances) {
      // Created and failed before anything existed: nothing to tear down.
      await this.o.records.remove(name);
      return {
        ...(await this.o.records.view(r, undefined)),
        last_action: 'DELETE',
        last_action_state: 'succeeded',
        last_action_description: 'deleted',
      };
    }
    const task = await this.o.director.deleteDeployment(deploymentName(name), actor);
    await this.o.records.setTask(name, 'DELETE', task.id);
    return this.o.records.get(name);
  }
}
