// Cluster CA rotation with no downtime: every CA and the service-account key, in three rollouts, as one task.
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { AnodyneError, UnavailableError, type Clock, type Logger } from '@anodyne/common';
import type { EventSink, Manifest } from '@anodyne/director';
import { deploymentName } from './cluster.js';
import { kubeCall, type ClusterEndpoint, type KubeClient } from './kube.js';

/** What a CA rotation replaces: the three CAs of a cluster and the key that signs its service-account tokens. */
export const ROTATED_CREDENTIALS: readonly string[] = ['ca', 'etcd-ca', 'front-proxy-ca', 'service-account-key'];

/** The in-cluster clients the platform runs: they read the CA bundle once, at start, and are restarted to read it again. */
export const ADDON_DEPLOYMENTS: readonly string[] = ['coredns', 'metrics-server'];

/** Where a rotation stands: none under way, new versions trusted (step 1 done), new versions signing (step 2 done). */
export type CaRotationPhase = 'idle' | 'trusting' | 'signing';

/** What the rotation needs of the credential store, by deployment and credential name (the three-step transitional flow). */
export interface CaRotationSteps {
  caPhase(deployment: string, names: readonly string[]): Promise<CaRotationPhase>;
  /** Step 1: a new version of each, trusted (in every bundle) but not signing. */
  trustNewCas(deployment: string, names: readonly string[], actor: string): Promise<void>;
  /** Step 2: the new versions sign; the old ones stay trusted. Leaves converge onto the new CAs at the next deploy. */
  signWithNewCas(deployment: string, names: readonly string[], actor: string): Promise<void>;
  /** Step 3: the old CAs leave every bundle (the old service-account key keeps verifying tokens already issued). */
  dropOldCas(deployment: string, names: readonly string[], actor: string): Promise<void>;
}

export interface CaRotationOptions {
  steps: CaRotationSteps;
  /** The cluster's API with the credentials the store has now (they change between steps). */
  endpoint: (cluster: string) => Promise<ClusterEndpoint>;
  client: (e: ClusterEndpoint) => KubeClient;
  clock: Clock;
  logger: Logger;
  /** How long the add-ons may take to pick up a new bundle and restart (default 180 s). */
  clientsTimeoutMs?: number;
}

const STAGE = 'Rotating the CAs';

/**
 * The rotation's policy. Between any two moments, whatever presents a certificate is trusted by
 * whatever checks it:
 *   1. the new CAs join every trust bundle (the old ones still sign), rolled out instance by
 *      instance; then the add-ons restart, so they too trust both;
 *   2. the new CAs sign: every leaf (each kubelet's too) is issued again and rolled out; the
 *      add-ons restart again (metrics-server serves its new certificate, pods get tokens signed
 *      with the new key);
 *   3. the old CAs leave every bundle, rolled out.
 * A rotation that stopped (a failed rollout, a platform restart) resumes where it was when asked
 * again: the store says which step the credentials are in, and every rollout is a converge.
 */
export class ClusterCaRotation {
  constructor(private readonly o: CaRotationOptions) {}

  async run(
    cluster: string,
    manifest: Manifest,
    actor: string,
    converge: (m: Manifest) => Promise<{ instances: number }>,
    signal: AbortSignal,
    sink: EventSink,
  ): Promise<{ instances: number; steps: string[] }> {
    const d = deploymentName(cluster);
    const names = ROTATED_CREDENTIALS;
    const steps: string[] = [];
    const step = async (index: number, title: string, work: () => Promise<void>): Promise<void> => {
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled', { details: { result: { steps } } });
      await sink.event({ stage: STAGE, instance: title, index, total: 3, state: 'started' });
      try {
        await work();
      } catch (err) {
        await sink.event({ stage: STAGE, instance: title, index, total: 3, state: 'failed', message: (err as Error).message });
        throw err;
      }
      steps.push(title);
      await sink.event({ stage: STAGE, instance: title, index, total: 3, state: 'finished' });
    };
    const start = await this.o.steps.caPhase(d, names);
    if (start !== 'idle')
      await sink.event({
        stage: STAGE,
        state: 'info',
        message: `resuming a rotation whose credentials are ${start === 'trusting' ? 'in step 1' : 'in step 2'}`,
      });
    let instances = 0;
    if (start !== 'signing') {
      await step(1, 'new CAs trusted everywhere', async () => {
        await this.o.steps.trustNewCas(d, names, actor);
        instances = (await converge(manifest)).instances;
        await this.restartClients(cluster, signal, sink);
      });
    }
    await step(2, 'every certificate issued by the new CAs', async () => {
      await this.o.steps.signWithNewCas(d, names, actor);
      instances = (await converge(manifest)).instances;
      await this.restartClients(cluster, signal, sink);
    });
    await step(3, 'old CAs no longer trusted', async () => {
      await this.o.steps.dropOldCas(d, names, actor);
      instances = (await converge(manifest)).instances;
    });
    return { instances, steps };
  }

  /**
   * Waits until the controller manager has published the bundle the store has now (the
   * kube-root-ca.crt ConfigMaps pods mount), then restarts the add-ons' Deployments (rolling, so
   * they keep serving) and waits until every replica of the new template is available.
   */
  private async restartClients(cluster: string, signal: AbortSignal, sink: EventSink): Promise<void> {
    const timeoutMs = this.o.clientsTimeoutMs ?? 180_000;
    const deadline = this.o.clock.nowMs() + timeoutMs;
    const e = await this.o.endpoint(cluster);
    const api = this.o.client(e);
    const want = pemSet(e.admin.ca);
    await this.until(signal, deadline, 'the kube-root-ca.crt ConfigMap to carry the new CA bundle', async () => {
      const cm = await kubeCall('reading kube-root-ca.crt', () =>
        api.core.readNamespacedConfigMap({ name: 'kube-root-ca.crt', namespace: 'kube-system' }),
      ).catch(() => undefined);
      return sameSet(pemSet(cm?.data?.['ca.crt'] ?? ''), want);
    });
    const at = new Date(this.o.clock.nowMs()).toISOString();
    for (const name of ADDON_DEPLOYMENTS) {
      const patched = await kubeCall(
        `restarting ${name}`,
        () =>
          api.apps.patchNamespacedDeployment(
            {
              name,
              namespace: 'kube-system',
              body: { spec: { template: { metadata: { annotations: { 'anodyne.io/ca-bundle-at': at } } } } },
            },
            setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
          ),
        [404],
      );
      if (!patched) continue;
      await this.until(signal, deadline, `${name} to restart`, async () => {
        const dep = await kubeCall(`reading ${name}`, () => api.apps.readNamespacedDeployment({ name, namespace: 'kube-system' })).catch(
          () => undefined,
        );
        const s = dep?.status;
        const want = dep?.spec?.replicas ?? 1;
        return (
          s !== undefined &&
          (s.observedGeneration ?? 0) >= (dep?.metadata?.generation ?? 0) &&
          s.updatedReplicas === want &&
          s.availableReplicas === want &&
          (s.replicas ?? 0) === want
        );
      });
      await sink.event({ stage: STAGE, state: 'info', message: `${name} restarted with the new CA bundle` });
    }
  }

  private async until(signal: AbortSignal, deadline: number, what: string, check: () => Promise<boolean>): Promise<void> {
    for (;;) {
      if (await check()) return;
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
      if (this.o.clock.nowMs() > deadline) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', `timed out waiting for ${what}`);
      await this.o.clock.sleep(1000);
    }
  }
}

/** The certificates of a PEM bundle, each as its base64 body (whitespace aside). */
export function pemSet(bundle: string): Set<string> {
  const out = new Set<string>();
  for (const m of bundle.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)) out.add(m[1]!.replace(/\s+/g, ''));
  return out;
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
