// Kubernetes nodes around a worker's rollout: cordon and drain (evictions that respect PodDisruptionBudgets), uncordon, delete.
import { AnodyneError, ConflictError, UnavailableError, type Clock, type Logger } from '@anodyne/common';
import type { HookInstance, InstanceHooks } from '@anodyne/director';
import { PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { kubeCall, kubeClient, statusOf, type ClusterEndpoint, type KubeClient } from './kube.js';

export interface NodeHooksOptions {
  /** Where a cluster's API is (undefined while it is not ready: a first deploy has no nodes to drain). */
  endpoint: (cluster: string) => Promise<ClusterEndpoint | undefined>;
  clock: Clock;
  logger: Logger;
  /** How long a drain may wait for evictions that PodDisruptionBudgets hold back. */
  drainTimeoutMs?: number;
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
 * with it. Masters are not Nodes here and pass through.
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

  async beforeStop(i: HookInstance, signal: AbortSignal): Promise<void> {
    const api = await this.api(i);
    if (api) await this.drain(api, nodeName(i), signal);
  }

  async afterHealthy(i: HookInstance): Promise<void> {
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
    if (api) await this.drain(api, nodeName(i), signal);
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

  /** Pods a drain moves: not DaemonSet pods, not static (mirror) pods, not finished ones. */
  private async podsOn(api: KubeClient, node: string): Promise<V1Pod[]> {
    const list = await kubeCall('listing pods', () => api.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` }));
    return (list?.items ?? []).filter((p) => !isDaemonSetPod(p) && !isMirrorPod(p) && !isFinished(p));
  }

  /**
   * Cordons the node, evicts its pods through the Eviction API (a PodDisruptionBudget that allows
   * no disruption now answers 429: asked again until the drain timeout) and waits until they are gone.
   */
  async drain(api: KubeClient, node: string, signal: AbortSignal): Promise<void> {
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
    const deadline = this.o.clock.nowMs() + this.drainTimeoutMs;
    let blocked = '';
    for (;;) {
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
      const pods = await this.podsOn(api, node);
      // A Node that is not Ready has no kubelet to end its pods: evictions are asked for, not waited on.
      if (pods.length === 0 || (!ready && pods.every((p) => p.metadata?.deletionTimestamp))) return;
      for (const p of pods) {
        const name = p.metadata?.name ?? '';
        const namespace = p.metadata?.namespace ?? 'default';
        if (p.metadata?.deletionTimestamp) continue;
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
        throw new ConflictError(
          'ANODYNE_E_DRAIN_TIMEOUT',
          `draining ${node} did not finish in ${Math.round(this.drainTimeoutMs / 1000)} s: ${why}`,
          {
            details: { node, pods: pods.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`) },
          },
        );
      }
      await this.o.clock.sleep(1000);
    }
  }
}
