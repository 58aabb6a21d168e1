// Tests of the cloud check over the fake provider and in-memory agents: what it finds, what each resolution does, what it leaves alone.
import { after, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@anodyne/common';
import { FakeProvider } from '@anodyne/providers';
import { openStore, type Store } from '@anodyne/store';
import { CloudCheck, Director, checkChoices, type CloudAction, type CloudFinding, type TaskEventInput } from './index.js';
import { FakeAgents } from './fake-agents.js';
import { StepClock, catalog, manifest, tls, variables } from './fake-director.testkit.js';

describe('cloud check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-cck-'));
  let store: Store;
  let provider: FakeProvider;
  let agents: FakeAgents;
  let director: Director;
  let cck: CloudCheck;
  let actions: { actor: string; finding: CloudFinding; action: CloudAction }[];
  let n = 0;
  const events: TaskEventInput[] = [];
  const sink = { event: (e: TaskEventInput) => Promise.resolve(void events.push(e)) };

  beforeEach(async () => {
    const clock = new StepClock();
    store = await openStore({ driver: 'sqlite', path: join(dir, `c${n++}.db`) });
    provider = new FakeProvider({ clock });
    agents = new FakeAgents(provider);
    director = new Director({ store, provider, catalog, variables, tls, clock, logger: silentLogger(), agents, agentTimeoutMs: 1000 });
    actions = [];
    cck = new CloudCheck({
      store,
      provider,
      director,
      clock,
      logger: silentLogger(),
      probeTimeoutMs: 100,
      onAction: (e) => {
        actions.push(e);
      },
    });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A deployment of `instances` with a persistent disk each and a load balancer. */
  async function deploy(name: string, instances = 3): Promise<void> {
    const m = manifest(name, instances);
    const withDisks = {
      ...m,
      instance_groups: m.instance_groups.map((g) => ({ ...g, persistent_disk_mb: 10 })),
      load_balancers: [{ name: 'api', instance_group: 'node', port: 6443, backend_port: 6443 }],
    };
    const t = await director.wait((await director.deploy(withDisks)).id);
    assert.equal(t.state, 'done', t.error?.message);
  }
  const row = async (d: string, i: number) => (await director.instances(d)).find((r) => r.idx === i)!;

  it('instances are in their group’s availability zones (round robin); their VMs are asked for them, again when made anew; a change of zones is recorded', async () => {
    const m = manifest('zones', 3);
    const zoned = { ...m, instance_groups: m.instance_groups.map((g) => ({ ...g, azs: ['z1', 'z2'] })) };
    assert.equal((await director.wait((await director.deploy(zoned)).id)).state, 'done');
    const rows = await director.instances('zones');
    assert.deepEqual(
      rows.map((r) => r.az),
      ['z1', 'z2', 'z1'],
    );
    for (const r of rows) assert.equal(provider.zones.get(r.vm_id!), r.az, `${r.group_name}/${r.idx}'s VM asked for its zone`);
    // Its VM lost: made anew in the same zone.
    const lost = rows[1]!;
    await provider.deleteVm(lost.vm_id!);
    assert.equal((await director.wait((await director.deploy(zoned)).id)).state, 'done');
    const again = (await director.instances('zones')).find((r) => r.idx === 1)!;
    assert.notEqual(again.vm_id, lost.vm_id);
    assert.equal(provider.zones.get(again.vm_id!), 'z2');
    const moved = { ...m, instance_groups: m.instance_groups.map((g) => ({ ...g, azs: ['z3'] })) };
    assert.equal((await director.wait((await director.deploy(moved)).id)).state, 'done');
    assert.deepEqual(
      (await director.instances('zones')).map((r) => r.az),
      ['z3', 'z3', 'z3'],
    );
  });

  it('a healthy platform has nothing to report', async () => {
    await deploy('a');
    const { findings, skipped } = await cck.scan();
    assert.deepEqual(findings, []);
    assert.deepEqual(skipped, []);
  });

  it('finds each kind of problem, resolves each with the chosen resolution, and touches nothing else', async () => {
    await deploy('a', 4);
    await deploy('b', 1);
    const [r0, r1, r2, r3] = [await row('a', 0), await row('a', 1), await row('a', 2), await row('a', 3)];
    const bBefore = await director.instances('b');
    provider.crash(r0.vm_id!);
    agents.hang('a-node-1');
    provider.loseDisk(r2.disk_id!);
    provider.unplugDisk(r3.disk_id!);
    const stray = await provider.createVm({
      agentId: 'stray',
      image: 'default',
      vmType: 'small',
      network: { network: 'default' },
      env: {},
    });
    const strayDisk = await provider.createDisk(5, { purpose: 'someone' });
    const strayLb = await provider.createLoadBalancer({ name: 'stray-lb', network: 'default', port: 80, backends: [] });

    const { findings } = await cck.scan();
    assert.deepEqual(
      findings.map((f) => [f.id, f.object, f.resolutions[0]]),
      [
        ['detached_disk:a/node/3', r3.disk_id, 'reattach_disk'],
        ['missing_disk:a/node/2', r2.disk_id, 'recreate_vm'],
        ['missing_vm:a/node/0', r0.vm_id, 'recreate_vm'],
        [`orphan_disk:${strayDisk.id}`, strayDisk.id, 'delete_disk'],
        [`orphan_load_balancer:${strayLb.id}`, strayLb.id, 'delete_load_balancer'],
        [`orphan_vm:${stray.id}`, stray.id, 'delete_vm'],
        ['unresponsive_agent:a/node/1', r1.vm_id, 'reboot_vm'],
      ],
    );
    // Scoped to one deployment: its own findings, and no orphans that claim no deployment.
    assert.deepEqual((await cck.scan('b')).findings, []);

    const report = await cck.run(
      'ops',
      undefined,
      {
        resolutions: {
          'missing_vm:a/node/0': 'recreate_vm',
          'unresponsive_agent:a/node/1': 'ignore',
          'missing_disk:a/node/2': 'delete_disk_reference',
          'detached_disk:a/node/3': 'reattach_disk',
          [`orphan_vm:${stray.id}`]: 'delete_vm',
          [`orphan_disk:${strayDisk.id}`]: 'ignore',
          [`orphan_load_balancer:${strayLb.id}`]: 'delete_load_balancer',
        },
      },
      sink,
    );
    assert.deepEqual(
      report.actions.map((a) => [a.finding, a.result]),
      report.actions.map((a) => [a.finding, 'ok']),
      JSON.stringify(report.actions),
    );
    assert.equal(actions.length, 7, 'every action, ignoring too, is told to the audit');
    assert.ok(actions.every((a) => a.actor === 'ops'));
    const after0 = await row('a', 0);
    assert.notEqual(after0.vm_id, r0.vm_id, 'node/0 has a new VM');
    assert.equal(after0.disk_id, r0.disk_id, 'with its own disk');
    assert.equal((await row('a', 1)).vm_id, r1.vm_id, 'node/1 was left alone');
    assert.equal((await row('a', 2)).disk_id, null, 'node/2 no longer refers to the lost disk');
    assert.equal((await provider.listDisks()).find((d) => d.id === r3.disk_id)?.vmId, r3.vm_id, 'node/3 has its disk again');
    assert.equal(await provider.hasVm(stray.id), false);
    assert.equal(await provider.hasDisk(strayDisk.id), true, 'the ignored orphan disk is kept');
    await assert.rejects(provider.getLoadBalancer(strayLb.id));
    assert.deepEqual(await director.instances('b'), bBefore, 'another deployment is untouched');
    const recreate = report.actions.find((a) => a.finding === 'missing_vm:a/node/0')!;
    assert.equal((await director.tasks.get(recreate.task!)).type, 'resurrect');
    const reattach = report.actions.find((a) => a.finding === 'detached_disk:a/node/3')!;
    assert.equal((await director.tasks.get(reattach.task!)).type, 'cloud_check_reattach_disk');

    // What was ignored is still there; --auto then takes each finding's first resolution.
    const left = (await cck.scan()).findings.map((f) => f.id);
    assert.deepEqual(left, [`orphan_disk:${strayDisk.id}`, 'unresponsive_agent:a/node/1']);
    const auto = await cck.run('ops', undefined, { auto: true }, sink);
    assert.deepEqual(
      auto.actions.map((a) => [a.finding, a.resolution, a.result]),
      [
        [`orphan_disk:${strayDisk.id}`, 'delete_disk', 'ok'],
        ['unresponsive_agent:a/node/1', 'reboot_vm', 'ok'],
      ],
    );
    assert.equal((await row('a', 1)).vm_id, r1.vm_id, 'rebooted, not replaced');
    assert.deepEqual((await cck.scan()).findings, []);
  });

  it('an applied bundle that is not the deployed one is found', async () => {
    await deploy('a', 1);
    const r = await row('a', 0);
    await director.agentCall(r, 'POST', '/apply', { hash: 'other', jobs: [] });
    const { findings } = await cck.scan('a');
    assert.deepEqual(
      findings.map((f) => f.id),
      ['bundle_mismatch:a/node/0'],
    );
    assert.match(findings[0]!.description, /runs bundle other, not the deployed/);
  });

  it('refuses choices that cannot be right before it scans anything, and an unknown deployment', async () => {
    const code = (c: string) => (e: unknown) => (e as { code?: string }).code === c;
    assert.throws(() => checkChoices({ 'orphan_vm:vm-1': 'reboot_vm' }), code('ANODYNE_E_INVALID_INPUT'));
    assert.throws(() => checkChoices({ 'no_such:x': 'ignore' }), code('ANODYNE_E_INVALID_INPUT'));
    assert.throws(() => checkChoices({ 'orphan_vm:': 'ignore' }), code('ANODYNE_E_INVALID_INPUT'));
    assert.doesNotThrow(() => checkChoices({ 'missing_vm:a/node/0': 'delete_vm_reference' }));
    await assert.rejects(cck.scan('nope'), code('ANODYNE_E_NOT_FOUND'));
  });
});
