// The store's schema migrations, in order, each written once for both SQLite and PostgreSQL.
import { sql, type Kysely, type Migration } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

/**
 * Migrations in order. Names sort in execution order; a released migration is never
 * edited, only followed by a new one. Each is written once for both dialects; the few
 * type differences go through the helpers below.
 */
export function migrations(dialect: Dialect): Record<string, Migration> {
  const blob = dialect === 'postgres' ? sql`bytea` : sql`blob`;
  /* eslint-disable @typescript-eslint/no-explicit-any -- migrations run against the schema as it was, not the current Database type */
  const serialPk = (db: Kysely<any>, table: string) =>
    dialect === 'postgres'
      ? db.schema.createTable(table).addColumn('id', 'bigserial', (c) => c.primaryKey())
      : db.schema.createTable(table).addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());

  return {
    '0001_platform': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('platform_meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await serialPk(db, 'audit_events')
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('result', 'text', (c) => c.notNull())
          .addColumn('details', 'text', (c) => c.notNull().defaultTo('{}'))
          .execute();
        await db.schema.createIndex('audit_events_at').on('audit_events').column('at').execute();
      },
    },
    '0002_credentials': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('credentials')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('credential_versions')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('credential_id', 'text', (c) => c.notNull().references('credentials.id').onDelete('cascade'))
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('nonce', blob, (c) => c.notNull())
          .addColumn('ciphertext', blob, (c) => c.notNull())
          .addColumn('params', 'text', (c) => c.notNull())
          .addColumn('params_hash', 'text', (c) => c.notNull())
          .addColumn('transitional', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('expires_at', 'text')
          .addColumn('ca_name', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('credential_versions_credential_version', ['credential_id', 'version'])
          .execute();
        await db.schema.createIndex('credential_versions_expires_at').on('credential_versions').column('expires_at').execute();
        await db.schema.createIndex('credential_versions_key_id').on('credential_versions').column('key_id').execute();
      },
    },
    '0003_director': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('deployments')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('manifest', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('instances')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('deployment', 'text', (c) => c.notNull())
          .addColumn('group_name', 'text', (c) => c.notNull())
          .addColumn('idx', 'integer', (c) => c.notNull())
          .addColumn('vm_id', 'text')
          .addColumn('agent_id', 'text', (c) => c.notNull())
          .addColumn('ip', 'text')
          .addColumn('vm_type', 'text', (c) => c.notNull())
          .addColumn('image', 'text', (c) => c.notNull())
          .addColumn('disk_mb', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('disk_id', 'text')
          .addColumn('network', 'text', (c) => c.notNull())
          .addColumn('bundle_hash', 'text')
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('instances_deployment_group_idx', ['deployment', 'group_name', 'idx'])
          .execute();
        await serialPk(db, 'tasks')
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('deployment', 'text')
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull())
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('result', 'text')
          .addColumn('error', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('started_at', 'text')
          .addColumn('finished_at', 'text')
          .execute();
        await db.schema.createIndex('tasks_state').on('tasks').column('state').execute();
        await serialPk(db, 'task_events')
          .addColumn('task_id', 'integer', (c) => c.notNull())
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('stage', 'text', (c) => c.notNull())
          .addColumn('instance', 'text')
          .addColumn('idx', 'integer')
          .addColumn('total', 'integer')
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('message', 'text')
          .execute();
        await db.schema.createIndex('task_events_task').on('task_events').columns(['task_id', 'id']).execute();
        await db.schema
          .createTable('locks')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('task_id', 'integer', (c) => c.notNull())
          .addColumn('acquired_at', 'text', (c) => c.notNull())
          .execute();
      },
    },
    '0004_identity_clusters': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('identity_users')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('username', 'text', (c) => c.notNull().unique())
          .addColumn('origin', 'text', (c) => c.notNull())
          .addColumn('password_hash', 'text')
          .addColumn('email', 'text')
          .addColumn('failed_logins', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('locked_until', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('identity_memberships')
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('group_name', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('identity_memberships_pk', ['user_id', 'group_name'])
          .execute();
        await db.schema
          .createTable('identity_clients')
          .addColumn('client_id', 'text', (c) => c.primaryKey())
          .addColumn('secret_hash', 'text')
          .addColumn('scopes', 'text', (c) => c.notNull())
          .addColumn('grant_types', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('clusters')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('uuid', 'text', (c) => c.notNull().unique())
          .addColumn('plan', 'text', (c) => c.notNull())
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('parameters', 'text', (c) => c.notNull())
          .addColumn('last_action', 'text', (c) => c.notNull())
          .addColumn('last_task_id', 'integer')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('clusters_owner').on('clusters').column('owner').execute();
        await db.schema
          .createTable('quotas')
          .addColumn('owner', 'text', (c) => c.primaryKey())
          .addColumn('max_clusters', 'integer', (c) => c.notNull())
          .addColumn('max_workers', 'integer', (c) => c.notNull())
          .execute();
      },
    },
    '0005_network_profiles': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('network_profiles')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('description', 'text', (c) => c.notNull())
          .addColumn('pod_cidr', 'text', (c) => c.notNull())
          .addColumn('service_cidr', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.alterTable('clusters').addColumn('network_profile', 'text').execute();
      },
    },
    '0006_instance_health': {
      async up(db: Kysely<any>) {
        // One statement per column: SQLite alters one column at a time.
        await db.schema
          .alterTable('instances')
          .addColumn('health', 'text', (c) => c.notNull().defaultTo('pending'))
          .execute();
        await db.schema.alterTable('instances').addColumn('health_reason', 'text').execute();
        await db.schema.alterTable('instances').addColumn('health_since', 'text').execute();
      },
    },
    '0007_releases': {
      async up(db: Kysely<any>) {
        // Releases the platform knows (content-addressed by key); each cluster records the one it runs.
        await db.schema
          .createTable('releases')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('kubernetes_version', 'text', (c) => c.notNull())
          .addColumn('dir', 'text', (c) => c.notNull())
          .addColumn('manifest_sha256', 'text', (c) => c.notNull())
          .addColumn('registered_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.alterTable('clusters').addColumn('release', 'text').execute();
      },
    },
    '0008_backups': {
      async up(db: Kysely<any>) {
        // Backups of clusters: the record of each, its artifacts in a backup store.
        await db.schema
          .createTable('backups')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('task_id', 'integer')
          .addColumn('location', 'text', (c) => c.notNull())
          .addColumn('manifest', 'text')
          .addColumn('size_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('error', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('finished_at', 'text')
          .execute();
        await db.schema.createIndex('backups_target').on('backups').columns(['kind', 'target']).execute();
      },
    },
    '0009_backup_schedules': {
      async up(db: Kysely<any>) {
        // One schedule per cluster: every so many minutes, keeping the newest N and none older than D days.
        await db.schema
          .createTable('backup_schedules')
          .addColumn('cluster', 'text', (c) => c.primaryKey())
          .addColumn('every_minutes', 'integer', (c) => c.notNull())
          .addColumn('keep_last', 'integer', (c) => c.notNull())
          .addColumn('keep_days', 'integer')
          .addColumn('point_in_time', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('next_at', 'text', (c) => c.notNull())
          .addColumn('last_backup', 'text')
          .addColumn('last_error', 'text')
          .addColumn('updated_by', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        // Retention removes the backups a schedule took, never those someone asked for.
        await db.schema
          .alterTable('backups')
          .addColumn('scheduled', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();
      },
    },
    '0010_authorization_codes': {
      async up(db: Kysely<any>) {
        // Where a client using the authorization code flow may be sent back to (exact match).
        await db.schema.alterTable('identity_clients').addColumn('redirect_uris', 'text').execute();
        // One-time codes of the authorization code flow (PKCE), kept hashed until redeemed or expired.
        await db.schema
          .createTable('identity_codes')
          .addColumn('code_hash', 'text', (c) => c.primaryKey())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('redirect_uri', 'text', (c) => c.notNull())
          .addColumn('code_challenge', 'text', (c) => c.notNull())
          .addColumn('user_name', 'text', (c) => c.notNull())
          .addColumn('scopes', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text', (c) => c.notNull())
          .execute();
      },
    },
    '0011_image_registry': {
      async up(db: Kysely<any>) {
        // Registry projects: the first path component of every repository; an owner's own, or shared.
        await db.schema
          .createTable('registry_projects')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('owner', 'text')
          .addColumn('public', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('quota_bytes', 'bigint')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        // Who else may pull (or push) a project's images: users, groups (scopes) and robot clients.
        await db.schema
          .createTable('registry_grants')
          .addColumn('project', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('actions', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('registry_grants_pk', ['project', 'subject'])
          .execute();
        // Manifests pushed, with the blobs they refer to (what a project's stored bytes count).
        await db.schema
          .createTable('registry_manifests')
          .addColumn('project', 'text', (c) => c.notNull())
          .addColumn('repository', 'text', (c) => c.notNull())
          .addColumn('digest', 'text', (c) => c.notNull())
          .addColumn('media_type', 'text', (c) => c.notNull())
          .addColumn('size', 'bigint', (c) => c.notNull())
          .addColumn('blobs', 'text', (c) => c.notNull())
          .addColumn('pushed_by', 'text', (c) => c.notNull())
          .addColumn('pushed_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('registry_manifests_pk', ['repository', 'digest'])
          .execute();
        await db.schema
          .createTable('registry_tags')
          .addColumn('repository', 'text', (c) => c.notNull())
          .addColumn('tag', 'text', (c) => c.notNull())
          .addColumn('digest', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('registry_tags_pk', ['repository', 'tag'])
          .execute();
      },
    },
    '0012_network_profile_policy': {
      async up(db: Kysely<any>) {
        // A profile's NetworkPolicy default for new namespaces (null: the plan's).
        await db.schema.alterTable('network_profiles').addColumn('default_deny_namespaces', 'integer').execute();
      },
    },
    '0013_network_profile_segment_pool': {
      async up(db: Kysely<any>) {
        // A profile's share of the provider's segment pool (null: the whole pool).
        await db.schema.alterTable('network_profiles').addColumn('segment_pool', 'text').execute();
      },
    },
    '0014_platform_replicas': {
      async up(db: Kysely<any>) {
        // Every running `anodyne server` on this database: who it is, where, and when it last said so.
        await db.schema
          .createTable('platform_replicas')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('pid', 'integer', (c) => c.notNull())
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('started_at', 'text', (c) => c.notNull())
          .addColumn('seen_at', 'text', (c) => c.notNull())
          .execute();
        // Leases (the leader's): who holds it, until when, and the term that grows with every new holder.
        await db.schema
          .createTable('platform_leases')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('holder', 'text', (c) => c.notNull())
          .addColumn('term', 'integer', (c) => c.notNull())
          .addColumn('acquired_at', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text', (c) => c.notNull())
          .execute();
        // The replica that runs a task (null: a task of a platform from before replicas, or of a tool).
        await db.schema.alterTable('tasks').addColumn('runner', 'text').execute();
        // Request counts per key and window (token requests per client address), shared by every replica.
        await db.schema
          .createTable('rate_limits')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('window_start', 'text', (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .execute();
      },
    },
    '0015_task_input': {
      async up(db: Kysely<any>) {
        // What another replica needs to run a task again when its own replica died (its kind and
        // arguments, JSON); null: the task can only run where it was asked (its work is code in that process).
        await db.schema.alterTable('tasks').addColumn('input', 'text').execute();
      },
    },
    '0016_instance_az': {
      async up(db: Kysely<any>) {
        // The availability zone an instance is in (its group's AZs, round robin by index): a provider
        // with zones places its VM there. Null for instances made before zones were recorded.
        await db.schema.alterTable('instances').addColumn('az', 'text').execute();
      },
    },
  };
  /* eslint-enable @typescript-eslint/no-explicit-any */
}
