// A rollout whose processes crash-loop fails as soon as their restart budget is spent, saying how they exit and what they wrote.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobCatalog } from './index.js';
import { fakeDirector, job, manifest } from './fake-director.testkit.js';
import { lastLines } from './driver.js';

// Two versions of one job, so that a second deploy changes every instance's bundle.
const catalog: JobCatalog = {
  job: (_r, name) =>
    name === 'svc' ? job : name === 'svc2' ? { ...job, name: 'svc2', processes: [{ name: 'svc', command: 'false' }] } : undefined,
};

describe('fail fast: a crash-looping job fails its rollout at once, and says why', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-failfast-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function setup(name: string, restartBudget?: number) {
    const { store, agents, director } = await fakeDirector(join(dir, `${name}.db`), {
      catalog,
      ...(restartBudget !== undefined ? { restartBudget } : {}),
    });
    // A ten-minute watch: without failing fast the task would poll ~600 times before giving up.
    const m = {
      ...manifest(name, 3),
      update: { canaries: 1, max_in_flight: 2, canary_watch_time: '0-600000', update_watch_time: '0-600000' },
    };
    return { store, agents, director, m };
  }

  const log = [
    'I1203 10:00:00.000 server.go:100] starting kubelet',
    '',
    'W1203 10:00:00.100 watcher.go:12] inotify_init: too many open files',
    'E1203 10:00:00.200 run.go:72] "command failed" err="failed to create fsnotify watcher: too many open files"',
  ].join('\n');

  it('a create fails as soon as the restarts pass the budget, with the exit code and the last log lines', async () => {
    const { store, agents, director, m } = await setup('create');
    agents.crashLoop({ restarts: 12, code: 1, log });
    const t = await director.wait((await director.deploy(m)).id);
    assert.equal(t.state, 'error');
    assert.equal(t.error?.code, 'ANODYNE_E_INSTANCE_UNHEALTHY');
    assert.match(t.error?.message ?? '', /^node\/\d failed: svc\/svc exited 12 times \(last exit code 1\): /);
    assert.match(t.error?.message ?? '', /too many open files \| E1203 .*failed to create fsnotify watcher: too many open files"$/);
    assert.ok(
      (agents.calls['GET /state'] ?? 0) < 20,
      `failed at once, not after the watch time (${agents.calls['GET /state']} state reads)`,
    );
    await store.close();
  });

  it('an update: the canary fails at once (rolled back, and failing there too), no other instance is given the new bundle', async () => {
    const { store, agents, director, m } = await setup('update');
    assert.equal((await director.wait((await director.deploy(m)).id)).state, 'done');
    const applied = agents.calls['POST /apply'] ?? 0;
    agents.crashLoop({ restarts: 10, code: 2, log });
    const changed = { ...m, instance_groups: m.instance_groups.map((g) => ({ ...g, jobs: [{ name: 'svc2' }] })) };
    const t = await director.wait((await director.deploy(changed)).id);
    assert.equal(t.error?.code, 'ANODYNE_E_CANARY_FAILED');
    assert.match(t.error?.message ?? '', /node\/\d failed: svc2\/svc exited 10 times \(last exit code 2\)/);
    assert.equal((agents.calls['POST /apply'] ?? 0) - applied, 2, 'the canary only: its new bundle, then its old one');
    await store.close();
  });

  it('restarts within the budget are not a failure: the watch goes on and the task ends when the process recovers', async () => {
    const { store, agents, director, m } = await setup('within', 10);
    agents.crashLoop({ restarts: 3, code: 1, log });
    const task = await director.deploy(m);
    // Still watching: let it poll a while, then the process comes up.
    while ((agents.calls['GET /state'] ?? 0) < 30) await new Promise((r) => setImmediate(r));
    agents.crashLoop(undefined);
    const t = await director.wait(task.id);
    assert.equal(t.state, 'done', t.error?.message);
    await store.close();
  });

  it('a watch that runs out says what is not ready and what it last wrote', async () => {
    const { store, agents, director, m } = await setup('timeout');
    agents.crashLoop({ restarts: 2, code: 1, log });
    const short = { ...m, update: { ...m.update, canary_watch_time: '0-3000', update_watch_time: '0-3000' } };
    const t = await director.wait((await director.deploy(short)).id);
    assert.equal(t.error?.code, 'ANODYNE_E_INSTANCE_UNHEALTHY');
    assert.match(
      t.error?.message ?? '',
      /^node\/\d is not healthy after 3000 ms: svc\/svc failing \(2 restarts\); svc\/svc last wrote: .*too many open files"$/,
    );
    await store.close();
  });

  it('lastLines keeps the last non-empty lines, each cut short', () => {
    assert.deepEqual(lastLines('a\n\n b \nc\n', 2), ['b', 'c']);
    assert.deepEqual(lastLines(`${'x'.repeat(300)}\n`, 1, 10), [`${'x'.repeat(10)}…`]);
    assert.deepEqual(lastLines(''), []);
  });
});
