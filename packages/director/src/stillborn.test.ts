// A VM whose create was cut short (recorded, but its agent never answered) is made again by the next deploy, not failed on.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeDirector, manifest } from './fake-director.testkit.js';

describe('an instance whose VM never got an answering agent', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-stillborn-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gets a new VM at the next deploy; the other instances are untouched', async () => {
    const { store, provider, agents, director } = await fakeDirector(join(dir, 'd.db'));
    try {
      const m = manifest('sb', 3);
      assert.equal((await director.wait((await director.deploy(m)).id)).state, 'done');
      const before = await director.instances('sb');
      const cut = before.find((r) => r.idx === 1)!;
      // node/1 as a director killed mid-create leaves it: its VM recorded, no bundle, an agent that never answers.
      await store.db.updateTable('instances').set({ bundle_hash: null }).where('id', '=', cut.id).execute();
      agents.hang(cut.agent_id);
      const t = await director.wait((await director.deploy(m)).id);
      assert.equal(t.state, 'done', JSON.stringify(t.error));
      const afterRows = await director.instances('sb');
      const remade = afterRows.find((r) => r.idx === 1)!;
      assert.notEqual(remade.vm_id, cut.vm_id, 'node/1 has a new VM');
      assert.equal(await provider.hasVm(cut.vm_id!), false, 'its old VM is gone');
      assert.ok(remade.bundle_hash, 'and runs its bundle');
      for (const i of [0, 2])
        assert.equal(afterRows.find((r) => r.idx === i)!.vm_id, before.find((r) => r.idx === i)!.vm_id, `node/${i} untouched`);
      const created = (await director.tasks.events(t.id)).filter((e) => e.stage === 'Creating missing VMs' && e.state === 'finished');
      assert.deepEqual(
        created.map((e) => e.instance),
        ['node/1'],
      );
    } finally {
      await store.close();
    }
  });
});
