// Fault test: kill -9 of the platform mid-deploy; the task ends in error, the next deploy converges, no VM orphaned (root).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { newRandomKey } from '@anodyne/credstore';
import { makeHarness, manifest, type Harness } from './harness.js';
import { skipUnless, type AnodyneError } from '@anodyne/common';

const isRoot = process.getuid?.() === 0;
const here = dirname(fileURLToPath(import.meta.url));

describe('director: kill -9 of the platform during a deploy', { skip: skipUnless(isRoot, 'needs root') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-fault-'));
  const tag = `f${(process.pid % 1296).toString(36)}`;
  const key = newRandomKey();
  // Its own network (deploy.test uses the harness's default): suites may run side by side.
  const network = '10.198.7.0/24';
  let h: Harness | undefined;

  after(async () => {
    h ??= await makeHarness(dir, tag, key, { network });
    await h.provider.cleanup();
    await h.store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the task ends in error after restart, the next deploy converges, and no VM is orphaned', async () => {
    const child = spawn(process.execPath, [join(here, 'fault-child.js')], {
      env: {
        ...process.env,
        ANODYNE_TEST_DIR: dir,
        ANODYNE_TEST_TAG: tag,
        ANODYNE_TEST_KEY: key.toString('hex'),
        ANODYNE_TEST_NETWORK: network,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    h = await makeHarness(dir, tag, key, { network });
    const { director, provider } = h;
    // Kill it in the middle of creating VMs.
    let killedAt = '';
    for (let i = 0; i < 600 && !killedAt; i++) {
      const [task] = await director.tasks.list();
      if (task) {
        const created = (await director.tasks.events(task.id)).filter(
          (e) => e.stage === 'Creating missing VMs' && e.state === 'finished',
        ).length;
        if (created >= 2) {
          child.kill('SIGKILL');
          killedAt = `after ${created} VMs`;
        }
      }
      if (!killedAt) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(killedAt, `the child reached the VM stage: ${out}`);
    await new Promise((r) => child.once('exit', r));

    // The interrupted deploy waits for a director to resume it, its deployment still locked; this one does.
    const { ended, queued } = await director.recover();
    assert.deepEqual(ended, []);
    assert.deepEqual(
      queued.map((t) => [t.type, t.state]),
      [['deploy', 'queued']],
    );
    await assert.rejects(director.deploy(manifest('k2')), (err: AnodyneError) => err.code === 'ANODYNE_E_DEPLOYMENT_LOCKED');
    await director.claimQueued();
    const resumed = await director.wait(queued[0]!.id);
    assert.equal(resumed.state, 'done', JSON.stringify(resumed.error));
    assert.equal((await director.tasks.events(resumed.id)).filter((e) => e.stage === 'Taking over').length, 2, 'queued, then resumed');
    assert.deepEqual(await director.tasks.list({ state: 'processing' }), []);

    const again = await director.wait((await director.deploy(manifest('k2'))).id);
    assert.equal(again.state, 'done', JSON.stringify(again.error));
    const rows = await director.instances('web');
    const vms = await provider.listVms({ deployment: 'web' });
    assert.equal(rows.length, 5);
    assert.deepEqual(vms.map((v) => v.id).sort(), rows.map((r) => r.vm_id).sort(), 'every VM belongs to an instance');
    const netns = (await import('node:child_process'))
      .execFileSync('ip', ['netns', 'list'])
      .toString()
      .split('\n')
      .filter((l) => l.startsWith(`anodyne-${tag}-vm-`));
    assert.equal(netns.length, 5, 'one network namespace per instance, none orphaned');

    const del = await director.wait((await director.deleteDeployment('web')).id);
    assert.equal(del.state, 'done');
    assert.deepEqual(await provider.listVms(), []);
  });
});
