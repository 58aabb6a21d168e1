// Tests of the LXD provider on a real LXD daemon started for them: the contract suite, then state, disks, load balancers and the network.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { AnodyneError, exec, silentLogger, skipUnless, systemClock } from '@anodyne/common';
import { selfSigned } from '@anodyne/common/testing';
import { LxdProvider } from './index.js';
import { lxdUnavailable, providerContractSuite, startLxd, type TestLxd } from '../testing/index.js';

const why = await lxdUnavailable();
const hasLxd = why === false;
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

describe('LXD provider on a real daemon', { skip: skipUnless(hasLxd, why || '') }, () => {
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
    ({ provider, tag } = makeProvider('10.196.2.0/24', { segments: { pool: '10.195.2.0/26', prefix: 28 } }));
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
      await booted(name);
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
      // /etc is the host's, copy-on-write: a VM writes its own without touching the host's.
      const cow = `/etc/anodyne-cow-${vm.id}`;
      assert.equal((await lxd!.exec(name, ['sh', '-c', `echo mine > ${cow} && cat ${cow} /etc/os-release`])).code, 0);
      assert.equal(existsSync(cow), false, 'the host’s /etc is untouched');
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

  it('segments isolate: a VM reaches its own segment and the host, of another segment only the load balancer’s port', async () => {
    const [a, b] = await Promise.all(['iso-a', 'iso-b'].map((name) => provider.createSegment({ name })));
    const on = (agentId: string, seg: string) => provider.createVm(req(agentId, { network: { network: seg } }));
    const [a1, a2, b1] = await Promise.all([on('iso-a1', a!.name), on('iso-a2', a!.name), on('iso-b1', b!.name)]);
    const lb = await provider.createLoadBalancer({ name: 'iso-b-lb', network: b!.name, port: 8443, backends: [{ ip: b1.ip, port: 8080 }] });
    const name = (vm: { id: string }) => `an-${tag}-${vm.id}`;
    try {
      for (const vm of [a1, a2, b1]) await booted(name(vm));
      for (const [vm, body] of [
        [a2, 'from-a2'],
        [b1, 'from-b1'],
      ] as const) {
        const www = `mkdir -p /tmp/www && echo ${body} > /tmp/www/index.html && busybox httpd -p ${vm.ip}:8080 -h /tmp/www`;
        assert.equal((await lxd!.exec(name(vm), ['sh', '-c', www])).code, 0);
      }
      const get = async (vm: { id: string }, url: string) => {
        const r = await lxd!.exec(name(vm), ['busybox', 'timeout', '3', 'busybox', 'wget', '-qO-', url]);
        return r.code === 0 ? r.stdout.trim() : 'no answer';
      };
      for (let i = 0; i < 50 && (await readHttp(lb.ip, 8443)) !== 'from-b1'; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await get(a1, `http://${a2.ip}:8080/`), 'from-a2', 'same segment');
      assert.equal(await get(a1, `http://${lb.ip}:8443/`), 'from-b1', "another segment's load balancer");
      assert.equal(await get(a1, `http://${b1.ip}:8080/`), 'no answer', "another segment's VM");
      assert.equal(await get(a1, `http://${lb.ip}:22/`), 'no answer', "another port of another segment's load balancer");
      assert.equal(await get(b1, `http://${a2.ip}:8080/`), 'no answer', 'and the other way');
      assert.equal(await readHttp(b1.ip, 8080), 'from-b1', 'the host reaches every segment');
    } finally {
      await provider.deleteLoadBalancer(lb.id);
      for (const vm of [a1, a2, b1]) await provider.deleteVm(vm.id);
      for (const seg of [a!, b!]) await provider.deleteSegment(seg.name);
    }
    assert.deepEqual(await provider.listSegments(), []);
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
      // haproxy's health checks connect and reset: a reset socket is not an error of the test.
      const s = createServer((c) => {
        c.on('error', () => undefined);
        c.end(name);
      });
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

  it('over HTTPS: a trusted client certificate with the daemon’s certificate pinned makes VMs; an untrusted one, or another pinned certificate, is named', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-lxdtls-'));
    try {
      const cert = (name: string) => selfSigned(dir, name);
      const trusted = await cert('trusted');
      const stranger = await cert('stranger');
      const port = 18_400 + (process.pid % 90);
      await lxd!.call('PATCH', '/1.0', { config: { 'core.https_address': `127.0.0.1:${port}` } });
      const der = trusted.cert.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
      await lxd!.call('POST', '/1.0/certificates', { type: 'client', name: 'anodyne-test', certificate: der });
      const serverCert = ((await lxd!.get('/1.0')).body.metadata as { environment: { certificate: string } }).environment.certificate;
      const url = `https://127.0.0.1:${port}`;
      const over = (c: { cert: string; key: string }, pinned: string, network: string) =>
        makeProvider(network, { endpoint: { url, cert: c.cert, key: c.key, serverCert: pinned } });
      const { provider: https, tag: t1 } = over(trusted, serverCert, '10.196.6.0/24');
      const vm = await https.createVm(req('tls-a'));
      assert.equal(await https.hasVm(vm.id), true);
      await https.cleanup();
      https.close();
      assert.deepEqual(await leftovers(t1), []);
      const { provider: untrusted } = over(stranger, serverCert, '10.196.7.0/24');
      await assert.rejects(
        untrusted.prepareNetwork(),
        (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_MISCONFIGURED' && /does not trust/.test(e.message),
      );
      untrusted.close();
      const { provider: wrongPin } = over(trusted, stranger.cert, '10.196.8.0/24');
      await assert.rejects(
        wrongPin.prepareNetwork(),
        (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_MISCONFIGURED' && /pinned certificate/.test(e.message),
      );
      wrongPin.close();
      await assert.rejects(
        Promise.resolve().then(() =>
          makeProvider('10.196.9.0/24', { endpoint: { url, ...trusted, serverCert }, segments: { pool: '10.195.9.0/26', prefix: 28 } }),
        ),
        (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_INPUT_INVALID' && /unix socket/.test(e.message),
        'segments need the daemon on this host',
      );
    } finally {
      await lxd!.call('PATCH', '/1.0', { config: { 'core.https_address': '' } }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the host side is made again at start (a reboot loses it), and a range another interface holds is refused before LXD makes anything', async () => {
    const seg = await provider.createSegment({ name: 'host-side' });
    const networks = (await lxd!.get('/1.0/networks?recursion=1')).body.metadata as { name: string; config: Record<string, string> }[];
    const bridge = networks.find((n) => n.config['user.anodyne.id'] === seg.name)!.name;
    const rule = ['FORWARD', '-i', bridge, '-o', bridge, '-m', 'comment', '--comment', `anodyne-lxd:${tag}`, '-j', 'ACCEPT'];
    const forwarding = `/proc/sys/net/ipv4/conf/${bridge}/forwarding`;
    try {
      // What a reboot of the host takes away: the bridge's forwarding and its rule.
      await exec(['iptables', '-w', '-D', ...rule]);
      writeFileSync(forwarding, '0\n');
      const again = new LxdProvider({
        endpoint: { socket: lxd!.socket },
        storagePool: lxd!.pool,
        network: '10.196.2.0/24',
        segments: { pool: '10.195.2.0/26', prefix: 28 },
        tag,
        agentCommand: ['sleep', 'infinity'],
        logger: silentLogger(),
        clock: systemClock,
      });
      await again.prepareNetwork();
      again.close();
      assert.equal((await exec(['iptables', '-w', '-C', ...rule], { okCodes: [0, 1] })).code, 0, 'the rule is back');
      assert.equal(readFileSync(forwarding, 'utf8').trim(), '1', 'forwarding is back');
    } finally {
      await provider.deleteSegment(seg.name);
    }
    // An interface of someone else's on the range: refused by name, and LXD has no network of that provider.
    const dummy = `andum${(process.pid % 1296).toString(36)}`;
    await exec(['ip', 'link', 'add', dummy, 'type', 'bridge']);
    try {
      await exec(['ip', 'addr', 'add', '10.196.12.1/24', 'dev', dummy]);
      const { provider: clash, tag: t } = makeProvider('10.196.12.0/24');
      await assert.rejects(
        clash.prepareNetwork(),
        (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_PROVIDER_NETWORK_IN_USE' && e.message.includes(dummy),
      );
      clash.close();
      assert.equal((await lxd!.get(`/1.0/networks/anlxd${t}`)).status, 404, 'no LXD network made');
    } finally {
      await exec(['ip', 'link', 'del', dummy]);
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
    hostServer = createServer((c) => {
      c.on('error', () => undefined);
      c.end();
    });
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

/** Until the instance's init has set its network up and exec'd tini (createVm answers once the instance runs). */
async function booted(name: string): Promise<void> {
  for (let i = 0; i < 100 && (await lxd!.exec(name, ['cat', '/proc/1/comm'])).stdout.trim() !== 'tini'; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An HTTP GET of / from this host; the body, or '' when nothing answers. */
async function readHttp(ip: string, port: number): Promise<string> {
  const { get } = await import('node:http');
  return new Promise((resolve) => {
    const req = get({ host: ip, port, path: '/', timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body.trim()));
    });
    req.on('error', () => resolve(''));
    req.on('timeout', () => {
      req.destroy();
      resolve('');
    });
  });
}
