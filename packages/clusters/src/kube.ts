// A cluster's Kubernetes API through @kubernetes/client-node, as its admin client certificate, with a timeout per call.
import { ApiException, AppsV1Api, CoreV1Api, KubeConfig, PolicyV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { UnavailableError } from '@anodyne/common';

/** Where a cluster's API is and the admin certificate that may call it. */
export interface ClusterEndpoint {
  cluster: string;
  server: string;
  admin: { ca: string; certificate: string; private_key: string };
}

/** Every request gets an abort signal: a cluster that does not answer fails the call, not the platform. */
class TimedKubeConfig extends KubeConfig {
  constructor(private readonly timeoutMs: number) {
    super();
  }

  override async applySecurityAuthentication(context: Parameters<KubeConfig['applySecurityAuthentication']>[0]): Promise<void> {
    await super.applySecurityAuthentication(context);
    context.setSignal(AbortSignal.timeout(this.timeoutMs));
  }
}

/** The API groups the platform uses in clusters. */
export interface KubeClient {
  core: CoreV1Api;
  rbac: RbacAuthorizationV1Api;
  policy: PolicyV1Api;
  apps: AppsV1Api;
}

/** A KubeConfig for a cluster's API as its admin (every call with a timeout). */
export function kubeConfigOf(e: ClusterEndpoint, timeoutMs = 15_000): KubeConfig {
  const kc = new TimedKubeConfig(timeoutMs);
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  kc.loadFromOptions({
    clusters: [{ name: e.cluster, server: e.server, caData: b64(e.admin.ca), skipTLSVerify: false }],
    users: [{ name: 'admin', certData: b64(e.admin.certificate), keyData: b64(e.admin.private_key) }],
    contexts: [{ name: e.cluster, cluster: e.cluster, user: 'admin' }],
    currentContext: e.cluster,
  });
  return kc;
}

export function kubeClient(e: ClusterEndpoint, timeoutMs = 15_000): KubeClient {
  const kc = kubeConfigOf(e, timeoutMs);
  return {
    core: kc.makeApiClient(CoreV1Api),
    rbac: kc.makeApiClient(RbacAuthorizationV1Api),
    policy: kc.makeApiClient(PolicyV1Api),
    apps: kc.makeApiClient(AppsV1Api),
  };
}

/** The HTTP status of a failed call, or undefined when the cluster was not reached at all. */
export function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/**
 * Runs one call; the statuses in `tolerate` (404 for a delete, 409 for a create) give undefined;
 * anything else is the cluster being unavailable, said in one line (never the response headers).
 */
export async function kubeCall<T>(what: string, call: () => Promise<T>, tolerate: number[] = []): Promise<T | undefined> {
  try {
    return await call();
  } catch (err) {
    const status = statusOf(err);
    if (status !== undefined && tolerate.includes(status)) return undefined;
    const body = err instanceof ApiException ? JSON.stringify(err.body).slice(0, 300) : (err as Error).message;
    const message = status !== undefined ? `cluster API ${what}: ${status} ${body}` : `cluster API unreachable (${what}): ${body}`;
    throw new UnavailableError('ANODYNE_E_UNAVAILABLE', message, { cause: err });
  }
}
