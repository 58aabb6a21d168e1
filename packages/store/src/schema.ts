// The database's Kysely table types (ISO-8601 timestamps, 0/1 booleans, binary Buffers); they must match the migrations.
import type { ColumnType, Generated } from 'kysely';

/**
 * The platform database. Timestamps are ISO-8601 UTC strings (sortable and identical in
 * both dialects); booleans are 0/1 integers; binary columns are Buffers (blob / bytea).
 * Every table is created by a migration in ./migrations; this interface must match them.
 */
export interface Database {
  platform_meta: PlatformMetaTable;
  audit_events: AuditEventsTable;
  credentials: CredentialsTable;
  credential_versions: CredentialVersionsTable;
  deployments: DeploymentsTable;
  instances: InstancesTable;
  tasks: TasksTable;
  platform_replicas: PlatformReplicasTable;
  platform_leases: PlatformLeasesTable;
  rate_limits: RateLimitsTable;
  task_events: TaskEventsTable;
  locks: LocksTable;
  identity_users: IdentityUsersTable;
  identity_memberships: IdentityMembershipsTable;
  identity_clients: IdentityClientsTable;
  clusters: ClustersTable;
  quotas: QuotasTable;
  network_profiles: NetworkProfilesTable;
  releases: ReleasesTable;
  backups: BackupsTable;
  backup_schedules: BackupSchedulesTable;
  identity_codes: IdentityCodesTable;
  registry_projects: RegistryProjectsTable;
  registry_grants: RegistryGrantsTable;
  registry_manifests: RegistryManifestsTable;
  registry_tags: RegistryTagsTable;
}

/** A registry project: the first path component of its repositories. */
export interface RegistryProjectsTable {
  name: string;
  /** The user whose project it is (push, pull, delete, grant); null for shared projects (admins manage them). */
  owner: string | null;
  /** 1: every authenticated caller (and every cluster) may pull. */
  public: number;
  /** Stored bytes the project may hold (null: no limit). */
  quota_bytes: number | null;
  created_at: string;
}

export interface RegistryGrantsTable {
  project: string;
  /** `user:<name>`, `group:<scope>` or `client:<id>` (a robot account). */
  subject: string;
  /** JSON array: `pull`, or `pull` and `push`. */
  actions: string;
  created_at: string;
}

export interface RegistryManifestsTable {
  project: string;
  repository: string;
  digest: string;
  media_type: string;
  /** The manifest's own bytes. */
  size: number;
  /** JSON array of {digest, size}: the config and layers it refers to. */
  blobs: string;
  pushed_by: string;
  pushed_at: string;
}

export interface RegistryTagsTable {
  repository: string;
  tag: string;
  digest: string;
  updated_at: string;
}

/** A cluster's backup schedule and retention. */
export interface BackupSchedulesTable {
  cluster: string;
  every_minutes: number;
  /** Scheduled backups kept: the newest this many … */
  keep_last: number;
  /** … and none older than this many days (null: no age limit). */
  keep_days: number | null;
  /** 1: etcd's changes after each backup are recorded, for restores to a revision or a time. */
  point_in_time: number;
  /** When the next scheduled backup is due. */
  next_at: string;
  last_backup: string | null;
  last_error: string | null;
  updated_by: string;
  updated_at: string;
}

/** A backup: what it holds, where its artifacts are, and how its task went. */
export interface BackupsTable {
  id: string;
  /** cluster (its etcd, record and manifest) */
  kind: string;
  /** The cluster's name. */
  target: string;
  /** Who asked for it. */
  owner: string;
  /** running | done | failed */
  state: string;
  task_id: number | null;
  /** Where the artifacts are (`file:///…`, `s3://bucket/prefix`). */
  location: string;
  /** JSON: the artifacts' manifest (files, sizes, sha256s, key id, release, etcd revision). */
  manifest: string | null;
  size_bytes: number;
  error: string | null;
  created_at: string;
  finished_at: string | null;
  /** 1 when a schedule took it (its retention may remove it). */
  scheduled: number;
}

/** A Kubernetes release the platform serves clusters from (built by release/build.sh, content-addressed). */
export interface ReleasesTable {
  key: string;
  kubernetes_version: string;
  dir: string;
  manifest_sha256: string;
  registered_at: string;
}

/** Named pod and service ranges an admin offers for clusters (PKS network profiles). */
export interface NetworkProfilesTable {
  name: string;
  description: string;
  pod_cidr: string;
  service_cidr: string;
  /** 1: new namespaces of its clusters get a default-deny NetworkPolicy; 0: they do not; null: the plan decides. */
  default_deny_namespaces: number | null;
  /** The share of the provider's segment pool (a CIDR inside it) its clusters' segments are cut from; null: the whole pool. */
  segment_pool: string | null;
  created_at: string;
}

export interface IdentityUsersTable {
  id: string;
  username: string;
  /** `local` (password hash here) or `ldap` (the directory checks the password). */
  origin: string;
  /** argon2id encoded hash; null for LDAP users. */
  password_hash: string | null;
  email: string | null;
  failed_logins: number;
  locked_until: string | null;
  created_at: string;
  updated_at: string;
}

/** A user's groups; group names are scopes (UAA's model), e.g. `pks.clusters.manage`. */
export interface IdentityMembershipsTable {
  user_id: string;
  group_name: string;
}

export interface IdentityClientsTable {
  client_id: string;
  /** argon2id encoded hash; null for public clients (the CLI). */
  secret_hash: string | null;
  /** JSON array of scopes the client may hold. */
  scopes: string;
  /** JSON array of grant types. */
  grant_types: string;
  /** JSON array of redirect URIs (authorization code flow); null when the client uses none. */
  redirect_uris: string | null;
  created_at: string;
}

export interface ClustersTable {
  name: string;
  uuid: string;
  plan: string;
  /** The user (or client) that created the cluster. */
  owner: string;
  /** JSON: the request's parameters (workers, external hostname, network profile). */
  parameters: string;
  /** CREATE, UPDATE or DELETE (PKS's last_action). */
  last_action: string;
  /** The director task of the last action; its state is last_action_state. */
  last_task_id: number | null;
  /** The network profile the cluster was created with, if any. */
  network_profile: string | null;
  /** The key of the release the cluster runs (null only for records made before releases were recorded). */
  release: string | null;
  created_at: string;
  updated_at: string;
}

export interface QuotasTable {
  owner: string;
  max_clusters: number;
  max_workers: number;
}

export interface DeploymentsTable {
  name: string;
  /** The last manifest successfully validated for this deployment, as JSON. */
  manifest: string;
  created_at: string;
  updated_at: string;
}

export interface InstancesTable {
  id: string;
  deployment: string;
  group_name: string;
  idx: number;
  vm_id: string | null;
  agent_id: string;
  ip: string | null;
  /** JSON of the VM type (a name or an explicit size). */
  vm_type: string;
  image: string;
  disk_mb: number;
  disk_id: string | null;
  network: string;
  /** The availability zone the instance is in (null: made before zones were recorded). */
  az: ColumnType<string | null, string | null | undefined, string | null>;
  bundle_hash: string | null;
  /** started | stopped | detached */
  state: string;
  /** What the health monitor last found: pending | running | failing | unresponsive | missing | stopped */
  health: ColumnType<string, string | undefined, string>;
  /** Why, when not running (the failing processes, the agent's error). */
  health_reason: ColumnType<string | null, string | null | undefined, string | null>;
  /** When the instance entered its current health (the resurrector waits from here). */
  health_since: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: string;
  updated_at: string;
}

export interface TasksTable {
  id: Generated<number>;
  type: string;
  deployment: string | null;
  /** queued | processing | done | error | cancelling | cancelled */
  state: string;
  description: string;
  /** Who asked: user or client id. */
  owner: string;
  result: string | null;
  error: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** The id of the platform replica that runs it (null: none recorded). */
  runner: Generated<string | null>;
  /** What another replica needs to resume it (JSON: its kind and arguments); null: not resumable. */
  input: Generated<string | null>;
}

/** A running platform replica (`anodyne server`), as it last reported itself. */
export interface PlatformReplicasTable {
  id: string;
  host: string;
  pid: number;
  url: string;
  started_at: string;
  seen_at: string;
}

/** Requests counted per key in a fixed window (a rate limit every replica shares). */
export interface RateLimitsTable {
  key: string;
  window_start: string;
  count: number;
}

/** A lease one replica holds at a time (the leader's); `term` grows by one with every new holder. */
export interface PlatformLeasesTable {
  name: string;
  holder: string;
  term: number;
  acquired_at: string;
  expires_at: string;
}

export interface TaskEventsTable {
  id: Generated<number>;
  task_id: number;
  at: string;
  stage: string;
  instance: string | null;
  idx: number | null;
  total: number | null;
  state: string;
  message: string | null;
}

export interface LocksTable {
  name: string;
  task_id: number;
  acquired_at: string;
}

export interface PlatformMetaTable {
  key: string;
  value: string;
  updated_at: string;
}

export interface AuditEventsTable {
  id: Generated<number>;
  at: string;
  /** Who: user name, client id or `system`. */
  actor: string;
  /** What: a dotted verb such as `credential.read` or `cluster.create`. */
  action: string;
  /** On what: a path, cluster name or id. */
  target: string;
  /** `ok`, `denied` or `error`. */
  result: string;
  /** JSON with non-secret details. */
  details: string;
}

export interface CredentialsTable {
  id: string;
  /** Absolute path-like name, e.g. /clusters/prod/ca. Unique. */
  name: string;
  type: string;
  created_at: string;
  updated_at: string;
}

export interface CredentialVersionsTable {
  id: string;
  credential_id: string;
  /** 1, 2, 3 … per credential. */
  version: number;
  type: string;
  /** Id of the encryption key that sealed `ciphertext`. */
  key_id: string;
  nonce: ColumnType<Buffer, Buffer, Buffer>;
  /** AES-256-GCM ciphertext followed by its 16-byte tag. */
  ciphertext: ColumnType<Buffer, Buffer, Buffer>;
  /** Non-secret generation parameters as JSON (for converge and regenerate). */
  params: string;
  /** Hash of the canonical parameters, for converge mode. */
  params_hash: string;
  /** For certificates: 1 while a CA is trusted but not yet used to sign. */
  transitional: number;
  /** For certificates: the expiry instant, for expiry queries. */
  expires_at: string | null;
  /** For certificates: the name of the signing CA credential, if any. */
  ca_name: string | null;
  created_at: string;
}

export interface IdentityCodesTable {
  /** sha256 (hex) of the code handed to the browser; the code itself is never stored. */
  code_hash: string;
  client_id: string;
  redirect_uri: string;
  /** The PKCE S256 challenge the token request's verifier must match. */
  code_challenge: string;
  user_name: string;
  /** JSON array of the scopes granted. */
  scopes: string;
  expires_at: string;
}
