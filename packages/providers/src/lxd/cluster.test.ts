// Tests of the LXD provider on a real LXD cluster of three members (each a daemon in a network namespace of its own): the contract suite over VXLAN, placement, disks following their VMs, a lost member.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger, skipUnless, systemClock } from '@anodyne/common';
import { LxdProvider } from './index.js';
import { lxdUnavailable, providerContractSuite, startLxdCluster, type TestLxdCluster } from '../testing/index.js';

const why = await lxdUnavailable();
const hasLxd = why === false;
let cluster: TestLxdCluster | undefined;
let n = 0;

before(async () => {
  if (hasLxd) cluster = await startLxdCluster(`c${(process.pid % 1296).toString(36)}`, { members: 3, range: '10.196.40.0/24' });
});
after(async () => {
  await cluster?.stop();
});

function makeProvider(
  network: string,
  extra: Partial<ConstructorParameters<typeof LxdProvider>[0]> = {},
): { provider: LxdProvider; tag: string } {
  const tag = `c${(process.pid % 1296).toString(36)}${++n}`.slice(0, 6);
  const provider = new LxdProvider({
    endpoint: { socket: cluster!.socket },
    storagePool: cluster!.pool,
    network,
    tag,
    agentCommand: ['sleep', 'infinity'],
    vxlan: { hostInterface: cluster!.hostInterface, memberInterface: cluster!.memberInterface },
    logger: silentLogger(),
    clock: systemClock,
    ...extra,
  });
  return { provider, tag };
}

const meta = async <T>(path: string): Promise<T> => (await cluster!.get(path)).body.metadata as T;
const location = async (instance: string): Promise<string> => (await meta<{ location: string }>(`/1.0/instances/${instance}`)).location;

/** Whether a TCP connection from an instance to `ip` reaches that address's host (an answer, even a refusal, rather than silence). */
async function reaches(instance: string, ip: string): Promise<boolean> {
  const r = await cluster!.exec(instance, ['bash', '-c', `timeout 3 bash -c 'exec 3<>/dev/tcp/${ip}/9' 2>&1; true`]);
  return /refused/i.test(r.stdout + r.stderr);
}

async function booted(instance: string): Promise<void> {
  for (let i = 0; i < 100 && (await cluster!.exec(instance, ['cat', '/proc/1/comm'])).stdout.trim() !== 'tini'; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
}

if (hasLxd) {
  providerContractSuite('lxd cluster (3 members, networks over VXLAN)', () => {
    const { provider, tag } = makeProvider('10.196.42.0/24', { segments: { pool: '10.195.40.0/26', prefix: 28 } });
    return Promise.resolve({
      provider,
      crashVm: async (id: string) => {
        const state = await meta<{ pid: number }>(`/1.0/instances/an-${tag}-${id}/state`);
        process.kill(state.pid, 'SIGKILL');
      },
      teardown: async () => {
        await provider.cleanup();
        provider.close();
      },
    });
  });
}

describe('LXD provider on a cluster of three members', { skip: skipUnless(hasLxd, why || '') }, () => {
  let provider: LxdProvider;
  let tag: string;
  const req = (agentId: string, metadata: Record<string, string>, extra: object = {}) => ({
    agentId,
    image: 'host-usr',
    vmType: 'small',
    network: { network: 'default' },
    env: {},
    metadata,
    ...extra,
  });

  before(() => {
    ({ provider, tag } = makeProvider('10.196.41.0/24', { segments: { pool: '10.195.41.0/26', prefix: 28 } }));
  });
  after(async () => {
    await provider.cleanup();
    provider.close();
    const left = (await meta<{ name: string }[]>('/1.0/instances?recursion=1')).filter((i) => i.name.startsWith(`an-${tag}-`));
    assert.deepEqual(left, [], 'nothing of the provider remains in LXD');
  });

  it('a server refuses a cluster without VXLAN, naming the setting', async () => {
    const plain = new LxdProvider({
      endpoint: { socket: cluster!.socket },
      storagePool: cluster!.pool,
      network: '10.196.43.0/24',
      tag: 'cnovx',
      agentCommand: ['sleep', 'infinity'],
      logger: silentLogger(),
      clock: systemClock,
    });
    await assert.rejects(
      plain.check(),
      (e: Error & { code?: string }) => e.code === 'ANODYNE_E_PROVIDER_MISCONFIGURED' && /vxlan/.test(e.message),
    );
    plain.close();
  });

  const vms: { id: string; ip: string; instance: string; member: string }[] = [];

  it('the VMs of one instance group spread over the members, and reach each other and the host across members', async () => {
    for (const i of [0, 1, 2]) {
      const vm = await provider.createVm(req(`spread-${i}`, { deployment: 'd', group: 'workers', index: String(i) }));
      const instance = `an-${tag}-${vm.id}`;
      vms.push({ id: vm.id, ip: vm.ip, instance, member: await location(instance) });
    }
    assert.deepEqual(vms.map((v) => v.member).sort(), ['m0', 'm1', 'm2'], 'one per member');
    for (const v of vms) await booted(v.instance);
    for (const [a, b] of [
      [0, 1],
      [1, 2],
      [2, 0],
    ] as const) {
      assert.ok(await reaches(vms[a]!.instance, vms[b]!.ip), `${vms[a]!.member} reaches ${vms[b]!.member}`);
    }
    for (const v of vms) assert.ok(await reaches(v.instance, '10.196.41.1'), `${v.member}'s VM reaches the host`);
  });

  it('a disk follows its VM to another member with its data, and is made where its instance’s VM is', async () => {
    const disk = await provider.createDisk(64, { deployment: 'd' });
    const [first, second] = vms;
    await provider.attachDisk(first!.id, disk.id);
    const path = `/var/lib/anodyne/disks/${disk.id}/kept`;
    assert.equal((await cluster!.exec(first!.instance, ['sh', '-c', `echo data-of-${disk.id} > ${path}`])).code, 0);
    await provider.detachDisk(first!.id, disk.id);
    await provider.attachDisk(second!.id, disk.id);
    const volume = await meta<{ location: string }>(`/1.0/storage-pools/${cluster!.pool}/volumes/custom/an-${tag}-${disk.id}`);
    assert.equal(volume.location, second!.member, 'the volume is on its new VM’s member');
    assert.equal((await cluster!.exec(second!.instance, ['cat', path])).stdout.trim(), `data-of-${disk.id}`);
    await provider.detachDisk(second!.id, disk.id);
    await provider.deleteDisk(disk.id);
    const own = await provider.createDisk(16, { deployment: 'd', instance_id: 'i-3' });
    const vm = await provider.createVm(req('own-disk', { deployment: 'd', group: 'masters', instance_id: 'i-3' }));
    const instance = `an-${tag}-${vm.id}`;
    const at = await meta<{ location: string }>(`/1.0/storage-pools/${cluster!.pool}/volumes/custom/an-${tag}-${own.id}`);
    assert.equal(await location(instance), at.location, 'a VM goes where its instance’s free disk is');
    await provider.deleteVm(vm.id);
    await provider.deleteDisk(own.id);
  });

  it('an availability zone is the cluster group of its name: its VMs go on that group’s members only', async () => {
    await cluster!.call('POST', '/1.0/cluster/groups', { name: 'zone-b', description: 'test zone', members: ['m1'] });
    const placed: string[] = [];
    for (const i of [0, 1]) {
      const vm = await provider.createVm(req(`zoned-${i}`, { deployment: 'z', group: 'workers', index: String(i) }, { az: 'zone-b' }));
      placed.push(await location(`an-${tag}-${vm.id}`));
      await provider.deleteVm(vm.id);
    }
    assert.deepEqual(placed, ['m1', 'm1']);
  });

  it('a lost member: its VMs are not running, deleting one answers, and a VM with the same address runs on a member still online', async () => {
    const lost = vms[2]!;
    await cluster!.loseMember(lost.member);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const members = await meta<{ server_name: string; status: string }[]>('/1.0/cluster/members?recursion=1');
      if (members.find((m) => m.server_name === lost.member)?.status !== 'Online') break;
      assert.ok(Date.now() < deadline, `LXD did not see ${lost.member} go`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const listed = (await provider.listVms({ deployment: 'd' })).find((v) => v.id === lost.id);
    assert.notEqual(listed?.state, 'running', 'the lost member’s VM is not running');
    assert.equal(await provider.hasVm(lost.id), false);
    await provider.deleteVm(lost.id);
    assert.equal(
      (await provider.listVms()).some((v) => v.id === lost.id),
      false,
      'a deleted VM of a lost member is no longer listed',
    );
    const again = await provider.createVm(
      req('spread-2b', { deployment: 'd', group: 'workers', index: '2' }, { network: { network: 'default', ip: lost.ip } }),
    );
    const instance = `an-${tag}-${again.id}`;
    assert.equal(again.ip, lost.ip);
    assert.notEqual(await location(instance), lost.member);
    await booted(instance);
    assert.ok(await reaches(vms[0]!.instance, again.ip), 'the new VM is reached at the old address');
    assert.equal((await provider.listVms()).find((v) => v.id === again.id)?.state, 'running');
    // LXD makes a network only with every member: a new segment waits for the member (or its removal), said so.
    await assert.rejects(
      provider.createSegment({ name: 'after-the-loss' }),
      (e: Error & { code?: string; retryable?: boolean }) =>
        e.code === 'ANODYNE_E_PROVIDER_UNREACHABLE' && e.retryable === true && e.message.includes(lost.member),
    );
    // What an operator does with a machine that is not coming back: removed from the LXD cluster (its instances' records with it).
    await cluster!.call('DELETE', `/1.0/cluster/members/${lost.member}?force=1`);
  });
});
