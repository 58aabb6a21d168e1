// The platform's configuration: a TypeBox schema with defaults, loaded from one YAML file plus ANODYNE_* environment overrides.
import { readFileSync } from 'node:fs';
import { Type, type Static, type TSchema, type TObject } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { InputError } from './errors.js';

/**
 * The platform's configuration. One YAML file plus environment overrides; every key has
 * an embedded default so `anodyne server` runs with no file at all.
 */
export const PlatformConfigSchema = Type.Object(
  {
    /** Where the platform keeps its database file, keys and generated files. */
    dataDir: Type.String({ minLength: 1, default: '/var/lib/anodyne' }),
    /** Where release builds are cached, keyed by version. */
    cacheDir: Type.String({ minLength: 1, default: '/var/cache/anodyne' }),
    log: Type.Object(
      {
        level: Type.Union(
          ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
          { default: 'info' },
        ),
      },
      { default: {}, additionalProperties: false },
    ),
    store: Type.Object(
      {
        driver: Type.Union([Type.Literal('sqlite'), Type.Literal('postgres')], { default: 'sqlite' }),
        /** SQLite file; relative paths are under dataDir. */
        path: Type.String({ minLength: 1, default: 'anodyne.db' }),
        /** PostgreSQL connection string, required when driver is postgres. */
        url: Type.Optional(Type.String({ minLength: 1 })),
        poolSize: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
      },
      { default: {}, additionalProperties: false },
    ),
    server: Type.Object(
      {
        host: Type.String({ minLength: 1, default: '127.0.0.1' }),
        port: Type.Integer({ minimum: 1, maximum: 65535, default: 9021 }),
        /** Extra names and addresses for the serving certificate. */
        altNames: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
        /**
         * Replicas on one database (PostgreSQL): how long one counts as alive after its last
         * heartbeat, and how long the leader's lease lasts (it renews every third of it).
         */
        leaseSeconds: Type.Integer({ minimum: 3, maximum: 300, default: 15 }),
        /**
         * The URL clients and clusters use when it is not this replica's own address (replicas behind
         * a load balancer): the token issuer, the API URL in kubeconfigs and the clusters' OIDC issuer.
         * Its host joins the serving certificate's names.
         */
        publicUrl: Type.Optional(Type.String({ pattern: '^https://[^/?#]+$' })),
        /**
         * Addresses of TCP load balancers that open each connection with a PROXY protocol header (v1
         * or v2, e.g. haproxy's `send-proxy-v2`) naming the client: the API then sees the client's
         * address (the token rate limit counts per client). Other peers connect as before.
         */
        proxyProtocolFrom: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
      },
      { default: {}, additionalProperties: false },
    ),
    identity: Type.Object(
      {
        /** Access token lifetime, seconds. */
        accessTokenSeconds: Type.Integer({ minimum: 60, maximum: 86_400, default: 600 }),
        refreshTokenSeconds: Type.Integer({ minimum: 300, maximum: 2_592_000, default: 86_400 }),
        /** Age in days after which the token signing key is rotated (the previous key still verifies). */
        signingKeyDays: Type.Integer({ minimum: 1, maximum: 3650, default: 30 }),
        /** An LDAP user store besides the local users (off when url is absent). */
        ldap: Type.Object(
          {
            url: Type.Optional(Type.String({ pattern: '^ldaps?://' })),
            bindDn: Type.String({ default: '' }),
            /** The service account's password; prefer the ANODYNE_IDENTITY_LDAP_BIND_PASSWORD variable. */
            bindPassword: Type.String({ default: '' }),
            userBase: Type.String({ default: '' }),
            userFilter: Type.String({ default: '(uid={0})' }),
            groupBase: Type.String({ default: '' }),
            groupFilter: Type.String({ default: '(member={0})' }),
            /** LDAP group CN → scopes, e.g. {"k8s-admins": ["pks.clusters.admin"]}. */
            groupScopes: Type.Record(Type.String(), Type.Array(Type.String()), { default: {} }),
          },
          { default: {}, additionalProperties: false },
        ),
      },
      { default: {}, additionalProperties: false },
    ),
    director: Type.Object(
      {
        /** Seconds between health passes over every instance. */
        healthIntervalSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 30 }),
        /** Recreate instances whose VM is gone or whose agent stopped answering. */
        resurrection: Type.Boolean({ default: true }),
        /** How long an instance stays lost before it is recreated. */
        resurrectAfterSeconds: Type.Integer({ minimum: 0, maximum: 86400, default: 60 }),
        /** Meltdown: at least this many lost at once … */
        meltdownMin: Type.Integer({ minimum: 1, maximum: 100000, default: 5 }),
        /** … and more than this percent of all instances: resurrection pauses. */
        meltdownPercent: Type.Integer({ minimum: 1, maximum: 100, default: 30 }),
      },
      { default: {}, additionalProperties: false },
    ),
    certificates: Type.Object(
      {
        /** A certificate in use that expires within this many days is renewed by the scheduled pass (and alerted). */
        renewalDays: Type.Integer({ minimum: 1, maximum: 3650, default: 30 }),
        /** Seconds between renewal passes (also run at start). */
        renewalPassSeconds: Type.Integer({ minimum: 5, maximum: 86400, default: 3600 }),
      },
      { default: {}, additionalProperties: false },
    ),
    backup: Type.Object(
      {
        /** Where backups' sealed artifacts go: a local directory, or an S3-compatible object store. */
        store: Type.Union([Type.Literal('local'), Type.Literal('s3')], { default: 'local' }),
        /** The local directory (relative to the data directory unless absolute). */
        dir: Type.String({ minLength: 1, default: 'backups' }),
        /** Seconds between passes of the backup scheduler (due backups, then retention). */
        schedulePassSeconds: Type.Integer({ minimum: 5, maximum: 3600, default: 60 }),
        s3: Type.Object(
          {
            /** http(s)://host:port of the S3 API (path-style requests). */
            endpoint: Type.String({ default: '' }),
            bucket: Type.String({ default: '' }),
            /** Keys under this prefix (e.g. `anodyne/`). */
            prefix: Type.String({ default: '' }),
            region: Type.String({ minLength: 1, default: 'us-east-1' }),
            accessKeyId: Type.String({ default: '' }),
            /** Prefer the ANODYNE_BACKUP_S3_SECRET_ACCESS_KEY variable. */
            secretAccessKey: Type.String({ default: '' }),
            /** A PEM file of the CA that signed an https endpoint's certificate. */
            caFile: Type.String({ default: '' }),
          },
          { default: {}, additionalProperties: false },
        ),
      },
      { default: {}, additionalProperties: false },
    ),
    registry: Type.Object(
      {
        /** Run the image registry (CNCF Distribution) beside the API; clusters' nodes trust and pull from it. */
        enabled: Type.Boolean({ default: true }),
        /** Its HTTPS port, on the API's address (0: any free port, as tests use). */
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 9022 }),
        /** Bytes a new project may store (0: no limit); admins change it per project. */
        projectQuotaBytes: Type.Integer({ minimum: 0, default: 10 * 1024 ** 3 }),
        /** Lifetime of registry tokens, in seconds. */
        tokenSeconds: Type.Integer({ minimum: 30, maximum: 3600, default: 300 }),
        /** Push the release's images into the public `library` project at start. */
        pushReleaseImages: Type.Boolean({ default: true }),
      },
      { default: {}, additionalProperties: false },
    ),
    provider: Type.Object(
      {
        type: Type.Union([Type.Literal('local'), Type.Literal('lxd'), Type.Literal('fake')], { default: 'local' }),
        /** The network the local provider's VMs live on (CIDR). */
        network: Type.String({ minLength: 1, default: '10.244.0.0/24' }),
        /** Short name of the local provider's host objects (bridge anbr-<tag>, netns anodyne-<tag>-…). */
        tag: Type.String({ pattern: '^[a-z0-9]{1,6}$', default: 'p' }),
        /**
         * Each cluster's network segment comes from this pool (CIDR), cut into ranges of
         * `segmentPrefix` (a /26 holds 61 VMs and load balancers; a /16 pool 1,024 clusters).
         */
        segmentPool: Type.String({ minLength: 1, default: '10.245.0.0/16' }),
        segmentPrefix: Type.Integer({ minimum: 9, maximum: 29, default: 26 }),
        /** The LXD provider (`type: lxd`, docs/adr/0026): where LXD answers and where VMs go there. */
        lxd: Type.Object(
          {
            /** LXD's unix socket (a daemon on this host); empty with `url`. */
            socket: Type.String({ default: '/var/lib/lxd/unix.socket' }),
            /** LXD's HTTPS address (`https://host:8443`), used instead of the socket when set. */
            url: Type.String({ default: '' }),
            /** With `url`: files of the client certificate and key (in LXD's trust store) and of LXD's own certificate (pinned). */
            certFile: Type.String({ default: '' }),
            keyFile: Type.String({ default: '' }),
            serverCertFile: Type.String({ default: '' }),
            project: Type.String({ minLength: 1, default: 'default' }),
            storagePool: Type.String({ minLength: 1, default: 'default' }),
            /**
             * LXD members that are not this host (an LXD cluster, a daemon on another machine): each VM
             * network is tunnelled (VXLAN, multicast `group`) between this host's `hostInterface` and each
             * member's `memberInterface`. Off while `hostInterface` is empty; a cluster needs it.
             */
            vxlan: Type.Object(
              {
                hostInterface: Type.String({ default: '' }),
                memberInterface: Type.String({ minLength: 1, default: 'eth0' }),
                group: Type.String({ pattern: '^239\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}$', default: '239.0.76.76' }),
              },
              { default: {}, additionalProperties: false },
            ),
          },
          { default: {}, additionalProperties: false },
        ),
      },
      { default: {}, additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export type PlatformConfig = Static<typeof PlatformConfigSchema>;

export interface LoadConfigOptions {
  /** YAML file to read; absent means defaults plus environment only. */
  file?: string | undefined;
  /** Environment to read overrides from; defaults to process.env. */
  env?: Record<string, string | undefined>;
  /** Prefix of environment variables; `ANODYNE` gives ANODYNE_STORE_URL for store.url. */
  prefix?: string;
}

function screamingSnake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

interface EnvBinding {
  name: string;
  path: string[];
  schema: TSchema;
}

/** One environment variable per leaf of the schema: store.url → PREFIX_STORE_URL. */
export function envBindings(schema: TSchema, prefix = 'ANODYNE'): EnvBinding[] {
  const out: EnvBinding[] = [];
  const walk = (s: TSchema, path: string[]): void => {
    if (s['type'] === 'object' && s['properties']) {
      for (const [k, child] of Object.entries((s as TObject).properties)) walk(child, [...path, k]);
      return;
    }
    out.push({ name: [prefix, ...path.map(screamingSnake)].join('_'), path, schema: s });
  };
  walk(schema, []);
  return out;
}

function leafType(schema: TSchema): string {
  if (typeof schema['type'] === 'string') return schema['type'];
  const anyOf = schema['anyOf'] as TSchema[] | undefined;
  if (anyOf && anyOf.length > 0 && anyOf[0]) return leafType(anyOf[0]);
  if ('const' in schema) return typeof schema['const'];
  return 'string';
}

function coerceEnv(binding: EnvBinding, raw: string): unknown {
  const type = leafType(binding.schema);
  const key = binding.path.join('.');
  switch (type) {
    case 'integer':
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) {
        throw new InputError(
          'ANODYNE_E_CONFIG_INVALID',
          `config key ${key} (from ${binding.name}) must be a number, got ${JSON.stringify(raw)}`,
          { details: { key, env: binding.name } },
        );
      }
      return n;
    }
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off)$/i.test(raw)) return false;
      throw new InputError(
        'ANODYNE_E_CONFIG_INVALID',
        `config key ${key} (from ${binding.name}) must be true or false, got ${JSON.stringify(raw)}`,
        { details: { key, env: binding.name } },
      );
    case 'array':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    default:
      return raw;
  }
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = target;
  for (const seg of path.slice(0, -1)) {
    const next = cur[seg];
    if (next === undefined || next === null || typeof next !== 'object') cur[seg] = {};
    cur = cur[seg] as Record<string, unknown>;
  }
  const last = path[path.length - 1];
  if (last !== undefined) cur[last] = value;
}

/** `/store/driver` → `store.driver` */
function keyFromPointer(pointer: string): string {
  return (
    pointer
      .replace(/^\//, '')
      .split('/')
      .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
      .join('.') || '(root)'
  );
}

/**
 * Loads configuration: schema defaults, then the YAML file, then environment overrides.
 * Throws InputError ANODYNE_E_CONFIG_INVALID naming the first bad key (and listing all
 * in details.errors), or ANODYNE_E_CONFIG_UNREADABLE when the file cannot be read or parsed.
 */
export function loadConfig<S extends TSchema>(schema: S, options: LoadConfigOptions = {}): Static<S> {
  let fromFile: unknown = {};
  if (options.file) {
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (err) {
      throw new InputError('ANODYNE_E_CONFIG_UNREADABLE', `cannot read config file ${options.file}: ${(err as Error).message}`, {
        cause: err,
        details: { file: options.file },
      });
    }
    try {
      fromFile = parseYaml(text) ?? {};
    } catch (err) {
      throw new InputError('ANODYNE_E_CONFIG_UNREADABLE', `config file ${options.file} is not valid YAML: ${(err as Error).message}`, {
        cause: err,
        details: { file: options.file },
      });
    }
    if (typeof fromFile !== 'object' || Array.isArray(fromFile)) {
      throw new InputError('ANODYNE_E_CONFIG_INVALID', `config file ${options.file} must hold a mapping at the top level`, {
        details: { file: options.file, key: '(root)' },
      });
    }
  }
  const value = structuredClone(fromFile) as Record<string, unknown>;
  const env = options.env ?? process.env;
  for (const binding of envBindings(schema, options.prefix ?? 'ANODYNE')) {
    const raw = env[binding.name];
    if (raw !== undefined) setPath(value, binding.path, coerceEnv(binding, raw));
  }
  const withDefaults = Value.Default(schema, value);
  const errors = [...Value.Errors(schema, withDefaults)].map((e) => ({ key: keyFromPointer(e.path), message: e.message, value: e.value }));
  if (errors.length > 0) {
    const first = errors[0]!;
    const unknownKey = first.message.toLowerCase().includes('unexpected property');
    const msg = unknownKey ? `unknown config key ${first.key}` : `config key ${first.key}: ${first.message}`;
    throw new InputError('ANODYNE_E_CONFIG_INVALID', msg, {
      details: { key: first.key, errors: errors.map(({ key, message }) => ({ key, message })) },
    });
  }
  return withDefaults;
}
