/**
 * Cluster add-ons, applied by the masters once their API server answers: CoreDNS (answering
 * only for the cluster's own names — there is no forwarder, so nothing is asked outside the
 * machine) and the RBAC bindings Anodyne relies on (cluster admins, flannel's node access).
 */

/** The kube-dns Service address: the tenth address of the service range (as kubeadm does). */
export function clusterDnsIp(serviceCidr: string): string {
  const [a, b, c, d] = serviceCidr.split('/')[0]!.split('.').map(Number) as [number, number, number, number];
  const n = ((a * 256 + b) * 256 + c) * 256 + d + 10;
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** The group whose members are cluster-admin in every cluster (Anodyne admins and owners bind into it). */
export const ADMIN_GROUP = 'anodyne:cluster-admins';

const corefile = [
  '.:53 {',
  '    errors',
  '    health :8080',
  '    ready :8181',
  '    kubernetes cluster.local in-addr.arpa ip6.arpa {',
  '        pods insecure',
  '        fallthrough in-addr.arpa ip6.arpa',
  '        ttl 30',
  '    }',
  '    cache 30',
  '    loop',
  '    reload',
  '    loadbalance',
  // Everything else gets NXDOMAIN here: no forward plugin exists in this build.
  '    template ANY ANY {',
  '        rcode NXDOMAIN',
  '    }',
  '}',
];

/**
 * The add-on documents. `__COREDNS_IMAGE__` is replaced on the master with the image the
 * release ships (read from the release manifest), so the manifest never pins a version twice.
 */
export function addonsYaml(opts: { dnsIp: string; dnsReplicas: number | string }): string {
  return `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: 'system:coredns', labels: {app.kubernetes.io/managed-by: anodyne}}
rules:
- apiGroups: ['']
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'system:coredns', labels: {app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:coredns'}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'anodyne:cluster-admins', labels: {app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: '${ADMIN_GROUP}'}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: 'anodyne:flannel', labels: {app.kubernetes.io/managed-by: anodyne}}
rules:
- apiGroups: ['']
  resources: [nodes]
  verbs: [get, list, watch, patch]
- apiGroups: ['']
  resources: [nodes/status]
  verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'anodyne:flannel', labels: {app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'anodyne:flannel'}
subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: 'anodyne:flannel'}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
${corefile.map((l) => `    ${l}`).join('\n')}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: ${opts.dnsReplicas}
  selector: {matchLabels: {k8s-app: kube-dns}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {k8s-app: kube-dns}}}
      containers:
      - name: coredns
        image: __COREDNS_IMAGE__
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: metrics, containerPort: 9153, protocol: TCP}
        resources: {requests: {cpu: 50m, memory: 40Mi}, limits: {memory: 170Mi}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
        livenessProbe: {httpGet: {path: /health, port: 8080}, initialDelaySeconds: 10, periodSeconds: 10}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: ${opts.dnsIp}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
`;
}
