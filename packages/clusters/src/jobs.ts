// The Kubernetes release's jobs as the director runs them: etcd, control plane, containerd, flannel, kubelet, kube-proxy, add-ons.
import type { JobCatalog, JobDefinition } from '@anodyne/director';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addonsYaml, nodeRbacYaml } from './addons.js';

/** How far a restore raises etcd's revision (upstream's advice for Kubernetes: well above any revision reached before). */
export const RESTORE_REVISION_BUMP = 1_000_000_000;

/**
 * The Kubernetes release's jobs, as the director runs them. Binaries come from the release
 * directory bound into every VM (`p.release_dir`); certificates and keys are rendered from the
 * deployment's variables (credential store) into each job's `certs/` directory.
 */

const RELEASE = 'kubernetes';

const cert = (name: string): Record<string, string> => ({
  [`certs/${name}.crt`]: `{{ vars.${name}.certificate }}`,
  [`certs/${name}.key`]: `{{ vars.${name}.private_key }}`,
});

/** A kubeconfig for a component that talks to the local apiserver with a client certificate. */
function kubeconfig(user: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: local',
    '  cluster:',
    '    server: https://127.0.0.1:6443',
    '    certificate-authority: certs/ca.crt',
    'users:',
    `- name: ${user}`,
    '  user:',
    `    client-certificate: certs/${user}.crt`,
    `    client-key: certs/${user}.key`,
    'contexts:',
    `- name: ${user}`,
    '  context:',
    '    cluster: local',
    `    user: ${user}`,
    `current-context: ${user}`,
    '',
  ].join('\n');
}

export const etcdJob: JobDefinition = {
  name: 'etcd',
  release: RELEASE,
  properties: { release_dir: { default: '/var/lib/anodyne/release' } },
  files: {
    'certs/etcd-ca.crt': '{{ vars.etcd-ca.ca }}',
    ...cert('etcd-server'),
    ...cert('etcd-peer'),
    // Members are named by their address; the initial cluster is every master.
    'bin/etcd.sh': [
      'set -e',
      'cluster=""',
      'for ip in $(echo "{{ groups.master.ips }}" | tr , " "); do cluster="${cluster:+$cluster,}$ip=https://$ip:2380"; done',
      // Data lives on the instance's persistent disk (kept across VM recreation) when it has one.
      'disk="{{ spec.persistent_disk }}"',
      'data=${disk:+$disk/etcd}',
      'data=${data:-/var/lib/etcd}',
      'mkdir -p "$data" && chmod 700 "$data"',
      'exec {{ p.release_dir }}/bin/etcd --name={{ spec.ip }} --data-dir="$data" \\',
      '  --listen-client-urls=https://{{ spec.ip }}:2379,https://127.0.0.1:2379 --advertise-client-urls=https://{{ spec.ip }}:2379 \\',
      '  --listen-peer-urls=https://{{ spec.ip }}:2380 --initial-advertise-peer-urls=https://{{ spec.ip }}:2380 \\',
      '  --initial-cluster="$cluster" --initial-cluster-state=new --initial-cluster-token={{ spec.deployment }} \\',
      '  --client-cert-auth --trusted-ca-file=certs/etcd-ca.crt --cert-file=certs/etcd-server.crt --key-file=certs/etcd-server.key \\',
      '  --peer-client-cert-auth --peer-trusted-ca-file=certs/etcd-ca.crt --peer-cert-file=certs/etcd-peer.crt --peer-key-file=certs/etcd-peer.key \\',
      '  --listen-metrics-urls=http://127.0.0.1:2381 --log-level=warn',
      '',
    ].join('\n'),
  },
  processes: [
    { name: 'etcd', command: 'sh', args: ['bin/etcd.sh'], readiness: { http: { host: '127.0.0.1', port: 2381, path: '/health' } } },
  ],
  // A consistent snapshot of this member (etcd takes it from its own consistent view), and what it holds.
  backup: [
    'out="$ANODYNE_ARTIFACT_DIR"',
    'rm -f "$out/etcd.snapshot" "$out/etcd.snapshot.part" "$out/etcd.status.json"',
    '{{ p.release_dir }}/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=certs/etcd-ca.crt \\',
    '  --cert=certs/etcd-server.crt --key=certs/etcd-server.key --command-timeout=120s snapshot save "$out/etcd.snapshot.part" >/dev/null',
    '{{ p.release_dir }}/bin/etcdutl snapshot status "$out/etcd.snapshot.part" -w json > "$out/etcd.status.json"',
    'mv "$out/etcd.snapshot.part" "$out/etcd.snapshot"',
    'cat "$out/etcd.status.json"',
  ].join('\n'),
  // Run while etcd is stopped, in steps the director names in $ANODYNE_ARTIFACT_DIR/step: `prepare` restores
  // the snapshot beside the data (the member list of this cluster: every master), `commit` puts it in place
  // and keeps the data it replaces, `undo` puts that back. A failure before `commit` changes nothing.
  restore: [
    'in="$ANODYNE_ARTIFACT_DIR"',
    'step=$(cat "$in/step")',
    'disk="{{ spec.persistent_disk }}"',
    'data=${disk:+$disk/etcd}',
    'data=${data:-/var/lib/etcd}',
    'case "$step" in',
    'prepare)',
    '  cluster=""',
    '  for ip in $(echo "{{ groups.master.ips }}" | tr , " "); do cluster="${cluster:+$cluster,}$ip=https://$ip:2380"; done',
    '  rm -rf "$data.restoring"',
    '  {{ p.release_dir }}/bin/etcdutl snapshot restore "$in/etcd.snapshot" --name={{ spec.ip }} --data-dir="$data.restoring" \\',
    '    --initial-cluster="$cluster" --initial-cluster-token={{ spec.deployment }} --initial-advertise-peer-urls=https://{{ spec.ip }}:2380 \\',
    // Revisions after the restore are above every revision the cluster had before it (clients' cached
    // resourceVersions are then older, and compacted: informers list again), so the record of changes
    // after the restore never mixes with the record from before it.
    `    --bump-revision=${RESTORE_REVISION_BUMP} --mark-compacted`,
    '  chmod 700 "$data.restoring" ;;',
    'commit)',
    '  [ -d "$data.restoring" ] || { echo "nothing prepared at $data.restoring" >&2; exit 1; }',
    '  rm -rf "$data.before-restore"',
    '  if [ -d "$data" ]; then mv "$data" "$data.before-restore"; fi',
    '  mv "$data.restoring" "$data" ;;',
    'undo)',
    '  rm -rf "$data.restoring"',
    '  if [ -d "$data.before-restore" ]; then rm -rf "$data"; mv "$data.before-restore" "$data"; fi ;;',
    '*) echo "unknown restore step $step" >&2; exit 1 ;;',
    'esac',
  ].join('\n'),
};

export const apiserverJob: JobDefinition = {
  name: 'kube-apiserver',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    service_cidr: { default: '10.96.0.0/16' },
    admission_plugins: { default: 'NodeRestriction' },
    allow_privileged: { default: true },
    // Structured authentication (JWT issuers, e.g. Anodyne's identity); none by default.
    authn_config: { default: 'apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\njwt: []\n' },
  },
  files: {
    'authn.yaml': '{{ p.authn_config }}',
    'certs/ca.crt': '{{ vars.ca.ca }}',
    'certs/etcd-ca.crt': '{{ vars.etcd-ca.ca }}',
    'certs/front-proxy-ca.crt': '{{ vars.front-proxy-ca.ca }}',
    // Every service-account key that verifies (a rotation keeps the old one for tokens already issued).
    'certs/sa.pub': '{{ vars.service-account-key.public_keys }}',
    'certs/sa.key': '{{ vars.service-account-key.private_key }}',
    ...cert('apiserver'),
    ...cert('apiserver-etcd-client'),
    ...cert('apiserver-kubelet-client'),
    ...cert('front-proxy-client'),
  },
  processes: [
    {
      name: 'kube-apiserver',
      command: '{{ p.release_dir }}/bin/kube-apiserver',
      args: [
        '--advertise-address={{ spec.ip }}',
        '--bind-address=0.0.0.0',
        '--secure-port=6443',
        '--etcd-servers=https://127.0.0.1:2379',
        '--etcd-cafile=certs/etcd-ca.crt',
        '--etcd-certfile=certs/apiserver-etcd-client.crt',
        '--etcd-keyfile=certs/apiserver-etcd-client.key',
        '--client-ca-file=certs/ca.crt',
        '--tls-cert-file=certs/apiserver.crt',
        '--tls-private-key-file=certs/apiserver.key',
        '--kubelet-client-certificate=certs/apiserver-kubelet-client.crt',
        '--kubelet-client-key=certs/apiserver-kubelet-client.key',
        '--kubelet-preferred-address-types=InternalIP,Hostname',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        '--service-account-key-file=certs/sa.pub',
        '--service-account-signing-key-file=certs/sa.key',
        '--service-cluster-ip-range={{ p.service_cidr }}',
        '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins={{ p.admission_plugins }}',
        '--allow-privileged={{ p.allow_privileged }}',
        '--enable-bootstrap-token-auth=true',
        '--authentication-config=authn.yaml',
        '--requestheader-client-ca-file=certs/front-proxy-ca.crt',
        '--requestheader-allowed-names=front-proxy-client',
        '--requestheader-extra-headers-prefix=X-Remote-Extra-',
        '--requestheader-group-headers=X-Remote-Group',
        '--requestheader-username-headers=X-Remote-User',
        '--proxy-client-cert-file=certs/front-proxy-client.crt',
        '--proxy-client-key-file=certs/front-proxy-client.key',
        // Webhooks, CRD conversion and aggregated APIs are called on a ready endpoint of their Service
        // (a pod address, routed by pod-network), not its cluster IP: masters are not Nodes and run no
        // kube-proxy (ADR 0009).
        '--enable-aggregator-routing=true',
        // On SIGTERM: /readyz fails at once while requests are still served for 4 s, long enough for the
        // load balancer's checks (every 500 ms, out after two) to send new connections elsewhere.
        '--shutdown-delay-duration=4s',
      ],
      readiness: { http: { scheme: 'https', host: '127.0.0.1', port: 6443, path: '/readyz' } },
    },
  ],
};

/**
 * Start conditions the agent checks itself (every 200 ms, one HTTPS request, no process spawned): the
 * master's own API server ready, or the cluster's API ready through its load balancer. Scripts that
 * polled with a kubectl every 0.2–0.3 s (five on a master, two on a worker) spent most of two cores
 * while a new cluster's API server was starting; their loops stay as a fallback and pass at once.
 */
const LOCAL_API_READY = { http: { scheme: 'https' as const, host: '127.0.0.1', port: 6443, path: '/readyz' } };
/**
 * The master's own API server serves (any answer, see CLUSTER_API_SERVING): enough for what the add-ons do as the
 * cluster's admin (system:masters is allowed before the RBAC defaults exist): the workers' RBAC and pod ranges.
 */
const LOCAL_API_SERVING = { http: { ...LOCAL_API_READY.http, anyStatus: true } };
const CLUSTER_API_READY = { http: { scheme: 'https' as const, host: '{{ lbs.api.ip }}', port: 6443, path: '/readyz' } };
/**
 * The cluster's API server answers at all through its load balancer, whatever it answers an anonymous caller: it
 * serves from ~0.2 s after its start and refuses anonymous callers (403) until its RBAC defaults are made, ~2 s
 * later, just before it is ready. A kubelet needs none of them: it registers its Node as soon as it has started
 * (the Node authorizer's rules, no RBAC); started then, its own second of start-up overlaps the API server's.
 * Behind a load balancer with several masters, answers come once one of them is ready (its check is /readyz).
 */
const CLUSTER_API_SERVING = { http: { ...CLUSTER_API_READY.http, anyStatus: true } };

export const controllerManagerJob: JobDefinition = {
  name: 'kube-controller-manager',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    service_cidr: { default: '10.96.0.0/16' },
    pod_cidr: { default: '10.200.0.0/16' },
    node_cidr_mask: { default: 24 },
    leader_elect: { default: true, description: 'elect a leader among the masters (false with one master: nothing to elect)' },
  },
  files: {
    // The CA version that signs (a rotation's new CA is trusted everywhere before it signs) …
    'certs/signing-ca.crt': '{{ vars.ca.certificate }}',
    'certs/signing-ca.key': '{{ vars.ca.private_key }}',
    // … and every CA version trusted, for the API server and for pods (the kube-root-ca.crt ConfigMaps).
    'certs/ca.crt': '{{ vars.ca.ca }}',
    'certs/sa.key': '{{ vars.service-account-key.private_key }}',
    ...cert('controller-manager'),
    kubeconfig: kubeconfig('controller-manager'),
  },
  processes: [
    {
      name: 'kube-controller-manager',
      // It exits when its API server does not answer yet, and the agent's restart backoff then delays
      // it by seconds: the agent starts it once the API is ready.
      startWhen: LOCAL_API_READY,
      command: 'sh',
      args: [
        '-c',
        `${waitForApi('kubeconfig')}; exec "$0" "$@"`,
        '{{ p.release_dir }}/bin/kube-controller-manager',
        '--kubeconfig=kubeconfig',
        '--authentication-kubeconfig=kubeconfig',
        '--authorization-kubeconfig=kubeconfig',
        '--bind-address=127.0.0.1',
        // Pod ranges are given by the masters' pod-network process, from each worker's index.
        '--allocate-node-cidrs=false',
        '--cluster-cidr={{ p.pod_cidr }}',
        '--node-cidr-mask-size={{ p.node_cidr_mask }}',
        '--service-cluster-ip-range={{ p.service_cidr }}',
        '--cluster-signing-cert-file=certs/signing-ca.crt',
        '--cluster-signing-key-file=certs/signing-ca.key',
        '--root-ca-file=certs/ca.crt',
        '--service-account-private-key-file=certs/sa.key',
        '--use-service-account-credentials=true',
        // With one master there is no one to elect against: without election no Lease is renewed every 2 s.
        '--leader-elect={{ p.leader_elect }}',
        '--controllers=*,bootstrapsigner,tokencleaner',
        // At its start it builds every controller's client one after another (a ServiceAccount and a token each,
        // --use-service-account-credentials) and starts the shared informers only after the last: upstream's
        // 20 requests/s took ~5 s of a new cluster's start before the default ServiceAccount existed (no pod can
        // be created before it). A small cluster's API server takes this much from its only controller manager.
        '--kube-api-qps=200',
        '--kube-api-burst=400',
      ],
      readiness: { http: { scheme: 'https', host: '127.0.0.1', port: 10257, path: '/healthz' } },
    },
  ],
};

export const schedulerJob: JobDefinition = {
  name: 'kube-scheduler',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    leader_elect: { default: true, description: 'elect a leader among the masters (false with one master: nothing to elect)' },
  },
  files: { 'certs/ca.crt': '{{ vars.ca.ca }}', ...cert('scheduler'), kubeconfig: kubeconfig('scheduler') },
  processes: [
    {
      name: 'kube-scheduler',
      command: '{{ p.release_dir }}/bin/kube-scheduler',
      args: [
        '--kubeconfig=kubeconfig',
        '--authentication-kubeconfig=kubeconfig',
        '--authorization-kubeconfig=kubeconfig',
        '--bind-address=127.0.0.1',
        '--leader-elect={{ p.leader_elect }}',
      ],
      readiness: { http: { scheme: 'https', host: '127.0.0.1', port: 10259, path: '/healthz' } },
    },
  ],
};

/**
 * containerd with the CRI plugin; the release's images are imported before it is used. The platform's
 * registry (when it runs one) is trusted through a hosts.toml with its CA; pull credentials come from
 * the kubelet's credential provider.
 */
export const containerdJob: JobDefinition = {
  name: 'containerd',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    registry_address: { default: '' },
    registry_ca: { default: '' },
  },
  files: {
    'registry-ca.crt': '{{ p.registry_ca }}',
    'config.toml': [
      'version = 2',
      'root = "/var/lib/containerd"',
      'state = "/run/containerd"',
      '[grpc]',
      '  address = "/run/containerd/containerd.sock"',
      '[plugins."io.containerd.grpc.v1.cri"]',
      '  sandbox_image = "anodyne.local/pause:1.0"',
      // These machines withhold CAP_SYS_RESOURCE: no process may lower its oom_score_adj, so
      // containers must not ask for less than containerd's own (the pause container asks -998).
      '  restrict_oom_score_adj = true',
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    snapshotter = "overlayfs"',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
      '  [plugins."io.containerd.grpc.v1.cri".registry]',
      '    config_path = "/etc/containerd/certs.d"',
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      '    bin_dir = "/usr/lib/cni"',
      '    conf_dir = "/etc/cni/net.d"',
      '',
    ].join('\n'),
    'bin/containerd.sh': [
      // The first start since the VM booted (/run is new at each boot): the containers of before died
      // with the boot, and containerd would spend tens of seconds on their sandboxes before it
      // answered the kubelet (whose node then registers late). Start clean; the images come again below.
      'if [ ! -e /run/anodyne-containerd-booted ]; then rm -rf /var/lib/containerd; touch /run/anodyne-containerd-booted; fi',
      // The marker says this start's import finished (a release change brings new images).
      'rm -f /run/containerd/images-imported',
      // The platform's registry: its address and CA (hosts.toml); nothing else is configured.
      'rm -rf /etc/containerd/certs.d',
      'registry="{{ p.registry_address }}"',
      'if [ -n "$registry" ]; then',
      '  d="/etc/containerd/certs.d/$registry"',
      '  mkdir -p "$d"',
      '  cp registry-ca.crt "$d/ca.crt"',
      '  printf \'server = "https://%s"\\n\\n[host."https://%s"]\\n  capabilities = ["pull", "resolve"]\\n  ca = "%s/ca.crt"\\n\' "$registry" "$registry" "$d" > "$d/hosts.toml"',
      'fi',
      'containerd --config config.toml &',
      'pid=$!',
      'trap "kill $pid" TERM INT',
      'for i in $(seq 1 200); do ctr version >/dev/null 2>&1 && break; sleep 0.05; done',
      'for image in {{ p.release_dir }}/images/*.tar; do ctr -n k8s.io images import "$image"; done',
      'touch /run/containerd/images-imported',
      'wait $pid',
      '',
    ].join('\n'),
  },
  processes: [
    {
      name: 'containerd',
      command: 'sh',
      args: ['bin/containerd.sh'],
      readiness: { file: { path: '/run/containerd/images-imported' } },
    },
  ],
};

/**
 * Pod networking across nodes: flannel (built from its Go module into the release) with the
 * Kubernetes subnet manager and the host-gw backend. A node's pod subnet is the podCIDR the
 * controller manager allocated to its Node; flannel routes every other node's subnet via that
 * node's address (all VMs share one L2 segment: no encapsulation, no NAT). Pods attach to a CNI
 * bridge with host-local addresses from the node's subnet, as flannel's CNI plugin would set up.
 */
export const flannelJob: JobDefinition = {
  name: 'flannel',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    pod_cidr: { default: '10.200.0.0/16' },
    backend: { default: 'host-gw' },
  },
  files: {
    'certs/ca.crt': '{{ vars.ca.ca }}',
    ...cert('flannel'),
    kubeconfig: kubeconfig('flannel').replace('https://127.0.0.1:6443', 'https://{{ lbs.api.ip }}:6443'),
    'net-conf.json': '{"Network": "{{ p.pod_cidr }}", "Backend": {"Type": "{{ p.backend }}"}}\n',
    'bin/flannel.sh': [
      'set -e',
      'rm -f /run/pod-network-ready',
      'export NODE_NAME={{ spec.name }}-{{ spec.index }}',
      'sysctl -q -w net.ipv4.ip_forward=1',
      // Pod-to-Service traffic on the node's bridge must pass kube-proxy's iptables rules.
      'sysctl -q -w net.bridge.bridge-nf-call-iptables=1 || true',
      // The lease is the Node's podCIDR: flanneld starts with the API, syncs while the kubelet registers the
      // Node and a master gives it its pod range, and writes subnet.env once it holds the lease.
      'mkdir -p /run/flannel /etc/cni/net.d',
      'rm -f /run/flannel/subnet.env',
      '{{ p.release_dir }}/bin/flanneld --kubeconfig-file=kubeconfig --net-config-path=net-conf.json --public-ip={{ spec.ip }} --subnet-file=/run/flannel/subnet.env &',
      'pid=$!',
      "trap 'kill $pid 2>/dev/null' TERM INT",
      'until [ -s /run/flannel/subnet.env ]; do kill -0 $pid 2>/dev/null || { wait $pid; exit 1; }; sleep 0.1; done',
      '. /run/flannel/subnet.env',
      // The lease is the Node's pod range: its network address from the gateway address flannel wrote (no API call).
      'addr=${FLANNEL_SUBNET%/*}; len=${FLANNEL_SUBNET#*/}',
      'set -- $(echo "$addr" | tr . " ")',
      'n=$(( (($1 << 24) + ($2 << 16) + ($3 << 8) + $4) & ((0xffffffff << (32 - len)) & 0xffffffff) ))',
      'cidr="$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).$(( n & 255 ))/$len"',
      'cat > /etc/cni/net.d/10-flannel.conflist.tmp <<EOF',
      '{"cniVersion":"0.4.0","name":"flannel","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"hairpinMode":true,"mtu":${FLANNEL_MTU:-1500},"ipam":{"type":"host-local","ranges":[[{"subnet":"$cidr"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}',
      'EOF',
      'mv /etc/cni/net.d/10-flannel.conflist.tmp /etc/cni/net.d/10-flannel.conflist',
      'touch /run/pod-network-ready',
      'wait $pid',
      '',
    ].join('\n'),
  },
  processes: [
    {
      name: 'flanneld',
      startWhen: CLUSTER_API_SERVING,
      command: 'sh',
      args: ['bin/flannel.sh'],
      readiness: { file: { path: '/run/pod-network-ready' } },
    },
  ],
};

/** A shell loop that waits (at most 60 s, 0.2 s apart) until the API server behind `kubeconfig` answers /readyz. */
function waitForApi(kubeconfigFile: string): string {
  return `for i in $(seq 1 300); do {{ p.release_dir }}/bin/kubectl --kubeconfig=${kubeconfigFile} --request-timeout=2s get --raw=/readyz >/dev/null 2>&1 && break; sleep 0.2; done`;
}

/**
 * Shell lines run before a kubelet (cgroupRoot /kubelet, cgroup v1): the root must exist in every
 * hierarchy (kind's entrypoint does the same); a new cpuset starts empty and must inherit its
 * parent's cpus and mems. Also used by the benchmark's raw node floor.
 */
export const KUBELET_CGROUP_SETUP = [
  'for c in /sys/fs/cgroup/*/; do mkdir -p "${c}kubelet"; done',
  'if [ -f /sys/fs/cgroup/cpuset/kubelet/cpuset.cpus ]; then',
  '  cat /sys/fs/cgroup/cpuset/cpuset.cpus > /sys/fs/cgroup/cpuset/kubelet/cpuset.cpus',
  '  cat /sys/fs/cgroup/cpuset/cpuset.mems > /sys/fs/cgroup/cpuset/kubelet/cpuset.mems',
  'fi',
].join('\n');

export const kubeletJob: JobDefinition = {
  name: 'kubelet',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    cluster_dns: { default: '10.96.0.10' },
    system_reserved: { default: {} },
    kube_reserved: { default: {} },
    eviction_hard: { default: { 'nodefs.available': '0%', 'nodefs.inodesFree': '0%', 'imagefs.available': '0%' } },
    max_pods: { default: 110 },
    registry_address: { default: '' },
    registry_username: { default: '' },
  },
  files: {
    // The platform registry's pull credential for this cluster, handed to the kubelet by a credential
    // provider (the plugin kind EKS and GKE use for their registries): no pull secrets in namespaces.
    'credential-provider.yaml': [
      'apiVersion: kubelet.config.k8s.io/v1',
      'kind: CredentialProviderConfig',
      'providers:',
      '- name: anodyne-registry',
      '  apiVersion: credentialprovider.kubelet.k8s.io/v1',
      '  matchImages: ["{{ p.registry_address }}"]',
      '  defaultCacheDuration: 5m',
      '',
    ].join('\n'),
    'credential-provider/anodyne-registry': [
      '#!/bin/sh',
      'cat > /dev/null',
      `printf '%s\\n' '{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"5m0s","auth":{"{{ p.registry_address }}":{"username":"{{ p.registry_username }}","password":"{{ vars.registry-pull }}"}}}'`,
      '',
    ].join('\n'),
    'certs/ca.crt': '{{ vars.ca.ca }}',
    'certs/kubelet.crt': '{{ ivars.kubelet.certificate }}',
    'certs/kubelet.key': '{{ ivars.kubelet.private_key }}',
    kubeconfig: kubeconfig('kubelet').replace('https://127.0.0.1:6443', 'https://{{ lbs.api.ip }}:6443'),
    'config.yaml': [
      'apiVersion: kubelet.config.k8s.io/v1beta1',
      'kind: KubeletConfiguration',
      'authentication:',
      '  anonymous: {enabled: false}',
      '  webhook: {enabled: true}',
      '  x509: {clientCAFile: certs/ca.crt}',
      'authorization: {mode: Webhook}',
      'cgroupDriver: cgroupfs',
      'cgroupRoot: /kubelet',
      'failSwapOn: false',
      'containerRuntimeEndpoint: unix:///run/containerd/containerd.sock',
      'clusterDomain: cluster.local',
      'clusterDNS: [{{ p.cluster_dns }}]',
      'resolvConf: ""',
      'tlsCertFile: certs/kubelet.crt',
      'tlsPrivateKeyFile: certs/kubelet.key',
      'imageGCHighThresholdPercent: 100',
      // The plan's settings (JSON is YAML): reservations shrink the node's allocatable resources.
      'systemReserved: {{ p.system_reserved }}',
      'kubeReserved: {{ p.kube_reserved }}',
      'evictionHard: {{ p.eviction_hard }}',
      'maxPods: {{ p.max_pods }}',
      'serializeImagePulls: false',
      '',
    ].join('\n'),
    'bin/kubelet.sh': [
      KUBELET_CGROUP_SETUP,
      // A node reported Ready before the release's images are in containerd gets pods whose
      // sandboxes fail (the pause image "pulled" from nowhere) and back off for tens of seconds.
      'for i in $(seq 1 1200); do [ -e /run/containerd/images-imported ] && break; sleep 0.1; done',
      // A kubelet started before the API answers retries its registration with a growing backoff (seconds after
      // the API is up): the agent starts it once the API server answers (CLUSTER_API_SERVING), before every restart too.
      'credentials=""',
      'if [ -n "{{ p.registry_address }}" ]; then',
      '  chmod 0700 credential-provider/anodyne-registry',
      '  credentials="--image-credential-provider-config=$PWD/credential-provider.yaml --image-credential-provider-bin-dir=$PWD/credential-provider"',
      'fi',
      'exec {{ p.release_dir }}/bin/kubelet --config=config.yaml --kubeconfig=kubeconfig --hostname-override={{ spec.name }}-{{ spec.index }} --node-ip={{ spec.ip }} --node-labels=topology.kubernetes.io/zone={{ spec.az }} $credentials',
      '',
    ].join('\n'),
  },
  processes: [
    {
      name: 'kubelet',
      startWhen: CLUSTER_API_SERVING,
      command: 'sh',
      args: ['bin/kubelet.sh'],
      readiness: { http: { host: '127.0.0.1', port: 10248, path: '/healthz' } },
    },
  ],
};

/** kube-proxy in iptables mode, inside the worker's own network namespace. */
export const kubeProxyJob: JobDefinition = {
  name: 'kube-proxy',
  release: RELEASE,
  properties: { release_dir: { default: '/var/lib/anodyne/release' }, pod_cidr: { default: '10.200.0.0/16' } },
  files: {
    'certs/ca.crt': '{{ vars.ca.ca }}',
    'certs/kube-proxy.crt': '{{ vars.kube-proxy.certificate }}',
    'certs/kube-proxy.key': '{{ vars.kube-proxy.private_key }}',
    kubeconfig: kubeconfig('kube-proxy').replace('https://127.0.0.1:6443', 'https://{{ lbs.api.ip }}:6443'),
  },
  processes: [
    {
      name: 'kube-proxy',
      // Its client backs off for seconds after early refusals: start it once the cluster's API answers.
      startWhen: CLUSTER_API_READY,
      command: '{{ p.release_dir }}/bin/kube-proxy',
      args: [
        '--kubeconfig=kubeconfig',
        '--proxy-mode=iptables',
        '--cluster-cidr={{ p.pod_cidr }}',
        '--hostname-override={{ spec.name }}-{{ spec.index }}',
        // The conntrack table is global to the host: never resize it from a node (kind does the same).
        '--conntrack-max-per-core=0',
        '--metrics-bind-address=127.0.0.1:10249',
        '--healthz-bind-address=127.0.0.1:10256',
      ],
      readiness: { http: { host: '127.0.0.1', port: 10256, path: '/healthz' } },
    },
  ],
};

/**
 * NetworkPolicy enforcement on a worker: kube-router's network policy controller alone (built from its Go module
 * into the release as `network-policy`; docs/adr/0023), in the worker's own network namespace: iptables chains
 * and ipsets for the node's pods, synced on every pod, namespace and policy change. Ready once its first full
 * sync is done.
 */
export const networkPolicyJob: JobDefinition = {
  name: 'network-policy',
  release: RELEASE,
  properties: { release_dir: { default: '/var/lib/anodyne/release' }, service_cidr: { default: '10.96.0.0/16' } },
  files: {
    'certs/ca.crt': '{{ vars.ca.ca }}',
    ...cert('network-policy'),
    kubeconfig: kubeconfig('network-policy').replace('https://127.0.0.1:6443', 'https://{{ lbs.api.ip }}:6443'),
  },
  processes: [
    {
      name: 'network-policy',
      // Its client backs off for seconds after early refusals: start it once the cluster's API answers.
      startWhen: CLUSTER_API_READY,
      command: '{{ p.release_dir }}/bin/network-policy',
      args: [
        '--kubeconfig=kubeconfig',
        '--hostname-override={{ spec.name }}-{{ spec.index }}',
        '--service-cluster-ip-range={{ p.service_cidr }}',
        '--ready-file=/run/network-policy-ready',
      ],
      readiness: { file: { path: '/run/network-policy-ready' } },
    },
  ],
};

const KUBECTL = '{{ p.release_dir }}/bin/kubectl --kubeconfig=kubeconfig';

/**
 * On masters: applies the cluster add-ons (server-side apply, so every master may do it and a
 * restart re-applies) once the local API server answers; and keeps routes to every worker's pod
 * /24 in sync with the Node objects, so pods reach the API servers (and webhooks) without
 * masters being touched when workers come and go.
 */
export const addonsJob: JobDefinition = {
  name: 'cluster-addons',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    cluster_dns: { default: '10.96.0.10' },
    dns_replicas: { default: 1 },
    pod_cidr: { default: '10.200.0.0/16' },
    default_deny_namespaces: { default: false },
  },
  files: {
    'certs/ca.crt': '{{ vars.ca.ca }}',
    ...cert('admin'),
    ...cert('metrics-server'),
    kubeconfig: kubeconfig('admin'),
    'node-rbac.yaml': nodeRbacYaml(),
    'addons.yaml': addonsYaml({ dnsIp: '{{ p.cluster_dns }}', dnsReplicas: '{{ p.dns_replicas }}' }),
    'bin/addons.sh': [
      'set -e',
      'rm -f /run/anodyne-addons-applied',
      `until ${KUBECTL} get --raw=/readyz >/dev/null 2>&1; do sleep 0.3; done`,
      `image=$(sed -n 's/.*"coredns": "\\(anodyne\\.local[^"]*\\)".*/\\1/p' {{ p.release_dir }}/manifest.json)`,
      'test -n "$image" || { echo "the release ships no coredns image" >&2; exit 1; }',
      `metrics_image=$(sed -n 's/.*"metrics-server": "\\(anodyne\\.local[^"]*\\)".*/\\1/p' {{ p.release_dir }}/manifest.json)`,
      'test -n "$metrics_image" || { echo "the release ships no metrics-server image" >&2; exit 1; }',
      // The add-ons and metrics-server's serving certificate (from the credential store) in one apply.
      '{',
      '  sed -e "s#__COREDNS_IMAGE__#$image#" -e "s#__METRICS_SERVER_IMAGE__#$metrics_image#" -e "s#__CA_BUNDLE__#$(base64 -w0 certs/ca.crt)#" addons.yaml',
      '  echo ---',
      `  ${KUBECTL} -n kube-system create secret tls metrics-server-tls --cert=certs/metrics-server.crt --key=certs/metrics-server.key --dry-run=client -o yaml`,
      `} | ${KUBECTL} apply --server-side --force-conflicts --field-manager=anodyne -f -`,
      'touch /run/anodyne-addons-applied',
      'exec sleep infinity',
      '',
    ].join('\n'),
    // The RBAC of the workers' components (flannel, kube-proxy, network-policy), as soon as the API server serves:
    // flannel lists Nodes before it takes its lease, and its node cache is looked at once a second.
    'bin/node-rbac.sh': [
      'set -e',
      'rm -f /run/anodyne-node-rbac',
      // Started once the API server answers (LOCAL_API_SERVING): asked at once, again while it refuses.
      `until ${KUBECTL} apply --server-side --force-conflicts --field-manager=anodyne -f node-rbac.yaml >/dev/null; do sleep 0.2; done`,
      'touch /run/anodyne-node-rbac',
      'exec sleep infinity',
      '',
    ].join('\n'),
    // The pod network's Node side, on masters, from one watch of the Nodes (no API call per event):
    // - each worker's Node gets its pod /24 the moment it registers, from its index (worker-N: the N-th /24 of the pod
    //   range; one already taken, e.g. given by an older controller manager, makes it the first free one). The
    //   controller manager allocates none (--allocate-node-cidrs=false): its node IPAM came up seconds after the API
    //   and held every worker's flannel back (ADR 0019);
    // - masters are not Nodes (no flannel): they route each Node's range via its address, so pods reach the API
    //   servers (and webhooks) without masters being touched when workers come and go; a Node that is gone (a worker
    //   scaled away) takes its route with it.
    // Each Node is a " name=range@address " word: the ranges taken and the routes made.
    'bin/pod-network.sh': [
      `until ${KUBECTL} get --raw=/version >/dev/null 2>&1; do sleep 0.1; done`,
      'set -- $(echo "{{ p.pod_cidr }}" | sed "s#/.*##" | tr . " ")',
      'base=$(( ($1 << 24) + ($2 << 16) + ($3 << 8) + $4 ))',
      'prefix=$(echo "{{ p.pod_cidr }}" | sed "s#.*/##")',
      'slots=$(( 1 << (24 - prefix) ))',
      'subnet() { n=$(( base + $1 * 256 )); echo "$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).0/24"; }',
      'taken() { case "$nodes" in *"=$1@"*) true ;; *) false ;; esac; }',
      'lookup() { case "$nodes" in *" $1="*) rest=${nodes#* $1=}; echo "${rest%% *}" ;; esac; }',
      'forget() { case "$nodes" in *" $1="*) rest=${nodes#* $1=}; nodes="${nodes%% $1=*} ${rest#* }" ;; esac; }',
      // The ranges routed, for the next start to remove those of Nodes gone meanwhile.
      'keep() { for w in $nodes; do r=${w#*=}; [ -n "${r#*@}" ] && echo "${r%@*}"; done > routes.prev; }',
      'give() {',
      '  i=${1##*-}',
      '  case "$i" in ""|*[!0-9]*) i=0 ;; esac',
      '  want=$(subnet "$i")',
      '  if [ "$i" -ge "$slots" ] || taken "$want"; then',
      '    want=""; j=0',
      '    while [ "$j" -lt "$slots" ]; do c=$(subnet "$j"); taken "$c" || { want=$c; break; }; j=$((j + 1)); done',
      '  fi',
      '  [ -n "$want" ] || { echo "no free pod range for $1 in {{ p.pod_cidr }}" >&2; return; }',
      `  ${KUBECTL} patch node "$1" --type=merge -p '{"spec":{"podCIDR":"'"$want"'","podCIDRs":["'"$want"'"]}}' >/dev/null && echo "$1: $want" && nodes="$nodes$1=$want@ "`,
      '}',
      // One Node as the watch or the first list shows it: type|name|range|address.
      'seen() {',
      '  [ -n "$2" ] || return 0',
      '  old=$(lookup "$2")',
      '  forget "$2"',
      '  if [ "$1" = DELETED ]; then',
      '    [ -n "${old%@*}" ] && ip route del "${old%@*}" 2>/dev/null',
      '    keep; return 0',
      '  fi',
      '  if [ -z "$3" ]; then give "$2"; return 0; fi',
      '  nodes="$nodes$2=$3@$4 "',
      '  [ "$old" = "$3@$4" ] && return 0',
      '  [ -n "${old%@*}" ] && [ "${old%@*}" != "$3" ] && ip route del "${old%@*}" 2>/dev/null',
      '  [ -n "$4" ] && ip route replace "$3" via "$4"',
      '  keep',
      '}',
      `FIELDS='{.metadata.name}|{.spec.podCIDR}|{.status.addresses[?(@.type=="InternalIP")].address}'`,
      'while true; do',
      '  nodes=" "',
      '  prev=$(cat routes.prev 2>/dev/null || true)',
      `  if ${KUBECTL} get nodes -o jsonpath="{range .items[*]}ADDED|$FIELDS{\\"\\\\n\\"}{end}" > nodes.tmp 2>/dev/null; then`,
      '    while IFS="|" read -r type name cidr ip; do seen "$type" "$name" "$cidr" "$ip"; done < nodes.tmp',
      '    for cidr in $prev; do taken "$cidr" || ip route del "$cidr" 2>/dev/null; done',
      '    keep',
      '    touch /run/anodyne-pod-network',
      `    ${KUBECTL} get nodes --watch --output-watch-events -o jsonpath="{.type}|$(echo "$FIELDS" | sed "s/{\\./{.object./g"){\\"\\\\n\\"}" 2>/dev/null |`,
      '      while IFS="|" read -r type name cidr ip; do seen "$type" "$name" "$cidr" "$ip"; done',
      '  fi',
      '  sleep 1',
      'done',
      '',
    ].join('\n'),
    // The plan's default deny: every namespace made after the cluster (not default nor kube-*) gets, once, a
    // NetworkPolicy refusing ingress from anywhere; its owner opens what it serves. Marked on the namespace, so a
    // policy its owner deleted is not brought back. Without the plan's setting it only says it is ready.
    'default-deny.yaml': [
      'apiVersion: networking.k8s.io/v1',
      'kind: NetworkPolicy',
      'metadata: {name: anodyne-default-deny, labels: {app.kubernetes.io/managed-by: anodyne}}',
      'spec: {podSelector: {}, policyTypes: [Ingress]}',
      '',
    ].join('\n'),
    'bin/namespace-policy.sh': [
      `until ${KUBECTL} get --raw=/readyz >/dev/null 2>&1; do sleep 0.3; done`,
      'touch /run/anodyne-namespace-policy',
      '[ "{{ p.default_deny_namespaces }}" = true ] || exec sleep 2147483647',
      'while true; do',
      `  ${KUBECTL} get namespaces --watch -o jsonpath='{.metadata.name} {.status.phase} {.metadata.annotations.anodyne\\.io/default-deny}{"\\n"}' 2>/dev/null | while read -r ns phase mark; do`,
      '    case "$ns" in ""|default|kube-system|kube-public|kube-node-lease) continue ;; esac',
      '    [ "$phase" = Active ] && [ -z "$mark" ] || continue',
      `    ${KUBECTL} apply -n "$ns" -f default-deny.yaml >/dev/null && ${KUBECTL} annotate namespace "$ns" anodyne.io/default-deny=applied --overwrite >/dev/null && echo "$ns: default deny"`,
      '  done',
      '  sleep 1',
      'done',
      '',
    ].join('\n'),
  },
  processes: [
    {
      name: 'node-rbac',
      startWhen: LOCAL_API_SERVING,
      command: 'sh',
      args: ['bin/node-rbac.sh'],
      readiness: { file: { path: '/run/anodyne-node-rbac' } },
    },
    {
      name: 'addons',
      startWhen: LOCAL_API_READY,
      command: 'sh',
      args: ['bin/addons.sh'],
      readiness: { file: { path: '/run/anodyne-addons-applied' } },
    },
    {
      name: 'namespace-policy',
      startWhen: LOCAL_API_READY,
      command: 'sh',
      args: ['bin/namespace-policy.sh'],
      readiness: { file: { path: '/run/anodyne-namespace-policy' } },
    },
    {
      name: 'pod-network',
      startWhen: LOCAL_API_SERVING,
      command: 'sh',
      args: ['bin/pod-network.sh'],
      readiness: { file: { path: '/run/anodyne-pod-network' } },
    },
  ],
};

const JOBS: Record<string, JobDefinition> = Object.fromEntries(
  [
    etcdJob,
    apiserverJob,
    controllerManagerJob,
    schedulerJob,
    containerdJob,
    flannelJob,
    kubeletJob,
    kubeProxyJob,
    networkPolicyJob,
    addonsJob,
  ].map((j) => [j.name, j]),
);

/** The Kubernetes release's jobs as this platform's code defines them (release/build.sh writes them into each release). */
export const KUBERNETES_JOBS: readonly JobDefinition[] = Object.values(JOBS);

/** The Kubernetes release as the director sees it, from this platform's code. */
export const kubernetesRelease: JobCatalog = {
  job: (release, name) => (release === undefined || release === RELEASE ? JOBS[name] : undefined),
};

/**
 * The job catalog of the releases side by side: a manifest that names its release's build (`key`)
 * gets the job definitions that build carries (`<root>/<key>/jobs.json`), so a cluster's
 * resurrection, recreate or resize renders what it was deployed with even after the platform's
 * code moved on; without a key, or a build that carries none, this platform's own.
 */
export function releaseCatalog(root: string): JobCatalog {
  const cache = new Map<string, Record<string, JobDefinition> | null>();
  const load = (key: string) => {
    if (!cache.has(key)) {
      const file = join(root, key, 'jobs.json');
      cache.set(
        key,
        existsSync(file) ? Object.fromEntries((JSON.parse(readFileSync(file, 'utf8')) as JobDefinition[]).map((j) => [j.name, j])) : null,
      );
    }
    return cache.get(key) ?? null;
  };
  return {
    job: (release, name, key) => {
      if (release !== undefined && release !== RELEASE) return undefined;
      if (key && /^[A-Za-z0-9._-]+$/.test(key)) return load(key)?.[name] ?? (load(key) === null ? JOBS[name] : undefined);
      return JOBS[name];
    },
  };
}
