// The raw floor with a node: etcd, kube-apiserver, containerd and kubelet of the same release,
// started directly by one shell script inside ONE bare local-provider VM (a namespace VM like the
// clusters', so the comparison is fair), no agent, no director, no certificates to issue (the API
// server makes its own serving certificate and trusts a static token; authorisation is
// AlwaysAllow). Timed from asking for the VM to the Node being Ready and a pod Running (the pod
// names its node: no scheduler), and to every process being ready by the check its cluster job
// uses (the counterpart of the director's create task being done, which waits for exactly that on
// every VM). The bench's clusters do all of that and everything a real cluster needs on top (TLS
// everywhere, controller manager, scheduler, flannel, CoreDNS, kube-proxy).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { exec, silentLogger, systemClock } from '@anodyne/common';
import { LocalProvider } from '@anodyne/providers';
import { hostLeftovers } from '@anodyne/providers/testing';
import { containerdJob, KUBELET_CGROUP_SETUP } from '@anodyne/clusters';
import { nodesReadyAt, until } from './lib.mjs';

const NETWORK = '10.198.16.0/24';
const IP = '10.198.16.10';
const TAG = 'bfl';

const script = (token) => `set -e
R=/var/lib/anodyne/release
cd /floor-run
mkdir -p etcd certs /etc/cni/net.d /run/containerd
$R/bin/etcd --name=floor --data-dir=etcd --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \\
  --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 --initial-cluster=floor=http://127.0.0.1:2380 \\
  --log-level=error > etcd.log 2>&1 &
containerd --config /floor-run/containerd.toml > containerd.log 2>&1 &
echo '{"cniVersion":"0.4.0","name":"floor","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.201.0.0/24"}]]}}]}' > /etc/cni/net.d/10-floor.conflist
echo '${token},admin,admin,system:masters' > tokens.csv
openssl genrsa -out sa.key 2048 2>/dev/null
$R/bin/kube-apiserver --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --advertise-address=${IP} --secure-port=6443 --cert-dir=certs \\
  --service-cluster-ip-range=10.96.0.0/24 --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=sa.key \\
  --service-account-signing-key-file=sa.key --authorization-mode=AlwaysAllow --token-auth-file=tokens.csv \\
  --disable-admission-plugins=ServiceAccount > apiserver.log 2>&1 &
for i in $(seq 1 200); do ctr version >/dev/null 2>&1 && break; sleep 0.05; done
for image in $R/images/pause.tar $R/images/busybox.tar; do ctr -n k8s.io images import "$image" >/dev/null; done
cat > kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters: [{name: floor, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "${token}"}}]
contexts: [{name: floor, context: {cluster: floor, user: admin}}]
current-context: floor
EOF
cat > kubelet.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /kubelet
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
resolvConf: ""
imageGCHighThresholdPercent: 100
evictionHard: {nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
EOF
${KUBELET_CGROUP_SETUP}
until $R/bin/kubectl --kubeconfig=kubeconfig get --raw /readyz >/dev/null 2>&1; do sleep 0.05; done
$R/bin/kubelet --config=kubelet.yaml --kubeconfig=kubeconfig --hostname-override=floor --node-ip=${IP} > kubelet.log 2>&1 &
kubelet=$!
# Every process ready by the probe its cluster job declares (etcd /health, kube-apiserver /readyz,
# kubelet /healthz; containerd declares none and already answers): the moment the director's task
# would be done. The marker file is seen by the host through the bind, on the host's clock.
until curl -fs -o /dev/null http://127.0.0.1:2379/health && $R/bin/kubectl --kubeconfig=kubeconfig get --raw /readyz >/dev/null 2>&1 \\
  && curl -fs -o /dev/null http://127.0.0.1:10248/healthz; do sleep 0.05; done
touch ready
wait $kubelet
`;

/** One boot of the node floor; milliseconds to every process ready, to Node Ready and to a pod Running. */
export async function nodeFloor(release) {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-floor-'));
  const provider = new LocalProvider({
    dataDir: join(dir, 'provider'),
    tag: TAG,
    network: NETWORK,
    agentCommand: ['sh', '/floor-run/boot.sh'],
    binds: [
      { host: release.dir, guest: '/var/lib/anodyne/release', readOnly: true },
      { host: join(dir, 'run'), guest: '/floor-run', readOnly: false },
    ],
    logger: silentLogger(),
    clock: systemClock,
  });
  const token = randomBytes(16).toString('hex');
  mkdirSync(join(dir, 'run'));
  writeFileSync(join(dir, 'run', 'boot.sh'), script(token));
  // The clusters' containerd configuration (it has no template expressions).
  writeFileSync(join(dir, 'run', 'containerd.toml'), containerdJob.files['config.toml']);
  const cfg = join(dir, 'kubeconfig');
  writeFileSync(
    cfg,
    `apiVersion: v1\nkind: Config\nclusters: [{name: floor, cluster: {server: "https://${IP}:6443", insecure-skip-tls-verify: true}}]\nusers: [{name: admin, user: {token: "${token}"}}]\ncontexts: [{name: floor, context: {cluster: floor, user: admin}}]\ncurrent-context: floor\n`,
    { mode: 0o600 },
  );
  const k = (...args) =>
    exec([release.bin('kubectl'), `--kubeconfig=${cfg}`, '--request-timeout=5s', ...args], { okCodes: [0, 1], timeoutMs: 20_000 });
  try {
    const t0 = performance.now();
    const vm = await provider.createVm({
      agentId: 'floor',
      image: 'host-usr',
      vmType: 'small',
      network: { network: 'default', ip: IP },
      env: {},
    });
    const timeout = Number(process.env.FLOOR_TIMEOUT_MS ?? 180_000);
    // Both watched at once: the processes are usually ready before the Node is.
    const [processesMs, readyMs] = await Promise.all([
      until('floor: every process ready', timeout, () => (existsSync(join(dir, 'run', 'ready')) ? performance.now() - t0 : undefined), 25),
      nodesReadyAt(readFileSync(cfg, 'utf8'), 1, timeout).then((at) => at - t0),
    ]);
    // CPU time the VM's cgroup was charged up to the Node Ready (every process of the floor runs in it).
    const cpuNs = Number(readFileSync(`/sys/fs/cgroup/cpuacct/anodyne/${TAG}/${vm.id}/cpuacct.usage`, 'utf8'));
    const pod = JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'probe' },
      spec: {
        nodeName: 'floor',
        automountServiceAccountToken: false,
        containers: [{ name: 'probe', image: release.image('busybox').ref, imagePullPolicy: 'Never', command: ['sleep', '600'] }],
      },
    });
    writeFileSync(join(dir, 'pod.json'), pod);
    await until('floor: the pod created', 60_000, async () =>
      (await k('create', '-f', join(dir, 'pod.json'))).code === 0 ? true : undefined,
    );
    const podMs = await until('floor: the pod Running', 120_000, async () =>
      (await k('get', 'pod', 'probe', '-o', 'jsonpath={.status.phase}')).stdout === 'Running' ? performance.now() - t0 : undefined,
    );
    return { processesMs, readyMs, podMs, cpuNs };
  } catch (err) {
    // Say why: the last lines each process wrote.
    const tails = ['etcd', 'apiserver', 'containerd', 'kubelet'].map((n) => {
      try {
        return `--- ${n}.log\n${readFileSync(join(dir, 'run', `${n}.log`), 'utf8')
          .split('\n')
          .slice(-15)
          .join('\n')}`;
      } catch {
        return `--- ${n}.log: none`;
      }
    });
    throw new Error(`${err.message}\n${tails.join('\n')}`);
  } finally {
    await provider.cleanup();
    const left = await hostLeftovers(TAG, join(dir, 'provider'));
    rmSync(dir, { recursive: true, force: true });
    if (left.length > 0) throw new Error(`floor: left on the host: ${left.join(', ')}`);
  }
}
