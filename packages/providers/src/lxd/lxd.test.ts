// Tests of the LXD provider on a real LXD daemon started for them: the contract suite, then state, disks, load balancers and the network.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { AnodyneError, exec, silentLogger, skipUnless, systemClock } from '@anodyne/common';
import { LxdProvider } from './index.js';
import { providerContractSuite, startLxd, type TestLxd } from '../testing/index.js';

const isRoot = process.getuid?.() === 0;
const hasLxd =
  isRoot &&
  (await exec(['sh', '-c', 'command -v lxd']).then(
    () => true,
    () => false,
  ));
const why = isRoot ? 'needs Debian’s lxd package (make deps installs it)' : 'needs root';
let lxd: TestLxd | undefined;
let n = 0;

before(async () => {
  if (hasLxd) lxd = await startLxd(`t${(process.pid % 1296).toString(36)}`);
});
after(async () => {
  await lxd?.stop();
});

function makeProvider(
  network: string,
  extra: Partial<ConstructorParameters<typeof LxdProvider>[0]> = {},
): { provider: LxdProvider; tag: string } {
  const tag = `x${(process.pid % 1296).toString(36)}${++n}`.slice(0, 6);
  const provider = new LxdProvider({
    endpoint: { socket: lxd!.socket },
    storagePool: lxd!.pool,
    network,
    tag,
    agentCommand: ['sleep', 'infinity'],
    logger: silentLogger(),
    clock: systemClock,
    ...extra,
  });
  return { provider, tag };
}

/** Everything of a tag that LXD still holds (instances, volumes, images, its network). */
async function leftovers(tag: string): Promise<string[]> {
  const left: string[] = [];
  const meta = async <T>(path: string) => (await lxd!.get(path)).body.metadata as T;
  for (const i of await meta<{ name: string; config: Record<string, string> }[]>('/1.0/instances?recursion=1'))
    if (i.config['user.anodyne.tag'] === tag) left.push(`instance ${i.name}`);
  for (const v of await meta<{ name: string; config: Record<string, string> }[]>(
    `/1.0/storage-pools/${lxd!.pool}/volumes/custom?recursion=1`,
  ))
    if (v.config['user.anodyne.tag'] === tag) left.push(`volume ${v.name}`);
  for (const i of await meta<{ fingerprint: string; properties: Record<string, string> }[]>('/1.0/images?recursion=1'))
    if (i.properties.anodyne_tag === tag) left.push(`image ${i.fingerprint.slice(0, 12)}`);
  if ((await lxd!.get(`/1.0/networks/anlxd${tag}`)).status === 200) left.push(`network anlxd${tag}`);
  return left;
}

if (hasLxd) {
  providerContractSuite('lxd (system containers)', () => {
    const { provider, tag } = makeProvider('10.196.1.0/24', { segments: { pool: '10.195.1.0/26', prefix: 28 } });
    return Promise.resolve({
      provider,
      crashVm: async (id: string) => {
        const state = (await lxd!.get(`/1.0/instances/an-${tag}-${id}/state`)).body.metadata as { pid: number };
        process.kill(state.pid, 'SIGKILL');
      },
      teardown: async () => {
        await provider.cleanup();
        provider.close();
        assert.deepEqual(await leftovers(tag), [], 'nothing of the provider remains in LXD');
      },
    });
  });
}

describe('LXD provider on a real daemon', { skip: skipUnless(hasLxd, why) }, () => {
  let provider: LxdProvider;
  let tag: string;
  const gateway = '10.196.2.1';
  const req = (agentId: string, extra: object = {}) => ({
    agentId,
    image: 'host-usr',
    vmType: 'small',
    network: { network: 'default' },
    env: {},
    ...extra,
  });
  const forwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');

  before(() => {
    ({ provider, tag } = makeProvider('10.196.2.0/24'));
  });
  after(async () => {
    await provider.cleanup();
    provider.close();
    assert.deepEqual(await leftovers(tag), [], 'nothing of the provider remains in LXD');
  });

  it('a VM has its address, the host’s route, the agent’s environment, limits and /usr from the host; its network leaves nothing open', async () => {
    const vm = await provider.createVm(req('net-a', { env: { ANODYNE_DIRECTOR: 'https://x' }, metadata: { deployment: 'd' } }));
    try {
      const name = `an-${tag}-${vm.id}`;
      // createVm answers once the instance runs; its init sets the network up, then execs tini (the director waits for the agent).
      for (let i = 0; i < 100 && (await lxd!.exec(name, ['cat', '/proc/1/comm'])).stdout.trim() !== 'tini'; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const addr = (await lxd!.exec(name, ['ip', '-4', '-o', 'addr', 'show', 'eth0'])).stdout;
      assert.match(addr, new RegExp(`inet ${vm.ip.replace(/\./g, '\\.')}/24`));
      assert.match((await lxd!.exec(name, ['ip', 'route'])).stdout, new RegExp(`default via ${gateway.replace(/\./g, '\\.')}`));
      const env = (await lxd!.exec(name, ['cat', '/proc/1/environ'])).stdout.split('\0');
      for (const e of ['ANODYNE_DIRECTOR=https://x', 'ANODYNE_AGENT_ID=net-a', `ANODYNE_VM_ID=${vm.id}`]) assert.ok(env.includes(e), e);
      assert.match((await lxd!.exec(name, ['ps', '-o', 'args=', '-p', '1'])).stdout, /tini -g/);
      // Host and VM reach each other on the bridge.
      const bash = `exec 3<>/dev/tcp/${gateway}/${await hostPort()}`;
      assert.equal((await lxd!.exec(name, ['bash', '-c', bash])).code, 0, 'the VM reaches the host');
      assert.equal((await lxd!.exec(name, ['test', '-x', '/usr/bin/containerd'])).code, 0, 'containerd from the host’s /usr');
      const mem = (await lxd!.exec(name, ['cat', '/sys/fs/cgroup/memory/memory.limit_in_bytes'])).stdout.trim();
      assert.equal(Number(mem), 1024 * 1024 * 1024, 'the VM type’s memory');
      // Nothing forwarded or resolved for it: no routing switched on, no LXD firewall rules, no DNS on the bridge.
      assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8'), forwardBefore);
      assert.doesNotMatch((await exec(['iptables', '-w', '-S'])).stdout, /LXD network anlxd/);
      assert.doesNotMatch((await exec(['ss', '-lnu'])).stdout, new RegExp(`${gateway.replace(/\./g, '\\.')}:53`));
    } finally {
      await provider.deleteVm(vm.id);
    }
  });

  it('a new provider object on the same LXD sees the VMs, disks and load balancers as they are (a restarted platform)', async () => {
    const vm = await provider.createVm(req('state-a', { metadata: { deployment: 'st', index: '0' } }));
    const disk = await provider.createDisk(32, { deployment: 'st' });
    await provider.attachDisk(vm.id, disk.id);
    const lb = await provider.createLoadBalancer({
      name: 'state-lb',
      network: 'default',
      port: 17443,
      backends: [{ ip: vm.ip, port: 1 }],
      metadata: { deployment: 'st' },
    });
    try {
      const again = new LxdProvider({
        endpoint: { socket: lxd!.socket },
        storagePool: lxd!.pool,
        network: '10.196.2.0/24',
        tag,
        agentCommand: ['sleep', 'infinity'],
        logger: silentLogger(),
        clock: systemClock,
      });
      try {
        assert.deepEqual(await again.listVms({ deployment: 'st' }), [vm]);
        assert.deepEqual(await again.listDisks({ deployment: 'st' }), [{ ...disk, vmId: vm.id }]);
        assert.deepEqual(await again.listLoadBalancers({ deployment: 'st' }), [lb]);
        assert.equal(await again.hasVm(vm.id), true);
        // It allocates around what exists.
        const other = await again.createVm(req('state-b'));
        assert.ok(![vm.ip, lb.ip].includes(other.ip));
        await again.deleteVm(other.id);
      } finally {
        again.close();
      }
    } finally {
      await provider.deleteLoadBalancer(lb.id);
      await provider.deleteVm(vm.id);
      await provider.deleteDisk(disk.id);
    }
  });

  it('a disk attached live keeps its data when its VM is deleted and comes back on a new VM (a resurrection)', async () => {
    const disk = await provider.createDisk(32);
    const first = await provider.createVm(req('disk-a'));
    const { path } = await provider.attachDisk(first.id, disk.id);
    assert.equal((await lxd!.exec(`an-${tag}-${first.id}`, ['sh', '-c', `echo kept > ${path}/data`])).code, 0);
    await provider.deleteVm(first.id);
    assert.deepEqual((await provider.listDisks()).find((d) => d.id === disk.id)?.vmId, null, 'detached with its VM');
    const second = await provider.createVm(req('disk-b'));
    try {
      await provider.attachDisk(second.id, disk.id);
      assert.equal((await lxd!.exec(`an-${tag}-${second.id}`, ['cat', `${path}/data`])).stdout, 'kept\n');
      await provider.detachDisk(second.id, disk.id);
      assert.notEqual((await lxd!.exec(`an-${tag}-${second.id}`, ['cat', `${path}/data`])).code, 0, 'gone from the VM when detached');
      assert.equal(await provider.hasVm(second.id), true, 'detaching kept the VM running');
    } finally {
      await provider.deleteVm(second.id);
      await provider.deleteDisk(disk.id);
    }
  });

  it('a load balancer forwards TCP to its backends, follows an update in place, and stops sending to a dead one', async () => {
    const servers: Server[] = [];
    const ports: number[] = [];
    for (const name of ['one', 'two']) {
      const s = createServer((c) => c.end(name));
      await new Promise<void>((r) => s.listen(0, gateway, r));
      servers.push(s);
      ports.push((s.address() as { port: number }).port);
    }
    const lb = await provider.createLoadBalancer({
      name: 'lb-real',
      network: 'default',
      port: 18080,
      backends: [{ ip: gateway, port: ports[0]! }],
    });
    try {
      const ask = () => readVia(lb.ip, 18080);
      assert.equal(await ask(), 'one');
      await provider.updateLoadBalancer(lb.id, [
        { ip: gateway, port: ports[0]! },
        { ip: gateway, port: ports[1]! },
      ]);
      // The reload is haproxy's (a new worker takes the socket): asked until it is in.
      const seen = new Set<string>();
      for (let i = 0; i < 100 && seen.size < 2; i++) {
        seen.add(await ask());
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual([...seen].sort(), ['one', 'two'], 'both backends after the reload');
      await new Promise<void>((r) => servers[0]!.close(() => r()));
      await new Promise((r) => setTimeout(r, 1500));
      const after = new Set<string>();
      for (let i = 0; i < 6; i++) after.add(await ask());
      assert.deepEqual([...after], ['two'], 'the dead backend is out');
    } finally {
      await provider.deleteLoadBalancer(lb.id);
      for (const s of servers) s.close();
    }
  });

  it('an endpoint that does not answer, an untrusted one and a missing pool are each named, before anything is made', async () => {
    const nowhere = new LxdProvider({
      endpoint: { socket: join(lxd!.dir, 'no.socket') },
      storagePool: lxd!.pool,
      network: '10.196.3.0/24',
      tag: 'nope1',
      agentCommand: ['true'],
      logger: silentLogger(),
      clock: systemClock,
    });
    await assert.rejects(
      nowhere.prepareNetwork(),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_UNREACHABLE' && e.message.includes('no.socket'),
    );
    await assert.rejects(
      nowhere.createVm(req('x')),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_UNREACHABLE',
    );
    nowhere.close();
    const { provider: nopool, tag: t2 } = makeProvider('10.196.4.0/24', { storagePool: 'no-such-pool' });
    await assert.rejects(
      nopool.prepareNetwork(),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_MISCONFIGURED' && e.message.includes('no-such-pool'),
    );
    nopool.close();
    const { provider: noproject, tag: t3 } = makeProvider('10.196.5.0/24', { project: 'no-such-project' });
    await assert.rejects(
      noproject.prepareNetwork(),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_MISCONFIGURED' && e.message.includes('no-such-project'),
    );
    noproject.close();
    for (const t of [t2, t3]) assert.deepEqual(await leftovers(t), []);
  });
});

/** A port the host listens on at the gateway, for a VM to connect to. */
let hostServer: Server | undefined;
async function hostPort(): Promise<number> {
  if (!hostServer) {
    hostServer = createServer((c) => c.end());
    await new Promise<void>((r) => hostServer!.listen(0, '10.196.2.1', r));
    hostServer.unref();
  }
  return (hostServer.address() as { port: number }).port;
}

/** Connects to ip:port and answers what the other side sends before closing. */
async function readVia(ip: string, port: number): Promise<string> {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = connect({ host: ip, port });
    let data = '';
    s.on('data', (d) => (data += d.toString()));
    s.on('end', () => resolve(data));
    s.on('error', reject);
    s.setTimeout(5000, () => {
      s.destroy();
      reject(new Error(`no answer from ${ip}:${port}`));
    });
  });
}
