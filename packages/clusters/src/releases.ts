// The Kubernetes releases the platform serves: registered from the built releases at start, chosen per cluster, deleted when unused.
import { rmSync } from 'node:fs';
import { ConflictError, InputError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type ReleasesTable, type Store } from '@anodyne/store';

/** Where every VM sees the releases directory (bound read-only); a cluster's jobs run from `<this>/<key>`. */
export const RELEASES_GUEST_DIR = '/var/lib/anodyne/releases';
/** The agent program a release carries, relative to its directory (release/build.sh builds it: packages/agent/go). */
export const RELEASE_AGENT = 'agent/anodyne-agent';

/** A built release as the platform registers it. */
export interface BuiltRelease {
  key: string;
  /** Without the `v`: `1.34.4`. */
  version: string;
  dir: string;
  manifestSha256: string;
}

/** A release a cluster runs: its key and Kubernetes version. */
export interface ClusterRelease {
  key: string;
  version: string;
}

const minorOf = (v: string): string => v.split('.').slice(0, 2).join('.');
const parts = (v: string): number[] => v.split('.').map(Number);
function compare(a: string, b: string): number {
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

/** A requested version, `1.33`, `1.33.13` or `v1.33.13`, without the `v`. */
export function normaliseVersion(v: string): string {
  const s = v.trim().replace(/^v/, '');
  if (!/^1\.\d{1,3}(\.\d{1,3})?$/.test(s)) {
    throw new InputError('ANODYNE_E_INVALID_INPUT', `kubernetes_version ${JSON.stringify(v)} is not a version like 1.34 or 1.34.4`, {
      details: { key: 'kubernetes_version' },
    });
  }
  return s;
}

export class ReleaseRegistry {
  private versions = new Map<string, string>();

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: Logger,
    /** The agent programs running VMs were started with (a VM keeps its agent until it is recreated). */
    private readonly vmAgents: () => Promise<string[]> = () => Promise.resolve([]),
  ) {}

  /** Records the releases built for the current sources (idempotent), and gives old cluster records the newest. */
  async register(built: BuiltRelease[]): Promise<void> {
    const now = this.clock.now().toISOString();
    for (const r of built) {
      const row: ReleasesTable = {
        key: r.key,
        kubernetes_version: r.version,
        dir: r.dir,
        manifest_sha256: r.manifestSha256,
        registered_at: now,
      };
      await storeQuery('registering a release', () =>
        this.store.db
          .insertInto('releases')
          .values(row)
          .onConflict((oc) => oc.column('key').doUpdateSet({ dir: r.dir, manifest_sha256: r.manifestSha256 }))
          .execute(),
      );
    }
    const newest = (await this.list())[0];
    if (newest) {
      // Clusters recorded before releases were: they run what was then the only release.
      await storeQuery("recording clusters' releases", () =>
        this.store.db.updateTable('clusters').set({ release: newest.key }).where('release', 'is', null).execute(),
      );
    }
    this.logger.info({ releases: built.map((r) => r.key) }, 'releases registered');
  }

  /** Every registered release, newest Kubernetes first. */
  async list(): Promise<ReleasesTable[]> {
    const rows = await storeQuery('listing releases', () => this.store.db.selectFrom('releases').selectAll().execute());
    this.versions = new Map(rows.map((r) => [r.key, r.kubernetes_version]));
    return rows.sort((a, b) => compare(b.kubernetes_version, a.kubernetes_version));
  }

  /** The Kubernetes version of a release key (from the last listing; registered keys only). */
  versionOf(key: string | null): string | null {
    return key ? (this.versions.get(key) ?? null) : null;
  }

  async get(key: string): Promise<ReleasesTable> {
    const r = await storeQuery('reading a release', () =>
      this.store.db.selectFrom('releases').selectAll().where('key', '=', key).executeTakeFirst(),
    );
    if (!r) throw new NotFoundError('ANODYNE_E_RELEASE_NOT_REGISTERED', `release ${key} is not registered`, { details: { key } });
    return r;
  }

  /**
   * The release for a request: the newest of the requested version (a minor picks its newest
   * patch), limited to what the plan allows; absent, the newest the plan allows.
   */
  async resolve(requested: string | undefined, allowedMinors?: string[]): Promise<ClusterRelease> {
    const all = (await this.list()).filter((r) => !allowedMinors || allowedMinors.includes(minorOf(r.kubernetes_version)));
    const want = requested === undefined ? undefined : normaliseVersion(requested);
    const match = all.find((r) => want === undefined || r.kubernetes_version === want || minorOf(r.kubernetes_version) === want);
    if (!match) {
      const offered = all.map((r) => r.kubernetes_version).join(', ') || 'none';
      throw new InputError(
        'ANODYNE_E_KUBERNETES_VERSION_UNKNOWN',
        `no release of Kubernetes ${want ?? ''} is offered here; offered: ${offered}`.replace('  ', ' '),
        {
          details: { key: 'kubernetes_version', offered: all.map((r) => r.kubernetes_version) },
        },
      );
    }
    return { key: match.key, version: match.kubernetes_version };
  }

  /**
   * Version skew: a minor is never skipped and never downgraded (kubelets are never newer than
   * the API servers, which a rolling upgrade one minor at a time keeps). Patch changes either way are fine.
   */
  checkUpgrade(from: string, to: string): void {
    const [fa, fb] = parts(from);
    const [ta, tb] = parts(to);
    if (ta !== fa || (tb ?? 0) < (fb ?? 0)) {
      throw new InputError(
        'ANODYNE_E_VERSION_DOWNGRADE',
        `Kubernetes ${from} cannot go back to ${to}: a minor version is never downgraded`,
        {
          details: { key: 'kubernetes_version', from, to },
        },
      );
    }
    if ((tb ?? 0) > (fb ?? 0) + 1) {
      throw new InputError(
        'ANODYNE_E_VERSION_SKEW',
        `Kubernetes ${from} cannot go to ${to} at once: upgrade one minor version at a time (${fa}.${(fb ?? 0) + 1} first)`,
        {
          details: { key: 'kubernetes_version', from, to },
        },
      );
    }
  }

  /** Unregisters a release no cluster runs and removes its files. */
  async delete(key: string): Promise<void> {
    const r = await this.get(key);
    if ((await this.list())[0]?.key === key) {
      throw new ConflictError('ANODYNE_E_RELEASE_IN_USE', `release ${key} is the newest: new clusters get it by default`, {
        details: { key },
      });
    }
    const users = await storeQuery('reading clusters', () =>
      this.store.db.selectFrom('clusters').select('name').where('release', '=', key).execute(),
    );
    if (users.length > 0) {
      const names = users.map((u) => u.name);
      throw new ConflictError('ANODYNE_E_RELEASE_IN_USE', `release ${key} is run by ${names.join(', ')}`, { details: { clusters: names } });
    }
    // A cluster upgraded in place runs its jobs from its new release and its agents from the one its VMs were
    // created with, until a repave (or a resurrection) gives them the new one.
    const agents = (await this.vmAgents()).filter((a) => a.startsWith(`${RELEASES_GUEST_DIR}/${key}/`));
    if (agents.length > 0) {
      throw new ConflictError(
        'ANODYNE_E_RELEASE_IN_USE',
        `release ${key} carries the agent of ${agents.length} running VM(s); recreate their clusters (recreate-cluster) first`,
        { details: { vms: agents.length } },
      );
    }
    await storeQuery('deleting a release', () => this.store.db.deleteFrom('releases').where('key', '=', key).execute());
    rmSync(r.dir, { recursive: true, force: true });
    this.versions.delete(key);
  }

  /** How many clusters run each release. */
  async usage(): Promise<Map<string, number>> {
    const rows = await storeQuery('counting clusters by release', () =>
      this.store.db
        .selectFrom('clusters')
        .select(['release'])
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .groupBy('release')
        .execute(),
    );
    return new Map(rows.filter((r) => r.release !== null).map((r) => [r.release!, Number(r.n)]));
  }
}
