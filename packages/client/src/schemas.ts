// The API's contract: request and response schemas. The API validates every request and makes
// /openapi.json from them; the typed client takes its request and response types from them.
import { Type, type Static } from '@sinclair/typebox';

export const ErrorBody = Type.Object(
  { code: Type.String(), message: Type.String(), details: Type.Record(Type.String(), Type.Unknown()) },
  { $id: 'Error', additionalProperties: false },
);
export const Health = Type.Object({ status: Type.Literal('ok') });

const DNS1123 = '^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$';
const USER = '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$';

export const NameParams = Type.Object({ name: Type.String({ pattern: DNS1123, maxLength: 40 }) });
export const UserParams = Type.Object({ username: Type.String({ pattern: USER, maxLength: 64 }) });
export const OwnerParams = Type.Object({ owner: Type.String({ pattern: USER, maxLength: 64 }) });
export const IdParams = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 31 }) });

export const TokenRequest = Type.Object(
  {
    grant_type: Type.String({ maxLength: 64 }),
    username: Type.Optional(Type.String({ maxLength: 256 })),
    password: Type.Optional(Type.String({ maxLength: 1024 })),
    client_id: Type.Optional(Type.String({ maxLength: 256 })),
    client_secret: Type.Optional(Type.String({ maxLength: 1024 })),
    refresh_token: Type.Optional(Type.String({ maxLength: 8192 })),
    scope: Type.Optional(Type.String({ maxLength: 1024 })),
    response_type: Type.Optional(Type.String({ maxLength: 64 })),
    code: Type.Optional(Type.String({ maxLength: 256 })),
    redirect_uri: Type.Optional(Type.String({ maxLength: 2048 })),
    code_verifier: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
/** An authorization request (code flow with PKCE), as the browser sends it to the sign-in page. */
const authorizeFields = {
  response_type: Type.Optional(Type.String({ maxLength: 64 })),
  client_id: Type.Optional(Type.String({ maxLength: 256 })),
  redirect_uri: Type.Optional(Type.String({ maxLength: 2048 })),
  code_challenge: Type.Optional(Type.String({ maxLength: 256 })),
  code_challenge_method: Type.Optional(Type.String({ maxLength: 16 })),
  state: Type.Optional(Type.String({ maxLength: 1024 })),
  scope: Type.Optional(Type.String({ maxLength: 1024 })),
};
export const AuthorizeQuery = Type.Object(authorizeFields, { additionalProperties: false });
/** The sign-in form: the authorization request back, with the user's name and password. */
export const AuthorizeForm = Type.Object(
  { ...authorizeFields, username: Type.String({ minLength: 1, maxLength: 256 }), password: Type.String({ minLength: 1, maxLength: 1024 }) },
  { additionalProperties: false },
);
export const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('bearer'),
  expires_in: Type.Integer(),
  scope: Type.String(),
  jti: Type.String(),
  refresh_token: Type.Optional(Type.String()),
});

export const Scope = Type.Union([
  Type.Literal('pks.clusters.admin'),
  Type.Literal('pks.clusters.admin.read'),
  Type.Literal('pks.clusters.manage'),
]);
export const CreateUser = Type.Object(
  {
    username: Type.String({ pattern: USER, maxLength: 64 }),
    password: Type.Optional(Type.String({ minLength: 8, maxLength: 1024 })),
    email: Type.Optional(Type.String({ maxLength: 256 })),
    groups: Type.Optional(Type.Array(Scope, { maxItems: 3, uniqueItems: true })),
  },
  { additionalProperties: false },
);
export const UserGroups = Type.Object(
  {
    groups: Type.Optional(Type.Array(Scope, { maxItems: 3, uniqueItems: true })),
    /** An admin's password reset (local users only). */
    password: Type.Optional(Type.String({ minLength: 8, maxLength: 256 })),
  },
  { additionalProperties: false, minProperties: 1 },
);
export const SigningKey = Type.Object({ kid: Type.String(), rotated: Type.Boolean() });
export const User = Type.Object({
  id: Type.String(),
  username: Type.String(),
  origin: Type.String(),
  email: Type.Union([Type.String(), Type.Null()]),
  groups: Type.Array(Type.String()),
  locked: Type.Boolean(),
});
export const OAuthClient = Type.Object({
  client_id: Type.String(),
  scopes: Type.Array(Type.String()),
  grant_types: Type.Array(Type.String()),
  redirect_uris: Type.Array(Type.String()),
  confidential: Type.Boolean(),
});
export const CreatedClient = Type.Object({
  client_id: Type.String(),
  scopes: Type.Array(Type.String()),
  grant_types: Type.Array(Type.String()),
  redirect_uris: Type.Array(Type.String()),
});
export const AuditEntry = Type.Object({
  id: Type.Integer(),
  at: Type.String(),
  actor: Type.String(),
  action: Type.String(),
  target: Type.String(),
  result: Type.Union([Type.Literal('ok'), Type.Literal('denied'), Type.Literal('error')]),
  details: Type.Record(Type.String(), Type.Unknown()),
});
export const AuditQuery = Type.Object(
  {
    actor: Type.Optional(Type.String({ maxLength: 256 })),
    action: Type.Optional(Type.String({ maxLength: 128 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  { additionalProperties: false },
);

export const PlatformReplicas = Type.Object({
  self: Type.String({ description: 'The id of the replica that answered' }),
  leader: Type.Union(
    [
      Type.Object({
        holder: Type.String({ description: 'The id of the replica that holds (or last held) the lease' }),
        term: Type.Integer({ description: 'Grows by one with every new holder' }),
        acquired_at: Type.String(),
        expires_at: Type.String({ description: 'Renewed by the holder every third of the lease; past: nobody leads now' }),
      }),
      Type.Null(),
    ],
    { description: "The leader's lease (null: no replica has led yet)" },
  ),
  replicas: Type.Array(
    Type.Object({
      id: Type.String(),
      host: Type.String(),
      pid: Type.Integer(),
      url: Type.String(),
      started_at: Type.String(),
      seen_at: Type.String({ description: 'Its last heartbeat' }),
      leader: Type.Boolean(),
    }),
    { description: 'The replicas alive now, on this database' },
  ),
});

export const PlatformEvent = Type.Object({
  id: Type.Integer({ description: 'Increasing: read the feed on with `after` set to the last id seen' }),
  at: Type.String(),
  kind: Type.String({
    description: 'certificate_expiring, instance_lost (resurrection started), meltdown (resurrection paused), task_failed, cloud_check …',
  }),
  target: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
});
export type PlatformEventView = Static<typeof PlatformEvent>;
export const PlatformEventsQuery = Type.Object(
  {
    after: Type.Optional(Type.Integer({ minimum: 0, description: 'Only events with a greater id' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  { additionalProperties: false },
);

export const Plan = Type.Object({
  name: Type.String(),
  description: Type.String(),
  masters: Type.Integer(),
  default_workers: Type.Integer(),
  max_workers: Type.Integer(),
  master_vm_type: Type.String(),
  worker_vm_type: Type.String(),
  /** How rolling changes of the plan's clusters go: canaries, then batches; watch times are min-max ms. */
  update: Type.Object({
    canaries: Type.Integer({ minimum: 0 }),
    max_in_flight: Type.Integer({ minimum: 1 }),
    canary_watch_time: Type.String(),
    update_watch_time: Type.String(),
    /** How long draining a worker may wait for PodDisruptionBudgets before the step fails. */
    drain_timeout_seconds: Type.Integer({ minimum: 1 }),
  }),
  /** New namespaces of the plan's clusters get a NetworkPolicy denying all ingress (NetworkPolicies are enforced in every cluster). */
  default_deny_namespaces: Type.Boolean(),
  /** Kubernetes versions of the registered releases the plan offers, newest first. */
  kubernetes_versions: Type.Array(Type.String()),
});

/** A requested Kubernetes version: a minor (`1.34`, its newest patch) or a patch (`1.34.4`), with or without `v`. */
const K8S_VERSION = Type.String({ pattern: '^v?1\\.[0-9]{1,3}(\\.[0-9]{1,3})?$', maxLength: 16 });

const CIDR = '^\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}/\\d{1,2}$';
export const CreateCluster = Type.Object(
  {
    name: Type.String({ pattern: DNS1123, maxLength: 40 }),
    plan_name: Type.String({ minLength: 1, maxLength: 64 }),
    kubernetes_version: Type.Optional(K8S_VERSION),
    network_profile_name: Type.Optional(Type.String({ pattern: DNS1123, maxLength: 40 })),
    parameters: Type.Optional(
      Type.Object(
        {
          kubernetes_master_host: Type.Optional(Type.String({ minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.-]+$' })),
          kubernetes_worker_instances: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
          pod_cidr: Type.Optional(Type.String({ pattern: CIDR })),
          service_cidr: Type.Optional(Type.String({ pattern: CIDR })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type CreateClusterBody = Static<typeof CreateCluster>;
export const UpdateCluster = Type.Object(
  { kubernetes_worker_instances: Type.Integer({ minimum: 0, maximum: 1000 }) },
  { additionalProperties: false },
);

export const Cluster = Type.Object({
  name: Type.String(),
  plan_name: Type.String(),
  uuid: Type.String(),
  owner: Type.String(),
  last_action: Type.Union([Type.Literal('CREATE'), Type.Literal('UPDATE'), Type.Literal('DELETE')]),
  last_action_state: Type.Union([Type.Literal('in progress'), Type.Literal('succeeded'), Type.Literal('failed')]),
  last_action_description: Type.String(),
  last_task_id: Type.Union([Type.Integer(), Type.Null()]),
  kubernetes_master_ips: Type.Array(Type.String()),
  network_profile_name: Type.Union([Type.String(), Type.Null()]),
  /** The Kubernetes version of the cluster's release, e.g. `1.34.4` (empty if its release is unknown). */
  kubernetes_version: Type.String(),
  /** The release the cluster runs. */
  release: Type.Union([Type.String(), Type.Null()]),
  /** Its VMs by what the platform's health monitor last found (running, failing, unresponsive, missing, stopped, pending). */
  health: Type.Object({
    running: Type.Integer(),
    failing: Type.Integer(),
    unresponsive: Type.Integer(),
    missing: Type.Integer(),
    stopped: Type.Integer(),
    pending: Type.Integer(),
  }),
  parameters: Type.Object({
    kubernetes_master_host: Type.String(),
    kubernetes_master_port: Type.Integer(),
    kubernetes_worker_instances: Type.Integer(),
    pod_cidr: Type.Optional(Type.String()),
    service_cidr: Type.Optional(Type.String()),
    /** `segment`: the cluster's VMs are on a network segment of their own (other clusters reach only its API load balancer); `shared`: on the provider's shared network. */
    network_isolation: Type.Union([Type.Literal('segment'), Type.Literal('shared')]),
  }),
});
export const Kubeconfig = Type.Object({ kubeconfig: Type.String() });

export const Task = Type.Object({
  id: Type.Integer(),
  type: Type.String(),
  deployment: Type.Union([Type.String(), Type.Null()]),
  state: Type.String(),
  description: Type.String(),
  owner: Type.String(),
  result: Type.Unknown(),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  created_at: Type.String(),
  started_at: Type.Union([Type.String(), Type.Null()]),
  finished_at: Type.Union([Type.String(), Type.Null()]),
});
export const TaskEvent = Type.Object({
  id: Type.Integer(),
  task_id: Type.Integer(),
  at: Type.String(),
  stage: Type.String(),
  state: Type.String(),
  instance: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  index: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  total: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  message: Type.Optional(Type.Union([Type.String(), Type.Null()])),
});
export const TaskWithEvents = Type.Intersect([Task, Type.Object({ events: Type.Array(TaskEvent) })]);
export const TaskQuery = Type.Object(
  {
    cluster: Type.Optional(Type.String({ pattern: DNS1123, maxLength: 40 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  },
  { additionalProperties: false },
);
export const EventsQuery = Type.Object({ after: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false });
/** A fleet upgrade: clusters in order (default: all), canary clusters first one at a time, then batches. */
export const FleetUpgrade = Type.Object(
  {
    kubernetes_version: Type.Optional(K8S_VERSION),
    clusters: Type.Optional(
      Type.Array(Type.String({ pattern: DNS1123, maxLength: 40 }), { minItems: 1, maxItems: 1000, uniqueItems: true }),
    ),
    canaries: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, default: 1 })),
    max_in_flight: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 1 })),
  },
  { additionalProperties: false },
);
export type FleetUpgradeBody = Static<typeof FleetUpgrade>;
export const CancelTask = Type.Object({ state: Type.Literal('cancelled') }, { additionalProperties: false });

export const Quota = Type.Object({ owner: Type.String(), max_clusters: Type.Integer(), max_workers: Type.Integer() });
export const QuotaBody = Type.Object(
  { max_clusters: Type.Integer({ minimum: 0, maximum: 10000 }), max_workers: Type.Integer({ minimum: 0, maximum: 100000 }) },
  { additionalProperties: false },
);
export const Usage = Type.Object({ owner: Type.String(), clusters: Type.Integer(), workers: Type.Integer() });
export const BrokerInfo = Type.Object({ url: Type.String(), username: Type.String(), password: Type.String() });
export const NetworkProfile = Type.Object({
  name: Type.String(),
  description: Type.String(),
  pod_cidr: Type.String(),
  service_cidr: Type.String(),
  /** New namespaces of its clusters get a default-deny NetworkPolicy (true) or not (false); null: as the cluster's plan says. */
  default_deny_namespaces: Type.Union([Type.Boolean(), Type.Null()]),
  /** The share of the provider's segment pool (a CIDR inside it) its clusters' network segments are cut from; null: the whole pool. */
  segment_pool: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
});
export const CreateNetworkProfile = Type.Object(
  {
    name: Type.String({ pattern: DNS1123, maxLength: 40 }),
    description: Type.Optional(Type.String({ maxLength: 256 })),
    pod_cidr: Type.String({ pattern: CIDR }),
    service_cidr: Type.String({ pattern: CIDR }),
    /** Overrides the plan's `default_deny_namespaces` for clusters made with this profile. */
    default_deny_namespaces: Type.Optional(Type.Boolean()),
    /**
     * A share of the provider's segment pool (a CIDR inside it, at least one segment wide) its clusters' network
     * segments are cut from; a full share refuses new clusters with ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED.
     */
    segment_pool: Type.Optional(Type.String({ pattern: CIDR })),
  },
  { additionalProperties: false },
);
export const Vm = Type.Object({
  instance: Type.String(),
  group: Type.String(),
  index: Type.Integer(),
  vm_id: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  state: Type.String(),
  health: Type.String(),
  health_reason: Type.Union([Type.String(), Type.Null()]),
  health_since: Type.Union([Type.String(), Type.Null()]),
});
export const Certificate = Type.Object({
  name: Type.String(),
  expires_at: Type.Union([Type.String(), Type.Null()]),
  is_ca: Type.Boolean(),
  version: Type.Integer(),
});
export const ClientParams = Type.Object({ client_id: Type.String({ pattern: USER, maxLength: 64 }) });
export const CreateClient = Type.Object(
  {
    client_id: Type.String({ pattern: USER, maxLength: 64 }),
    client_secret: Type.Optional(Type.String({ minLength: 16, maxLength: 1024 })),
    scopes: Type.Array(Scope, { maxItems: 3, uniqueItems: true }),
    grant_types: Type.Array(
      Type.Union([
        Type.Literal('client_credentials'),
        Type.Literal('password'),
        Type.Literal('refresh_token'),
        Type.Literal('authorization_code'),
      ]),
      { minItems: 1, maxItems: 4, uniqueItems: true },
    ),
    /** Where an authorization_code client may send the browser back (exact match; https, or http on loopback). */
    redirect_uris: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 2048 }), { minItems: 1, maxItems: 10, uniqueItems: true }),
    ),
  },
  { additionalProperties: false },
);

/** Upgrade one cluster: to this Kubernetes version (default: the newest its plan offers). */
export const UpgradeCluster = Type.Object({ kubernetes_version: Type.Optional(K8S_VERSION) }, { additionalProperties: false });
export type UpgradeClusterBody = Static<typeof UpgradeCluster>;

export const RotateCertificates = Type.Object(
  {
    ca: Type.Optional(
      Type.Boolean({
        description:
          'Also rotate every CA (Kubernetes, etcd, front-proxy) and the service-account key, in three rollouts with no downtime; ' +
          'an interrupted CA rotation resumes where it stopped',
      }),
    ),
  },
  { additionalProperties: false },
);
export type RotateCertificatesBody = Static<typeof RotateCertificates>;

export const Release = Type.Object({
  key: Type.String(),
  kubernetes_version: Type.String(),
  registered_at: Type.String(),
  clusters: Type.Integer(),
  default: Type.Boolean(),
});
export const ReleaseParams = Type.Object({ key: Type.String({ pattern: '^kubernetes-v[0-9.]+-[0-9a-f]{6,64}$', maxLength: 100 }) });

/** A backup of a cluster: its sealed etcd snapshot and record, in the platform's backup store. */
const BackupFileSchema = Type.Object({
  name: Type.String(),
  size: Type.Integer(),
  sha256: Type.String(),
  sealed_size: Type.Integer(),
  sealed_sha256: Type.String(),
});
export const BackupManifest = Type.Object({
  format: Type.Literal(1),
  id: Type.String(),
  kind: Type.Literal('cluster'),
  cluster: Type.String(),
  plan: Type.String(),
  workers: Type.Integer(),
  release: Type.Union([Type.String(), Type.Null()]),
  kubernetes_version: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
  etcd: Type.Object({ member: Type.String(), revision: Type.Integer(), total_keys: Type.Integer(), hash: Type.Integer() }),
  key_id: Type.String(),
  files: Type.Array(BackupFileSchema),
});
/** A backup of the platform itself: its database as the driver copied it, sealed with a key derived from the key file. */
export const PlatformBackupManifest = Type.Object({
  format: Type.Literal(1),
  id: Type.String(),
  kind: Type.Literal('platform'),
  driver: Type.Union([Type.Literal('sqlite'), Type.Literal('postgres')]),
  created_at: Type.String(),
  migrations: Type.Array(Type.String()),
  counts: Type.Object({ clusters: Type.Integer(), users: Type.Integer(), tasks: Type.Integer(), credentials: Type.Integer() }),
  /** The credential store's key ring (ids only): the platform it is restored into needs the same key file. */
  key_ring: Type.Object({ active: Type.String(), ids: Type.Array(Type.String()) }),
  key_id: Type.String(),
  files: Type.Array(BackupFileSchema),
});
export const Backup = Type.Object({
  id: Type.String(),
  /** cluster or platform */
  kind: Type.String(),
  /** The cluster it is of (null for a backup of the platform). */
  cluster: Type.Union([Type.String(), Type.Null()]),
  owner: Type.String(),
  /** running, done or failed */
  state: Type.String(),
  task_id: Type.Union([Type.Integer(), Type.Null()]),
  location: Type.String(),
  size_bytes: Type.Integer(),
  created_at: Type.String(),
  finished_at: Type.Union([Type.String(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  /** Taken by the cluster's schedule: its retention may remove it (backups asked for are kept). */
  scheduled: Type.Boolean(),
  manifest: Type.Union([BackupManifest, PlatformBackupManifest, Type.Null()]),
});
/** `{"cluster": name}` backs up a cluster; `{"platform": true}` (admins) the platform's database. */
export const CreateBackup = Type.Union([
  Type.Object({ cluster: Type.String({ pattern: DNS1123, maxLength: 40 }) }, { additionalProperties: false }),
  Type.Object({ platform: Type.Literal(true) }, { additionalProperties: false }),
]);
export const BackupCreated = Type.Object({ backup: Backup, task: Task });
export const BackupParams = Type.Object({ id: Type.String({ pattern: '^bk-[0-9]{14}-[0-9a-f]{6}$', maxLength: 40 }) });
export const BackupQuery = Type.Object(
  { cluster: Type.Optional(Type.String({ pattern: DNS1123, maxLength: 40 })) },
  { additionalProperties: false },
);
/** Restore onto the cluster the backup was taken of (no body, or no `cluster`), or into a new cluster named `cluster`. */
export const RestoreBackup = Type.Object(
  {
    cluster: Type.Optional(Type.String({ pattern: DNS1123, maxLength: 40 })),
    /** Point in time: replay the changes recorded after the backup up to this etcd revision … */
    to_revision: Type.Optional(Type.Integer({ minimum: 1 })),
    /** … or up to this instant (the changes the platform had seen by then). */
    to_time: Type.Optional(
      Type.String({
        pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$',
        maxLength: 40,
      }),
    ),
  },
  { additionalProperties: false },
);

/** A cluster's backup schedule: a backup every `every_minutes`; of those it took, the newest `keep_last`, none older than `keep_days`. */
export const BackupSchedule = Type.Object({
  /** Null: the platform's own schedule (its database). */
  cluster: Type.Union([Type.String(), Type.Null()]),
  every_minutes: Type.Integer(),
  keep_last: Type.Integer(),
  keep_days: Type.Union([Type.Integer(), Type.Null()]),
  /** etcd's changes after each backup are recorded: a restore may go to a revision or a time after it. */
  point_in_time: Type.Boolean(),
  next_at: Type.String(),
  last_backup: Type.Union([Type.String(), Type.Null()]),
  last_error: Type.Union([Type.String(), Type.Null()]),
});
export const SetBackupSchedule = Type.Object(
  {
    every_minutes: Type.Integer({ minimum: 5, maximum: 43_200 }),
    keep_last: Type.Integer({ minimum: 1, maximum: 1000 }),
    // `nullable`, not a union: the server coerces types, and a union reads 0 as null (no age limit) instead of refusing it.
    keep_days: Type.Optional(Type.Unsafe<number | null>({ type: 'integer', minimum: 1, maximum: 3650, nullable: true })),
    point_in_time: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

/** A union of string literals whose static type is their union (not `string`). */
const literals = <T extends string>(xs: readonly T[]) => Type.Union(xs.map((x) => Type.Literal(x)));
/** What may be done about a cloud check's finding (the first of a finding's resolutions is what `auto` does). */
export const CloudResolution = literals([
  'ignore',
  'reboot_vm',
  'recreate_vm',
  'delete_vm_reference',
  'reattach_disk',
  'delete_disk_reference',
  'delete_vm',
  'delete_disk',
  'delete_load_balancer',
] as const);
export const CloudFindingType = literals([
  'unresponsive_agent',
  'missing_vm',
  'missing_disk',
  'detached_disk',
  'bundle_mismatch',
  'orphan_vm',
  'orphan_disk',
  'orphan_load_balancer',
] as const);
/** A cloud check of every cluster or one: report only, resolve everything (`auto`), or resolve the findings named. */
export const CloudCheckRequest = Type.Object(
  {
    cluster: Type.Optional(Type.String({ pattern: DNS1123, maxLength: 40 })),
    auto: Type.Optional(Type.Boolean()),
    resolutions: Type.Optional(
      Type.Record(Type.String({ pattern: '^[a-z_]+:[A-Za-z0-9/._-]{1,160}$' }), CloudResolution, { maxProperties: 1000 }),
    ),
  },
  { additionalProperties: false },
);
export const CloudFinding = Type.Object({
  id: Type.String(),
  type: CloudFindingType,
  cluster: Type.Union([Type.String(), Type.Null()]),
  deployment: Type.Union([Type.String(), Type.Null()]),
  instance: Type.Union([Type.String(), Type.Null()]),
  object: Type.Union([Type.String(), Type.Null()]),
  description: Type.String(),
  resolutions: Type.Array(CloudResolution),
});
export const CloudAction = Type.Object({
  finding: Type.String(),
  resolution: CloudResolution,
  result: Type.Union([Type.Literal('ok'), Type.Literal('error'), Type.Literal('skipped')]),
  detail: Type.String(),
  task: Type.Optional(Type.Integer()),
});
/** The result of a finished cloud_check task. */
export const CloudCheckReport = Type.Object({
  cluster: Type.Union([Type.String(), Type.Null()]),
  findings: Type.Array(CloudFinding),
  skipped: Type.Array(Type.String()),
  actions: Type.Array(CloudAction),
});
export type CloudCheckReportBody = Static<typeof CloudCheckReport>;
export type CloudCheckRequestBody = Static<typeof CloudCheckRequest>;

// ---------------------------------------------------------------- image registry
const PROJECT_NAME = Type.String({ pattern: '^[a-z0-9]+(?:[._-][a-z0-9]+)*$', minLength: 1, maxLength: 64 });
export const RegistryInfo = Type.Object({
  /** `host:port`: images are named `<address>/<project>/<name>:<tag>`. */
  address: Type.String(),
  /** The token endpoint (the registry token protocol's realm) and the service name tokens are for. */
  realm: Type.String(),
  service: Type.String(),
  /** PEM of the CA the registry's certificate chains to. */
  ca: Type.String(),
  /** The caller's own project (null for callers without one). */
  own_project: Type.Union([Type.String(), Type.Null()]),
});
export const RegistryTokenQuery = Type.Object(
  {
    service: Type.Optional(Type.String({ maxLength: 200 })),
    scope: Type.Optional(Type.Union([Type.String({ maxLength: 1000 }), Type.Array(Type.String({ maxLength: 1000 }), { maxItems: 50 })])),
    account: Type.Optional(Type.String({ maxLength: 200 })),
    client_id: Type.Optional(Type.String({ maxLength: 200 })),
    offline_token: Type.Optional(Type.String({ maxLength: 10 })),
  },
  { additionalProperties: false },
);
export const RegistryTokenForm = Type.Object(
  {
    grant_type: Type.Literal('password'),
    username: Type.String({ minLength: 1, maxLength: 200 }),
    password: Type.String({ minLength: 1, maxLength: 8192 }),
    service: Type.Optional(Type.String({ maxLength: 200 })),
    scope: Type.Optional(Type.String({ maxLength: 4000 })),
    client_id: Type.Optional(Type.String({ maxLength: 200 })),
    access_type: Type.Optional(Type.String({ maxLength: 20 })),
  },
  { additionalProperties: false },
);
export const RegistryToken = Type.Object({
  token: Type.String(),
  access_token: Type.String(),
  expires_in: Type.Integer(),
  issued_at: Type.String(),
});
export const RegistryGrant = Type.Object({ subject: Type.String(), actions: Type.Array(Type.String()) });
export const RegistryProject = Type.Object({
  name: Type.String(),
  /** Null: a shared project (admins manage it). */
  owner: Type.Union([Type.String(), Type.Null()]),
  public: Type.Boolean(),
  quota_bytes: Type.Union([Type.Integer(), Type.Null()]),
  used_bytes: Type.Integer(),
  repositories: Type.Integer(),
  created_at: Type.String(),
  /** Shown to the project's owner and admins. */
  grants: Type.Optional(Type.Array(RegistryGrant)),
});
/**
 * Stored bytes allowed, or null for no limit. `nullable` (OpenAPI 3.0), not a union: the server coerces
 * types, and a union would read null as 0 (a quota of nothing) or 0 as null.
 */
const QUOTA_BYTES = Type.Unsafe<number | null>({ type: 'integer', minimum: 0, maximum: 2 ** 50, nullable: true });
export const ProjectParams = Type.Object({ project: PROJECT_NAME });
export const CreateRegistryProject = Type.Object(
  {
    name: PROJECT_NAME,
    /** A user who manages it as its owner (admins only; none: a shared project). */
    owner: Type.Optional(Type.String({ pattern: USER, maxLength: 64 })),
    public: Type.Optional(Type.Boolean()),
    quota_bytes: Type.Optional(QUOTA_BYTES),
  },
  { additionalProperties: false },
);
export const UpdateRegistryProject = Type.Object(
  {
    public: Type.Optional(Type.Boolean()),
    quota_bytes: Type.Optional(QUOTA_BYTES),
  },
  { additionalProperties: false, minProperties: 1 },
);
export const GrantParams = Type.Object({
  project: PROJECT_NAME,
  subject: Type.String({ pattern: '^(user|group|client|cluster):[^\\s:]{1,128}$', maxLength: 140 }),
});
export const SetGrant = Type.Object(
  { actions: Type.Array(Type.Union([Type.Literal('pull'), Type.Literal('push')]), { minItems: 1, maxItems: 2, uniqueItems: true }) },
  { additionalProperties: false },
);
export const Image = Type.Object({
  repository: Type.String(),
  digest: Type.String(),
  media_type: Type.String(),
  tags: Type.Array(Type.String()),
  size_bytes: Type.Integer(),
  pushed_by: Type.String(),
  pushed_at: Type.String(),
});
export const ImagesQuery = Type.Object({ project: Type.Optional(PROJECT_NAME) }, { additionalProperties: false });
export const ImageRefQuery = Type.Object(
  { image: Type.String({ minLength: 3, maxLength: 300, description: 'project/name:tag or project/name@sha256:…' }) },
  { additionalProperties: false },
);
export const DeletedImage = Type.Object({ repository: Type.String(), digest: Type.String(), tags: Type.Array(Type.String()) });
export const ImagePolicy = Type.Object({
  /** True: workloads may run only images of the platform registry (and the release's preloaded ones). */
  registry_only: Type.Boolean(),
  registry: Type.Union([Type.String(), Type.Null()]),
});
export const SetImagePolicy = Type.Object({ registry_only: Type.Boolean() }, { additionalProperties: false });
