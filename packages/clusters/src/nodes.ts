// Around each instance's rollout: workers are cordoned and drained (evictions that respect PodDisruptionBudgets), uncordoned, deleted; masters wait for etcd's members.
import { AnodyneError, ConflictError, UnavailableError, type Clock, type Logger } from '@anodyne/common';
import type { HookInstance, InstanceHooks } from '@anodyne/director';
import { PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { kubeCall, kubeClient, statusOf, type ClusterEndpoint, type KubeClient } from './kube.js';

/** One etcd member as its master's agent sees it (its /health: a leader, no alarm). */
export interface EtcdMember {
  /** `master/<index>` */
  instance: string;
  healthy: boolean;
  /** Why not, when it is not. */
  reason?: string;
}

export interface NodeHooksOptions {
  /** Where a cluster's API is (undefined while it is not ready: a first deploy has no nodes to drain). */
  endpoint: (cluster: string) => Promise<ClusterEndpoint | undefined>;
  clock: Clock;
  logger: Logger;
  /** How long a drain may wait for evictions that PodDisruptionBudgets hold back (default 300 s). */
  drainTimeoutMs?: number;
  /** The cluster's own drain timeout (its plan's), when it has one. */
  drainTimeoutOf?: (cluster: string) => Promise<number | undefined>;
  /** The etcd members of a deployment (every master), with their health. */
  etcdMembers?: (deployment: string) => Promise<EtcdMember[]>;
  /** The index of the master whose etcd member leads now, if any answers. */
  etcdLeader?: (deployment: string) => Promise<number | undefined>;
  /** How long a master's rollout waits for etcd's members to be healthy (default 120 s). */
  etcdWaitMs?: number;
  client?: (e: ClusterEndpoint) => KubeClient;
}

/** The Node a worker instance registers as (the kubelet's --hostname-override). */
export const nodeName = (i: { group: string; index: number }): string => `${i.group}-${i.index}`;

const isDaemonSetPod = (p: V1Pod) => (p.metadata?.ownerReferences ?? []).some((o) => o.kind === 'DaemonSet');
const isMirrorPod = (p: V1Pod) => p.metadata?.annotations?.['kubernetes.io/config.mirror'] !== undefined;
const isFinished = (p: V1Pod) => p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';

/**
 * The director's instance hooks for clusters: a worker is cordoned and drained before it stops
 * (an update, a recreate, a scale-down), uncordoned when it runs again, and its Node object goes
 * with it. Masters are not Nodes here; each one stops only while every other etcd member is
 * healthy (so that quorum holds without it), and the rollout goes on only when every member,
 * its own too, is healthy again.
 */
export class NodeHooks implements InstanceHooks {
  private readonly client: (e: ClusterEndpoint) => KubeClient;
  private readonly drainTimeoutMs: number;

  constructor(private readonly o: NodeHooksOptions) {
    this.client = o.client ?? ((e) => kubeClient(e));
    this.drainTimeoutMs = o.drainTimeoutMs ?? 300_000;
  }

  private async api(i: HookInstance): Promise<KubeClient | undefined> {
    if (i.group !== 'worker' || !i.deployment.startsWith('cluster-')) return undefined;
    const e = await this.o.endpoint(i.deployment.slice('cluster-'.length));
    return e ? this.client(e) : undefined;
  }

  /**
   * Masters roll followers first and etcd's leader last: every master's stop that is the leader's
   * makes etcd elect another, and a consistent read in flight across an election fails
   * ("etcdserver: leader changed", a 500 to whoever asked). Leader last means one election per rollout.
   */
  async order(deployment: string, group: string, indexes: number[]): Promise<number[]> {
    if (group !== 'master' || !this.o.etcdLeader) return indexes;
    const leader = await this.o.etcdLeader(deployment);
    return leader !== undefined && indexes.includes(leader) ? [...indexes.filter((i) => i !== leader), leader] : indexes;
  }

  async beforeStop(i: HookInstance, signal: AbortSignal): Promise<void> {
    if (i.group === 'master') return this.etcdHealthy(i, 'before', signal);
    const api = await this.api(i);
    if (api) await this.drain(api, nodeName(i), signal, await this.drainTimeout(i));
  }

  async afterHealthy(i: HookInstance): Promise<void> {
    if (i.group === 'master') return this.etcdHealthy(i, 'after');
    const api = await this.api(i);
    if (!api) return;
    // The API may be busy a moment (a master just restarted): asked again for a minute.
    const deadline = this.o.clock.nowMs() + 60_000;
    for (;;) {
      try {
        return await this.cordon(api, nodeName(i), false);
      } catch (err) {
        if (this.o.clock.nowMs() > deadline) throw err;
        await this.o.clock.sleep(2000);
      }
    }
  }

  async beforeRemove(i: HookInstance, signal: AbortSignal): Promise<void> {
    const api = await this.api(i);
    if (api) await this.drain(api, nodeName(i), signal, await this.drainTimeout(i));
  }

  private async drainTimeout(i: HookInstance): Promise<number> {
    const own =
      this.o.drainTimeoutOf && i.deployment.startsWith('cluster-') ? await this.o.drainTimeoutOf(i.deployment.slice(8)) : undefined;
    return own ?? this.drainTimeoutMs;
  }

  /**
   * Waits until etcd's members are healthy: before a master stops, every other one (quorum holds
   * without it; the member being repaired may itself be the sick one); after it runs again, all
   * of them. Fails the step, before anything is stopped, when they are not within the wait.
   */
  private async etcdHealthy(i: HookInstance, when: 'before' | 'after', signal?: AbortSignal): Promise<void> {
    if (!this.o.etcdMembers) return;
    const self = `${i.group}/${i.index}`;
    const waitMs = this.o.etcdWaitMs ?? 120_000;
    const deadline = this.o.clock.nowMs() + waitMs;
    for (;;) {
      const members = await this.o.etcdMembers(i.deployment);
      const counted = when === 'before' ? members.filter((m) => m.instance !== self) : members;
      const sick = counted.filter((m) => !m.healthy);
      if (sick.length === 0) {
        const n = counted.length;
        await i.note?.(
          when === 'before'
            ? `etcd: ${n} other member${n === 1 ? '' : 's'} healthy before ${self} stops`
            : `etcd: ${n} of ${members.length} members healthy after ${self}`,
        );
        return;
      }
      if (signal?.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
      if (this.o.clock.nowMs() > deadline) {
        const list = sick.map((m) => `${m.instance}${m.reason ? ` (${m.reason})` : ''}`).join(', ');
        throw new ConflictError(
          'ANODYNE_E_ETCD_UNHEALTHY',
          when === 'before'
            ? `etcd member(s) ${list} not healthy after ${Math.round(waitMs / 1000)} s: stopping ${self} could lose quorum, so it was not stopped`
            : `etcd member(s) ${list} not healthy ${Math.round(waitMs / 1000)} s after ${self} came back`,
          { details: { instance: self, members } },
        );
      }
      await this.o.clock.sleep(1000);
    }
  }

  async afterRemove(i: HookInstance): Promise<void> {
    const api = await this.api(i);
    if (api) await kubeCall('deleting a Node', () => api.core.deleteNode({ name: nodeName(i) }), [404]);
  }

  /**
   * Refuses, before any work, a scale-down that PodDisruptionBudgets forbid: a pod on a node that
   * would go, matched by a budget that allows no disruption now.
   */
  async checkRemoval(cluster: string, nodes: string[]): Promise<void> {
    const e = await this.o.endpoint(cluster);
    if (!e || nodes.length === 0) return;
    const api = this.client(e);
    const budgets =
      (await kubeCall('listing PodDisruptionBudgets', () => api.policy.listPodDisruptionBudgetForAllNamespaces()))?.items ?? [];
    const blocking = budgets.filter((b) => (b.status?.disruptionsAllowed ?? 0) === 0 && b.spec?.selector?.matchLabels);
    if (blocking.length === 0) return;
    for (const node of nodes) {
      for (const p of await this.podsOn(api, node)) {
        const labels = p.metadata?.labels ?? {};
        const b = blocking.find(
          (x) =>
            x.metadata?.namespace === p.metadata?.namespace &&
            Object.entries(x.spec!.selector!.matchLabels!).every(([k, v]) => labels[k] === v),
        );
        if (b) {
          const pod = `${p.metadata?.namespace}/${p.metadata?.name}`;
          throw new ConflictError(
            'ANODYNE_E_DISRUPTION_NOT_ALLOWED',
            `removing ${node} would evict ${pod}, and PodDisruptionBudget ${b.metadata?.namespace}/${b.metadata?.name} allows no disruption now`,
            { details: { node, pod, budget: `${b.metadata?.namespace}/${b.metadata?.name}` } },
          );
        }
      }
    }
  }

  private async cordon(api: KubeClient, node: string, unschedulable: boolean): Promise<void> {
    await kubeCall(
      unschedulable ? 'cordoning a Node' : 'uncordoning a Node',
      () =>
        api.core.patchNode({ name: node, body: { spec: { unschedulable } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
      [404],
    );
  }

  /**
   * Pods a drain moves: not DaemonSet pods, not static (mirror) pods, not finished ones. With
   * `ending`, also the finished pods being deleted: the kubelet marks an evicted pod Failed or
   * Succeeded before it cleans up and deletes it, and a node stopped in that window leaves the pod
   * behind until the pod garbage collector notices the Node is gone (40 to 60 s later).
   */
  private async podsOn(api: KubeClient, node: string, ending = false): Promise<V1Pod[]> {
    const list = await kubeCall('listing pods', () => api.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` }));
    return (list?.items ?? []).filter(
      (p) => !isDaemonSetPod(p) && !isMirrorPod(p) && (!isFinished(p) || (ending && Boolean(p.metadata?.deletionTimestamp))),
    );
  }

  /**
   * Cordons the node, evicts its pods through the Eviction API (a PodDisruptionBudget that allows
   * no disruption now answers 429: asked again until the drain timeout) and waits until they are gone.
   */
  async drain(api: KubeClient, node: string, signal: AbortSignal, timeoutMs = this.drainTimeoutMs): Promise<void> {
    // Nothing to drain where there is no Node (a worker that never registered), or no API to ask (a
    // cluster being repaired): the director goes on, as stopping the VM is what repairs it.
    let ready: boolean;
    try {
      const n = await api.core.readNode({ name: node });
      ready = (n.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
    } catch (err) {
      const status = statusOf(err);
      if (status === 404) return;
      if (status === undefined) {
        this.o.logger.warn({ node, err: (err as Error).message }, 'not drained: the cluster API does not answer');
        return;
      }
      throw new UnavailableError('ANODYNE_E_UNAVAILABLE', `reading Node ${node}: ${(err as Error).message.split('\n')[0]}`);
    }
    await this.cordon(api, node, true);
    const deadline = this.o.clock.nowMs() + timeoutMs;
    let blocked = '';
    for (;;) {
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
      const pods = await this.podsOn(api, node, true);
      // A Node that is not Ready has no kubelet to end its pods: evictions are asked for, not waited on.
      if (pods.length === 0 || (!ready && pods.every((p) => p.metadata?.deletionTimestamp))) return;
      for (const p of pods) {
        const name = p.metadata?.name ?? '';
        const namespace = p.metadata?.namespace ?? 'default';
        if (p.metadata?.deletionTimestamp || isFinished(p)) continue;
        try {
          await api.core.createNamespacedPodEviction({
            name,
            namespace,
            body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name, namespace } },
          });
        } catch (err) {
          const status = statusOf(err);
          if (status === 429) blocked = `${namespace}/${name}`;
          else if (status !== 404)
            throw new UnavailableError(
              'ANODYNE_E_UNAVAILABLE',
              `evicting ${namespace}/${name} from ${node}: ${(err as Error).message.split('\n')[0]}`,
            );
        }
      }
      if (this.o.clock.nowMs() > deadline) {
        const why = blocked ? `a PodDisruptionBudget does not allow evicting ${blocked}` : `${pods.length} pod(s) did not go`;
        throw new ConflictError('ANODYNE_E_DRAIN_TIMEOUT', `draining ${node} did not finish in ${Math.round(timeoutMs / 1000)} s: ${why}`, {
          details: { node, pods: pods.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`) },
        });
      }
      await this.o.clock.sleep(1000);
    }
  }
}
