// Access to a cluster's Kubernetes API: the admin kubeconfig, user binds (RBAC + exec-plugin kubeconfig), service-account credentials.
import { ConflictError, UnavailableError, type Logger } from '@anodyne/common';
import type { V1ServiceAccount } from '@kubernetes/client-node';
import { deploymentName, type OidcTrust } from './cluster.js';
import { kubeCall, kubeClient, type ClusterEndpoint, type KubeClient } from './kube.js';
import { adminKubeconfig, tokenKubeconfig, userKubeconfig } from './kubeconfig.js';
import type { ClusterRecords } from './records.js';

/** What binds need of the credential store: the cluster's admin certificate. */
export interface AdminCertificates {
  adminCertificate(deployment: string, actor: string): Promise<{ ca: string; certificate: string; private_key: string }>;
}

/** The annotation on a binding's ServiceAccount that records what the binding was asked with. */
const BINDING_FINGERPRINT = 'anodyne.io/binding-request';
const MANAGED = { 'app.kubernetes.io/managed-by': 'anodyne' };
const CLUSTER_ADMIN = { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' };

/** The ClusterRoleBinding a bind creates for a user. */
export function bindingName(user: string): string {
  return `anodyne:user:${user}`.toLowerCase().replace(/[^a-z0-9:.-]/g, '-');
}

export interface BindsOptions {
  records: ClusterRecords;
  credentials: AdminCertificates;
  logger: Logger;
  oidc?: OidcTrust;
  /** Builds the client for a cluster's API (tests may point it elsewhere). */
  client?: (e: ClusterEndpoint) => KubeClient;
}

export class ClusterBinds {
  private readonly client: (e: ClusterEndpoint) => KubeClient;

  constructor(private readonly o: BindsOptions) {
    this.client = o.client ?? ((e) => kubeClient(e));
  }

  /** Where a ready cluster's API is, and its admin certificate. */
  async endpoint(name: string): Promise<ClusterEndpoint> {
    const v = await this.o.records.get(name);
    if (v.last_action === 'CREATE' && v.last_action_state !== 'succeeded') {
      throw new ConflictError('ANODYNE_E_CLUSTER_BUSY', `cluster ${name} is not ready (${v.last_action_description})`);
    }
    const ip = v.kubernetes_master_ips[0];
    if (!ip) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', `cluster ${name} has no API endpoint`);
    const admin = await this.o.credentials.adminCertificate(deploymentName(name), 'clusters');
    return { cluster: name, server: `https://${ip}:${v.parameters.kubernetes_master_port}`, admin };
  }

  /** The admin kubeconfig (client certificate, cluster-admin). */
  async adminKubeconfig(name: string): Promise<string> {
    const e = await this.endpoint(name);
    return adminKubeconfig(name, e.server, e.admin);
  }

  /**
   * Binds a user to a cluster: a ClusterRoleBinding of `<prefix><user>` to cluster-admin in
   * the cluster, and a kubeconfig whose user gets tokens from Anodyne (`anodyne get-token`).
   */
  async bind(name: string, user: string, apiUrl: string): Promise<string> {
    if (!this.o.oidc) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', 'the platform has no identity issuer configured for clusters');
    const e = await this.endpoint(name);
    const subject = `${this.o.oidc.usernamePrefix}${user}`;
    const { rbac } = this.client(e);
    await kubeCall(
      'creating a user binding',
      () =>
        rbac.createClusterRoleBinding({
          body: {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'ClusterRoleBinding',
            metadata: { name: bindingName(user), labels: MANAGED },
            roleRef: CLUSTER_ADMIN,
            subjects: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: subject }],
          },
        }),
      [409],
    );
    return userKubeconfig({ cluster: name, server: e.server, clusterCa: e.admin.ca, user, apiUrl });
  }

  /**
   * Takes a user's bindings out of every cluster (when the user is deleted), so a later user of
   * the same name inherits nothing. Clusters that cannot be reached are reported, not skipped
   * silently: the caller records them.
   */
  async unbindEverywhere(user: string): Promise<{ unbound: string[]; unreachable: string[] }> {
    const out = { unbound: [] as string[], unreachable: [] as string[] };
    for (const c of await this.o.records.list()) {
      if (c.last_action === 'DELETE' || c.kubernetes_master_ips.length === 0) continue;
      try {
        const { rbac } = this.client(await this.endpoint(c.name));
        await kubeCall('removing a user binding', () => rbac.deleteClusterRoleBinding({ name: bindingName(user) }), [404]);
        out.unbound.push(c.name);
      } catch (e) {
        this.o.logger.warn({ cluster: c.name, user, err: (e as Error).message }, "could not remove a deleted user's binding");
        out.unreachable.push(c.name);
      }
    }
    return out;
  }

  /**
   * A credential that can be revoked on its own: a service account bound to cluster-admin and a
   * token for it (the Open Service Broker's bindings). Idempotent per id: the same request again
   * gets a credential for the same account; a different request on the same id is a conflict
   * (the request's fingerprint is on the account).
   */
  async serviceAccountKubeconfig(name: string, id: string, fingerprint = ''): Promise<{ kubeconfig: string; created: boolean }> {
    const e = await this.endpoint(name);
    const { core, rbac } = this.client(e);
    const sa = `anodyne-binding-${id}`;
    const namespace = 'kube-system';
    const existing: V1ServiceAccount | undefined = await kubeCall(
      'reading a binding account',
      () => core.readNamespacedServiceAccount({ name: sa, namespace }),
      [404],
    );
    const created = existing === undefined;
    if (!created && (existing.metadata?.annotations?.[BINDING_FINGERPRINT] ?? '') !== fingerprint) {
      throw new ConflictError('ANODYNE_E_BINDING_CONFLICT', `binding ${id} of cluster ${name} exists with other attributes`, {
        details: { name, id },
      });
    }
    if (created) {
      await kubeCall(
        'creating a binding account',
        () =>
          core.createNamespacedServiceAccount({
            namespace,
            body: {
              apiVersion: 'v1',
              kind: 'ServiceAccount',
              metadata: { name: sa, labels: MANAGED, annotations: { [BINDING_FINGERPRINT]: fingerprint } },
            },
          }),
        [409],
      );
    }
    await kubeCall(
      'binding the account',
      () =>
        rbac.createClusterRoleBinding({
          body: {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'ClusterRoleBinding',
            metadata: { name: sa, labels: MANAGED },
            roleRef: CLUSTER_ADMIN,
            subjects: [{ kind: 'ServiceAccount', name: sa, namespace }],
          },
        }),
      [409],
    );
    const tr = await kubeCall('requesting a token', () =>
      core.createNamespacedServiceAccountToken({
        name: sa,
        namespace,
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 365 * 86_400, audiences: [] } },
      }),
    );
    const token = tr?.status?.token;
    if (!token) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', `cluster ${name} returned no token for ${sa}`);
    return { kubeconfig: tokenKubeconfig({ cluster: name, server: e.server, clusterCa: e.admin.ca, user: sa, token }), created };
  }

  /**
   * Revokes a service-account credential: its tokens stop working at once. Idempotent; says
   * whether there was one to revoke (the broker answers 410 Gone otherwise).
   */
  async revokeServiceAccount(name: string, id: string): Promise<boolean> {
    const { core, rbac } = this.client(await this.endpoint(name));
    const sa = `anodyne-binding-${id}`;
    const binding = await kubeCall('removing the account binding', () => rbac.deleteClusterRoleBinding({ name: sa }), [404]);
    const account = await kubeCall(
      'removing the binding account',
      () => core.deleteNamespacedServiceAccount({ name: sa, namespace: 'kube-system' }),
      [404],
    );
    return binding !== undefined || account !== undefined;
  }
}
