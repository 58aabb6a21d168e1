// Tests of the local provider: the contract suite, then networking, memory limits, disks, containerd and LBs on the host (root).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnodyneError, CommandError, exec, silentLogger, systemClock, skipUnless } from '@anodyne/common';
import { locateRelease, httpGet } from '@anodyne/release';
import { LocalProvider, GUEST_DISK_DIR } from './index.js';
import { providerContractSuite, hostLeftovers, removeStaleProviders } from '../testing/index.js';
import { HOST_LIMIT_FLOORS, linkExists, netnsList, raiseHostLimits, rulesWithComment } from './host.js';
import { segmentBridgesOfTag } from './network.js';

const RELEASE_GUEST = '/var/lib/anodyne/release';
let n = 0;

/** A provider with its own tag, bridge and network, so suites never share host objects. */
function makeProvider(
  network: string,
  extra: Partial<ConstructorParameters<typeof LocalProvider>[0]> = {},
): { provider: LocalProvider; tag: string; dataDir: string } {
  const tag = `t${(process.pid % 1296).toString(36)}${++n}`.slice(0, 6);
  const dataDir = mkdtempSync(join(tmpdir(), `anodyne-local-${tag}-`));
  const release = locateRelease();
  const provider = new LocalProvider({
    dataDir,
    tag,
    network,
    agentCommand: ['sleep', 'infinity'],
    logger: silentLogger(),
    clock: systemClock,
    binds: [{ host: release.dir, guest: RELEASE_GUEST, readOnly: true }],
    ...extra,
  });
  return { provider, tag, dataDir };
}

const isRoot = process.getuid?.() === 0;

// What a killed earlier run of this file left on its ranges (netns, bridges, rules, mounts) is removed first.
before(async () => {
  if (isRoot) await removeStaleProviders(['10.198.1.0/24', '10.198.2.0/24', '10.198.4.0/24', '10.199.1.0/24', '10.199.2.0/24']);
});

providerContractSuite('local (namespaces)', () => {
  const { provider, tag, dataDir } = makeProvider('10.198.1.0/24', { segments: { pool: '10.199.1.0/26', prefix: 28 } });
  return Promise.resolve({
    provider,
    crashVm: (id: string) => {
      process.kill(provider.initPid(id), 'SIGKILL');
      return Promise.resolve();
    },
    teardown: async () => {
      await provider.cleanup();
      assert.deepEqual(await hostLeftovers(tag, dataDir), []);
    },
  });
});

describe('host kernel limits', () => {
  it('raises a limit below its floor, never lowers one above it, and says what it changed', () => {
    const root = mkdtempSync(join(tmpdir(), 'anodyne-sysctl-'));
    try {
      mkdirSync(join(root, 'fs/inotify'), { recursive: true });
      writeFileSync(join(root, 'fs/inotify/max_user_instances'), '128\n');
      writeFileSync(join(root, 'fs/inotify/max_user_watches'), '999999\n');
      const raised = raiseHostLimits(HOST_LIMIT_FLOORS, root);
      assert.deepEqual(raised, { 'fs.inotify.max_user_instances': { from: 128, to: 8192 } });
      assert.equal(readFileSync(join(root, 'fs/inotify/max_user_instances'), 'utf8').trim(), '8192');
      assert.equal(readFileSync(join(root, 'fs/inotify/max_user_watches'), 'utf8').trim(), '999999');
      assert.deepEqual(raiseHostLimits(HOST_LIMIT_FLOORS, root), {}, 'a second pass changes nothing');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('local provider on the host', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let provider: LocalProvider;
  let tag: string;
  let dataDir: string;
  const vmReq = (agentId: string, extra: object = {}) => ({
    agentId,
    image: 'host-usr',
    vmType: 'small',
    network: { network: 'default' },
    env: {},
    ...extra,
  });
  const gateway = '10.198.2.1';

  before(() => {
    ({ provider, tag, dataDir } = makeProvider('10.198.2.0/24', { segments: { pool: '10.199.2.0/26', prefix: 28 } }));
  });

  after(async () => {
    await provider.cleanup();
    assert.deepEqual(await hostLeftovers(tag, dataDir), [], 'nothing of the provider remains on the host');
  });

  /** busybox httpd inside a VM answering `body` on port. */
  async function serve(vmId: string, ipAddr: string, port: number, body: string): Promise<void> {
    await provider.execInVm(vmId, ['sh', '-c', `mkdir -p /tmp/www-${port} && echo ${body} > /tmp/www-${port}/index.html`]);
    provider.spawnInVm(vmId, ['busybox', 'httpd', '-f', '-p', `${ipAddr}:${port}`, '-h', `/tmp/www-${port}`]);
    for (let i = 0; i < 100; i++) {
      if (
        await provider.execInVm(vmId, ['busybox', 'wget', '-qO-', `http://${ipAddr}:${port}/`]).then(
          () => true,
          () => false,
        )
      )
        return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`httpd in ${vmId} did not start`);
  }

  async function hostGet(url: string): Promise<string> {
    const r = await httpGet(url);
    return r.body.trim();
  }

  it('three VMs reach each other and the host at their IPs', async (t) => {
    const started = performance.now();
    const vms = await Promise.all(['net-a', 'net-b', 'net-c'].map((a) => provider.createVm(vmReq(a))));
    t.diagnostic(`3 bare VMs created in ${(performance.now() - started).toFixed(0)} ms`);
    let hostServer: Server | undefined;
    try {
      const [a, b, c] = vms as [(typeof vms)[0], (typeof vms)[0], (typeof vms)[0]];
      await serve(a.id, a.ip, 8080, 'from-a');
      for (const other of [b, c]) {
        const { stdout } = await provider.execInVm(other.id, ['busybox', 'wget', '-qO-', `http://${a.ip}:8080/`]);
        assert.equal(stdout.trim(), 'from-a');
      }
      assert.equal(await hostGet(`http://${a.ip}:8080/`), 'from-a', 'the host reaches a VM');
      hostServer = createServer((_req, res) => res.end('from-host'));
      await new Promise<void>((r) => hostServer!.listen(18081, gateway, r));
      const { stdout } = await provider.execInVm(c.id, ['busybox', 'wget', '-qO-', `http://${gateway}:18081/`]);
      assert.equal(stdout.trim(), 'from-host', 'a VM reaches the host');
      // Each VM sees only its own processes and has its own hostname.
      const ps = await provider.execInVm(b.id, ['ps', '-e', '-o', 'comm=']);
      assert.ok(!ps.stdout.includes('httpd'), 'httpd of VM a is not visible in VM b');
      assert.equal((await provider.execInVm(b.id, ['hostname'])).stdout.trim(), 'net-b');
    } finally {
      hostServer?.close();
      for (const vm of vms) await provider.deleteVm(vm.id);
    }
  });

  it('segments: a VM reaches its own segment, the host, and of another segment only the load balancer', async (t) => {
    const [a, b] = await Promise.all(['iso-a', 'iso-b'].map((name) => provider.createSegment({ name })));
    const on = (agentId: string, seg: string) => provider.createVm(vmReq(agentId, { network: { network: seg } }));
    const [a1, a2, b1] = await Promise.all([on('iso-a1', a!.name), on('iso-a2', a!.name), on('iso-b1', b!.name)]);
    const lb = await provider.createLoadBalancer({
      name: 'iso-b-lb',
      network: b!.name,
      port: 8443,
      backends: [{ ip: b1.ip, port: 8080 }],
    });
    let hostServer: Server | undefined;
    try {
      await serve(a2.id, a2.ip, 8080, 'from-a2');
      await serve(b1.id, b1.ip, 8080, 'from-b1');
      const get = (vmId: string, url: string) =>
        provider.execInVm(vmId, ['busybox', 'timeout', '3', 'busybox', 'wget', '-qO-', url]).then(
          (r) => r.stdout.trim(),
          () => 'no answer',
        );
      // The load balancer's health check finds the backend up (from the host, which reaches every segment).
      for (let i = 0; i < 50 && (await hostGet(`http://${lb.ip}:8443/`).catch(() => '')) !== 'from-b1'; i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.equal(await get(a1.id, `http://${a2.ip}:8080/`), 'from-a2', 'same segment');
      assert.equal(await get(a1.id, `http://${lb.ip}:8443/`), 'from-b1', "another segment's load balancer");
      assert.equal(await get(a1.id, `http://${b1.ip}:8080/`), 'no answer', "another segment's VM");
      assert.equal(await get(a1.id, `http://${lb.ip}:22/`), 'no answer', "another port of another segment's load balancer");
      assert.equal(await get(b1.id, `http://${a2.ip}:8080/`), 'no answer', 'and the other way');
      assert.equal(await hostGet(`http://${b1.ip}:8080/`), 'from-b1', 'the host reaches every segment');
      hostServer = createServer((_req, res) => res.end('from-host'));
      await new Promise<void>((r) => hostServer!.listen(18082, gateway, r));
      assert.equal(
        await get(a1.id, `http://${gateway}:18082/`),
        'from-host',
        "a segment's VM reaches the host at the default network's address",
      );
    } finally {
      hostServer?.close();
      await provider.deleteLoadBalancer(lb.id);
      for (const vm of [a1, a2, b1]) await provider.deleteVm(vm.id);
      for (const seg of [a!, b!]) await provider.deleteSegment(seg.name);
    }
    // 20 segments made (four at a time, a VM on each) and deleted: the pool is whole, no bridge is left.
    const started = performance.now();
    for (let round = 0; round < 5; round++) {
      await Promise.all(
        [0, 1, 2, 3].map(async (i) => {
          const seg = await provider.createSegment({ name: `cycle-${round}-${i}` });
          const vm = await on(`cycle-${round}-${i}`, seg.name);
          await provider.deleteVm(vm.id);
          await provider.deleteSegment(seg.name);
        }),
      );
    }
    t.diagnostic(`20 segments with a VM each made and deleted in ${(performance.now() - started).toFixed(0)} ms`);
    assert.equal(provider.info().segments!.free, provider.info().segments!.total);
    assert.deepEqual(await segmentBridgesOfTag(tag), []);
    assert.deepEqual(
      (await rulesWithComment('filter', `anodyne:${tag}`)).filter((r) => r.includes(`ans${tag}-`) && !r.includes('+')),
      [],
      'no rule of a deleted segment or load balancer is left',
    );
  });

  it('with VMs running, the host allows as many inotify instances and watches as many VMs need', () => {
    for (const [key, floor] of Object.entries(HOST_LIMIT_FLOORS))
      assert.ok(Number(readFileSync(join('/proc/sys', key), 'utf8')) >= floor, `${key} is at least ${floor}`);
  });

  it('a process over the memory limit is OOM-killed and the VM keeps running', async () => {
    const vm = await provider.createVm(vmReq('oom', { vmType: { cpu: 1, memoryMb: 64, ephemeralDiskMb: 100, pids: 256 } }));
    try {
      await assert.rejects(
        provider.execInVm(vm.id, ['python3', '-c', 'b = bytearray(300 * 1024 * 1024); print(len(b))']),
        (err: unknown) => {
          assert.ok(err instanceof CommandError);
          assert.ok(err.exitCode === 137 || err.signal === 'SIGKILL', `killed: ${err.message}`);
          return true;
        },
      );
      const oom = readFileSync(join('/sys/fs/cgroup/memory/anodyne', tag, vm.id, 'memory.oom_control'), 'utf8');
      assert.match(oom, /oom_kill [1-9]/);
      assert.equal(await provider.hasVm(vm.id), true);
      assert.equal((await provider.execInVm(vm.id, ['echo', 'alive'])).stdout.trim(), 'alive');
      // pids.max holds too
      assert.equal(readFileSync(join('/sys/fs/cgroup/pids/anodyne', tag, vm.id, 'pids.max'), 'utf8').trim(), '256');
    } finally {
      await provider.deleteVm(vm.id);
    }
  });

  it('killing the init: hasVm turns false, delete leaves nothing of the VM on the host', async () => {
    const vm = await provider.createVm(vmReq('kill'));
    provider.spawnInVm(vm.id, ['sleep', '1000']);
    const disk = await provider.createDisk(10);
    await provider.attachDisk(vm.id, disk.id);
    process.kill(provider.initPid(vm.id), 'SIGKILL');
    for (let i = 0; i < 100 && (await provider.hasVm(vm.id)); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await provider.hasVm(vm.id), false);
    await provider.deleteVm(vm.id);
    await provider.deleteVm(vm.id);
    assert.deepEqual(await hostLeftovers(tag, dataDir, vm.id), []);
    assert.ok(!existsSync(join(dataDir, 'vms', vm.id)));
    await provider.deleteDisk(disk.id);
  });

  it('what happens to disks behind its back shows: an unmounted disk lists as detached, a deleted directory as gone', async () => {
    const disk = await provider.createDisk(10, { purpose: 'behind' });
    const vm = await provider.createVm(vmReq('behind-1'));
    try {
      await provider.attachDisk(vm.id, disk.id);
      assert.equal((await provider.listDisks({ purpose: 'behind' }))[0]?.vmId, vm.id);
      await exec(['umount', join(dataDir, 'vms', vm.id, 'disks', disk.id)]);
      assert.equal((await provider.listDisks({ purpose: 'behind' }))[0]?.vmId, null, 'unmounted: detached');
      await provider.attachDisk(vm.id, disk.id);
      assert.equal((await provider.listDisks({ purpose: 'behind' }))[0]?.vmId, vm.id, 'attached again');
      rmSync(join(dataDir, 'disks', disk.id), { recursive: true, force: true });
      assert.equal(await provider.hasDisk(disk.id), false, 'its data is gone: the disk is not there');
      assert.deepEqual(await provider.listDisks({ purpose: 'behind' }), []);
    } finally {
      await provider.deleteVm(vm.id);
      await provider.deleteDisk(disk.id);
    }
    assert.deepEqual(await hostLeftovers(tag, dataDir, vm.id), []);
  });

  it('data on a persistent disk survives deleting the VM and attaching the disk to a new one', async () => {
    const disk = await provider.createDisk(100);
    const first = await provider.createVm(vmReq('disk-1'));
    const { path } = await provider.attachDisk(first.id, disk.id);
    assert.equal(path, `${GUEST_DISK_DIR}/${disk.id}`);
    await provider.execInVm(first.id, ['sh', '-c', `echo persisted-data > ${path}/file && sync`]);
    await provider.deleteVm(first.id);
    const second = await provider.createVm(vmReq('disk-2'));
    try {
      const again = await provider.attachDisk(second.id, disk.id);
      assert.equal((await provider.execInVm(second.id, ['cat', `${again.path}/file`])).stdout.trim(), 'persisted-data');
      await provider.detachDisk(second.id, disk.id);
      await assert.rejects(provider.execInVm(second.id, ['cat', `${again.path}/file`]));
    } finally {
      await provider.deleteVm(second.id);
      await provider.deleteDisk(disk.id);
    }
  });

  it('containerd runs in two VMs at once, each running a container from the release test image', async (t) => {
    const release = locateRelease();
    const { ref } = release.image('busybox');
    const archive = `${RELEASE_GUEST}/images/busybox.tar`;
    const config = [
      'version = 2',
      'root = "/var/lib/containerd"',
      'state = "/run/containerd"',
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      '  address = "/run/containerd/containerd.sock"',
    ].join('\n');
    const t0 = performance.now();
    const vms = await Promise.all(['ctrd-a', 'ctrd-b'].map((a) => provider.createVm(vmReq(a))));
    const bare = performance.now() - t0;
    try {
      await Promise.all(
        vms.map(async (vm) => {
          await provider.execInVm(vm.id, ['sh', '-c', `mkdir -p /etc/containerd && cat > /etc/containerd/config.toml`], { input: config });
          provider.spawnInVm(vm.id, ['containerd', '--config', '/etc/containerd/config.toml']);
          for (let i = 0; i < 200; i++) {
            if (
              await provider.execInVm(vm.id, ['ctr', 'version']).then(
                () => true,
                () => false,
              )
            )
              return;
            await new Promise((r) => setTimeout(r, 25));
          }
          throw new Error(`containerd in ${vm.id} did not start`);
        }),
      );
      t.diagnostic(`2 VMs in ${bare.toFixed(0)} ms; with containerd ready in both: ${(performance.now() - t0).toFixed(0)} ms`);
      const results = await Promise.all(
        vms.map(async (vm) => {
          await provider.execInVm(vm.id, ['ctr', 'images', 'import', archive]);
          const { stdout } = await provider.execInVm(
            vm.id,
            ['ctr', 'run', '--rm', ref, `c-${vm.id}`, '/bin/sh', '-c', 'echo ran-in-$(cat /etc/hostname 2>/dev/null || echo container)'],
            { timeoutMs: 60_000 },
          );
          return stdout;
        }),
      );
      for (const r of results) assert.match(r, /ran-in-/);
      // Long-running containers in both at the same time: neither containerd disturbs the other.
      for (const vm of vms) await provider.execInVm(vm.id, ['ctr', 'run', '-d', ref, 'sleeper', 'sleep', '300']);
      for (const vm of vms) {
        const { stdout } = await provider.execInVm(vm.id, ['ctr', 'tasks', 'ls']);
        assert.match(stdout, /sleeper\s+\d+\s+RUNNING/);
      }
    } finally {
      for (const vm of vms) await provider.deleteVm(vm.id);
    }
    for (const vm of vms) assert.deepEqual(await hostLeftovers(tag, dataDir, vm.id), []);
  });

  it('a load balancer forwards TCP to three backends and stops sending to a dead one, or to one its HTTP health check finds not ready', async () => {
    const vms = await Promise.all(['lb-a', 'lb-b', 'lb-c'].map((a) => provider.createVm(vmReq(a))));
    try {
      await Promise.all(vms.map((vm, i) => serve(vm.id, vm.ip, 8080, `backend-${i}`)));
      const lb = await provider.createLoadBalancer({
        name: 'api',
        network: 'default',
        port: 8443,
        backends: vms.map((v) => ({ ip: v.ip, port: 8080 })),
      });
      const seen = async (count: number) => {
        const bodies = new Set<string>();
        for (let i = 0; i < count; i++) bodies.add(await hostGet(`http://${lb.ip}:8443/`).catch(() => 'no answer'));
        return bodies;
      };
      // Health checks need a moment to mark the backends up.
      let bodies = new Set<string>();
      for (let i = 0; i < 20 && bodies.size < 3; i++) {
        bodies = await seen(9);
        if (bodies.size < 3) await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual([...bodies].sort(), ['backend-0', 'backend-1', 'backend-2']);
      await provider.execInVm(vms[1]!.id, ['pkill', '-f', 'busybox httpd']);
      await new Promise((r) => setTimeout(r, 2000)); // fall 2 × inter 500 ms, plus margin
      const after = await seen(12);
      assert.deepEqual([...after].sort(), ['backend-0', 'backend-2']);
      // Backends can be replaced without changing the address.
      const updated = await provider.updateLoadBalancer('api', [{ ip: vms[0]!.ip, port: 8080 }]);
      assert.equal(updated.ip, lb.ip);
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual([...(await seen(6))], ['backend-0']);
      // One backend is not health-checked: there is nowhere else to send a connection.
      const cfg = readdirSync(join(dataDir, 'lbs'))
        .map((d) => readFileSync(join(dataDir, 'lbs', d, 'haproxy.cfg'), 'utf8'))
        .find((c) => c.includes(`${vms[0]!.ip}:8080`))!;
      assert.match(cfg, new RegExp(`server b0 ${vms[0]!.ip.replace(/\./g, '\\.')}:8080\n`), cfg);
      // With an HTTP health check, a backend that accepts connections but does not answer 200 on the
      // path (not ready, or shutting down) is given no new ones.
      await serve(vms[1]!.id, vms[1]!.ip, 8080, 'backend-1');
      for (const vm of [vms[0]!, vms[1]!]) await provider.execInVm(vm.id, ['sh', '-c', 'echo ok > /tmp/www-8080/ready']);
      const checked = await provider.updateLoadBalancer(
        'api',
        vms.map((v) => ({ ip: v.ip, port: 8080 })),
        { httpPath: '/ready' },
      );
      assert.deepEqual(checked.healthCheck, { httpPath: '/ready' });
      await new Promise((r) => setTimeout(r, 2000));
      assert.deepEqual([...(await seen(12))].sort(), ['backend-0', 'backend-1']);
      await provider.execInVm(vms[1]!.id, ['rm', '/tmp/www-8080/ready']);
      await new Promise((r) => setTimeout(r, 2000));
      assert.deepEqual([...(await seen(8))], ['backend-0']);
      await assert.rejects(
        provider.updateLoadBalancer('api', [], { httpPath: 'no slash' }),
        (e: { code?: string }) => e.code === 'ANODYNE_E_PROVIDER_INPUT_INVALID',
      );
      await provider.deleteLoadBalancer('api');
      assert.ok(!(await netnsList()).some((ns) => ns.startsWith(`anodyne-${tag}-lb-`)));
    } finally {
      for (const vm of vms) await provider.deleteVm(vm.id);
    }
  });

  it('without root privileges it refuses with a code and creates nothing', async () => {
    const { provider: unprivileged, dataDir: d } = makeProvider('10.198.3.0/24', { isRoot: () => false });
    await assert.rejects(
      unprivileged.createVm(vmReq('nope')),
      (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_PROVIDER_NOT_ROOT',
    );
    assert.deepEqual(readdirSync(d), []);
    rmSync(d, { recursive: true, force: true });
  });

  it('a tag is matched whole: the rules of tag zq1 are not the rules of tag zq12', async () => {
    const rule = (tag: string) => [
      'FORWARD',
      '-i',
      `anbr-${tag}`,
      '-o',
      `anbr-${tag}`,
      '-m',
      'comment',
      '--comment',
      `anodyne:${tag}`,
      '-j',
      'ACCEPT',
    ];
    await exec(['iptables', '-w', '-A', ...rule('zq1')]);
    await exec(['iptables', '-w', '-A', ...rule('zq12')]);
    try {
      assert.deepEqual(
        (await rulesWithComment('filter', 'anodyne:zq1')).map((r) => r.includes('anbr-zq1 ')),
        [true],
      );
      assert.equal((await rulesWithComment('filter', 'anodyne:zq12')).length, 1);
    } finally {
      await exec(['iptables', '-w', '-D', ...rule('zq1')]);
      await exec(['iptables', '-w', '-D', ...rule('zq12')]);
    }
  });

  it('disk and VM ids that are not ids are refused before any path is touched', async () => {
    for (const [vmId, diskId] of [
      ['vm-1', '../..'],
      ['..', 'disk-1'],
      ['vm-1', 'a/b'],
    ]) {
      await assert.rejects(
        provider.detachDisk(vmId!, diskId!),
        (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_PROVIDER_INPUT_INVALID',
      );
    }
  });
});

describe('a range another host interface holds', { skip: skipUnless(isRoot, 'needs root') }, () => {
  it('is refused with a code naming the interface and its maker; a killed run holding it is swept with all it made', async () => {
    const first = makeProvider('10.198.4.0/24');
    const second = makeProvider('10.198.4.128/25');
    try {
      await first.provider.prepareNetwork();
      const aliasFile = `/sys/class/net/anbr-${first.tag}/ifalias`;
      assert.equal(
        readFileSync(aliasFile, 'utf8')
          .trim()
          .replace(/\/\d+ /, '/S '),
        `anodyne:${first.tag} pid=${process.pid}/S ${first.dataDir}`,
      );
      const refused = (still: string) => (err: unknown) =>
        err instanceof AnodyneError &&
        err.code === 'ANODYNE_E_PROVIDER_NETWORK_IN_USE' &&
        err.message.includes(`10.198.4.1/24 on host interface anbr-${first.tag}`) &&
        err.message.includes(still);
      await assert.rejects(second.provider.prepareNetwork(), refused('which still runs'));
      await assert.rejects(
        second.provider.createVm({ agentId: 'x', image: 'host-usr', vmType: 'small', network: { network: 'default' }, env: {} }),
        refused('still runs'),
      );
      assert.equal(await linkExists(`anbr-${second.tag}`), false, 'nothing made on the refused range');
      assert.deepEqual(await removeStaleProviders(['10.198.4.0/24']), [], 'a bridge whose maker runs is not swept');

      // The first run killed with a VM up: its maker is a process that has exited.
      await first.provider.createVm({ agentId: 'left', image: 'host-usr', vmType: 'small', network: { network: 'default' }, env: {} });
      const gone = spawnSync('true').pid;
      await exec(['ip', 'link', 'set', `anbr-${first.tag}`, 'alias', `anodyne:${first.tag} pid=${gone}/1 ${first.dataDir}`]);
      await assert.rejects(second.provider.prepareNetwork(), refused('no longer runs'));
      assert.deepEqual(await removeStaleProviders(['10.198.240.0/24']), [], 'ranges it does not touch are left');
      assert.notDeepEqual(await hostLeftovers(first.tag, first.dataDir), []);
      assert.deepEqual(await removeStaleProviders(['10.198.4.192/26']), [first.tag]);
      assert.deepEqual(await hostLeftovers(first.tag, first.dataDir), [], 'the killed run left nothing');
      await second.provider.prepareNetwork();
    } finally {
      for (const p of [first, second]) {
        await p.provider.cleanup();
        rmSync(p.dataDir, { recursive: true, force: true });
      }
    }
  });
});
