// Tests of the health monitor and resurrector over the fake provider and in-memory agents: findings, recreation, meltdown.
import { after, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@anodyne/common';
import { FakeProvider } from '@anodyne/providers';
import { openStore, type Store } from '@anodyne/store';
import { Director, HealthMonitor, type ResurrectionEvent } from './index.js';
import { StepClock, catalog, job, manifest, tls, variables } from './fake-director.testkit.js';
import { FakeAgents } from './fake-agents.js';

// The director's health monitor and resurrector over the fake provider and in-memory agents:
// its logic only. The real thing (a VM killed in a real cluster and brought back) is in the
// clusters suite.

describe('health monitor and resurrector', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-health-'));
  let store: Store;
  let provider: FakeProvider;
  let agents: FakeAgents;
  let director: Director;
  let clock: StepClock;
  let events: ResurrectionEvent[];
  let n = 0;

  beforeEach(async () => {
    clock = new StepClock();
    store = await openStore({ driver: 'sqlite', path: join(dir, `h${n++}.db`) });
    provider = new FakeProvider({ clock });
    agents = new FakeAgents(provider);
    director = new Director({ store, provider, catalog, variables, tls, clock, logger: silentLogger(), agents, agentTimeoutMs: 1000 });
    events = [];
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const monitor = (resurrection = true) =>
    new HealthMonitor({
      store,
      provider,
      director,
      clock,
      logger: silentLogger(),
      resurrection: { enabled: resurrection, afterMs: 60_000 },
      onEvent: (e) => {
        events.push(e);
      },
    });

  async function deploy(name: string, instances = 3): Promise<void> {
    const t = await director.wait((await director.deploy(manifest(name, instances))).id);
    assert.equal(t.state, 'done', t.error?.message);
  }
  const vmOf = async (d: string, i: number) => (await director.instances(d)).find((r) => r.idx === i)!;

  it('finds every instance of every deployment running, and records it', async () => {
    await deploy('a');
    await deploy('b', 2);
    const r = await monitor().pass();
    assert.equal(r.deployments, 2);
    assert.equal(r.instances, 5);
    assert.equal(r.counts.running, 5);
    assert.deepEqual(r.resurrections, []);
    const views = await director.instanceViews('a');
    assert.deepEqual(
      views.map((v) => [v.instance, v.health]),
      [
        ['node/0', 'running'],
        ['node/1', 'running'],
        ['node/2', 'running'],
      ],
    );
  });

  it('tells missing, unresponsive, failing and stopped apart, with reasons', async () => {
    await deploy('a', 4);
    provider.crash((await vmOf('a', 0)).vm_id!);
    agents.hang('a-node-1');
    agents.fail('a-node-2');
    await director.wait((await director.stopInstance('a', 'node', 3)).id);
    const r = await monitor(false).pass();
    assert.deepEqual(r.counts, { pending: 0, running: 0, failing: 1, unresponsive: 1, missing: 1, stopped: 1 });
    const v = await director.instanceViews('a');
    assert.deepEqual(
      v.map((x) => x.health),
      ['missing', 'unresponsive', 'failing', 'stopped'],
    );
    assert.match(v[0]!.health_reason!, /not running/);
    assert.match(v[1]!.health_reason!, /unreachable/);
    assert.match(v[2]!.health_reason!, /svc\/svc failing/);
    // With resurrection off, nothing is recreated however long it lasts.
    await clock.advance(3_600_000);
    assert.deepEqual((await monitor(false).pass()).resurrections, []);
    assert.equal((await director.tasks.list({ deployment: 'a' })).filter((t) => t.type === 'resurrect').length, 0);
  });

  it('recreates only the instances down for longer than the policy allows, from the stored manifest', async () => {
    await deploy('a');
    await deploy('b');
    const before = await director.instances('a');
    provider.crash(before[1]!.vm_id!);
    agents.hang('a-node-2');
    const m = monitor();
    const first = await m.pass();
    assert.equal(first.counts.missing + first.counts.unresponsive, 2);
    assert.deepEqual(first.resurrections, [], 'not before afterMs');
    await clock.advance(61_000);
    const second = await m.pass();
    assert.equal(second.resurrections.length, 1);
    assert.deepEqual(second.resurrections[0]!.instances.sort(), ['node/1', 'node/2']);
    const task = await director.wait(second.resurrections[0]!.task!);
    assert.equal(task.state, 'done', task.error?.message);
    assert.equal(task.type, 'resurrect');
    assert.equal(task.owner, 'health-monitor');
    const afterRows = await director.instances('a');
    assert.equal(afterRows[0]!.vm_id, before[0]!.vm_id, 'a healthy instance keeps its VM');
    assert.notEqual(afterRows[1]!.vm_id, before[1]!.vm_id);
    assert.notEqual(afterRows[2]!.vm_id, before[2]!.vm_id);
    assert.deepEqual(
      afterRows.map((r) => r.ip),
      before.map((r) => r.ip),
      'addresses are kept',
    );
    assert.equal(provider.calls['createVm'], 8, 'one new VM per lost instance, never two');
    agents.heal('a-node-2');
    const third = await m.pass();
    assert.equal(third.counts.running, 6);
    assert.deepEqual(
      events.map((e) => [e.action, e.deployment, e.instances.length]),
      [
        // Each instance that went down is told once, as it turned unhealthy; then both are recreated together.
        ['unhealthy', 'a', 1],
        ['unhealthy', 'a', 1],
        ['resurrect', 'a', 2],
      ],
    );
    assert.deepEqual(
      events
        .filter((e) => e.action === 'unhealthy')
        .map((e) => `${e.instances[0]} ${e.reason?.split(':')[0]}`)
        .sort(),
      ['node/1 missing', 'node/2 unresponsive'],
    );
  });

  it('touches nothing but the lost instance even when the jobs have changed since the deploy', async () => {
    await deploy('a');
    const hashes = (await director.instances('a')).map((r) => r.bundle_hash);
    job.processes[0]!.args = ['changed'];
    try {
      provider.crash((await vmOf('a', 0)).vm_id!);
      const m = monitor();
      await m.pass();
      await clock.advance(61_000);
      const r = await m.pass();
      assert.equal((await director.wait(r.resurrections[0]!.task!)).state, 'done');
      const rows = await director.instances('a');
      assert.deepEqual(
        rows.slice(1).map((x) => x.bundle_hash),
        hashes.slice(1),
      );
    } finally {
      delete job.processes[0]!.args;
    }
  });

  it('meltdown: with many instances down at once nothing is recreated', async () => {
    await deploy('a', 6);
    await deploy('b', 4);
    for (let i = 0; i < 6; i++) provider.crash((await vmOf('a', i)).vm_id!);
    const m = monitor();
    await m.pass();
    await clock.advance(61_000);
    const r = await m.pass();
    assert.equal(r.meltdown, true);
    assert.deepEqual(r.resurrections, []);
    assert.equal(events.at(-1)?.action, 'meltdown');
    assert.equal(events.at(-1)?.instances.length, 6);
  });

  it('leaves a deployment that a task is changing to that task, and backs off after a failed resurrection', async () => {
    await deploy('a');
    provider.crash((await vmOf('a', 0)).vm_id!);
    const m = monitor();
    await m.pass();
    await clock.advance(61_000);
    // A task holds the lock: the pass skips the deployment.
    await store.db.insertInto('locks').values({ name: 'deployment:a', task_id: 999, acquired_at: clock.now().toISOString() }).execute();
    const r = await m.pass();
    assert.deepEqual(r.skipped, ['a']);
    assert.deepEqual(r.resurrections, []);
    await store.db.deleteFrom('locks').execute();
    // The infrastructure refuses new VMs: the resurrect task fails; the next try waits.
    provider.failNextCreateWith(new Error('no capacity'));
    const tried = await m.pass();
    assert.equal(tried.resurrections.length, 1);
    assert.equal((await director.wait(tried.resurrections[0]!.task!)).state, 'error');
    assert.deepEqual((await m.pass()).resurrections, [], 'backing off');
    await clock.advance(121_000);
    const again = await m.pass();
    assert.equal(again.resurrections.length, 1);
    assert.equal((await director.wait(again.resurrections[0]!.task!)).state, 'done');
    assert.equal((await m.pass()).counts.running, 3);
  });

  it('never runs two passes at once, and start/stop run passes on an interval', async () => {
    await deploy('a');
    const m = new HealthMonitor({ store, provider, director, clock, logger: silentLogger() });
    const [x, y] = await Promise.all([m.pass(), m.pass()]);
    assert.equal(x, y);
    const calls = agents.calls['GET /state'] ?? 0;
    m.start(10);
    for (let i = 0; i < 200 && (agents.calls['GET /state'] ?? 0) < calls + 9; i++) await new Promise((r) => setTimeout(r, 10));
    await m.stop();
    const stoppedAt = agents.calls['GET /state'] ?? 0;
    assert.ok(stoppedAt >= calls + 9, 'passes ran on the interval');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(agents.calls['GET /state'], stoppedAt, 'no pass after stop');
    assert.ok(m.lastReport());
  });

  it('recreating one instance whose VM is gone makes one VM, not two', async () => {
    await deploy('a');
    provider.crash((await vmOf('a', 1)).vm_id!);
    const created = provider.calls['createVm'];
    const t = await director.wait((await director.recreate('a', { group: 'node', index: 1 })).id);
    assert.equal(t.state, 'done', t.error?.message);
    assert.equal(provider.calls['createVm'], created! + 1);
  });
});
