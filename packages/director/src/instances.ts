// The instance repository: every read and write of the `instances` table the director makes.
import { randomUUID } from 'node:crypto';
import type { Clock } from '@anodyne/common';
import { storeQuery, type InstancesTable, type Store } from '@anodyne/store';
import type { Selectable } from 'kysely';
import type { InstanceGroup, Manifest } from './manifest.js';

/** An instance as the director works with it: the store's row without bookkeeping columns. */
export type InstanceRow = Omit<
  Selectable<InstancesTable>,
  'state' | 'created_at' | 'updated_at' | 'health' | 'health_reason' | 'health_since'
>;

/** An instance's full record, bookkeeping and health included. */
export type InstanceRecord = Selectable<InstancesTable>;

/** The columns a change to an instance may set; `updated_at` is stamped from the clock. */
export type InstancePatch = Partial<InstanceRow> & {
  state?: string;
  health?: string;
  health_reason?: string | null;
  health_since?: string | null;
};

const ROW_COLUMNS = [
  'id',
  'deployment',
  'group_name',
  'idx',
  'vm_id',
  'agent_id',
  'ip',
  'vm_type',
  'image',
  'disk_mb',
  'disk_id',
  'network',
  'az',
  'bundle_hash',
] as const;

/**
 * A new instance of `group` at `index` (no VM yet). Its agent id is stable across VM recreation;
 * `ip` is a static address or null (the provider picks one), `diskMb` the persistent disk asked for.
 */
export function newInstanceRow(m: Manifest, g: InstanceGroup, index: number, place: { ip: string | null; diskMb: number }): InstanceRow {
  return {
    id: randomUUID(),
    deployment: m.name,
    group_name: g.name,
    idx: index,
    vm_id: null,
    agent_id: `${m.name}-${g.name}-${index}`.slice(0, 64),
    ip: place.ip,
    vm_type: JSON.stringify(g.vm_type),
    image: m.image,
    disk_mb: place.diskMb,
    network: g.networks[0]!.name,
    az: azOf(g, index),
    bundle_hash: null,
    disk_id: null,
  };
}

/** The availability zone of a group's instance: its AZs round robin by index (`z1` when it names none). */
export function azOf(g: InstanceGroup, index: number): string {
  return g.azs?.[index % g.azs.length] ?? 'z1';
}

/** Reads and writes instances in the store, timestamps from the injected clock. */
export class InstanceRepository {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /** A deployment's instances, by group and index. */
  async list(deployment: string): Promise<InstanceRow[]> {
    return storeQuery('reading instances', () =>
      this.store.db
        .selectFrom('instances')
        .select(ROW_COLUMNS)
        .where('deployment', '=', deployment)
        .orderBy('group_name')
        .orderBy('idx')
        .execute(),
    );
  }

  /** A deployment's instances with every column (health, state), by group and index. */
  async listRecords(deployment: string): Promise<InstanceRecord[]> {
    return storeQuery('reading instances', () =>
      this.store.db.selectFrom('instances').selectAll().where('deployment', '=', deployment).orderBy('group_name').orderBy('idx').execute(),
    );
  }

  /** The instance whose agent has this id, or undefined. */
  async byAgent(agentId: string): Promise<InstanceRow | undefined> {
    return storeQuery('reading an instance', () =>
      this.store.db.selectFrom('instances').select(ROW_COLUMNS).where('agent_id', '=', agentId).executeTakeFirst(),
    );
  }

  /** One instance of a deployment, or undefined. */
  async get(deployment: string, group: string, index: number): Promise<InstanceRow | undefined> {
    return storeQuery('reading an instance', () =>
      this.store.db
        .selectFrom('instances')
        .select(ROW_COLUMNS)
        .where('deployment', '=', deployment)
        .where('group_name', '=', group)
        .where('idx', '=', index)
        .executeTakeFirst(),
    );
  }

  /** Records a new instance (started). */
  async insert(row: InstanceRow): Promise<void> {
    const now = this.clock.now().toISOString();
    await storeQuery('recording an instance', () =>
      this.store.db
        .insertInto('instances')
        .values({ ...row, state: 'started', created_at: now, updated_at: now })
        .execute(),
    );
  }

  /** Changes some columns of an instance. */
  async patch(id: string, patch: InstancePatch): Promise<void> {
    await storeQuery('updating an instance', () =>
      this.store.db
        .updateTable('instances')
        .set({ ...patch, updated_at: this.clock.now().toISOString() })
        .where('id', '=', id)
        .execute(),
    );
  }

  async delete(id: string): Promise<void> {
    await storeQuery('deleting an instance', () => this.store.db.deleteFrom('instances').where('id', '=', id).execute());
  }

  /** The persistent disk the store records for an instance (a copy in memory may predate it). */
  async diskId(id: string): Promise<string | null> {
    const r = await storeQuery('reading an instance', () =>
      this.store.db.selectFrom('instances').select('disk_id').where('id', '=', id).executeTakeFirst(),
    );
    return r?.disk_id ?? null;
  }
}
