// CA rotation on a real 3+3 cluster: every CA and the service-account key replaced while two clients count their answers.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { exec, skipUnless, CommandError, ManualClock, silentLogger } from '@anodyne/common';
import { CredStore, loadKeyFile } from '@anodyne/credstore';
import { locateRelease } from '@anodyne/release';
import { SCOPES } from '@anodyne/identity';
import { pemSet, type ClusterEndpoint } from '@anodyne/clusters';
import type { AvailabilityReport, Task } from '@anodyne/director';
import {
  startTestPlatform,
  https,
  localProvider,
  type HttpResult,
  type TestPlatform,
  tokenSource,
  holdQuietHost,
} from './testing/index.js';
import {
  appLoop,
  configMapLoop,
  deployApp,
  aroundFailure,
  vmLogDirs,
  eventLoopWatch,
  line,
  until,
  type Kubectl,
} from './testing/workloads.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_900 + (process.pid % 90);
const REPO = join(import.meta.dirname, '..', '..', '..');
const CAS = ['ca', 'etcd-ca', 'front-proxy-ca'];

/** Every certificate of a text (a PEM file, or PEM indented in YAML), each as a PEM of its own. */
const pems = (text: string): string[] =>
  [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((m) => {
    const body = m[1]!.replace(/\s+/g, '');
    return `-----BEGIN CERTIFICATE-----\n${body.replace(/(.{64})/g, '$1\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
  });

/** Every file under dir whose text holds a certificate. */
function certificateFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...certificateFiles(p));
    else if (e.isFile() && statSync(p).size < 1_000_000 && readFileSync(p, 'utf8').includes('-----BEGIN CERTIFICATE-----')) out.push(p);
  }
  return out;
}

/** The certificate a TLS server presents (not checked: what is checked here is who issued it). */
function presented(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, rejectUnauthorized: false, timeout: 5000 }, () => {
      const raw = s.getPeerCertificate().raw;
      s.destroy();
      resolve(new X509Certificate(raw).toString());
    });
    s.on('error', reject);
    s.on('timeout', () => s.destroy(new Error(`${host}:${port}: no handshake in 5 s`)));
  });
}

describe('CA rotation with no downtime on a real cluster', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: () => Promise<string>;
  let dir: string;
  const loops: { stop(): Promise<AvailabilityReport> }[] = [];
  const call = async (method: string, path: string, body?: unknown): Promise<HttpResult> =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: await admin(),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  /** The admin kubeconfig as a client gets it from the API, each time afresh. */
  const endpointFromApi = async (cluster: string): Promise<ClusterEndpoint> => {
    const r = await call('GET', `/v1/clusters/${cluster}/kubeconfig`);
    assert.equal(r.status, 200, r.text);
    const k = parse((r.body as { kubeconfig: string }).kubeconfig) as {
      clusters: { cluster: { server: string; 'certificate-authority-data': string } }[];
      users: { user: { 'client-certificate-data': string; 'client-key-data': string } }[];
    };
    const b = (s: string) => Buffer.from(s, 'base64').toString('utf8');
    return {
      cluster,
      server: k.clusters[0]!.cluster.server,
      admin: {
        ca: b(k.clusters[0]!.cluster['certificate-authority-data']),
        certificate: b(k.users[0]!.user['client-certificate-data']),
        private_key: b(k.users[0]!.user['client-key-data']),
      },
    };
  };
  /** `openssl verify` of one certificate against a CA file: true when it chains. */
  const verifies = async (caFile: string, pem: string): Promise<boolean> => {
    const f = join(dir, `leaf-${process.hrtime.bigint()}.pem`);
    writeFileSync(f, pem);
    try {
      await exec(['openssl', 'verify', '-CAfile', caFile, f]);
      return true;
    } catch (err) {
      if (err instanceof CommandError) return false;
      throw err;
    } finally {
      rmSync(f, { force: true });
    }
  };

  let release = () => {};
  before(async () => {
    release = holdQuietHost(); // suites that start VMs wait until it ends
    dir = mkdtempSync(join(tmpdir(), 'anodyne-rotation-'));
    // Renewal passes every 20 s, so that the test sees one act.
    tp = await startTestPlatform('ro', '10.198.21.0/24', PORT, { ANODYNE_CERTIFICATES_RENEWAL_PASS_SECONDS: '20' });
    await tp.platform.identity.createUser({ username: 'ro-admin', password: 'ro-admin-password', groups: [SCOPES.admin] });
    admin = tokenSource(tp, 'ro-admin', 'ro-admin-password');
  });
  after(async () => {
    release();
    await Promise.all(loops.map((l) => l.stop()));
    await tp?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rotates every CA and the service-account key of a 3+3 cluster with no failed request; nothing chains to the old CAs after', async (t) => {
    const created = await call('POST', '/v1/clusters', {
      name: 'ca1',
      plan_name: 'ha',
      parameters: { kubernetes_worker_instances: 3 },
    });
    assert.equal(created.status, 202, created.text);
    const createTask = await tp.platform.director.wait((created.body as { last_task_id: number }).last_task_id);
    assert.equal(createTask.state, 'done', JSON.stringify(createTask.error));
    const kubeconfig = join(dir, 'admin.yaml');
    const fetchKubeconfig = async () =>
      writeFileSync(kubeconfig, ((await call('GET', '/v1/clusters/ca1/kubeconfig')).body as { kubeconfig: string }).kubeconfig, {
        mode: 0o600,
      });
    await fetchKubeconfig();
    const kubectl: Kubectl = async (...args) =>
      (await exec([tp.platform.releaseKubectl, '--kubeconfig', kubeconfig, ...args], { timeoutMs: 60_000 })).stdout;
    await until(
      '3 nodes Ready',
      async () => (await kubectl('get', 'nodes', '--no-headers').catch(() => '')).split('\n').filter((l) => / Ready /.test(l)).length === 3,
      180_000,
    );
    await deployApp(kubectl, dir, 3, 2);

    // What the cluster trusts now: one version of each CA, and the service-account key.
    const creds = tp.platform.creds;
    const path = (n: string) => `/deployments/cluster-ca1/${n}`;
    const oldCas = await Promise.all(CAS.map(async (n) => (await creds.get<'certificate'>(path(n))).value.certificate));
    const oldSa = (await creds.get<'rsa'>(path('service-account-key'))).value.public_key;
    const oldCaFile = join(dir, 'old-cas.pem');
    writeFileSync(oldCaFile, oldCas.join(''));
    for (const n of CAS) assert.equal(pems((await creds.get<'certificate'>(path(n))).value.ca).length, 1);

    // A client of the API (ConfigMaps created, read, deleted) and a client of the app, both taking
    // their credentials from the platform's API every 2 s, as a client told to refresh them does.
    const api = configMapLoop(() => endpointFromApi('ca1'));
    const app = appLoop(() => endpointFromApi('ca1'));
    loops.push(api, app);
    const stalls = eventLoopWatch();
    const started = Date.now();
    const r = await call('POST', '/v1/clusters/ca1/rotate-certificates', { ca: true });
    assert.equal(r.status, 202, r.text);
    const task = await tp.platform.director.wait((r.body as { last_task_id: number }).last_task_id);
    const took = Date.now() - started;
    const [apiCount, appCount] = [await api.stop(), await app.stop()];
    t.diagnostic(`CA rotation of a 3+3 cluster: ${(took / 1000).toFixed(1)} s, task ${task.type} ${task.state}`);
    t.diagnostic(`API client (ConfigMap create/read/delete): ${line(apiCount)}`);
    t.diagnostic(`app client (through its Service): ${line(appCount)}`);
    t.diagnostic(stalls.stop());
    const measured = (task.result as { availability?: AvailabilityReport } | null)?.availability;
    t.diagnostic(`the platform's own probe: ${measured ? line(measured) : 'none'}`);
    const events = await tp.platform.director.tasks.events(task.id);
    // On a failure: the task's steps, the cluster's events and the VMs' warnings around it, in the
    // diagnostics and in the assertion's message (which is what a CI summary keeps).
    let around = '';
    if (apiCount.failed + appCount.failed > 0) {
      await fetchKubeconfig();
      const logDirs = await vmLogDirs(tp.platform, 'cluster-ca1');
      const lines = (await Promise.all([apiCount, appCount].map((r) => aroundFailure(r, events, kubectl, logDirs)))).flat();
      for (const l of lines) t.diagnostic(l);
      around = `\n${lines.join('\n')}`;
    }
    assert.equal(task.state, 'done', JSON.stringify(task.error));
    assert.equal(task.type, 'rotate_ca');
    assert.ok(apiCount.requests > 100 && appCount.requests > 50, 'both loops ran through the rotation');
    assert.equal(apiCount.failed, 0, `no request to the cluster API failed: ${line(apiCount)}${around}`);
    assert.equal(appCount.failed, 0, `no request to the app failed: ${line(appCount)}${around}`);
    assert.equal(measured?.failed, 0, `the platform counted no failure either: ${measured ? line(measured) : 'none'}`);
    assert.deepEqual(
      events.filter((e) => e.stage === 'Rotating the CAs' && e.state === 'finished').map((e) => e.index),
      [1, 2, 3],
      'the three steps, in order',
    );
    // Each step rolled every instance: masters one at a time, then the workers.
    const rolled = events.filter(
      (e) => e.stage.startsWith('Updating') && e.state === 'finished' && /^(master|worker)\//.test(e.instance ?? ''),
    );
    assert.equal(rolled.length, 18, rolled.map((e) => e.instance).join(' '));

    await fetchKubeconfig(); // the admin kubeconfig of before trusts the old CA only

    // Every CA is new and alone in its bundle; the old service-account key still verifies (tokens
    // already issued), the new one signs.
    const newCas = await Promise.all(CAS.map(async (n) => (await creds.get<'certificate'>(path(n))).value));
    for (const [i, c] of newCas.entries()) {
      assert.notEqual(c.certificate, oldCas[i], `${CAS[i]} is new`);
      assert.deepEqual(pems(c.ca), pems(c.certificate), `${CAS[i]}: only the new CA is trusted`);
    }
    const sa = (await creds.get<'rsa'>(path('service-account-key'))).value;
    assert.notEqual(sa.public_key, oldSa);
    assert.ok(sa.public_keys!.startsWith(sa.public_key) && sa.public_keys!.includes(oldSa.trim()));
    const newCaFile = join(dir, 'new-cas.pem');
    writeFileSync(newCaFile, newCas.map((c) => c.certificate).join(''));
    const oldSet = pemSet(oldCas.join(''));

    // Every certificate on every VM: a leaf chains to a new CA and not to an old one; no bundle holds an old CA.
    const instances = await tp.platform.director.instances('cluster-ca1');
    let leaves = 0;
    for (const row of instances) {
      const root = `/proc/${localProvider(tp.platform).initPid(row.vm_id!)}/root/var/lib/anodyne/agent/jobs`;
      for (const f of certificateFiles(root)) {
        for (const pem of pems(readFileSync(f, 'utf8'))) {
          const name = `${row.group_name}/${row.idx} ${f.slice(root.length)}`;
          assert.ok(!oldSet.has([...pemSet(pem)][0]!), `${name}: still holds an old CA`);
          if (new X509Certificate(pem).ca) continue;
          leaves++;
          assert.equal(await verifies(oldCaFile, pem), false, `${name} chains to an old CA`);
          assert.equal(await verifies(newCaFile, pem), true, `${name} does not chain to the new CAs`);
        }
      }
    }
    // What the running processes present: each API server, etcd member and kubelet.
    const served: [string, string][] = [];
    for (const row of instances) {
      const ports = row.group_name === 'master' ? [6443, 2379, 2380] : [10250];
      for (const port of ports) served.push([`${row.group_name}/${row.idx}:${port}`, await presented(row.ip!, port)]);
    }
    // metrics-server's serving certificate, as the cluster keeps it.
    const metricsTls = await kubectl('-n', 'kube-system', 'get', 'secret', 'metrics-server-tls', '-o', 'jsonpath={.data.tls\\.crt}');
    served.push(['metrics-server-tls', Buffer.from(metricsTls, 'base64').toString('utf8')]);
    for (const [where, pem] of served) {
      assert.equal(await verifies(oldCaFile, pem), false, `${where} presents a certificate of an old CA`);
      assert.equal(await verifies(newCaFile, pem), true, `${where} presents a certificate the new CAs did not issue`);
    }
    t.diagnostic(`${leaves} certificates in the VMs' files and ${served.length} presented by servers: none chains to an old CA`);

    // Pods trust the new CA alone (kube-root-ca.crt), and the aggregated metrics API answers through
    // the new front-proxy and serving certificates.
    await until(
      'kube-root-ca.crt to hold the new CA alone',
      async () =>
        (await kubectl('get', 'configmap', 'kube-root-ca.crt', '-o', 'jsonpath={.data.ca\\.crt}')).trim() === newCas[0]!.certificate.trim(),
      120_000,
    );
    await until(
      'the metrics API to answer',
      async () => (await kubectl('get', '--raw', '/apis/metrics.k8s.io/v1beta1/nodes').catch(() => '')).includes('"NodeMetricsList"'),
      120_000,
    );

    // A user's kubeconfig from get-credentials works, and trusts the new CA.
    await tp.platform.identity.createUser({ username: 'ro-user', password: 'ro-user-password', groups: [SCOPES.admin] });
    const home = join(dir, 'home');
    mkdirSync(home, { recursive: true });
    const env = { ...process.env, HOME: home, KUBECONFIG: join(home, '.kube', 'config') };
    const cli = (...args: string[]) => exec([join(REPO, 'bin', 'anodyne'), ...args], { env, timeoutMs: 60_000 });
    await cli('login', '-a', tp.platform.url, '-u', 'ro-user', '-p', 'ro-user-password', '--ca-cert', tp.platform.caFile);
    assert.match((await cli('get-credentials', 'ca1')).stdout, /context ca1 selected/);
    const userConfig = parse(readFileSync(join(home, '.kube', 'config'), 'utf8')) as {
      clusters: { name: string; cluster: { 'certificate-authority-data': string } }[];
    };
    const userCa = Buffer.from(userConfig.clusters.find((c) => c.name === 'ca1')!.cluster['certificate-authority-data'], 'base64');
    assert.equal(userCa.toString('utf8').trim(), newCas[0]!.certificate.trim());
    // Every node Ready through it: a kubelet restarted last may not have posted its status yet (and under a loaded
    // machine a status can lag past the 40 s grace), so this waits up to two minutes and says how long it took.
    const readyStarted = performance.now();
    let nodes = '';
    const allReady = () => nodes.split('\n').filter((l) => / Ready /.test(l)).length === 3;
    for (let i = 0; i < 120 && !allReady(); i++) {
      nodes = (await exec([locateRelease().bin('kubectl'), 'get', 'nodes', '--no-headers'], { env, timeoutMs: 60_000 })).stdout;
      if (!allReady()) await new Promise((r) => setTimeout(r, 1000));
    }
    if (!allReady()) nodes += (await kubectl('describe', 'nodes').catch((e: Error) => e.message)).slice(-4000);
    assert.ok(allReady(), nodes);
    t.diagnostic(`every node Ready through the user's kubeconfig ${Math.round(performance.now() - readyStarted)} ms after asking`);

    // Automatic renewal: metrics-server's certificate made to expire in 2 days (issued again by a
    // credential store whose clock is 363 days behind) is found by the scheduled pass and renewed
    // with a rolling update, with no operator action; /metrics shows it expiring before, not after.
    const msName = path('metrics-server');
    const behind = new CredStore({
      store: tp.platform.store,
      keys: loadKeyFile(join(tp.dir, 'keys', 'encryption.key')),
      clock: new ManualClock(new Date(Date.now() - 363 * 86_400_000)),
      logger: silentLogger(),
    });
    const short = await behind.regenerate(msName, { actor: 'test' });
    // And worker/0's agent: its serving certificate too.
    const worker0 = instances.find((r) => r.group_name === 'worker' && r.idx === 0)!;
    const agentName = `/director/agents/${worker0.agent_id}`;
    const agentShort = await behind.regenerate(agentName, { actor: 'test' });
    assert.equal(
      await presented(worker0.ip!, 6868).then((p) => new X509Certificate(p).serialNumber),
      new X509Certificate((await creds.get<'certificate'>(agentName, { actor: 'test', version: agentShort.version - 1 })).value.certificate)
        .serialNumber,
      'the agent serves the certificate it was created with',
    );
    const metrics = async () => (await https(tp.platform.url, tp.platform.caPem, 'GET', '/metrics')).text;
    const expiringLine = `anodyne_certificate_expiring{name="${msName}",ca="false"} 1`;
    const before = await metrics();
    assert.ok(
      before.includes(expiringLine),
      `before: ${before
        .split('\n')
        .filter((l) => l.includes('certificate_expiring'))
        .join('\n')}`,
    );
    const agentLine = `anodyne_certificate_expiring{name="${agentName}",ca="false"} 1`;
    assert.ok(before.includes(agentLine), 'the agent certificate is shown expiring');
    const expiryOf = (text: string) =>
      Number(new RegExp(`^anodyne_certificate_expiry_timestamp_seconds\\{name="${msName}",ca="false"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    assert.ok(Math.abs(expiryOf(before) - Date.parse(short.expires_at!) / 1000) < 2, 'the expiry /metrics shows is the certificate’s');
    t.diagnostic(`metrics-server's certificate set to expire at ${short.expires_at}; /metrics: ${expiringLine}`);
    let renewalTask: Task | undefined;
    await until(
      'the scheduled pass to renew it',
      async () => {
        const tasks = await tp.platform.director.tasks.list({ deployment: 'cluster-ca1' });
        renewalTask = tasks.find((x) => x.owner === 'certificate-renewal');
        return renewalTask !== undefined && ['done', 'error', 'cancelled'].includes(renewalTask.state);
      },
      300_000,
    );
    assert.equal(renewalTask!.state, 'done', JSON.stringify(renewalTask!.error));
    const renewed = await creds.get<'certificate'>(msName);
    assert.ok(Date.parse(renewed.expires_at!) > Date.now() + 300 * 86_400_000, `renewed until ${renewed.expires_at}`);
    const after = await metrics();
    assert.ok(!after.includes(expiringLine) && !after.includes(agentLine), 'no longer shown as expiring');
    assert.ok(expiryOf(after) > Date.now() / 1000 + 300 * 86_400);
    await until(
      'the renewed certificate to be served',
      async () => {
        const tls = await kubectl('-n', 'kube-system', 'get', 'secret', 'metrics-server-tls', '-o', 'jsonpath={.data.tls\\.crt}');
        return pems(Buffer.from(tls, 'base64').toString('utf8'))[0] === pems(renewed.value.certificate)[0];
      },
      60_000,
    );
    // The alert is in the events feed (and the audit log), with the renewal that followed.
    const alerts = (await call('GET', '/v1/events')).body as { id: number; kind: string; target: string }[];
    assert.ok(
      alerts.some((e) => e.kind === 'certificate_expiring' && e.target === msName),
      JSON.stringify(alerts.slice(0, 5)),
    );
    const audit = (await call('GET', '/v1/audit?actor=certificate-renewal')).body as { action: string; target: string }[];
    assert.ok(audit.some((a) => a.action === 'cluster.rotate_certificates' && a.target === 'ca1'));
    assert.match(after, /^anodyne_task_duration_seconds_count\{type="rotate_ca",state="done"\} 1$/m);
    t.diagnostic(`renewed by task ${renewalTask!.id} (${renewalTask!.type}); now expires ${renewed.expires_at}`);
    // The agent took its renewed certificate: it serves it, and the director still reaches it.
    const agentNow = await creds.get<'certificate'>(agentName);
    assert.ok(agentNow.version > agentShort.version && Date.parse(agentNow.expires_at!) > Date.now() + 300 * 86_400_000);
    assert.equal(
      new X509Certificate(await presented(worker0.ip!, 6868)).serialNumber,
      new X509Certificate(agentNow.value.certificate).serialNumber,
    );
    assert.ok((await tp.platform.director.agentState(worker0)).healthy);
    // Instances by health and each agent's vitals, as the health monitor's next pass sees them.
    await until(
      '/metrics to show 6 running instances and worker/0’s vitals',
      async () => {
        const m = await metrics();
        return (
          /^anodyne_instances\{health="running"\} 6$/m.test(m) &&
          /^anodyne_agent_memory_bytes\{deployment="cluster-ca1",instance="worker\/0"\} \d+/m.test(m)
        );
      },
      30_000,
    );

    // Bad input is refused before any task starts.
    const tasksBefore = (await tp.platform.director.tasks.list()).length;
    const bad = await call('POST', '/v1/clusters/ca1/rotate-certificates', { ca: 'yes' });
    assert.equal(bad.status, 400, bad.text);
    assert.equal((bad.body as { code: string }).code, 'ANODYNE_E_INVALID_INPUT');
    assert.equal((await tp.platform.director.tasks.list()).length, tasksBefore, 'no task started');
  });
});
