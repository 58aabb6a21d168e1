// Release registry: choosing a cluster's release by version and plan, version-skew rules, and deleting only unused releases.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnodyneError, silentLogger, systemClock } from '@anodyne/common';
import { openStore, type Store } from '@anodyne/store';
import { ReleaseRegistry, normaliseVersion } from './releases.js';
import { KUBERNETES_JOBS, releaseCatalog } from './jobs.js';
import { clusterManifest } from './cluster.js';
import { parseManifest } from '@anodyne/director';

const code = (c: string) => (err: unknown) => err instanceof AnodyneError && err.code === c;

describe('release registry', () => {
  let dir: string;
  let store: Store;
  let reg: ReleaseRegistry;
  let agents: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-releases-'));
    store = await openStore({ driver: 'sqlite', path: join(dir, 'db.sqlite') });
    reg = new ReleaseRegistry(store, systemClock, silentLogger(), () => Promise.resolve(agents));
    const built = ['1.33.13', '1.34.2', '1.34.4'].map((v) => {
      const d = join(dir, `kubernetes-v${v}-abc123`);
      mkdirSync(d);
      return { key: `kubernetes-v${v}-abc123`, version: v, dir: d, manifestSha256: 'f'.repeat(64) };
    });
    await reg.register(built);
    await reg.register(built); // idempotent
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists newest first and picks the newest by default, the newest patch of a minor, or an exact patch', async () => {
    assert.deepEqual(
      (await reg.list()).map((r) => r.kubernetes_version),
      ['1.34.4', '1.34.2', '1.33.13'],
    );
    assert.equal((await reg.resolve(undefined)).version, '1.34.4');
    assert.equal((await reg.resolve('1.33')).version, '1.33.13');
    assert.equal((await reg.resolve('v1.34.2')).version, '1.34.2');
    assert.equal((await reg.resolve(undefined, ['1.33'])).version, '1.33.13', 'a plan that offers only 1.33 defaults to it');
    await assert.rejects(reg.resolve('1.34', ['1.33']), code('ANODYNE_E_KUBERNETES_VERSION_UNKNOWN'));
    await assert.rejects(reg.resolve('1.35'), code('ANODYNE_E_KUBERNETES_VERSION_UNKNOWN'));
    assert.throws(() => normaliseVersion('latest'), code('ANODYNE_E_INVALID_INPUT'));
  });

  it('upgrades one minor at a time, never down a minor; patches either way', () => {
    reg.checkUpgrade('1.33.13', '1.34.4');
    reg.checkUpgrade('1.34.2', '1.34.4');
    reg.checkUpgrade('1.34.4', '1.34.2');
    reg.checkUpgrade('1.34.4', '1.34.4');
    assert.throws(() => reg.checkUpgrade('1.34.4', '1.33.13'), code('ANODYNE_E_VERSION_DOWNGRADE'));
    assert.throws(() => reg.checkUpgrade('1.33.13', '1.35.0'), code('ANODYNE_E_VERSION_SKEW'));
  });

  it("a cluster's manifest runs every job, and its VMs' agent, from its release's directory", () => {
    const m = clusterManifest({
      name: 'r1',
      plan: 'small',
      workers: 1,
      release: { key: 'kubernetes-v1.33.13-abc123', version: '1.33.13' },
    });
    const dirs = new Set(m.instance_groups.flatMap((g) => g.jobs.map((j) => (j.properties as Record<string, unknown>)['release_dir'])));
    assert.deepEqual([...dirs], ['/var/lib/anodyne/releases/kubernetes-v1.33.13-abc123']);
    // …and its VMs start the agent that release carries.
    assert.deepEqual(m.releases, [
      {
        name: 'kubernetes',
        version: '1.33.13',
        key: 'kubernetes-v1.33.13-abc123',
        agent: '/var/lib/anodyne/releases/kubernetes-v1.33.13-abc123/agent/anodyne-agent',
      },
    ]);
  });

  it('a cluster of masters alone (0 workers, which plans allow) makes a valid manifest', () => {
    const m = clusterManifest({ name: 'zero', plan: 'small', workers: 0 });
    assert.doesNotThrow(() => parseManifest(m));
    assert.deepEqual(
      m.instance_groups.map((g) => g.name),
      ['master'],
    );
  });

  it('deletes only a release no cluster runs, no VM runs the agent of, and that is not the default; its files go', async () => {
    const now = new Date().toISOString();
    await store.db
      .insertInto('clusters')
      .values({
        name: 'uses-133',
        uuid: 'u',
        plan: 'small',
        owner: 'o',
        parameters: '{"workers":1}',
        last_action: 'CREATE',
        last_task_id: null,
        network_profile: null,
        release: 'kubernetes-v1.33.13-abc123',
        created_at: now,
        updated_at: now,
      })
      .execute();
    await assert.rejects(reg.delete('kubernetes-v1.33.13-abc123'), code('ANODYNE_E_RELEASE_IN_USE'));
    await assert.rejects(reg.delete('kubernetes-v1.34.4-abc123'), code('ANODYNE_E_RELEASE_IN_USE'), 'the default stays');
    await assert.rejects(reg.delete('kubernetes-v9.9.9-abc123'), code('ANODYNE_E_RELEASE_NOT_REGISTERED'));
    assert.deepEqual(Object.fromEntries(await reg.usage()), { 'kubernetes-v1.33.13-abc123': 1 });
    // A VM created on 1.34.2 runs that release's agent until it is recreated.
    agents = ['/var/lib/anodyne/releases/kubernetes-v1.34.2-abc123/agent/anodyne-agent'];
    await assert.rejects(reg.delete('kubernetes-v1.34.2-abc123'), code('ANODYNE_E_RELEASE_IN_USE'));
    assert.equal(existsSync(join(dir, 'kubernetes-v1.34.2-abc123')), true);
    agents = [];
    await reg.delete('kubernetes-v1.34.2-abc123');
    assert.equal(existsSync(join(dir, 'kubernetes-v1.34.2-abc123')), false);
    assert.deepEqual(
      (await reg.list()).map((r) => r.kubernetes_version),
      ['1.34.4', '1.33.13'],
    );
  });

  it("serves each build's own job catalog: the jobs its jobs.json carries, this platform's where it carries none", () => {
    const root = join(dir, 'catalog');
    mkdirSync(join(root, 'kubernetes-v1.33.13-old000'), { recursive: true });
    mkdirSync(join(root, 'kubernetes-v1.34.4-bare00'), { recursive: true });
    const older = KUBERNETES_JOBS.filter((j) => j.name !== 'kube-proxy').map((j) =>
      j.name === 'etcd' ? { ...j, files: { ...j.files, 'marker.txt': 'written by an older build' } } : j,
    );
    writeFileSync(join(root, 'kubernetes-v1.33.13-old000', 'jobs.json'), JSON.stringify(older));
    const catalog = releaseCatalog(root);
    assert.equal(catalog.job('kubernetes', 'etcd', 'kubernetes-v1.33.13-old000')?.files?.['marker.txt'], 'written by an older build');
    assert.equal(catalog.job('kubernetes', 'kube-proxy', 'kubernetes-v1.33.13-old000'), undefined, 'a job that build does not have');
    assert.equal(
      catalog.job('kubernetes', 'etcd', 'kubernetes-v1.34.4-bare00'),
      KUBERNETES_JOBS.find((j) => j.name === 'etcd'),
    );
    assert.equal(
      catalog.job(undefined, 'etcd'),
      KUBERNETES_JOBS.find((j) => j.name === 'etcd'),
    );
    assert.equal(catalog.job('other', 'etcd', 'kubernetes-v1.33.13-old000'), undefined);
    assert.equal(
      catalog.job('kubernetes', 'etcd', '../escape'),
      KUBERNETES_JOBS.find((j) => j.name === 'etcd'),
      'a key that is no name is not a path',
    );
  });
});
