// The director on the real local provider: deploy, roll out, recreate, errands, disks and delete, end to end (root only).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Store } from '@anodyne/store';
import { newRandomKey, type CredStore } from '@anodyne/credstore';
import type { LocalProvider } from '@anodyne/providers';
import type { Director, Manifest, TaskEvent } from './index.js';
import { makeHarness, manifest } from './harness.js';
import { skipUnless } from '@anodyne/common';

const isRoot = process.getuid?.() === 0;

function get(url: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = request(url, { timeout: 3000 }, (r) => {
      let t = '';
      r.on('data', (c: Buffer) => (t += c.toString()));
      r.on('end', () => res(t.trim()));
    });
    req.on('error', rej);
    req.end();
  });
}

describe('director on the local provider', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let dir: string;
  let store: Store;
  let creds: CredStore;
  let provider: LocalProvider;
  let director: Director;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-director-'));
    ({ store, creds, provider, director } = await makeHarness(dir, `d${(process.pid % 1296).toString(36)}`, newRandomKey()));
  });

  after(async () => {
    await provider.cleanup();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const events = (id: number): Promise<TaskEvent[]> => director.tasks.events(id);

  it('deploys 5 instances; all healthy and serving', async (t) => {
    const started = performance.now();
    const task = await director.deploy(manifest('v1'));
    const done = await director.wait(task.id);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    t.diagnostic(`deploy of 5 instances: ${(performance.now() - started).toFixed(0)} ms`);
    const rows = await director.instances('web');
    assert.equal(rows.length, 5);
    for (const r of rows) {
      assert.equal((await director.agentState(r)).healthy, true);
      assert.match(await get(`http://${r.ip}:8080/`), new RegExp(`^v1 from web/${r.idx}$`));
    }
  });

  it('a property change rolls out: canary first, then batches of at most 2, each drained before stop', async () => {
    const task = await director.deploy(manifest('v2'));
    const done = await director.wait(task.id);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    const ev = await events(task.id);
    const starts = ev.filter((e) => e.stage.startsWith('Updating instance') && e.state === 'started');
    assert.equal(starts[0]?.stage, 'Updating instance (canary)');
    assert.equal(starts[0]?.instance, 'web/0');
    assert.equal(starts.length, 5);
    // never more than 2 instances between started and finished
    let inFlight = 0;
    let max = 0;
    for (const e of ev.filter((x) => x.stage.startsWith('Updating instance'))) {
      inFlight += e.state === 'started' ? 1 : e.state === 'finished' ? -1 : 0;
      max = Math.max(max, inFlight);
    }
    assert.equal(max, 2);
    for (const i of [0, 1, 2, 3, 4]) {
      const life = ev.filter((e) => e.stage === 'Lifecycle' && e.instance === `web/${i}`).map((e) => e.message);
      assert.deepEqual(life.slice(0, 3), ['drain', 'stop', 'start'], `web/${i}: ${life.join(',')}`);
    }
    for (const r of await director.instances('web')) assert.match(await get(`http://${r.ip}:8080/`), /^v2 from/);
  });

  it('a canary that never becomes healthy fails the task; only the canary was touched', async () => {
    const bad = manifest('v3', { update: { canaries: 1, max_in_flight: 2, canary_watch_time: '300-3000', update_watch_time: '300-3000' } });
    bad.instance_groups[0]!.jobs[0]!.properties = { greeting: 'v3', port: 'no-such-port' }; // httpd exits at once, again and again
    const task = await director.deploy(bad);
    const done = await director.wait(task.id);
    assert.equal(done.state, 'error');
    assert.equal(done.error?.code, 'ANODYNE_E_CANARY_FAILED');
    const touched = (await events(task.id))
      .filter((e) => e.stage.startsWith('Updating instance') && e.state === 'started')
      .map((e) => e.instance);
    assert.deepEqual(touched, ['web/0']);
    for (const r of (await director.instances('web')).filter((x) => x.idx > 0)) assert.match(await get(`http://${r.ip}:8080/`), /^v2 from/);
    // the next good deploy converges everything again
    const fix = await director.wait((await director.deploy(manifest('v4'))).id);
    assert.equal(fix.state, 'done', JSON.stringify(fix.error));
  });

  it('the agent restarts a killed job process and reports the restart', async () => {
    const [row] = await director.instances('web');
    assert.ok(row?.vm_id);
    await provider.execInVm(row.vm_id, ['pkill', '-9', '-f', 'busybox httpd']);
    let restarts = 0;
    for (let i = 0; i < 100 && restarts === 0; i++) {
      const s = await director.agentState(row);
      restarts = s.processes.find((p) => p.name === 'httpd')?.restarts ?? 0;
      if (restarts === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(restarts >= 1);
    for (let i = 0; i < 100 && !(await director.agentState(row)).healthy; i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(await get(`http://${row.ip}:8080/`), /^v4 from web\/0/);
  });

  it('a second change while one runs is refused; bad manifests never start a task', async () => {
    const running = await director.deploy(manifest('v5'));
    await assert.rejects(director.deploy(manifest('v6')), (e: unknown) => {
      const err = e as { code?: string; message: string; details?: Record<string, unknown> };
      assert.equal(err.code, 'ANODYNE_E_DEPLOYMENT_LOCKED');
      assert.match(err.message, new RegExp(`by task ${running.id} \\(deploy, started by system\\)`), 'it says who holds the lock');
      assert.deepEqual(err.details, { deployment: 'web', task: running.id, task_type: 'deploy', task_owner: 'system' });
      return true;
    });
    await director.wait(running.id);
    const before = (await director.tasks.list()).length;
    const huge = { ...manifest('x'), instance_groups: [{ ...manifest('x').instance_groups[0]!, vm_type: 'huge' }] };
    await assert.rejects(director.deploy(huge), (e: unknown) => (e as { code?: string }).code === 'ANODYNE_E_MANIFEST_INVALID');
    assert.equal((await director.tasks.list()).length, before);
  });

  it('recreates one instance: a new VM for it, the others untouched', async () => {
    const before = await director.instances('web');
    const done = await director.wait((await director.recreate('web', { group: 'web', index: 3 })).id);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    const after = await director.instances('web');
    for (const [i, r] of after.entries()) {
      if (i === 3) assert.notEqual(r.vm_id, before[i]?.vm_id);
      else assert.equal(r.vm_id, before[i]?.vm_id);
      assert.equal(r.ip, before[i]?.ip, 'addresses are kept');
    }
    assert.match(await get(`http://${after[3]!.ip}:8080/`), /from web\/3$/);
    const notFound = (e: unknown) => (e as { code?: string }).code === 'ANODYNE_E_NOT_FOUND';
    await assert.rejects(director.recreate('web', { group: 'web', index: 9 }), notFound);
  });

  it('stops and starts one instance; fetches its logs', async () => {
    const [row] = await director.instances('web');
    assert.equal((await director.wait((await director.stopInstance('web', 'web', 0)).id)).state, 'done');
    const stopped = await director.agentState(row!);
    assert.ok(stopped.processes.every((p) => p.state === 'stopped'));
    await assert.rejects(get(`http://${row!.ip}:8080/`));
    assert.equal((await director.wait((await director.startInstance('web', 'web', 0)).id)).state, 'done');
    for (let i = 0; i < 100 && !(await director.agentState(row!)).healthy; i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(await get(`http://${row!.ip}:8080/`), /from web\/0$/);
    const logs = await director.wait((await director.fetchLogs('web', 'web', 0)).id);
    assert.equal(logs.state, 'done');
    assert.ok('httpd/httpd' in (logs.result as { logs: Record<string, string> }).logs);
  });

  it('runs an errand to completion and keeps its output; a failing errand fails the task', async () => {
    const withErrand = (code: number): Manifest => ({
      ...manifest('v5'),
      instance_groups: [
        ...manifest('v5').instance_groups,
        {
          name: 'smoke',
          instances: 1,
          lifecycle: 'errand',
          vm_type: 'small',
          networks: [{ name: 'default' }],
          jobs: [{ name: 'smoke', properties: { word: 'hi', code } }],
        },
      ],
    });
    assert.equal((await director.wait((await director.deploy(withErrand(0))).id)).state, 'done');
    assert.equal((await director.instances('web')).filter((r) => r.group_name === 'smoke').length, 0, 'an errand has no VM between runs');
    const ok = await director.wait((await director.runErrand('web', 'smoke')).id);
    assert.equal(ok.state, 'done', JSON.stringify(ok.error));
    const out = ok.result as { exit_code: number; instances: { results: { output: string }[] }[] };
    assert.equal(out.exit_code, 0);
    assert.match(out.instances[0]?.results[0]?.output ?? '', /errand-output hi from 10\.198\.5\./);
    assert.equal((await director.wait((await director.deploy(withErrand(3))).id)).state, 'done');
    const bad = await director.wait((await director.runErrand('web', 'smoke')).id);
    assert.equal(bad.state, 'error');
    assert.equal((bad.result as { exit_code: number }).exit_code, 3);
    assert.equal((await provider.listVms({ group: 'smoke' })).length, 0, 'errand VMs are deleted after the run');
    await assert.rejects(director.runErrand('web', 'web'), (e: unknown) => (e as { code?: string }).code === 'ANODYNE_E_INVALID_INPUT');
  });

  it('a persistent disk keeps its data across VM recreation and goes away with the deployment', async () => {
    const m = {
      ...manifest('disk'),
      name: 'vault',
      variables: [],
      instance_groups: [
        {
          name: 'vault',
          instances: 1,
          vm_type: 'small',
          persistent_disk_mb: 64,
          networks: [{ name: 'default' }],
          jobs: [{ name: 'keeper' }],
        },
      ],
    };
    assert.equal((await director.wait((await director.deploy(m)).id)).state, 'done');
    const [first] = await director.instances('vault');
    assert.ok(first?.disk_id, 'the instance records its disk');
    const id = await get(`http://${first.ip}:8080/id`);
    assert.match(id, /^[0-9a-f]{16}$/);
    const re = await director.wait((await director.recreate('vault')).id);
    assert.equal(re.state, 'done', JSON.stringify(re.error));
    const [second] = await director.instances('vault');
    assert.notEqual(second?.vm_id, first.vm_id);
    assert.equal(second?.disk_id, first.disk_id);
    assert.equal(await get(`http://${second.ip}:8080/id`), id, 'the data survived the new VM');
    assert.equal((await director.wait((await director.deleteDeployment('vault')).id)).state, 'done');
    assert.equal(await provider.hasDisk(first.disk_id), false);
  });

  it('deleting the deployment removes every VM', async () => {
    const task = await director.wait((await director.deleteDeployment('web')).id);
    assert.equal(task.state, 'done', JSON.stringify(task.error));
    assert.deepEqual(await provider.listVms({ deployment: 'web' }), []);
    assert.deepEqual(await director.instances('web'), []);
    assert.deepEqual(await creds.list('/deployments/web'), []);
  });
});
