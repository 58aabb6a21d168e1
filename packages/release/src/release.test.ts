// Tests of the built release: manifest sums, upstream versions, images run in a real containerd, the timed raw boot.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import { IMAGES, locateRelease, rawBoot, httpGet, type Release } from './index.js';

describe('release', () => {
  let release: Release;
  before(() => {
    release = locateRelease();
  });

  it('matches its manifest', async () => {
    await release.verify();
    assert.match(release.manifest.kubernetes, /^v1\.34\.\d+$/);
  });

  const versions: [string, string[], RegExp][] = [
    ['kube-apiserver', ['--version'], /^Kubernetes v1\.34\.\d+$/m],
    ['kube-controller-manager', ['--version'], /^Kubernetes v1\.34\.\d+$/m],
    ['kube-scheduler', ['--version'], /^Kubernetes v1\.34\.\d+$/m],
    ['kubelet', ['--version'], /^Kubernetes v1\.34\.\d+$/m],
    ['kube-proxy', ['--version'], /^Kubernetes v1\.34\.\d+$/m],
    ['kubectl', ['version', '--client'], /^Client Version: v1\.34\.\d+$/m],
    ['etcd', ['--version'], /^etcd Version: 3\.6\.\d+$/m],
    ['etcdctl', ['version'], /^etcdctl version: 3\.6\.\d+$/m],
    ['helm', ['version', '--short'], /^v3\.\d+\.\d+/m],
    ['coredns', ['-version'], /^CoreDNS-1\.\d+\.\d+$/m],
    ['flanneld', ['-version'], /^flanneld v0\.\d+\.\d+$/m],
    ['network-policy', ['--version'], /^network-policy \(kube-router v2\.\d+\.\d+ network policy controller\)$/m],
  ];
  for (const [program, args, expected] of versions) {
    it(`${program} reports its upstream version`, async () => {
      const { stdout } = await exec([release.bin(program as 'kubectl'), ...args]);
      assert.match(stdout, expected);
    });
  }

  it('the multi-call binary refuses an unknown program with usage', async () => {
    await assert.rejects(exec([join(release.dir, 'bin', 'kube'), 'kube-nothing']), (err: unknown) => {
      assert.match(String((err as { stderrTail?: string }).stderrTail), /unknown program "kube-nothing"/);
      return true;
    });
  });

  describe('images in a real containerd', () => {
    let dir: string;
    let containerd: ChildProcess | undefined;
    let sock: string;
    const ns = `anodyne-release-test-${process.pid}`;
    const ctr = (...args: string[]) => exec(['ctr', '--address', sock, '--namespace', ns, ...args], { timeoutMs: 60_000 });

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'anodyne-ctrd-'));
      sock = join(dir, 'containerd.sock');
      writeFileSync(join(dir, 'config.toml'), [
        'version = 2',
        `root = "${join(dir, 'root')}"`,
        `state = "${join(dir, 'state')}"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = "${sock}"`,
        '[plugins."io.containerd.runtime.v2.task"]',
        `  platforms = ["linux/amd64"]`,
      ].join('\n'));
      containerd = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
      containerd.stderr?.resume();
      for (let i = 0; i < 100; i++) {
        if (existsSync(sock) && (await exec(['ctr', '--address', sock, 'version']).then(() => true, () => false))) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('containerd did not start');
    });

    after(async () => {
      await ctr('tasks', 'kill', '-s', 'SIGKILL', 'httpd').catch(() => undefined);
      await ctr('containers', 'rm', 'httpd').catch(() => undefined);
      if (containerd && containerd.exitCode === null) {
        const exited = new Promise((r) => containerd!.once('exit', r));
        containerd.kill('SIGTERM');
        await exited;
      }
      // Whatever containerd mounted under its root must be gone before the directory is.
      const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(dir)).reverse();
      for (const m of mounts) await exec(['umount', '-l', m]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      // containerd leaves its namespace's parent cgroups and runc state behind: remove ours.
      for (const ctrl of readdirSync('/sys/fs/cgroup')) {
        const cg = join('/sys/fs/cgroup', ctrl, ns);
        if (existsSync(cg)) await exec(['find', cg, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';']).catch(() => undefined);
      }
      rmSync(join('/run/containerd/runc', ns), { recursive: true, force: true });
      for (const d of ['/run/containerd/fifo', '/run/containerd/s', '/run/containerd/runc', '/run/containerd']) {
        try {
          if (existsSync(d) && readdirSync(d).length === 0) rmdirSync(d);
        } catch {
          // in use by another containerd: leave it
        }
      }
      const left = readdirSync('/sys/fs/cgroup').filter((c) => existsSync(join('/sys/fs/cgroup', c, ns)));
      assert.deepEqual(left, [], 'no cgroup of the test namespace remains');
    });

    it('imports every image archive of the release and runs a container from the test image', async () => {
      for (const name of IMAGES) {
        const { archive, ref } = release.image(name);
        await ctr('images', 'import', '--no-unpack', archive);
        const { stdout } = await ctr('images', 'ls', '-q');
        assert.ok(stdout.split('\n').includes(ref), `${ref} listed: ${stdout}`);
      }
      const { ref } = release.image('busybox');
      const { stdout } = await ctr('run', '--rm', ref, `echo-${process.pid}`, '/bin/sh', '-c', 'echo hello-from-busybox; cat /www/index.html');
      assert.match(stdout, /hello-from-busybox/);
      assert.match(stdout, /hello from anodyne busybox/);
      // The metrics-server image runs its binary, which reports the pinned upstream version.
      const ms = await ctr('run', '--rm', release.image('metrics-server').ref, `ms-${process.pid}`, '/metrics-server', '--version');
      assert.equal(ms.stdout.trim(), release.manifest.metrics_server);
    });

    it('runs the image default command: an HTTP server', async () => {
      const { ref } = release.image('busybox');
      // Host network so the test can reach the server on loopback without CNI.
      await ctr('run', '-d', '--net-host', ref, 'httpd', 'httpd', '-f', '-p', '127.0.0.1:18089', '-h', '/www');
      let body = '';
      for (let i = 0; i < 50 && !body; i++) {
        body = await httpGet('http://127.0.0.1:18089/').then((r) => r.body, () => '');
        if (!body) await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(body, /hello from anodyne busybox/);
    });
  });

  it('raw boot: etcd + kube-apiserver from the release reach /readyz (timed)', async (t) => {
    const boot = await rawBoot(release);
    try {
      t.diagnostic(`raw floor: etcd ready ${boot.etcdReadyMs.toFixed(0)} ms, kube-apiserver /readyz ${boot.apiserverReadyMs.toFixed(0)} ms, total ${boot.totalMs.toFixed(0)} ms`);
      const version = await httpGet(`${boot.apiserverUrl}/version`);
      assert.equal(version.status, 200);
      assert.equal((JSON.parse(version.body) as { gitVersion: string }).gitVersion, release.manifest.kubernetes);
    } finally {
      await boot.stop();
    }
  });
});
