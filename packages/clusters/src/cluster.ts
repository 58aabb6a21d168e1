// Plans and cluster requests made into the director's manifest: plan checks, kubelet settings, network ranges, the certificate set.
import { isIPv4 } from 'node:net';
import { InputError } from '@anodyne/common';
import type { Manifest } from '@anodyne/director';
import { RELEASE_AGENT, RELEASES_GUEST_DIR, type ClusterRelease } from './releases.js';
import { clusterDnsIp } from './addons.js';

/** What a team can ask for (PKS plans). */
export interface Plan {
  name: string;
  description: string;
  masters: 1 | 3 | 5;
  defaultWorkers: number;
  maxWorkers: number;
  masterVmType: string;
  workerVmType: string;
  /** Persistent disk for etcd, MB (0: the VM's own disk). */
  masterDiskMb: number;
  admissionPlugins: string[];
  allowPrivileged: boolean;
  /** Availability zones instances are spread over, round-robin (the node label topology.kubernetes.io/zone). */
  azs?: string[];
  /** Kubelet settings of the plan's workers. */
  kubelet?: KubeletSettings;
  /** Kubernetes minor versions the plan offers (e.g. ['1.33', '1.34']); absent: every registered release. */
  kubernetesVersions?: string[];
  /** How rolling changes go (defaults: one canary, one at a time, up to 300 s to become healthy). */
  update?: PlanUpdate;
  /**
   * Every namespace made after the cluster gets a NetworkPolicy denying all ingress (`anodyne-default-deny`), so a
   * team opens what it serves; NetworkPolicies are enforced in every cluster either way.
   */
  defaultDenyNamespaces?: boolean;
}

/** A plan's rolling-update policy: canaries first, then batches; watch times are `min-max` milliseconds. */
export interface PlanUpdate {
  canaries?: number;
  maxInFlight?: number;
  canaryWatchTime?: string;
  updateWatchTime?: string;
  /** How long draining a worker may wait for PodDisruptionBudgets before the step fails (default 300). */
  drainTimeoutSeconds?: number;
}

/** The rolling-update policy a plan's clusters get, its defaults filled in. */
export function planUpdate(plan: Plan): Required<PlanUpdate> {
  return {
    canaries: plan.update?.canaries ?? 1,
    maxInFlight: plan.update?.maxInFlight ?? 1,
    canaryWatchTime: plan.update?.canaryWatchTime ?? '1000-300000',
    updateWatchTime: plan.update?.updateWatchTime ?? '1000-300000',
    drainTimeoutSeconds: plan.update?.drainTimeoutSeconds ?? 300,
  };
}

/** What a plan may set of each worker's kubelet (KubeletConfiguration fields). */
export interface KubeletSettings {
  /** Resources kept for the node's own system daemons, e.g. {cpu: '100m', memory: '256Mi'}. */
  systemReserved?: Record<string, string>;
  /** Resources kept for the Kubernetes daemons (kubelet, containerd). */
  kubeReserved?: Record<string, string>;
  /** Hard eviction thresholds, e.g. {'memory.available': '100Mi'}. */
  evictionHard?: Record<string, string>;
  maxPods?: number;
}

/** Nodes nested in a host share its disks: never evict on disk pressure (kind does the same). */
export const DEFAULT_KUBELET: Required<KubeletSettings> = {
  systemReserved: {},
  kubeReserved: {},
  evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '0%', 'nodefs.inodesFree': '0%', 'imagefs.available': '0%' },
  maxPods: 110,
};

export const BUILTIN_PLANS: Plan[] = [
  {
    name: 'small',
    description: 'one master, one to three workers',
    masters: 1,
    defaultWorkers: 1,
    maxWorkers: 3,
    masterVmType: 'medium',
    workerVmType: 'medium',
    masterDiskMb: 1024,
    admissionPlugins: ['NodeRestriction'],
    allowPrivileged: true,
    azs: ['z1'],
    kubelet: { systemReserved: { cpu: '50m', memory: '64Mi' } },
  },
  {
    name: 'ha',
    description: 'three masters behind a load balancer, up to ten workers',
    masters: 3,
    defaultWorkers: 3,
    maxWorkers: 10,
    masterVmType: 'medium',
    workerVmType: 'medium',
    masterDiskMb: 1024,
    admissionPlugins: ['NodeRestriction'],
    allowPrivileged: true,
    azs: ['z1', 'z2', 'z3'],
    kubelet: { systemReserved: { cpu: '50m', memory: '64Mi' } },
  },
];

const PLAN_NAME = /^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/;
const QUANTITY = /^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T|%)?$/;

/**
 * Checks an operator's plans before the platform uses them: a bad plan is refused at start with
 * the plan and field named, never when a team asks for a cluster.
 */
export function validatePlans(plans: Plan[]): Plan[] {
  const bad = (plan: string, key: string, why: string): never => {
    throw new InputError('ANODYNE_E_CONFIG_INVALID', `plan ${JSON.stringify(plan)}: ${key} ${why}`, { details: { plan, key } });
  };
  const seen = new Set<string>();
  for (const p of plans) {
    if (!PLAN_NAME.test(p.name)) bad(p.name, 'name', 'must be a DNS-1123 label');
    if (seen.has(p.name)) bad(p.name, 'name', 'is used by two plans');
    seen.add(p.name);
    if (![1, 3, 5].includes(p.masters)) bad(p.name, 'masters', 'must be 1, 3 or 5 (an odd etcd quorum)');
    if (!Number.isInteger(p.maxWorkers) || p.maxWorkers < 0 || p.maxWorkers > 250)
      bad(p.name, 'maxWorkers', 'must be an integer from 0 to 250');
    if (!Number.isInteger(p.defaultWorkers) || p.defaultWorkers < 0 || p.defaultWorkers > p.maxWorkers)
      bad(p.name, 'defaultWorkers', `must be an integer from 0 to maxWorkers (${p.maxWorkers})`);
    if (!Number.isInteger(p.masterDiskMb) || p.masterDiskMb < 0) bad(p.name, 'masterDiskMb', 'must be a whole number of MB');
    if (p.azs !== undefined && (p.azs.length === 0 || p.azs.some((z) => !PLAN_NAME.test(z))))
      bad(p.name, 'azs', 'must be a non-empty list of DNS-1123 labels');
    for (const [field, map] of Object.entries({
      systemReserved: p.kubelet?.systemReserved,
      kubeReserved: p.kubelet?.kubeReserved,
      evictionHard: p.kubelet?.evictionHard,
    })) {
      for (const [k, v] of Object.entries(map ?? {})) {
        if (!/^[a-z.A-Z-]+$/.test(k) || !QUANTITY.test(v))
          bad(p.name, `kubelet.${field}.${k}`, `has an invalid quantity ${JSON.stringify(v)}`);
      }
    }
    const u = p.update;
    if (u?.canaries !== undefined && (!Number.isInteger(u.canaries) || u.canaries < 0))
      bad(p.name, 'update.canaries', 'must be a whole number ≥ 0');
    if (u?.maxInFlight !== undefined && (!Number.isInteger(u.maxInFlight) || u.maxInFlight < 1))
      bad(p.name, 'update.maxInFlight', 'must be a whole number ≥ 1');
    if (
      u?.drainTimeoutSeconds !== undefined &&
      (!Number.isInteger(u.drainTimeoutSeconds) || u.drainTimeoutSeconds < 1 || u.drainTimeoutSeconds > 86_400)
    )
      bad(p.name, 'update.drainTimeoutSeconds', 'must be a whole number of seconds from 1 to 86400');
    for (const k of ['canaryWatchTime', 'updateWatchTime'] as const) {
      const w = u?.[k];
      const m = w === undefined ? undefined : /^(\d+)-(\d+)$/.exec(w);
      if (w !== undefined && (!m || Number(m[1]) > Number(m[2])))
        bad(p.name, `update.${k}`, `must be "min-max" milliseconds, not ${JSON.stringify(w)}`);
    }
    if (p.kubelet?.maxPods !== undefined && (!Number.isInteger(p.kubelet.maxPods) || p.kubelet.maxPods < 1 || p.kubelet.maxPods > 250))
      bad(p.name, 'kubelet.maxPods', 'must be an integer from 1 to 250 (a node has one /24 of pod addresses)');
  }
  return plans;
}

export interface NetworkProfile {
  podCidr: string;
  serviceCidr: string;
}

export interface ClusterRequest {
  name: string;
  plan: string;
  workers?: number;
  /** Extra name (or address) in the API server's certificate, for users' kubeconfigs. */
  externalHostname?: string;
  network?: Partial<NetworkProfile>;
  /** An OIDC issuer the API servers trust (Anodyne's identity): users log in with its tokens. */
  oidc?: OidcTrust;
  /** The release the cluster runs (its jobs' binaries); absent: the directory bound at the jobs' default path. */
  release?: ClusterRelease;
  /** The platform's image registry: nodes trust it and pull from it with the cluster's credential. */
  registry?: RegistryTrust;
  /** On a network segment of its own: from other clusters only its API load balancer answers. */
  segment?: boolean;
  /** With `segment`: the share of the provider's segment pool its range is cut from (a network profile's). */
  segmentWithin?: string;
  /** New namespaces get a default-deny NetworkPolicy (a network profile's choice); absent: as the plan says. */
  defaultDenyNamespaces?: boolean;
}

export interface RegistryTrust {
  /** `host:port` images are named by. */
  address: string;
  /** PEM of the CA that signed its certificate. */
  caPem: string;
}

/** The user name a cluster's nodes present to the platform registry (their password is the `registry-pull` variable). */
export const registryUserOf = (cluster: string): string => `cluster/${cluster}`;

export interface OidcTrust {
  issuerUrl: string;
  /** PEM of the CA that signed the issuer's serving certificate. */
  caPem: string;
  audience: string;
  usernameClaim: string;
  /** Prefix of user names in the cluster (RBAC subjects), e.g. `anodyne:`. */
  usernamePrefix: string;
  /**
   * The token's `scope` claim must hold one of these (e.g. the cluster scopes): a user whose
   * scopes were taken away loses kubectl access when their token expires. Unset: no rule.
   */
  anyScope?: string[];
}

/** The API server's AuthenticationConfiguration: JWTs from the given issuer, if any. */
export function authenticationConfig(oidc?: OidcTrust): string {
  const lines = ['apiVersion: apiserver.config.k8s.io/v1beta1', 'kind: AuthenticationConfiguration'];
  if (!oidc) return [...lines, 'jwt: []', ''].join('\n');
  return [
    ...lines,
    'jwt:',
    '- issuer:',
    `    url: ${JSON.stringify(oidc.issuerUrl)}`,
    `    audiences: [${JSON.stringify(oidc.audience)}]`,
    '    certificateAuthority: |',
    ...oidc.caPem
      .trim()
      .split('\n')
      .map((l) => `      ${l}`),
    '  claimMappings:',
    `    username: {claim: ${JSON.stringify(oidc.usernameClaim)}, prefix: ${JSON.stringify(oidc.usernamePrefix)}}`,
    // Only access tokens: a refresh token (same issuer and audience) is no kubectl credential.
    '  claimValidationRules:',
    '  - expression: "has(claims.token_use) && claims.token_use == \'access\'"',
    '    message: only access tokens are accepted',
    ...(oidc.anyScope?.length
      ? [
          `  - expression: ${JSON.stringify(`has(claims.scope) && dyn(claims.scope).exists(s, s in ${JSON.stringify(oidc.anyScope).replace(/"/g, "'")})`)}`,
          `    message: ${JSON.stringify(`the token holds none of the scopes ${oidc.anyScope.join(', ')}`)}`,
        ]
      : []),
    '',
  ].join('\n');
}

export const DEFAULT_NETWORK: NetworkProfile = { podCidr: '10.200.0.0/16', serviceCidr: '10.96.0.0/16' };

const DNS1123 = /^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/;

function cidr(value: string, key: string): string {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(value);
  if (!m || !isIPv4(m[1]!) || Number(m[2]) < 8 || Number(m[2]) > 24)
    throw new InputError('ANODYNE_E_INVALID_INPUT', `${key} must be an IPv4 CIDR from /8 to /24`, { details: { key, value } });
  return value;
}

/** The first address of the service range: the `kubernetes` Service's ClusterIP. */
export function kubernetesServiceIp(serviceCidr: string): string {
  const [a, b, c, d] = serviceCidr.split('/')[0]!.split('.').map(Number) as [number, number, number, number];
  const n = ((a * 256 + b) * 256 + c) * 256 + d + 1;
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export function deploymentName(cluster: string): string {
  return `cluster-${cluster}`;
}

/**
 * The full certificate set of a cluster, as kubeadm lays it out, as manifest variables for the
 * credential store. Master addresses come from `{{ groups.master.ips }}` once the VMs exist.
 */
export function clusterVariables(req: ClusterRequest, net: NetworkProfile): Manifest['variables'] {
  const leaf = (name: string, ca: string, cn: string, eku: string[], extra: Record<string, unknown> = {}) => ({
    name,
    type: 'certificate' as const,
    options: { ca, common_name: cn, extended_key_usage: eku, key_algorithm: 'ecdsa', duration: 365, ...extra },
  });
  const ca = (name: string, cn: string) => ({
    name,
    type: 'certificate' as const,
    options: { is_ca: true, common_name: cn, duration: 3650, key_algorithm: 'ecdsa' },
  });
  const masters = ['{{ groups.master.ips }}', '127.0.0.1', 'localhost'];
  return [
    ca('ca', 'kubernetes-ca'),
    ca('etcd-ca', 'etcd-ca'),
    ca('front-proxy-ca', 'front-proxy-ca'),
    { name: 'service-account-key', type: 'rsa' },
    leaf('etcd-server', 'etcd-ca', 'etcd-server', ['server_auth', 'client_auth'], { alternative_names: masters }),
    leaf('etcd-peer', 'etcd-ca', 'etcd-peer', ['server_auth', 'client_auth'], { alternative_names: masters }),
    leaf('apiserver-etcd-client', 'etcd-ca', 'kube-apiserver-etcd-client', ['client_auth']),
    leaf('apiserver', 'ca', 'kube-apiserver', ['server_auth'], {
      alternative_names: [
        ...masters,
        kubernetesServiceIp(net.serviceCidr),
        'kubernetes',
        'kubernetes.default',
        'kubernetes.default.svc',
        'kubernetes.default.svc.cluster.local',
        '{{ lbs.api.ip }}',
        ...(req.externalHostname ? [req.externalHostname] : []),
      ],
    }),
    leaf('apiserver-kubelet-client', 'ca', 'kube-apiserver-kubelet-client', ['client_auth'], { organization: 'system:masters' }),
    leaf('front-proxy-client', 'front-proxy-ca', 'front-proxy-client', ['client_auth']),
    leaf('controller-manager', 'ca', 'system:kube-controller-manager', ['client_auth']),
    leaf('scheduler', 'ca', 'system:kube-scheduler', ['client_auth']),
    leaf('admin', 'ca', 'kubernetes-admin', ['client_auth'], { organization: 'system:masters' }),
    leaf('kube-proxy', 'ca', 'system:kube-proxy', ['client_auth']),
    // flanneld on workers: reads Node objects and annotates its own (ClusterRole anodyne:flannel).
    leaf('flannel', 'ca', 'anodyne:flannel', ['client_auth']),
    // The network policy controller on workers: reads pods, namespaces, NetworkPolicies and its Node (ClusterRole anodyne:network-policy).
    leaf('network-policy', 'ca', 'anodyne:network-policy', ['client_auth']),
    // metrics-server's serving certificate; the v1beta1.metrics.k8s.io APIService trusts it through the CA.
    leaf('metrics-server', 'ca', 'metrics-server', ['server_auth'], {
      alternative_names: ['metrics-server.kube-system.svc', 'metrics-server.kube-system.svc.cluster.local'],
    }),
  ];
}

/**
 * A plan plus a cluster request → the director's deployment manifest. Validates the request
 * first (name, plan, worker count, network profile); nothing is created on bad input.
 */
export function clusterManifest(req: ClusterRequest, plans: Plan[] = BUILTIN_PLANS, image = 'host-usr'): Manifest {
  if (!DNS1123.test(req.name))
    throw new InputError(
      'ANODYNE_E_INVALID_INPUT',
      `cluster name ${JSON.stringify(req.name)} must be a DNS-1123 label of at most 40 characters`,
      { details: { key: 'name' } },
    );
  const plan = plans.find((p) => p.name === req.plan);
  if (!plan)
    throw new InputError(
      'ANODYNE_E_INVALID_INPUT',
      `unknown plan ${JSON.stringify(req.plan)}; plans: ${plans.map((p) => p.name).join(', ')}`,
      { details: { key: 'plan' } },
    );
  const update = planUpdate(plan);
  const workers = req.workers ?? plan.defaultWorkers;
  if (!Number.isInteger(workers) || workers < 0 || workers > plan.maxWorkers)
    throw new InputError('ANODYNE_E_INVALID_INPUT', `plan ${plan.name} allows 0 to ${plan.maxWorkers} workers, not ${workers}`, {
      details: { key: 'workers' },
    });
  const net: NetworkProfile = {
    podCidr: cidr(req.network?.podCidr ?? DEFAULT_NETWORK.podCidr, 'network.podCidr'),
    serviceCidr: cidr(req.network?.serviceCidr ?? DEFAULT_NETWORK.serviceCidr, 'network.serviceCidr'),
  };
  // Every worker gets a /24 of the pod range from the controller manager (flannel's lease).
  const podPrefix = Number(net.podCidr.split('/')[1]);
  if (2 ** (24 - podPrefix) < workers)
    throw new InputError(
      'ANODYNE_E_INVALID_INPUT',
      `pod range ${net.podCidr} holds ${2 ** (24 - podPrefix)} node subnets (/24 each), fewer than the ${workers} workers asked for`,
      { details: { key: 'network.podCidr' } },
    );
  const kubelet = { ...DEFAULT_KUBELET, ...plan.kubelet, evictionHard: { ...DEFAULT_KUBELET.evictionHard, ...plan.kubelet?.evictionHard } };
  const props = { service_cidr: net.serviceCidr, pod_cidr: net.podCidr };
  const manifest: Manifest = {
    name: deploymentName(req.name),
    // The release carries the agent its VMs start (built with it: nothing in a VM comes from a checkout).
    releases: [
      {
        name: 'kubernetes',
        version: req.release?.version ?? '1.34',
        ...(req.release ? { key: req.release.key, agent: `${RELEASES_GUEST_DIR}/${req.release.key}/${RELEASE_AGENT}` } : {}),
      },
    ],
    image,
    ...(req.segment ? { segment: true, ...(req.segmentWithin ? { segment_within: req.segmentWithin } : {}) } : {}),
    update: {
      canaries: update.canaries,
      max_in_flight: update.maxInFlight,
      canary_watch_time: update.canaryWatchTime,
      update_watch_time: update.updateWatchTime,
      serial: true,
    },
    instance_groups: [
      {
        name: 'master',
        instances: plan.masters,
        vm_type: plan.masterVmType,
        ...(plan.azs ? { azs: plan.azs } : {}),
        persistent_disk_mb: plan.masterDiskMb,
        networks: [{ name: 'default' }],
        jobs: [
          { name: 'etcd' },
          {
            name: 'kube-apiserver',
            properties: {
              ...props,
              admission_plugins: plan.admissionPlugins.join(','),
              allow_privileged: plan.allowPrivileged,
              authn_config: authenticationConfig(req.oidc),
            },
          },
          // One master has no one to elect against: no Lease renewed every 2 s by each (an etcd write a second).
          { name: 'kube-controller-manager', properties: { ...props, leader_elect: plan.masters > 1 } },
          { name: 'kube-scheduler', properties: { leader_elect: plan.masters > 1 } },
          {
            name: 'cluster-addons',
            // Two DNS replicas whatever the worker count: the masters' bundle must not change when workers do.
            properties: {
              cluster_dns: clusterDnsIp(net.serviceCidr),
              dns_replicas: 2,
              pod_cidr: net.podCidr,
              default_deny_namespaces: req.defaultDenyNamespaces ?? plan.defaultDenyNamespaces ?? false,
            },
          },
        ],
      },
      ...(workers > 0
        ? [
            {
              name: 'worker',
              instances: workers,
              vm_type: plan.workerVmType,
              ...(plan.azs ? { azs: plan.azs } : {}),
              networks: [{ name: 'default' }],
              jobs: [
                {
                  name: 'containerd',
                  properties: req.registry ? { registry_address: req.registry.address, registry_ca: req.registry.caPem } : {},
                },
                { name: 'flannel', properties: { pod_cidr: net.podCidr } },
                {
                  name: 'kubelet',
                  properties: {
                    cluster_dns: clusterDnsIp(net.serviceCidr),
                    system_reserved: kubelet.systemReserved,
                    kube_reserved: kubelet.kubeReserved,
                    eviction_hard: kubelet.evictionHard,
                    max_pods: kubelet.maxPods,
                    ...(req.registry ? { registry_address: req.registry.address, registry_username: registryUserOf(req.name) } : {}),
                  },
                },
                { name: 'kube-proxy', properties: { pod_cidr: net.podCidr } },
                { name: 'network-policy', properties: { service_cidr: net.serviceCidr } },
              ],
            },
          ]
        : []),
    ],
    // The API endpoint for kubelets, kube-proxies and users: a provider load balancer over the masters,
    // sending new connections only to API servers whose /readyz says so (one that is shutting down says
    // no for its --shutdown-delay-duration while it still serves, so it leaves before it stops).
    load_balancers: [
      { name: 'api', instance_group: 'master', port: 6443, backend_port: 6443, health_check: { path: '/readyz', tls: true } },
    ],
    variables: [
      ...(clusterVariables(req, net) ?? []),
      // The nodes' credential for the platform's registry (pulls of what the cluster's owner may pull).
      { name: 'registry-pull', type: 'password', options: { length: 40 } },
      // Each worker's kubelet serving and client certificate (a cluster of masters alone has none).
      ...(workers > 0
        ? [
            {
              name: 'kubelet',
              type: 'certificate',
              per_instance: 'worker',
              options: {
                ca: 'ca',
                common_name: 'system:node:{{ spec.name }}-{{ spec.index }}',
                organization: 'system:nodes',
                alternative_names: ['{{ spec.ip }}', '{{ spec.name }}-{{ spec.index }}'],
                extended_key_usage: ['server_auth', 'client_auth'],
                key_algorithm: 'ecdsa',
                duration: 365,
              },
            },
          ]
        : []),
    ],
  };
  // The cluster's release: every job runs its programs from that release's directory in the VM.
  if (req.release) {
    const releaseDir = `${RELEASES_GUEST_DIR}/${req.release.key}`;
    for (const g of manifest.instance_groups) for (const j of g.jobs) j.properties = { ...j.properties, release_dir: releaseDir };
  }
  return manifest;
}
