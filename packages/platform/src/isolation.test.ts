// Tenant isolation with real clusters of two owners: each cluster on a network segment of its own; from a node and a
// host-network pod of one, the other's etcd, kubelet, node ports and masters do not answer, its API load balancer does.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { exec, skipUnless } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { BUILTIN_PLANS } from '@anodyne/clusters';
import { startTestPlatform, https, kubectlOf, localProvider, tokenSource, type TestPlatform, awaitQuietHost } from './testing/index.js';
import { apply, busyboxRef, deployApp, until } from './testing/workloads.js';
import { findNetpolE2e, runNetpolE2e } from './testing/netpol-e2e.js';

const isRoot = process.getuid?.() === 0;
const PORT = 20_100 + (process.pid % 90);
const NODE_PORT = 30_080;
const NETPOL_E2E = findNetpolE2e();
/**
 * The upstream NetworkPolicy specs `make test` runs: default deny of all traffic, pod and namespace selectors
 * together, ports, egress, CIDR blocks with exceptions, UDP (the suite's own tests above cover deny, allow, egress
 * and removal as well). `npm run test:isolation` runs every spec of the suite (ANODYNE_NETPOL_E2E_ALL=true): 47
 * specs take 12 minutes of both cores here, which the 30-minute `make test` has no room for.
 */
const NETPOL_SAMPLE = [
  "should support a 'default-deny-all' policy",
  'should enforce policy based on PodSelector and NamespaceSelector',
  'should enforce policy based on Ports',
  'should deny egress from all pods in a namespace',
  'should enforce except clause while egress access to server in CIDR block',
  'should not allow access by TCP when a policy specifies only UDP',
];
const NETPOL_ALL = process.env['ANODYNE_NETPOL_E2E_ALL'] === 'true';

interface ClusterView {
  kubernetes_master_ips: string[];
  parameters: { kubernetes_master_port: number; network_isolation: string };
  last_action_state: string;
}

describe('tenant isolation between the clusters of two owners', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: () => Promise<string>;
  const call = async (method: string, path: string, body?: unknown) =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: await admin(),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const kubectlFor = (cluster: string) => kubectlOf(tp, admin, cluster);
  /** Whether a pod of a cluster (`kubectl exec`) opens a TCP connection to ip:port within 2 s (busybox's nc; its wget crashes in these pods). */
  const podConnects = async (cluster: string, namespace: string, pod: string, ip: string, port: number): Promise<boolean> =>
    (
      await exec(
        [
          tp.platform.releaseKubectl,
          '--kubeconfig',
          join(tp.dir, `${cluster}.kubeconfig`),
          'exec',
          '-n',
          namespace,
          pod,
          '--',
          'nc',
          '-w',
          '2',
          ip,
          String(port),
        ],
        { input: '', okCodes: [0, 1], timeoutMs: 30_000 },
      )
    ).code === 0;
  /** The address of each VM of a cluster by instance name (`master/0`), and its VM id. */
  const vmsOf = async (cluster: string) =>
    Object.fromEntries(
      (await tp.platform.director.instances(`cluster-${cluster}`)).map((r) => [`${r.group_name}/${r.idx}`, { ip: r.ip!, vm: r.vm_id! }]),
    );
  /** Whether a TCP connection from inside a VM to ip:port is accepted within 3 s. */
  const connects = async (vmId: string, ip: string, port: number): Promise<boolean> =>
    (await localProvider(tp.platform).execInVm(vmId, ['busybox', 'nc', '-w', '3', ip, String(port)], { input: '', okCodes: [0, 1] }))
      .code === 0;

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    // Bob's plan gives new namespaces a default-deny policy.
    const small = BUILTIN_PLANS.find((p) => p.name === 'small')!;
    const plans = [
      ...BUILTIN_PLANS,
      { ...small, name: 'small-deny', description: 'small, new namespaces deny ingress', defaultDenyNamespaces: true },
    ];
    // A pool of four segments (/27s); the owners' clusters use a network profile whose share of it holds two.
    tp = await startTestPlatform('is', '10.198.24.0/24', PORT, { ANODYNE_PROVIDER_SEGMENT_POOL: '10.199.24.0/25' }, { plans });
    await tp.platform.identity.createUser({ username: 'is-admin', password: 'is-admin-password', groups: [SCOPES.admin] });
    for (const u of ['alice', 'bob'])
      await tp.platform.identity.createUser({ username: u, password: `${u}-password`, groups: [SCOPES.manage] });
    admin = tokenSource(tp, 'is-admin', 'is-admin-password');
    const profile = await call('POST', '/v1/network-profiles', {
      name: 'teams',
      pod_cidr: '10.200.0.0/16',
      service_cidr: '10.96.0.0/16',
      segment_pool: '10.199.24.64/26',
    });
    assert.equal(profile.status, 201, profile.text);
  });
  after(async () => {
    await tp?.stop();
  });

  it("each owner's cluster is on a segment of its own: from a node and a host-network pod of one, the other's etcd, kubelet, node port and masters do not answer; its API load balancer does", async (t) => {
    const tasks = await Promise.all(
      [
        ['ia', 'alice', 2, 'small'],
        ['ib', 'bob', 1, 'small-deny'],
      ].map(async ([name, owner, workers, plan]) => {
        const tok = await tp.platform.identity.token({ grant_type: 'password', username: String(owner), password: `${owner}-password` });
        const r = await https(tp.platform.url, tp.platform.caPem, 'POST', '/v1/clusters', {
          token: tok.access_token,
          body: JSON.stringify({
            name,
            plan_name: plan,
            network_profile_name: 'teams',
            parameters: { kubernetes_worker_instances: workers },
          }),
        });
        assert.equal(r.status, 202, r.text);
        return (r.body as { last_task_id: number }).last_task_id;
      }),
    );
    for (const id of tasks) {
      const task = await tp.platform.director.wait(id);
      assert.equal(task.state, 'done', JSON.stringify(task.error));
    }
    const views = Object.fromEntries(
      await Promise.all(['ia', 'ib'].map(async (c) => [c, (await call('GET', `/v1/clusters/${c}`)).body as ClusterView] as const)),
    );
    for (const c of ['ia', 'ib']) assert.equal(views[c]!.parameters.network_isolation, 'segment', c);
    // The profile's share of the pool is used up (the rest of the pool is not): a third cluster of the profile is
    // refused with its code before anything is made or recorded.
    assert.equal(tp.platform.provider.info().segments!.free, 2);
    const third = await call('POST', '/v1/clusters', {
      name: 'ic',
      plan_name: 'small',
      network_profile_name: 'teams',
      parameters: { kubernetes_worker_instances: 1 },
    });
    assert.equal(third.status, 503, third.text);
    assert.equal((third.body as { code: string }).code, 'ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED', third.text);
    assert.equal((await call('GET', '/v1/clusters/ic')).status, 404, 'no record of it');
    assert.deepEqual(await tp.platform.provider.listVms({ deployment: 'cluster-ic' }), [], 'no VM of it');
    const segments = await tp.platform.provider.listSegments();
    assert.deepEqual(segments.map((s) => s.name).sort(), ['cluster-ia', 'cluster-ib']);
    assert.deepEqual(segments.map((s) => s.range).sort(), ['10.199.24.64/27', '10.199.24.96/27'], "cut from the profile's share");
    const a = await vmsOf('ia');
    const b = await vmsOf('ib');
    const bLb = { ip: views['ib']!.kubernetes_master_ips[0]!, port: views['ib']!.parameters.kubernetes_master_port };

    // Cluster B serves an app on a node port; inside its own segment everything answers (so a refusal below is the segment's doing).
    const kb = await kubectlFor('ib');
    await deployApp(kb, tp.dir, 1, 0);
    await apply(kb, tp.dir, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'app-np', namespace: 'default' },
      spec: { type: 'NodePort', selector: { app: 'app' }, ports: [{ port: 80, targetPort: 8080, nodePort: NODE_PORT }] },
    });
    const targets: [string, string, number][] = [
      ["B's etcd", b['master/0']!.ip, 2379],
      ["B's API server (not through its load balancer)", b['master/0']!.ip, 6443],
      ["B's kubelet", b['worker/0']!.ip, 10250],
      ["B's node port", b['worker/0']!.ip, NODE_PORT],
    ];
    await until('B serves its node port inside its segment', () => connects(b['master/0']!.vm, b['worker/0']!.ip, NODE_PORT), 60_000);
    for (const [what, ip, port] of targets)
      assert.ok(await connects(b['master/0']!.vm, ip, port), `inside B: ${what} at ${ip}:${port} answers`);

    // From a node of A.
    for (const [what, ip, port] of targets)
      assert.equal(await connects(a['worker/0']!.vm, ip, port), false, `from A's node: ${what} at ${ip}:${port}`);
    for (const [what, ip, port] of [
      ["B's master", b['master/0']!.ip, 22],
      ["B's master", b['master/0']!.ip, 10250],
    ] as const)
      assert.equal(await connects(a['master/0']!.vm, ip, port), false, `from A's master: ${what} at ${ip}:${port}`);
    assert.ok(await connects(a['worker/0']!.vm, bLb.ip, bLb.port), "from A's node: B's API load balancer answers");

    // From a host-network pod of A (the node's own network namespace, as a pod sees it).
    const ka = await kubectlFor('ia');
    await apply(ka, tp.dir, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'hostnet', namespace: 'default' },
      spec: {
        hostNetwork: true,
        containers: [{ name: 'probe', image: busyboxRef(), imagePullPolicy: 'Never', command: ['sleep', '3600'] }],
        terminationGracePeriodSeconds: 0,
      },
    });
    await ka('wait', '--for=condition=Ready', 'pod/hostnet', '--timeout=120s');
    const fromPod = (ip: string, port: number) => podConnects('ia', 'default', 'hostnet', ip, port);
    for (const [what, ip, port] of targets)
      assert.equal(await fromPod(ip, port), false, `from A's host-network pod: ${what} at ${ip}:${port}`);
    assert.ok(await fromPod(bLb.ip, bLb.port), "from A's host-network pod: B's API load balancer answers");
    // B's users still reach it through its load balancer, from the platform's host.
    assert.match(await kb('get', '--raw', '/version'), /gitVersion/);
    t.diagnostic(`A ${JSON.stringify(a)}; B ${JSON.stringify(b)}; B's load balancer ${bLb.ip}:${bLb.port}`);
  });

  it('NetworkPolicy is enforced inside a cluster: default deny across namespaces, an allow rule opens exactly its port, egress rules hold, removal restores traffic', async (t) => {
    const ka = await kubectlFor('ia');
    const pod = (name: string, namespace: string, node: string, labels: Record<string, string>, containers: unknown[]) =>
      apply(ka, tp.dir, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace, labels },
        spec: { nodeName: node, containers, terminationGracePeriodSeconds: 0 },
      });
    const httpd = (port: number) => ({
      name: `httpd-${port}`,
      image: busyboxRef(),
      imagePullPolicy: 'Never',
      command: ['httpd', '-f', '-p', String(port), '-h', '/www'],
    });
    const sleeper = { name: 'client', image: busyboxRef(), imagePullPolicy: 'Never', command: ['sleep', '3600'] };
    for (const ns of ['srv', 'cli']) await apply(ka, tp.dir, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    // The server on worker-0; a client beside it and one on the other worker (bridged and routed traffic both).
    await pod('web', 'srv', 'worker-0', { app: 'web' }, [httpd(8080), httpd(8081)]);
    await pod('near', 'cli', 'worker-0', { role: 'near' }, [sleeper]);
    await pod('far', 'cli', 'worker-1', { role: 'far' }, [sleeper]);
    await ka('wait', '--for=condition=Ready', '-n', 'srv', 'pod/web', '--timeout=120s');
    await ka('wait', '--for=condition=Ready', '-n', 'cli', 'pod/near', 'pod/far', '--timeout=120s');
    const ip = (await ka('get', 'pod', '-n', 'srv', 'web', '-o', 'jsonpath={.status.podIP}')).trim();
    const get = (client: string, port: number) => podConnects('ia', 'cli', client, ip, port);
    const expect = async (want: Record<string, boolean>, why: string) => {
      const seen: Record<string, boolean> = {};
      for (const k of Object.keys(want)) {
        const [client, port] = k.split(':') as [string, string];
        seen[k] = await get(client, Number(port));
      }
      assert.deepEqual(seen, want, why);
    };
    /** Waits until `client` → `port` is as wanted (a policy is in force): how long it took, in ms. */
    const settle = async (client: string, port: number, open: boolean): Promise<number> => {
      const started = performance.now();
      for (let i = 0; i < 60; i++) {
        if ((await get(client, port)) === open) return Math.round(performance.now() - started);
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.fail(`${client} → ${port} did not become ${open ? 'open' : 'closed'} in time`);
    };
    await expect({ 'near:8080': true, 'near:8081': true, 'far:8080': true, 'far:8081': true }, 'no policy: everything answers');

    const policy = (name: string, namespace: string, spec: object) =>
      apply(ka, tp.dir, { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec });
    await policy('default-deny', 'srv', { podSelector: {}, policyTypes: ['Ingress'] });
    const denyMs = await settle('far', 8080, false);
    await expect(
      { 'near:8080': false, 'near:8081': false, 'far:8080': false, 'far:8081': false },
      'default deny: nothing from another namespace',
    );

    await policy('allow-cli-8080', 'srv', {
      podSelector: { matchLabels: { app: 'web' } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'cli' } } }],
          ports: [{ protocol: 'TCP', port: 8080 }],
        },
      ],
    });
    const allowMs = await settle('far', 8080, true);
    await settle('near', 8080, true);
    await expect({ 'near:8080': true, 'near:8081': false, 'far:8080': true, 'far:8081': false }, 'the allow rule opens exactly port 8080');

    // Egress: the near client may talk to nothing; the far one is not selected and still reaches 8080.
    await policy('near-no-egress', 'cli', { podSelector: { matchLabels: { role: 'near' } }, policyTypes: ['Egress'], egress: [] });
    await settle('near', 8080, false);
    await expect({ 'near:8080': false, 'far:8080': true }, 'an egress rule holds even where the destination allows');

    for (const [ns, name] of [
      ['srv', 'default-deny'],
      ['srv', 'allow-cli-8080'],
      ['cli', 'near-no-egress'],
    ] as const)
      await ka('delete', 'networkpolicy', '-n', ns, name);
    const restoreMs = await settle('far', 8081, true);
    await settle('near', 8081, true);
    await expect(
      { 'near:8080': true, 'near:8081': true, 'far:8080': true, 'far:8081': true },
      'policies removed: everything answers again',
    );
    t.diagnostic(
      `default deny in force after ${denyMs} ms, the allow rule after ${allowMs} ms, traffic back ${restoreMs} ms after the policies were deleted`,
    );
    const worker = (await tp.platform.director.instances('cluster-ia')).find((r) => r.group_name === 'worker')!;
    const rss = await localProvider(tp.platform).execInVm(worker.vm_id!, [
      'sh',
      '-c',
      'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = network-policy ] && grep VmRSS $p/status; done; true',
    ]);
    t.diagnostic(`the network policy controller on a worker: ${rss.stdout.trim() || 'not found'}`);
  });

  it(
    "upstream's NetworkPolicy e2e suite (test/e2e/network/netpol) passes on a cluster, every spec that applies",
    { skip: NETPOL_E2E ? false : 'the netpol e2e suite is not built: run release/tools.sh netpol-e2e (make test builds it)' },
    async (t) => {
      const dir = NETPOL_E2E!;
      const workers = (await tp.platform.director.instances('cluster-ia')).filter((r) => r.group_name === 'worker').map((r) => r.vm_id!);
      const image = readFileSync(join(dir, 'agnhost.tar'));
      for (const vm of workers)
        await localProvider(tp.platform).execInVm(vm, ['ctr', '-n', 'k8s.io', 'images', 'import', '-'], {
          input: image,
          timeoutMs: 120_000,
        });
      await kubectlFor('ia');
      // Never the SCTP connectivity specs: the suite marks them as needing a kernel and a network plugin that carry SCTP,
      // which these VMs' kernel does not offer (the specs that check SCTP in a policy without SCTP traffic do run).
      const { specs, seconds } = await runNetpolE2e(dir, {
        kubeconfig: join(tp.dir, 'ia.kubeconfig'),
        workDir: mkdtempSync(join(tp.dir, 'netpol-e2e-')),
        focus: NETPOL_ALL
          ? ['[sig-network] Netpol ']
          : NETPOL_SAMPLE.map((s) => `[sig-network] Netpol NetworkPolicy between server and client ${s}`),
        skip: 'SCTPConnectivity',
        procs: 3,
        timeoutMinutes: NETPOL_ALL ? 40 : 20,
      });
      // The suite's binary carries test/e2e/common's specs too (the framework imports them); those are filtered out.
      const netpol = specs.filter((s) => s.name.startsWith('[sig-network] Netpol '));
      const ran = netpol.filter((s) => s.state !== 'skipped' || s.failure !== undefined);
      const by = (state: string) => ran.filter((s) => s.state === state);
      t.diagnostic(
        `upstream netpol e2e (${NETPOL_ALL ? 'every spec' : 'a sample: ANODYNE_NETPOL_E2E_ALL=true runs every spec'}): ${ran.length} specs ` +
          `of ${netpol.length} in ${seconds} s (3 processes): ${by('passed').length} passed, ${by('skipped').length} skipped by the suite, ` +
          `${ran.length - by('passed').length - by('skipped').length} failed`,
      );
      for (const s of ran) t.diagnostic(`  ${s.state.padEnd(7)} ${String(s.seconds).padStart(4)} s  ${s.name}`);
      assert.deepEqual(
        ran.filter((s) => s.state !== 'passed' && s.state !== 'skipped').map((s) => `${s.name}: ${s.state} ${s.failure ?? ''}`),
        [],
        'every spec that ran passed',
      );
      const want = NETPOL_ALL ? 45 : NETPOL_SAMPLE.length;
      assert.ok(by('passed').length >= want, `at least ${want} specs ran and passed (${by('passed').length})`);
    },
  );

  it("a plan's default deny: a new namespace gets a policy refusing ingress, once; the cluster's own namespaces do not", async () => {
    const kb = await kubectlFor('ib');
    await apply(kb, tp.dir, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team' } });
    await until(
      'the default deny in the new namespace',
      async () => (await kb('get', 'networkpolicy', '-n', 'team', '-o', 'name')).includes('anodyne-default-deny'),
      60_000,
    );
    assert.equal(
      (await kb('get', 'networkpolicy', '-n', 'default', '-o', 'name')).trim(),
      '',
      'namespaces the cluster was made with get none',
    );
    await apply(kb, tp.dir, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web', namespace: 'team', labels: { app: 'web' } },
      spec: {
        containers: [{ name: 'web', image: busyboxRef(), imagePullPolicy: 'Never', command: ['httpd', '-f', '-p', '8080', '-h', '/www'] }],
        terminationGracePeriodSeconds: 0,
      },
    });
    await apply(kb, tp.dir, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'client', namespace: 'default' },
      spec: {
        containers: [{ name: 'client', image: busyboxRef(), imagePullPolicy: 'Never', command: ['sleep', '3600'] }],
        terminationGracePeriodSeconds: 0,
      },
    });
    await kb('wait', '--for=condition=Ready', '-n', 'team', 'pod/web', '--timeout=120s');
    await kb('wait', '--for=condition=Ready', 'pod/client', '--timeout=120s');
    const ip = (await kb('get', 'pod', '-n', 'team', 'web', '-o', 'jsonpath={.status.podIP}')).trim();
    const opens = () => podConnects('ib', 'default', 'client', ip, 8080);
    assert.equal(await opens(), false, 'the new namespace refuses ingress');
    // Its owner removes the policy: traffic flows, and the platform does not bring the policy back.
    await kb('delete', 'networkpolicy', '-n', 'team', 'anodyne-default-deny');
    await until('traffic into the namespace', opens, 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await kb('get', 'networkpolicy', '-n', 'team', '-o', 'name')).trim(), '', 'a deleted default deny stays deleted');
  });

  it('deleting the clusters frees their segments: the pool is whole and the host holds no segment bridge', async () => {
    const pool = tp.platform.provider.info().segments!;
    for (const c of ['ia', 'ib']) assert.equal((await call('DELETE', `/v1/clusters/${c}`)).status, 202);
    await until(
      'both clusters gone',
      async () =>
        ((await call('GET', '/v1/clusters')).body as unknown[]).length === 0 && (await tp.platform.provider.listSegments()).length === 0,
      180_000,
    );
    assert.equal(tp.platform.provider.info().segments!.free, pool.total);
    const links = (await exec(['ip', '-o', 'link', 'show'])).stdout;
    assert.ok(!links.includes(`ans${tp.tag}-`), `no segment bridge of tag ${tp.tag} is left`);
  });

  it('20 clusters made and deleted, as many at a time as the pool holds: the pool is whole again and the host holds nothing of them', async (t) => {
    const pool = tp.platform.provider.info().segments!;
    const started = performance.now();
    for (let round = 0; round < 20 / pool.total; round++) {
      const names = Array.from({ length: pool.total }, (_, i) => `cycle-${round}-${i}`);
      const made = await Promise.all(
        names.map(async (name) => {
          const r = await call('POST', '/v1/clusters', { name, plan_name: 'small', parameters: { kubernetes_worker_instances: 0 } });
          assert.equal(r.status, 202, r.text);
          return (r.body as { last_task_id: number }).last_task_id;
        }),
      );
      for (const id of made) assert.equal((await tp.platform.director.wait(id)).state, 'done', `round ${round}`);
      for (const name of names) assert.equal((await call('DELETE', `/v1/clusters/${name}`)).status, 202);
      await until('the round deleted', async () => (await tp.platform.provider.listSegments()).length === 0, 120_000);
      // The next round needs every segment back, so the records must be gone too (the reaper, within 10 s).
      await until('the round reaped', async () => ((await call('GET', '/v1/clusters')).body as unknown[]).length === 0, 60_000);
    }
    t.diagnostic(
      `20 clusters of one master made and deleted, ${pool.total} at a time, in ${((performance.now() - started) / 1000).toFixed(0)} s`,
    );
    assert.equal(tp.platform.provider.info().segments!.free, pool.total, 'the pool is whole');
    assert.deepEqual(await tp.platform.provider.listVms(), [], 'no VM');
    assert.deepEqual(await tp.platform.provider.listLoadBalancers(), [], 'no load balancer');
    const links = (await exec(['ip', '-o', 'link', 'show'])).stdout;
    assert.ok(!links.includes(`ans${tp.tag}-`), 'no segment bridge');
    assert.deepEqual(
      (await exec(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.includes(`anodyne-${tp.tag}-`)),
      [],
      'no VM or load balancer namespace',
    );
    const rules = (await exec(['iptables', '-w', '-S', 'FORWARD'])).stdout.split('\n').filter((l) => l.includes(`anodyne:${tp.tag}`));
    assert.deepEqual(
      rules.filter((l) => /ans[a-z0-9]+-\d/.test(l) || l.includes('/32')),
      [],
      "no rule of a deleted segment or load balancer (the tag's standing rules stay while the platform runs)",
    );
  });
});
