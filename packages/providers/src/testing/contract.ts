// The provider contract suite: the rules every provider keeps (VMs, IPs, disks, load balancers), run by each provider's tests.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AnodyneError } from '@anodyne/common';
import type { Provider } from '../contract.js';

export interface ContractHarness {
  provider: Provider;
  /** Makes the VM's init die without the provider's involvement (kill -9, host crash). */
  crashVm(id: string): Promise<void>;
  teardown(): Promise<void>;
}

function code(expected: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof AnodyneError, `expected an AnodyneError, got ${String(err)}`);
    assert.equal(err.code, expected);
    return true;
  };
}

/**
 * The rules every provider must keep (docs/provider-contract.md). Run it from each
 * provider's own test file with a factory for a fresh, empty provider.
 */
export function providerContractSuite(name: string, setup: () => Promise<ContractHarness>): void {
  describe(`provider contract: ${name}`, () => {
    let h: ContractHarness;
    let p: Provider;
    before(async () => {
      h = await setup();
      p = h.provider;
    });
    after(async () => h.teardown());

    const network = () => p.info().networks[0]!;
    const image = () => p.info().images[0]!;
    const vmType = () => Object.keys(p.info().vmTypes)[0]!;
    const request = (agentId: string, ip?: string) => ({
      agentId,
      image: image(),
      vmType: vmType(),
      network: { network: network().name, ...(ip ? { ip } : {}) },
      env: { ANODYNE_TEST: '1' },
    });
    const ipAt = (offset: number): string => {
      const [a, b, c, d] = network().range.split('/')[0]!.split('.').map(Number) as [number, number, number, number];
      const n = ((a * 256 + b) * 256 + c) * 256 + d + offset;
      return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
    };

    it('describes itself', () => {
      const info = p.info();
      assert.ok(info.name);
      assert.ok(Object.keys(info.vmTypes).length > 0);
      assert.ok(info.networks.length > 0);
      assert.ok(info.images.length > 0);
    });

    it('creates VMs with allocated and static IPs, lists them by metadata, replaces metadata', async () => {
      const a = await p.createVm({ ...request('contract-a'), metadata: { deployment: 'd1', index: '0' } });
      const b = await p.createVm({ ...request('contract-b', ipAt(40)), metadata: { deployment: 'd2' } });
      try {
        assert.equal(b.ip, ipAt(40));
        assert.notEqual(a.ip, b.ip);
        assert.equal(await p.hasVm(a.id), true);
        assert.deepEqual(
          (await p.listVms({ deployment: 'd1' })).map((v) => v.id),
          [a.id],
        );
        await p.setVmMetadata(a.id, { deployment: 'd1', index: '1' });
        const [listed] = await p.listVms({ index: '1' });
        assert.equal(listed?.id, a.id);
        assert.equal(listed?.agentId, 'contract-a');
        assert.equal(listed?.state, 'running');
      } finally {
        await p.deleteVm(a.id);
        await p.deleteVm(b.id);
      }
      assert.equal(await p.hasVm(a.id), false);
      assert.deepEqual(await p.listVms({ deployment: 'd1' }), []);
    });

    it('refuses bad input with a code and creates nothing', async () => {
      const before = (await p.listVms()).length;
      const taken = await p.createVm(request('contract-taken', ipAt(41)));
      try {
        await assert.rejects(p.createVm({ ...request('x'), vmType: 'no-such-type' }), code('ANODYNE_E_PROVIDER_VM_TYPE_UNKNOWN'));
        await assert.rejects(p.createVm(request('x', '192.0.2.7')), code('ANODYNE_E_PROVIDER_IP_OUT_OF_RANGE'));
        await assert.rejects(p.createVm(request('x', ipAt(41))), code('ANODYNE_E_PROVIDER_IP_TAKEN'));
        await assert.rejects(p.createVm(request('x', 'not-an-ip')), code('ANODYNE_E_PROVIDER_INPUT_INVALID'));
        await assert.rejects(p.createVm({ ...request('x'), image: 'no-such-image' }), code('ANODYNE_E_PROVIDER_INPUT_INVALID'));
        await assert.rejects(p.createVm({ ...request('bad id with spaces') }), code('ANODYNE_E_PROVIDER_INPUT_INVALID'));
        assert.equal((await p.listVms()).length, before + 1);
      } finally {
        await p.deleteVm(taken.id);
      }
      assert.equal((await p.listVms()).length, before);
      // The address is free again.
      const again = await p.createVm(request('contract-again', ipAt(41)));
      await p.deleteVm(again.id);
    });

    it('a VM whose init died is not there; deleting it succeeds, twice', async () => {
      const vm = await p.createVm(request('contract-crash'));
      await h.crashVm(vm.id);
      let gone = false;
      for (let i = 0; i < 100 && !gone; i++) {
        gone = !(await p.hasVm(vm.id));
        if (!gone) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(gone, 'hasVm turns false after the init dies');
      await p.deleteVm(vm.id);
      await p.deleteVm(vm.id);
      await p.deleteVm('vm-00000000');
      assert.equal(await p.hasVm('no-such-vm'), false);
    });

    it('reboots a VM keeping its IP', async () => {
      const vm = await p.createVm(request('contract-reboot'));
      try {
        await p.rebootVm(vm.id);
        assert.equal(await p.hasVm(vm.id), true);
        const [listed] = (await p.listVms()).filter((v) => v.id === vm.id);
        assert.equal(listed?.ip, vm.ip);
        await assert.rejects(p.rebootVm('vm-00000000'), code('ANODYNE_E_PROVIDER_VM_NOT_FOUND'));
      } finally {
        await p.deleteVm(vm.id);
      }
    });

    it('manages persistent disks: attach, refuse delete while attached, detach, delete', async () => {
      const vm = await p.createVm(request('contract-disk'));
      const disk = await p.createDisk(64, { purpose: 'test' });
      try {
        assert.equal(await p.hasDisk(disk.id), true);
        assert.deepEqual(
          (await p.listDisks({ purpose: 'test' })).map((d) => [d.id, d.vmId]),
          [[disk.id, null]],
        );
        assert.deepEqual(await p.listDisks({ purpose: 'none' }), []);
        const att = await p.attachDisk(vm.id, disk.id);
        assert.ok(att.path.length > 0);
        assert.equal((await p.listDisks({ purpose: 'test' }))[0]?.vmId, vm.id, 'the list says where a disk is attached');
        assert.deepEqual(await p.attachDisk(vm.id, disk.id), att, 'attach is idempotent');
        await assert.rejects(p.deleteDisk(disk.id), code('ANODYNE_E_PROVIDER_DISK_ATTACHED'));
        await assert.rejects(p.attachDisk(vm.id, 'disk-00000000'), code('ANODYNE_E_PROVIDER_DISK_NOT_FOUND'));
        await p.detachDisk(vm.id, disk.id);
        await p.detachDisk(vm.id, disk.id);
        await assert.rejects(p.createDisk(0), code('ANODYNE_E_PROVIDER_INPUT_INVALID'));
      } finally {
        await p.deleteVm(vm.id);
        await p.deleteDisk(disk.id);
      }
      assert.equal(await p.hasDisk(disk.id), false);
      assert.deepEqual(await p.listDisks({ purpose: 'test' }), []);
      await p.deleteDisk(disk.id);
    });

    it('manages load balancers: create, update backends and health check, delete (idempotent)', async () => {
      const lb = await p.createLoadBalancer({
        name: 'contract-lb',
        network: network().name,
        port: 16443,
        backends: [{ ip: ipAt(50), port: 6443 }],
        metadata: { deployment: 'contract' },
      });
      try {
        assert.equal(lb.port, 16443);
        assert.deepEqual(
          (await p.listLoadBalancers({ deployment: 'contract' })).map((l) => l.id),
          [lb.id],
        );
        assert.deepEqual(await p.listLoadBalancers({ deployment: 'other' }), []);
        const updated = await p.updateLoadBalancer(lb.id, [
          { ip: ipAt(50), port: 6443 },
          { ip: ipAt(51), port: 6443 },
        ]);
        assert.equal(updated.ip, lb.ip);
        assert.equal(updated.backends.length, 2);
        await assert.rejects(p.updateLoadBalancer('no-such-lb', []), code('ANODYNE_E_PROVIDER_LB_NOT_FOUND'));
        assert.deepEqual(await p.getLoadBalancer(lb.id), updated);
        await assert.rejects(p.getLoadBalancer('no-such-lb'), code('ANODYNE_E_PROVIDER_LB_NOT_FOUND'));
        await assert.rejects(p.updateLoadBalancer(lb.id, [{ ip: 'x', port: 1 }]), code('ANODYNE_E_PROVIDER_INPUT_INVALID'));
        const checked = await p.updateLoadBalancer(lb.id, updated.backends, { httpPath: '/readyz', tls: true });
        assert.deepEqual(checked.healthCheck, { httpPath: '/readyz', tls: true });
        assert.deepEqual((await p.getLoadBalancer(lb.id)).healthCheck, { httpPath: '/readyz', tls: true });
        await assert.rejects(p.updateLoadBalancer(lb.id, [], { httpPath: 'readyz' }), code('ANODYNE_E_PROVIDER_INPUT_INVALID'));
        await assert.rejects(
          p.createLoadBalancer({
            name: 'contract-lb2',
            network: network().name,
            port: 16444,
            backends: [],
            healthCheck: { httpPath: '/a b' },
          }),
          code('ANODYNE_E_PROVIDER_INPUT_INVALID'),
        );
      } finally {
        await p.deleteLoadBalancer(lb.id);
      }
      assert.deepEqual(await p.listLoadBalancers({ deployment: 'contract' }), []);
      await p.deleteLoadBalancer(lb.id);
    });

    const inRange = (ip: string, range: string): boolean => {
      const toInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
      const [base, prefix] = range.split('/') as [string, string];
      const size = 2 ** (32 - Number(prefix));
      return toInt(ip) > toInt(base) + 1 && toInt(ip) < toInt(base) + size - 1;
    };

    it('network segments: made from the pool, VMs and load balancers placed on them, refused while used, the pool exhausts and frees', async (t) => {
      if (!p.info().capabilities.segments) return t.skip('the provider has no segments');
      const pool = p.info().segments!;
      assert.ok(pool.total >= 2 && pool.free === pool.total && pool.addresses > 0, JSON.stringify(pool));
      const a = await p.createSegment({ name: 'contract-a', metadata: { deployment: 'contract' } });
      assert.deepEqual(await p.createSegment({ name: 'contract-a' }), a, 'idempotent by name');
      assert.equal(p.info().segments!.free, pool.total - 1);
      for (const bad of ['default', 'Upper', 'a_b', '-a', '', 'x'.repeat(64)])
        await assert.rejects(p.createSegment({ name: bad }), code('ANODYNE_E_PROVIDER_INPUT_INVALID'), bad);
      const vm = await p.createVm({ ...request('seg-vm'), network: { network: a.name } });
      const lb = await p.createLoadBalancer({ name: 'contract-seg-lb', network: a.name, port: 16445, backends: [{ ip: vm.ip, port: 1 }] });
      try {
        assert.equal(vm.network, a.name);
        assert.ok(inRange(vm.ip, a.range), `${vm.ip} in ${a.range}`);
        assert.equal(lb.network, a.name);
        assert.ok(inRange(lb.ip, a.range), `${lb.ip} in ${a.range}`);
        await assert.rejects(
          p.createVm({ ...request('seg-vm2'), network: { network: 'no-such-segment' } }),
          code('ANODYNE_E_PROVIDER_INPUT_INVALID'),
        );
        await assert.rejects(p.deleteSegment(a.name), code('ANODYNE_E_PROVIDER_SEGMENT_IN_USE'));
        assert.deepEqual(
          (await p.listSegments({ deployment: 'contract' })).map((x) => x.name),
          [a.name],
        );
      } finally {
        await p.deleteVm(vm.id);
        await p.deleteLoadBalancer(lb.id);
      }
      // Every other segment of the pool, then one more than it holds.
      const rest = [];
      for (let i = 1; i < pool.total; i++) rest.push(await p.createSegment({ name: `contract-${i}` }));
      const ranges = new Set([a.range, ...rest.map((x) => x.range)]);
      assert.equal(ranges.size, pool.total, 'no two segments share a range');
      await assert.rejects(p.createSegment({ name: 'contract-over' }), code('ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED'));
      assert.equal(p.info().segments!.free, 0);
      for (const x of [a, ...rest]) await p.deleteSegment(x.name);
      await p.deleteSegment(a.name);
      assert.deepEqual(await p.listSegments(), []);
      assert.equal(p.info().segments!.free, pool.total, 'the pool is whole again');
    });

    it('network segments cut from a share of the pool: only from it, exhausted when it is though the pool is not; a share outside the pool or narrower than a segment is refused', async (t) => {
      if (!p.info().capabilities.segments) return t.skip('the provider has no segments');
      const pool = p.info().segments!;
      const [base, bits] = pool.pool.split('/') as [string, string];
      const toInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
      const toIp = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
      const half = 2 ** (32 - Number(bits) - 1);
      // The pool's second half.
      const share = `${toIp(toInt(base) + half)}/${Number(bits) + 1}`;
      const inShare = pool.total / 2;
      const made = [];
      for (let i = 0; i < inShare; i++) made.push(await p.createSegment({ name: `share-${i}`, within: share }));
      try {
        for (const s of made) assert.ok(toInt(s.range.split('/')[0]!) >= toInt(base) + half, `${s.range} in ${share}`);
        await assert.rejects(p.createSegment({ name: 'share-over', within: share }), code('ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED'));
        assert.equal(p.info().segments!.free, pool.total - inShare, 'the rest of the pool is free');
        const outside = `${toIp(toInt(base) + 2 * half)}/${Number(bits) + 1}`;
        const narrow = `${toIp(toInt(base))}/${pool.prefix + 1}`;
        for (const bad of [outside, narrow, `${toIp(toInt(base) + 1)}/${pool.prefix}`, 'not-a-cidr'])
          await assert.rejects(p.createSegment({ name: 'share-bad', within: bad }), code('ANODYNE_E_PROVIDER_INPUT_INVALID'), bad);
        assert.deepEqual((await p.listSegments()).map((x) => x.name).sort(), made.map((x) => x.name).sort(), 'nothing made by a refusal');
      } finally {
        for (const s of made) await p.deleteSegment(s.name);
      }
    });
  });
}
