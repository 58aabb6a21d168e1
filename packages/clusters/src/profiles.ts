// Network profiles (named pod and service ranges an admin offers) and quotas (how many clusters and workers an owner may have).
import { ConflictError, InputError, QuotaError } from '@anodyne/common';
import { storeQuery, type NetworkProfilesTable, type Store } from '@anodyne/store';
import { clusterManifest, type Plan } from './cluster.js';
import type { ClusterRecords, Parameters } from './records.js';

/** A network profile as the API shows it. */
export interface NetworkProfileView {
  name: string;
  description: string;
  pod_cidr: string;
  service_cidr: string;
  /** New namespaces of its clusters get a default-deny NetworkPolicy (true) or not (false); null: as the plan says. */
  default_deny_namespaces: boolean | null;
  /** The share of the segment pool (a CIDR inside it) its clusters' network segments are cut from; null: the whole pool. */
  segment_pool: string | null;
  created_at: string;
}

export function profileView(r: NetworkProfilesTable): NetworkProfileView {
  return {
    name: r.name,
    description: r.description,
    pod_cidr: r.pod_cidr,
    service_cidr: r.service_cidr,
    default_deny_namespaces: r.default_deny_namespaces === null ? null : r.default_deny_namespaces === 1,
    segment_pool: r.segment_pool,
    created_at: r.created_at,
  };
}

export class NetworkProfiles {
  constructor(
    private readonly store: Store,
    private readonly records: ClusterRecords,
    private readonly plans: Plan[],
    /** Checks a share of the provider's segment pool (refused with ANODYNE_E_INVALID_INPUT, key segment_pool). */
    private readonly checkSegmentPool: (cidr: string) => void,
  ) {}

  async list(): Promise<NetworkProfileView[]> {
    const rows = await storeQuery('listing network profiles', () =>
      this.store.db.selectFrom('network_profiles').selectAll().orderBy('name').execute(),
    );
    return rows.map(profileView);
  }

  async get(name: string): Promise<NetworkProfilesTable> {
    const p = await storeQuery('reading a network profile', () =>
      this.store.db.selectFrom('network_profiles').selectAll().where('name', '=', name).executeTakeFirst(),
    );
    if (!p)
      throw new InputError('ANODYNE_E_NETWORK_PROFILE_NOT_FOUND', `unknown network profile ${JSON.stringify(name)}`, {
        details: { key: 'network_profile_name' },
      });
    return p;
  }

  /**
   * An admin offers named pod and service ranges (checked like a cluster request's) and, if it likes, a NetworkPolicy
   * default and a share of the segment pool for its clusters' segments.
   */
  async create(input: {
    name: string;
    description?: string;
    pod_cidr: string;
    service_cidr: string;
    default_deny_namespaces?: boolean;
    segment_pool?: string;
  }): Promise<NetworkProfileView> {
    const check = {
      name: 'profile-check',
      plan: this.plans[0]!.name,
      workers: 0,
      network: { podCidr: input.pod_cidr, serviceCidr: input.service_cidr },
    };
    clusterManifest(check, this.plans);
    if (input.segment_pool !== undefined) this.checkSegmentPool(input.segment_pool);
    const exists = await storeQuery('reading a network profile', () =>
      this.store.db.selectFrom('network_profiles').select('name').where('name', '=', input.name).executeTakeFirst(),
    );
    if (exists) throw new ConflictError('ANODYNE_E_CONFLICT', `network profile ${input.name} exists`, { details: { name: input.name } });
    const row: NetworkProfilesTable = {
      name: input.name,
      description: input.description ?? '',
      pod_cidr: input.pod_cidr,
      service_cidr: input.service_cidr,
      default_deny_namespaces: input.default_deny_namespaces === undefined ? null : input.default_deny_namespaces ? 1 : 0,
      segment_pool: input.segment_pool ?? null,
      created_at: this.records.now(),
    };
    await storeQuery('creating a network profile', () => this.store.db.insertInto('network_profiles').values(row).execute());
    return profileView(row);
  }

  async delete(name: string): Promise<void> {
    await this.get(name);
    const users = await storeQuery('reading clusters', () =>
      this.store.db.selectFrom('clusters').select('name').where('network_profile', '=', name).execute(),
    );
    if (users.length > 0) {
      const names = users.map((u) => u.name);
      throw new ConflictError('ANODYNE_E_CONFLICT', `network profile ${name} is used by ${names.join(', ')}`, {
        details: { clusters: names },
      });
    }
    await storeQuery('deleting a network profile', () => this.store.db.deleteFrom('network_profiles').where('name', '=', name).execute());
  }
}

export interface Quota {
  owner: string;
  max_clusters: number;
  max_workers: number;
}
export interface Usage {
  owner: string;
  clusters: number;
  workers: number;
}

export class Quotas {
  constructor(
    private readonly store: Store,
    private readonly records: ClusterRecords,
    private readonly defaults: { maxClusters: number; maxWorkers: number },
  ) {}

  async of(owner: string): Promise<Quota> {
    const row = await storeQuery('reading a quota', () =>
      this.store.db.selectFrom('quotas').selectAll().where('owner', '=', owner).executeTakeFirst(),
    );
    return row ?? { owner, max_clusters: this.defaults.maxClusters, max_workers: this.defaults.maxWorkers };
  }

  async set(owner: string, maxClusters: number, maxWorkers: number): Promise<Quota> {
    if (!Number.isInteger(maxClusters) || maxClusters < 0 || !Number.isInteger(maxWorkers) || maxWorkers < 0) {
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'quotas are whole numbers ≥ 0');
    }
    await storeQuery('setting a quota', () =>
      this.store.db
        .insertInto('quotas')
        .values({ owner, max_clusters: maxClusters, max_workers: maxWorkers })
        .onConflict((oc) => oc.column('owner').doUpdateSet({ max_clusters: maxClusters, max_workers: maxWorkers }))
        .execute(),
    );
    return this.of(owner);
  }

  async usage(owner: string): Promise<Usage> {
    const rows = await this.records.rows({ owner });
    return { owner, clusters: rows.length, workers: rows.reduce((n, r) => n + (JSON.parse(r.parameters) as Parameters).workers, 0) };
  }

  /** Refuses a request that would take the owner over their quota (before any work starts). */
  async check(owner: string, addClusters: number, addWorkers: number): Promise<void> {
    const [quota, used] = await Promise.all([this.of(owner), this.usage(owner)]);
    if (used.clusters + addClusters > quota.max_clusters) {
      throw new QuotaError('ANODYNE_E_QUOTA_EXCEEDED', `${owner} may have ${quota.max_clusters} clusters and has ${used.clusters}`, {
        details: { quota, usage: used },
      });
    }
    if (used.workers + addWorkers > quota.max_workers) {
      const message = `${owner} may have ${quota.max_workers} workers in all and has ${used.workers}; this asks for ${addWorkers} more`;
      throw new QuotaError('ANODYNE_E_QUOTA_EXCEEDED', message, { details: { quota, usage: used } });
    }
  }
}
