// Cluster add-ons applied by the masters: CoreDNS for the cluster's own names, metrics-server, and Anodyne's RBAC bindings.
/**
 * Cluster add-ons, applied by the masters once their API server answers: CoreDNS (answering
 * only for the cluster's own names — there is no forwarder, so nothing is asked outside the
 * machine), metrics-server (the resource metrics API behind `kubectl top` and CPU autoscaling)
 * and the RBAC bindings Anodyne relies on (cluster admins, flannel's node access).
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
 * metrics-server, registered as the aggregated API v1beta1.metrics.k8s.io. Its serving
 * certificate comes from the cluster's credential store (Secret metrics-server-tls, created by
 * the master next to these documents) and the APIService trusts it through the cluster CA
 * (`__CA_BUNDLE__`): no insecureSkipTLSVerify. It scrapes kubelets on their InternalIP and checks
 * their serving certificates against the same CA (the kube-root-ca.crt ConfigMap).
 */
const metricsServer = `apiVersion: v1
kind: ServiceAccount
metadata: {name: metrics-server, namespace: kube-system, labels: {k8s-app: metrics-server}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: 'system:metrics-server', labels: {k8s-app: metrics-server, app.kubernetes.io/managed-by: anodyne}}
rules:
- apiGroups: ['']
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: ['']
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: 'system:aggregated-metrics-reader'
  labels:
    k8s-app: metrics-server
    app.kubernetes.io/managed-by: anodyne
    rbac.authorization.k8s.io/aggregate-to-view: 'true'
    rbac.authorization.k8s.io/aggregate-to-edit: 'true'
    rbac.authorization.k8s.io/aggregate-to-admin: 'true'
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'system:metrics-server', labels: {k8s-app: metrics-server, app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:metrics-server'}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'metrics-server:system:auth-delegator', labels: {k8s-app: metrics-server, app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:auth-delegator'}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: metrics-server-auth-reader, namespace: kube-system, labels: {k8s-app: metrics-server, app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: metrics-server, namespace: kube-system, labels: {k8s-app: metrics-server}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: metrics-server}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0}}
  template:
    metadata: {labels: {k8s-app: metrics-server}}
    spec:
      serviceAccountName: metrics-server
      priorityClassName: system-cluster-critical
      containers:
      - name: metrics-server
        image: __METRICS_SERVER_IMAGE__
        imagePullPolicy: Never
        args:
        - --secure-port=10250
        - --cert-dir=/tmp
        - --tls-cert-file=/etc/metrics-server/tls/tls.crt
        - --tls-private-key-file=/etc/metrics-server/tls/tls.key
        - --kubelet-certificate-authority=/etc/metrics-server/ca/ca.crt
        - --kubelet-preferred-address-types=InternalIP
        - --kubelet-use-node-status-port
        - --metric-resolution=15s
        ports: [{name: https, containerPort: 10250, protocol: TCP}]
        resources: {requests: {cpu: 20m, memory: 48Mi}, limits: {memory: 256Mi}}
        readinessProbe: {httpGet: {path: /readyz, port: https, scheme: HTTPS}, periodSeconds: 5, failureThreshold: 3}
        livenessProbe: {httpGet: {path: /livez, port: https, scheme: HTTPS}, periodSeconds: 10, failureThreshold: 3}
        securityContext: {readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts:
        - {name: tmp, mountPath: /tmp}
        - {name: tls, mountPath: /etc/metrics-server/tls, readOnly: true}
        - {name: ca, mountPath: /etc/metrics-server/ca, readOnly: true}
      volumes:
      - {name: tmp, emptyDir: {}}
      - {name: tls, secret: {secretName: metrics-server-tls}}
      - {name: ca, configMap: {name: kube-root-ca.crt}}
---
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system, labels: {k8s-app: metrics-server}}
spec:
  selector: {k8s-app: metrics-server}
  ports: [{name: https, port: 443, protocol: TCP, targetPort: https, appProtocol: https}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io, labels: {k8s-app: metrics-server}}
spec:
  service: {name: metrics-server, namespace: kube-system, port: 443}
  group: metrics.k8s.io
  version: v1beta1
  caBundle: __CA_BUNDLE__
  groupPriorityMinimum: 100
  versionPriority: 100
`;

/**
 * The add-on documents. `__COREDNS_IMAGE__` and `__METRICS_SERVER_IMAGE__` are replaced on the
 * master with the images the release ships (read from the release manifest), so the manifest
 * never pins a version twice; `__CA_BUNDLE__` with the cluster CA (base64).
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
---
${metricsServer}`;
}

/**
 * The RBAC of the workers' own components (flanneld, the network policy controller): applied before the
 * other add-ons, in an apply of its own, so a new worker's components are let in within a moment of
 * the API server's start rather than after the whole add-on set (their clients back off while refused).
 */
export function nodeRbacYaml(): string {
  return `apiVersion: rbac.authorization.k8s.io/v1
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
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: 'anodyne:network-policy', labels: {app.kubernetes.io/managed-by: anodyne}}
rules:
- apiGroups: ['']
  resources: [pods, namespaces, nodes]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'anodyne:network-policy', labels: {app.kubernetes.io/managed-by: anodyne}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'anodyne:network-policy'}
subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: 'anodyne:network-policy'}]
`;
}
