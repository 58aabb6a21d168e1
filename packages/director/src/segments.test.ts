// Deployments on a network segment of their own: made before the first VM, everything placed there, freed on delete; refusals before any task.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnodyneError } from '@anodyne/common';
import { fakeDirector, manifest } from './fake-director.testkit.js';

const code = (expected: string) => (err: unknown) => err instanceof AnodyneError && err.code === expected;

describe('a deployment on a segment of its own', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-segments-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gets its segment before any VM; its VMs and load balancer are placed there; delete frees it', async () => {
    // Two segments of 13 addresses each.
    const { store, provider, director } = await fakeDirector(join(dir, 's.db'), { segments: { pool: '10.251.0.0/27', prefix: 28 } });
    try {
      const lb = { name: 'api', instance_group: 'node', port: 8443, backend_port: 443 };
      const seg = (name: string, instances = 2) => ({ ...manifest(name, instances), segment: true, load_balancers: [lb] });
      const t = await director.wait((await director.deploy(seg('sa'))).id);
      assert.equal(t.state, 'done', JSON.stringify(t.error));
      const stages = (await director.tasks.events(t.id)).map((e) => e.stage);
      assert.ok(stages.indexOf('Preparing network segment') < stages.indexOf('Creating missing VMs'), stages.join(', '));
      const [segment] = await provider.listSegments({ deployment: 'sa' });
      assert.equal(segment?.name, 'sa');
      const vms = await provider.listVms({ deployment: 'sa' });
      assert.equal(vms.length, 2);
      for (const vm of vms) assert.equal(vm.network, 'sa');
      const lbs = await provider.listLoadBalancers({ deployment: 'sa' });
      assert.equal(lbs[0]?.network, 'sa');
      assert.ok((await director.instances('sa')).every((r) => r.network === 'sa'));

      // A second deploy keeps everything where it is; moving off the segment is refused before any task.
      assert.equal((await director.wait((await director.deploy(seg('sa', 3))).id)).state, 'done');
      const tasksBefore = (await director.tasks.list()).length;
      await assert.rejects(director.deploy({ ...manifest('sa', 3), load_balancers: [lb] }), code('ANODYNE_E_MANIFEST_INVALID'));
      assert.equal((await director.wait((await director.deploy(manifest('plain', 1))).id)).state, 'done');
      await assert.rejects(director.deploy({ ...manifest('plain', 1), segment: true }), code('ANODYNE_E_MANIFEST_INVALID'), 'and onto one');
      // Static IPs, more instances than a segment holds, names that are no DNS label: refused before any task.
      const statics = seg('sb', 1);
      statics.instance_groups[0]!.networks = [{ name: 'default', static_ips: ['10.250.0.9'] } as never];
      await assert.rejects(director.deploy(statics), code('ANODYNE_E_MANIFEST_INVALID'));
      await assert.rejects(director.deploy(seg('sb', 13)), code('ANODYNE_E_MANIFEST_INVALID'));
      await assert.rejects(director.deploy(seg('s_b', 1)), code('ANODYNE_E_MANIFEST_INVALID'));
      // The pool's second segment, then none free: refused with its code before any task.
      assert.equal((await director.wait((await director.deploy(seg('sb', 1))).id)).state, 'done');
      const before = (await director.tasks.list()).length;
      await assert.rejects(director.deploy(seg('sc', 1)), code('ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED'));
      assert.equal((await director.tasks.list()).length, before, 'no task was made');
      assert.ok(before > tasksBefore);

      // Deleting frees the segment: the next deployment gets it.
      assert.equal((await director.wait((await director.deleteDeployment('sa')).id)).state, 'done');
      assert.deepEqual(await provider.listSegments({ deployment: 'sa' }), []);
      assert.equal((await director.wait((await director.deploy(seg('sc', 1))).id)).state, 'done');
      assert.equal(provider.info().segments!.free, 0);
      for (const d of ['sb', 'sc', 'plain']) assert.equal((await director.wait((await director.deleteDeployment(d)).id)).state, 'done');
      assert.equal(provider.info().segments!.free, 2, 'the pool is whole');
    } finally {
      await store.close();
    }
  });

  it('cut from a share of the pool: only from it; a full share, or one outside the pool, is refused before any task', async () => {
    // Four segments; the share is the pool's second half (two of them).
    const { store, provider, director } = await fakeDirector(join(dir, 'w.db'), { segments: { pool: '10.251.0.0/26', prefix: 28 } });
    try {
      const seg = (name: string, within: string) => ({ ...manifest(name, 1), segment: true, segment_within: within });
      for (const name of ['wa', 'wb'])
        assert.equal((await director.wait((await director.deploy(seg(name, '10.251.0.32/27'))).id)).state, 'done');
      const ranges = (await provider.listSegments()).map((x) => x.range).sort();
      assert.deepEqual(ranges, ['10.251.0.32/28', '10.251.0.48/28']);
      const before = (await director.tasks.list()).length;
      await assert.rejects(
        director.deploy(seg('wc', '10.251.0.32/27')),
        code('ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED'),
        'the share is full',
      );
      for (const bad of ['10.251.0.64/27', '10.251.0.0/29', '10.251.0.8/28', '10.251.0/27'])
        await assert.rejects(director.deploy(seg('wc', bad)), code('ANODYNE_E_MANIFEST_INVALID'), bad);
      await assert.rejects(director.deploy({ ...manifest('wc', 1), segment_within: '10.251.0.0/27' }), code('ANODYNE_E_MANIFEST_INVALID'));
      assert.equal((await director.tasks.list()).length, before, 'no task was made');
      assert.equal(provider.info().segments!.free, 2, 'the rest of the pool is free');
      assert.equal(director.checkSegmentShare('10.251.0.0/26', 'ANODYNE_E_INVALID_INPUT', 'segment_pool'), 4);
      assert.throws(
        () => director.checkSegmentShare('10.252.0.0/26', 'ANODYNE_E_INVALID_INPUT', 'segment_pool'),
        code('ANODYNE_E_INVALID_INPUT'),
      );
      for (const d of ['wa', 'wb']) assert.equal((await director.wait((await director.deleteDeployment(d)).id)).state, 'done');
    } finally {
      await store.close();
    }
  });
});
