import type { JobCatalog, JobDefinition } from '@anodyne/director';

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
  properties: { release_dir: { default: '/var/lib/anodyne/release' }, data_dir: { default: '/var/lib/etcd' } },
  files: {
    'certs/etcd-ca.crt': '{{ vars.etcd-ca.certificate }}',
    ...cert('etcd-server'),
    ...cert('etcd-peer'),
    // Members are named by their address; the initial cluster is every master.
    'bin/etcd.sh': [
      'set -e',
      'cluster=""',
      'for ip in $(echo "{{ groups.master.ips }}" | tr , " "); do cluster="${cluster:+$cluster,}$ip=https://$ip:2380"; done',
      'mkdir -p {{ p.data_dir }} && chmod 700 {{ p.data_dir }}',
      'exec {{ p.release_dir }}/bin/etcd --name={{ spec.ip }} --data-dir={{ p.data_dir }} \\',
      '  --listen-client-urls=https://{{ spec.ip }}:2379,https://127.0.0.1:2379 --advertise-client-urls=https://{{ spec.ip }}:2379 \\',
      '  --listen-peer-urls=https://{{ spec.ip }}:2380 --initial-advertise-peer-urls=https://{{ spec.ip }}:2380 \\',
      '  --initial-cluster="$cluster" --initial-cluster-state=new --initial-cluster-token={{ spec.deployment }} \\',
      '  --client-cert-auth --trusted-ca-file=certs/etcd-ca.crt --cert-file=certs/etcd-server.crt --key-file=certs/etcd-server.key \\',
      '  --peer-client-cert-auth --peer-trusted-ca-file=certs/etcd-ca.crt --peer-cert-file=certs/etcd-peer.crt --peer-key-file=certs/etcd-peer.key \\',
      '  --listen-metrics-urls=http://127.0.0.1:2381 --log-level=warn',
      '',
    ].join('\n'),
  },
  processes: [{ name: 'etcd', command: 'sh', args: ['bin/etcd.sh'], readiness: { http: { host: '127.0.0.1', port: 2381, path: '/health' } } }],
};

export const apiserverJob: JobDefinition = {
  name: 'kube-apiserver',
  release: RELEASE,
  properties: {
    release_dir: { default: '/var/lib/anodyne/release' },
    service_cidr: { default: '10.96.0.0/16' },
    admission_plugins: { default: 'NodeRestriction' },
    allow_privileged: { default: true },
  },
  files: {
    'certs/ca.crt': '{{ vars.ca.certificate }}',
    'certs/etcd-ca.crt': '{{ vars.etcd-ca.certificate }}',
    'certs/front-proxy-ca.crt': '{{ vars.front-proxy-ca.certificate }}',
    'certs/sa.pub': '{{ vars.service-account-key.public_key }}',
    'certs/sa.key': '{{ vars.service-account-key.private_key }}',
    ...cert('apiserver'),
    ...cert('apiserver-etcd-client'),
    ...cert('apiserver-kubelet-client'),
    ...cert('front-proxy-client'),
  },
  processes: [{
    name: 'kube-apiserver',
    command: '{{ p.release_dir }}/bin/kube-apiserver',
    args: [
      '--advertise-address={{ spec.ip }}', '--bind-address=0.0.0.0', '--secure-port=6443',
      '--etcd-servers=https://127.0.0.1:2379', '--etcd-cafile=certs/etcd-ca.crt', '--etcd-certfile=certs/apiserver-etcd-client.crt', '--etcd-keyfile=certs/apiserver-etcd-client.key',
      '--client-ca-file=certs/ca.crt', '--tls-cert-file=certs/apiserver.crt', '--tls-private-key-file=certs/apiserver.key',
      '--kubelet-client-certificate=certs/apiserver-kubelet-client.crt', '--kubelet-client-key=certs/apiserver-kubelet-client.key',
      '--kubelet-preferred-address-types=InternalIP,Hostname',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local', '--service-account-key-file=certs/sa.pub', '--service-account-signing-key-file=certs/sa.key',
      '--service-cluster-ip-range={{ p.service_cidr }}', '--authorization-mode=Node,RBAC', '--enable-admission-plugins={{ p.admission_plugins }}',
      '--allow-privileged={{ p.allow_privileged }}', '--enable-bootstrap-token-auth=true',
      '--requestheader-client-ca-file=certs/front-proxy-ca.crt', '--requestheader-allowed-names=front-proxy-client',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-', '--requestheader-group-headers=X-Remote-Group', '--requestheader-username-headers=X-Remote-User',
      '--proxy-client-cert-file=certs/front-proxy-client.crt', '--proxy-client-key-file=certs/front-proxy-client.key',
    ],
    readiness: { http: { scheme: 'https', host: '127.0.0.1', port: 6443, path: '/readyz' } },
  }],
};

export const controllerManagerJob: JobDefinition = {
  name: 'kube-controller-manager',
  release: RELEASE,
  properties: { release_dir: { default: '/var/lib/anodyne/release' }, service_cidr: { default: '10.96.0.0/16' }, pod_cidr: { default: '10.200.0.0/16' }, node_cidr_mask: { default: 24 } },
  files: {
    'certs/ca.crt': '{{ vars.ca.certificate }}',
    'certs/ca.key': '{{ vars.ca.private_key }}',
    'certs/sa.key': '{{ vars.service-account-key.private_key }}',
    ...cert('controller-manager'),
    kubeconfig: kubeconfig('controller-manager'),
  },
  processes: [{
    name: 'kube-controller-manager',
    command: '{{ p.release_dir }}/bin/kube-controller-manager',
    args: [
      '--kubeconfig=kubeconfig', '--authentication-kubeconfig=kubeconfig', '--authorization-kubeconfig=kubeconfig', '--bind-address=127.0.0.1',
      '--allocate-node-cidrs=true', '--cluster-cidr={{ p.pod_cidr }}', '--node-cidr-mask-size={{ p.node_cidr_mask }}', '--service-cluster-ip-range={{ p.service_cidr }}',
      '--cluster-signing-cert-file=certs/ca.crt', '--cluster-signing-key-file=certs/ca.key', '--root-ca-file=certs/ca.crt',
      '--service-account-private-key-file=certs/sa.key', '--use-service-account-credentials=true', '--leader-elect=true',
      '--controllers=*,bootstrapsigner,tokencleaner',
    ],
    readiness: { http: { scheme: 'https', host: '127.0.0.1', port: 10257, path: '/healthz' } },
  }],
};

export const schedulerJob: JobDefinition = {
  name: 'kube-scheduler',
  release: RELEASE,
  properties: { release_dir: { default: '/var/lib/anodyne/release' } },
  files: { 'certs/ca.crt': '{{ vars.ca.certificate }}', ...cert('scheduler'), kubeconfig: kubeconfig('scheduler') },
  processes: [{
    name: 'kube-scheduler',
    command: '{{ p.release_dir }}/bin/kube-scheduler',
    args: ['--kubeconfig=kubeconfig', '--authentication-kubeconfig=kubeconfig', '--authorization-kubeconfig=kubeconfig', '--bind-address=127.0.0.1', '--leader-elect=true'],
    readiness: { http: { scheme: 'https', host: '127.0.0.1', port: 10259, path: '/healthz' } },
  }],
};

const JOBS: Record<string, JobDefinition> = Object.fromEntries([etcdJob, apiserverJob, controllerManagerJob, schedulerJob].map((j) => [j.name, j]));

/** The Kubernetes release as the director sees it. */
export const kubernetesRelease: JobCatalog = {
  job: (release, name) => (release === undefined || release === RELEASE ? JOBS[name] : undefined),
};
