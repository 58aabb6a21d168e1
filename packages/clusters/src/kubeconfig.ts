// Kubeconfig rendering: one renderer (the yaml package) for certificate, token and exec-plugin credentials.
import { stringify } from 'yaml';

/** How a kubeconfig's user authenticates. */
export type KubeconfigCredential =
  | { kind: 'certificate'; certificate: string; privateKey: string }
  | { kind: 'token'; token: string }
  /** `anodyne get-token --api URL`: the client.authentication.k8s.io/v1 exec plugin. */
  | { kind: 'exec'; apiUrl: string };

export interface KubeconfigInput {
  cluster: string;
  server: string;
  clusterCa: string;
  user: string;
  credential: KubeconfigCredential;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

function userEntry(c: KubeconfigCredential): Record<string, unknown> {
  switch (c.kind) {
    case 'certificate':
      return { 'client-certificate-data': b64(c.certificate), 'client-key-data': b64(c.privateKey) };
    case 'token':
      return { token: c.token };
    case 'exec':
      return {
        exec: {
          apiVersion: 'client.authentication.k8s.io/v1',
          command: 'anodyne',
          args: ['get-token', '--api', c.apiUrl],
          interactiveMode: 'Never',
          provideClusterInfo: false,
        },
      };
  }
}

/** One cluster, one user, one context (named after the cluster) that is current. */
export function renderKubeconfig(o: KubeconfigInput): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: o.cluster, cluster: { server: o.server, 'certificate-authority-data': b64(o.clusterCa) } }],
    users: [{ name: o.user, user: userEntry(o.credential) }],
    contexts: [{ name: o.cluster, context: { cluster: o.cluster, user: o.user } }],
    'current-context': o.cluster,
  });
}

/** The admin kubeconfig: the cluster's admin client certificate (cluster-admin). */
export function adminKubeconfig(cluster: string, server: string, admin: { ca: string; certificate: string; private_key: string }): string {
  return renderKubeconfig({
    cluster,
    server,
    clusterCa: admin.ca,
    user: `${cluster}-admin`,
    credential: { kind: 'certificate', certificate: admin.certificate, privateKey: admin.private_key },
  });
}

/** A kubeconfig with a bearer token (service-account credentials, e.g. Open Service Broker bindings). */
export function tokenKubeconfig(o: { cluster: string; server: string; clusterCa: string; user: string; token: string }): string {
  return renderKubeconfig({
    cluster: o.cluster,
    server: o.server,
    clusterCa: o.clusterCa,
    user: o.user,
    credential: { kind: 'token', token: o.token },
  });
}

/** A kubeconfig whose credentials come from `anodyne get-token` (tokens of Anodyne's identity). */
export function userKubeconfig(o: { cluster: string; server: string; clusterCa: string; user: string; apiUrl: string }): string {
  return renderKubeconfig({
    cluster: o.cluster,
    server: o.server,
    clusterCa: o.clusterCa,
    user: `${o.user}@${o.cluster}`,
    credential: { kind: 'exec', apiUrl: o.apiUrl },
  });
}
