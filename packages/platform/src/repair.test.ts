// Repair through the API on a real cluster: the cloud check finds what was done behind the platform's back and fixes each with the chosen resolution.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, skipUnless, systemClock } from '@anodyne/common';
import { selfSigned } from '@anodyne/common/testing';
import { apiProbe } from '@anodyne/clusters';
import { SCOPES } from '@anodyne/identity';
import { RESOLUTIONS, FINDING_TYPES } from '@anodyne/director';
import { schemas as S, type CloudCheckReport } from '@anodyne/client';
import {
  startTestPlatform,
  https,
  localProvider,
  type HttpResult,
  type TestPlatform,
  tokenSource,
  awaitQuietHost,
} from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const PORT = 19_000 + (process.pid % 90);

describe('repair: the cloud check on a real cluster', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let admin: () => Promise<string>;
  let dir: string;
  const call = async (method: string, path: string, body?: unknown): Promise<HttpResult> =>
    https(tp.platform.url, tp.platform.caPem, method, path, {
      token: await admin(),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  /** Starts a cloud check and returns its finished task's report. */
  const cloudCheck = async (body: object): Promise<CloudCheckReport> => {
    const r = await call('POST', '/v1/cloud-check', body);
    assert.equal(r.status, 202, r.text);
    const t = await tp.platform.director.wait((r.body as { id: number }).id);
    assert.equal(t.state, 'done', JSON.stringify(t.error));
    return t.result as CloudCheckReport;
  };

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    dir = mkdtempSync(join(tmpdir(), 'anodyne-repair-'));
    // The resurrector is off: what is broken here stays broken until the cloud check fixes it.
    tp = await startTestPlatform('rp', '10.198.20.0/24', PORT, { ANODYNE_DIRECTOR_RESURRECTION: 'false' });
    await tp.platform.identity.createUser({ username: 'rp-admin', password: 'rp-admin-password', groups: [SCOPES.admin] });
    admin = tokenSource(tp, 'rp-admin', 'rp-admin-password');
  });
  after(async () => {
    await tp?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the API's resolutions and finding types are the director's", () => {
    assert.deepEqual(
      S.CloudResolution.anyOf.map((x) => x.const),
      [...RESOLUTIONS],
    );
    assert.deepEqual(
      S.CloudFindingType.anyOf.map((x) => x.const),
      [...FINDING_TYPES],
    );
  });

  it('finds a VM made behind its back, a deleted disk directory, an orphan load balancer and a stopped agent; fixes each as chosen; nothing else changes', async (t) => {
    const created = await call('POST', '/v1/clusters', { name: 'rp1', plan_name: 'small', parameters: { kubernetes_worker_instances: 1 } });
    assert.equal(created.status, 202, created.text);
    const done = await tp.platform.director.wait((created.body as { last_task_id: number }).last_task_id);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    assert.deepEqual((await cloudCheck({})).findings, [], 'a new cluster has nothing to report');

    const deployment = 'cluster-rp1';
    const provider = localProvider(tp.platform);
    const before = await tp.platform.director.instances(deployment);
    const master = before.find((r) => r.group_name === 'master')!;
    const worker = before.find((r) => r.group_name === 'worker')!;
    // 1. a VM the platform did not make; 2. the master's disk directory deleted; 3. a load
    // balancer nobody asked for; 4. the worker's agent stopped (SIGSTOP: its VM stays up).
    // Someone started an agent of the cluster's release by hand, with a certificate of their own.
    const agentProgram = (await provider.listVms({ deployment })).find((v) => v.id === worker.vm_id)!.metadata['agent_program']!;
    const own = await selfSigned(dir, 'intruder');
    const intruder = await provider.createVm({
      agentId: 'intruder',
      image: 'host-usr',
      vmType: 'small',
      network: { network: 'default' },
      env: {
        ANODYNE_AGENT_PROGRAM: agentProgram,
        ANODYNE_AGENT_LISTEN: '0.0.0.0:6868',
        ANODYNE_AGENT_CERT: own.cert,
        ANODYNE_AGENT_KEY: own.key,
        ANODYNE_AGENT_CA: own.cert,
      },
    });
    assert.equal(await provider.hasVm(intruder.id), true, 'the VM made behind its back runs');
    rmSync(join(tp.dir, 'provider', 'disks', master.disk_id!), { recursive: true, force: true });
    const strayLb = await provider.createLoadBalancer({ name: 'stray-lb', network: 'default', port: 8080, backends: [] });
    // The agent is the child of the VM's init that runs the agent program (the init also adopts orphans, such as
    // containerd's shims, whose command lines may name the agent's directories).
    const init = provider.initPid(worker.vm_id!);
    const argv = (pid: string) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const children = readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim().split(/\s+/);
    const agentPid = Number(children.find((pid) => argv(pid)[0] === agentProgram));
    assert.ok(agentPid > 0, `an agent among the init's children: ${children.map((pid) => argv(pid).join(' ')).join(' | ')}`);
    process.kill(agentPid, 'SIGSTOP');
    const stopped = () => /^\d+ \(.*\) T /.test(readFileSync(`/proc/${agentPid}/stat`, 'utf8'));
    for (let i = 0; i < 50 && !stopped(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(stopped(), 'the agent is stopped');

    const found = await cloudCheck({});
    assert.deepEqual(
      found.findings.map((f) => [f.id, f.cluster]),
      [
        ['missing_disk:cluster-rp1/master/0', 'rp1'],
        [`orphan_load_balancer:${strayLb.id}`, null],
        [`orphan_vm:${intruder.id}`, null],
        ['unresponsive_agent:cluster-rp1/worker/0', 'rp1'],
      ],
      JSON.stringify(found.findings, null, 1),
    );
    assert.deepEqual(found.actions, [], 'a report only changes nothing');
    // Scoped to the cluster: its own findings; the unlabelled orphans are not its business.
    assert.deepEqual(
      (await cloudCheck({ cluster: 'rp1' })).findings.map((f) => f.type),
      ['missing_disk', 'unresponsive_agent'],
    );
    // Bad choices are refused before any task.
    const tasksBefore = (await tp.platform.director.tasks.list()).length;
    for (const [body, status] of [
      [{ resolutions: { [`orphan_vm:${intruder.id}`]: 'reboot_vm' } }, 400],
      [{ resolutions: { 'nonsense:x': 'ignore' } }, 400],
      [{ auto: true, resolutions: {} }, 400],
      [{ cluster: 'no-such' }, 404],
      [{ extra: 1 }, 400],
    ] as const) {
      const r = await call('POST', '/v1/cloud-check', body);
      assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
    }
    assert.equal((await tp.platform.director.tasks.list()).length, tasksBefore, 'no task for a refused request');

    // Counted, not assumed: the cluster API through its load balancer while the repair runs. With one
    // master recreated on a fresh disk there is a gap (its etcd starts empty); the counts say how long.
    const probe = apiProbe(() => tp.platform.clusters.binds.endpoint('rp1'), systemClock);
    const fixed = await cloudCheck({
      resolutions: {
        'missing_disk:cluster-rp1/master/0': 'recreate_vm',
        [`orphan_load_balancer:${strayLb.id}`]: 'delete_load_balancer',
        [`orphan_vm:${intruder.id}`]: 'delete_vm',
        'unresponsive_agent:cluster-rp1/worker/0': 'reboot_vm',
      },
    });
    assert.deepEqual(
      fixed.actions.map((a) => [a.finding, a.result]),
      fixed.actions.map((a) => [a.finding, 'ok']),
      JSON.stringify(fixed.actions, null, 1),
    );
    assert.equal(fixed.actions.length, 4);
    const availability = await probe.stop();
    t.diagnostic(
      `the cluster API during the repair: ${availability.requests} requests, ${availability.failed} failed, longest gap ${(availability.longest_gap_ms / 1000).toFixed(1)} s (one master, recreated)`,
    );
    assert.ok(availability.requests > 0, 'the client loop ran through the repair');
    const after = await tp.platform.director.instances(deployment);
    const master2 = after.find((r) => r.group_name === 'master')!;
    const worker2 = after.find((r) => r.group_name === 'worker')!;
    assert.notEqual(master2.vm_id, master.vm_id, 'the master has a new VM');
    assert.notEqual(master2.disk_id, master.disk_id, 'and a new disk');
    assert.equal(await provider.hasDisk(master2.disk_id!), true);
    assert.equal(worker2.vm_id, worker.vm_id, 'the worker was rebooted, not replaced');
    assert.equal((await tp.platform.director.agentState(worker2)).bundleHash, worker.bundle_hash, 'its agent answers with its bundle');
    assert.equal(await provider.hasVm(intruder.id), false);
    assert.deepEqual(
      (await provider.listLoadBalancers()).map((l) => l.id),
      [`${deployment}-api`],
      "only the cluster's own load balancer is left",
    );
    assert.deepEqual((await cloudCheck({})).findings, [], 'nothing left to find');
    // Each action is in the audit log, with who did it.
    const audit = (await call('GET', '/v1/audit?limit=50')).body as { actor: string; action: string; details: { finding?: string } }[];
    assert.deepEqual(
      audit
        .filter((e) => e.action.startsWith('cloud_check.') && e.action !== 'cloud_check.start')
        .map((e) => [e.actor, e.action, e.details.finding])
        .sort(),
      [
        ['rp-admin', 'cloud_check.delete_load_balancer', `orphan_load_balancer:${strayLb.id}`],
        ['rp-admin', 'cloud_check.delete_vm', `orphan_vm:${intruder.id}`],
        ['rp-admin', 'cloud_check.reboot_vm', 'unresponsive_agent:cluster-rp1/worker/0'],
        ['rp-admin', 'cloud_check.recreate_vm', 'missing_disk:cluster-rp1/master/0'],
      ],
    );
    // The repaired cluster works: its API answers and the worker's node is Ready.
    const cfg = join(dir, 'rp1.yaml');
    writeFileSync(cfg, ((await call('GET', '/v1/clusters/rp1/kubeconfig')).body as { kubeconfig: string }).kubeconfig, { mode: 0o600 });
    // After a VM's reboot containerd starts from a clean state (its containers died with the boot);
    // it used to spend ~40 s on the old sandboxes first, the kubelet's Node came late and its CSINode
    // set-up, having given up its early retries, made the node Ready only ~150 s after the repair.
    const fixedAt = performance.now();
    let nodes = '';
    for (let i = 0; i < 240 && !/worker-0\s+Ready/.test(nodes); i++) {
      nodes = await exec([tp.platform.releaseKubectl, '--kubeconfig', cfg, 'get', 'nodes', '--no-headers']).then(
        (r) => r.stdout,
        () => '',
      );
      if (!/worker-0\s+Ready/.test(nodes)) await new Promise((r) => setTimeout(r, 1000));
    }
    const kubeletLog = async () =>
      (
        await provider.execInVm(worker.vm_id!, [
          'sh',
          '-c',
          'cd /var/lib/anodyne/agent/logs && grep -E "^[EW]" kubelet/kubelet.log | tail -n 30 | cut -c1-260',
        ])
      ).stdout;
    t.diagnostic(
      `worker-0 ${/worker-0\s+Ready/.test(nodes) ? 'Ready' : 'not Ready'} ${(performance.now() - fixedAt).toFixed(0)} ms after the repair`,
    );
    if (!/worker-0\s+Ready/.test(nodes)) t.diagnostic(await kubeletLog());
    assert.match(nodes, /worker-0\s+Ready/);
    const del = await call('DELETE', '/v1/clusters/rp1');
    assert.equal(del.status, 202, del.text);
    assert.equal((await tp.platform.director.wait((del.body as { last_task_id: number }).last_task_id)).state, 'done');
  });
});
