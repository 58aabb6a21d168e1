// The deployment manifest: its TypeBox schema, parsing with errors naming the bad path, and update policy helpers.
import { isIPv4 } from 'node:net';
import { FormatRegistry, Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { InputError } from '@anodyne/common';

if (!FormatRegistry.Has('ipv4')) FormatRegistry.Set('ipv4', (v) => isIPv4(v));

/** `1000` or `"1000-30000"`: how long to watch an updated instance, in milliseconds. */
const WatchTime = Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: '^\\d+(\\s*-\\s*\\d+)?$' })]);
const MaxInFlight = Type.Union([Type.Integer({ minimum: 1 }), Type.String({ pattern: '^\\d{1,3}%$' })]);

export const UpdateSchema = Type.Object(
  {
    canaries: Type.Integer({ minimum: 0 }),
    max_in_flight: MaxInFlight,
    canary_watch_time: WatchTime,
    update_watch_time: WatchTime,
    serial: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const UpdateOverride = Type.Partial(UpdateSchema, { additionalProperties: false });

const Name = Type.String({ pattern: '^[a-z0-9]([a-z0-9_-]{0,62})$' });

export const JobRefSchema = Type.Object(
  {
    name: Name,
    /** Release providing the job; optional when only one release has it. */
    release: Type.Optional(Name),
    properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
);

export const InstanceGroupSchema = Type.Object(
  {
    name: Name,
    instances: Type.Integer({ minimum: 0, maximum: 1000 }),
    azs: Type.Optional(Type.Array(Name, { minItems: 1 })),
    vm_type: Type.Union([
      Type.String({ minLength: 1 }),
      Type.Object(
        {
          cpu: Type.Number({ exclusiveMinimum: 0 }),
          memoryMb: Type.Integer({ minimum: 16 }),
          ephemeralDiskMb: Type.Integer({ minimum: 0 }),
          pids: Type.Optional(Type.Integer({ minimum: 16 })),
        },
        { additionalProperties: false },
      ),
    ]),
    persistent_disk_mb: Type.Optional(Type.Integer({ minimum: 0 })),
    networks: Type.Array(
      Type.Object(
        { name: Type.String({ minLength: 1 }), static_ips: Type.Optional(Type.Array(Type.String({ format: 'ipv4' }))) },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1 },
    ),
    jobs: Type.Array(JobRefSchema, { minItems: 1 }),
    update: Type.Optional(UpdateOverride),
    /** `service` (default) runs continuously; `errand` runs once to completion on demand. */
    lifecycle: Type.Optional(Type.Union([Type.Literal('service'), Type.Literal('errand')])),
  },
  { additionalProperties: false },
);

export const VariableSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9_.-]+$' }),
    type: Type.Union(['password', 'user', 'certificate', 'rsa', 'ssh'].map((t) => Type.Literal(t))),
    options: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    /**
     * One credential per instance of this group (a kubelet's identity, say): options may use
     * `{{ spec.ip }}`, `{{ spec.index }}`, `{{ spec.name }}`, and the instance's templates read
     * it as `{{ ivars.<name> }}`.
     */
    per_instance: Type.Optional(Name),
  },
  { additionalProperties: false },
);

export const ManifestSchema = Type.Object(
  {
    name: Name,
    releases: Type.Array(
      Type.Object(
        {
          name: Name,
          version: Type.String({ minLength: 1 }),
          /**
           * The agent program this release carries, as a path inside the VM: a new VM of the
           * deployment starts it (absent: the provider's own agent command).
           */
          agent: Type.Optional(Type.String({ pattern: '^/[A-Za-z0-9._/-]{1,250}$' })),
          /** The content address of this build of the release: the catalog serves its own job definitions. */
          key: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._-]{1,100}$' })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1 },
    ),
    /** The VM image (BOSH's stemcell), as the provider names it. */
    image: Type.String({ minLength: 1 }),
    update: UpdateSchema,
    instance_groups: Type.Array(InstanceGroupSchema),
    variables: Type.Optional(Type.Array(VariableSchema)),
    /**
     * TCP load balancers from the provider in front of an instance group; templates and variable
     * options read `{{ lbs.<name>.ip }}`.
     */
    load_balancers: Type.Optional(
      Type.Array(
        Type.Object(
          {
            name: Name,
            instance_group: Name,
            port: Type.Integer({ minimum: 1, maximum: 65535 }),
            backend_port: Type.Integer({ minimum: 1, maximum: 65535 }),
            /** A backend takes new connections while an HTTP GET of this path answers 200 (absent: while it accepts TCP). */
            health_check: Type.Optional(
              Type.Object(
                { path: Type.String({ pattern: '^/[\\x21-\\x7e]{0,200}$' }), tls: Type.Optional(Type.Boolean()) },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
      ),
    ),
    properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    /**
     * The deployment gets a network segment of its own from the provider, named as the deployment:
     * made before its first VM, deleted with it. Every VM and load balancer of the deployment is
     * placed there (the groups' network names are replaced by the segment's; static IPs are
     * refused). Its VMs reach each other and the platform; from other segments only its load
     * balancers answer. Cannot change once the deployment exists.
     */
    segment: Type.Optional(Type.Boolean()),
    /**
     * With `segment`: the share of the provider's segment pool its range is cut from (a CIDR
     * inside the pool, at least one segment wide; a network profile's). The whole pool by default.
     */
    segment_within: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);

export type Manifest = Static<typeof ManifestSchema>;

/** A manifest whose deployment has a segment of its own, with every group placed on it (the segment is named as the deployment). */
export function placeOnSegment(m: Manifest): Manifest {
  if (!m.segment) return m;
  return { ...m, instance_groups: m.instance_groups.map((g) => ({ ...g, networks: [{ name: m.name }] })) };
}

/** The agent program a deployment's new VMs start: the first of its releases that carries one. */
export function agentProgramOf(m: Manifest | undefined): string | undefined {
  return m?.releases.find((r) => r.agent !== undefined)?.agent;
}
export type InstanceGroup = Static<typeof InstanceGroupSchema>;
export type UpdatePolicy = Static<typeof UpdateSchema>;
export type Variable = Static<typeof VariableSchema>;

/** `/instance_groups/0/jobs/1/name` → `instance_groups[0].jobs[1].name` */
export function manifestPath(pointer: string): string {
  return (
    pointer
      .split('/')
      .filter(Boolean)
      .reduce((acc, seg) => (/^\d+$/.test(seg) ? `${acc}[${seg}]` : acc ? `${acc}.${seg}` : seg), '') || '(root)'
  );
}

function invalid(path: string, message: string): InputError {
  return new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest ${path}: ${message}`, { details: { path } });
}

/**
 * Parses (YAML or JSON text, or an object) and validates a deployment manifest. Every error
 * names the bad path, e.g. `instance_groups[1].update.max_in_flight`.
 */
export function parseManifest(input: unknown): Manifest {
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = parseYaml(input);
    } catch (err) {
      throw new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest is not valid YAML or JSON: ${(err as Error).message}`, {
        cause: err,
        details: { path: '(root)' },
      });
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw invalid('(root)', 'must be a mapping');
  const errors = [...Value.Errors(ManifestSchema, raw)];
  if (errors.length > 0) {
    // The deepest error is the most specific one (a union reports its branches first).
    const first = errors.sort((a, b) => b.path.split('/').length - a.path.split('/').length)[0]!;
    throw new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest ${manifestPath(first.path)}: ${first.message}`, {
      details: {
        path: manifestPath(first.path),
        errors: errors.slice(0, 20).map((e) => ({ path: manifestPath(e.path), message: e.message })),
      },
    });
  }
  const m = raw as Manifest;
  if (m.segment && !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(m.name))
    throw invalid('name', 'a deployment on a segment of its own needs a name that is a DNS label (lowercase letters, digits and dashes)');
  const groupNames = new Set<string>();
  m.instance_groups.forEach((g, i) => {
    if (groupNames.has(g.name)) throw invalid(`instance_groups[${i}].name`, `duplicate instance group ${g.name}`);
    groupNames.add(g.name);
    const jobNames = new Set<string>();
    g.jobs.forEach((j, k) => {
      if (jobNames.has(j.name)) throw invalid(`instance_groups[${i}].jobs[${k}].name`, `duplicate job ${j.name}`);
      jobNames.add(j.name);
      if (j.release && !m.releases.some((r) => r.name === j.release))
        throw invalid(`instance_groups[${i}].jobs[${k}].release`, `release ${j.release} is not listed in releases`);
    });
    const ips = g.networks[0]?.static_ips;
    if (ips && m.segment)
      throw invalid(`instance_groups[${i}].networks[0].static_ips`, "a deployment on a segment of its own takes the segment's addresses");
    if (ips && ips.length !== g.instances)
      throw invalid(`instance_groups[${i}].networks[0].static_ips`, `has ${ips.length} addresses for ${g.instances} instances`);
    const u = { ...m.update, ...(g.update ?? {}) };
    const range = parseWatchTime(u.canary_watch_time);
    if (range.min > range.max) throw invalid(`instance_groups[${i}].update.canary_watch_time`, 'minimum exceeds maximum');
    const urange = parseWatchTime(u.update_watch_time);
    if (urange.min > urange.max) throw invalid(`instance_groups[${i}].update.update_watch_time`, 'minimum exceeds maximum');
  });
  (m.load_balancers ?? []).forEach((lb, i) => {
    if (!groupNames.has(lb.instance_group)) throw invalid(`load_balancers[${i}].instance_group`, `no instance group ${lb.instance_group}`);
  });
  const varNames = new Set<string>();
  (m.variables ?? []).forEach((v, i) => {
    if (varNames.has(v.name)) throw invalid(`variables[${i}].name`, `duplicate variable ${v.name}`);
    if (v.per_instance !== undefined && !groupNames.has(v.per_instance))
      throw invalid(`variables[${i}].per_instance`, `no instance group ${v.per_instance}`);
    varNames.add(v.name);
  });
  return m;
}

export interface WatchRange {
  min: number;
  max: number;
}

/** `5000` → {5000, 5000}; `"1000-30000"` → {1000, 30000}. */
export function parseWatchTime(value: number | string): WatchRange {
  if (typeof value === 'number') return { min: value, max: value };
  const [a, b] = value.split('-').map((s) => Number(s.trim()));
  return { min: a!, max: b ?? a! };
}

/** `2` → 2; `"50%"` of 5 instances → 3 (rounded up, at least 1). */
export function resolveMaxInFlight(value: number | string, instances: number): number {
  if (typeof value === 'number') return Math.max(1, value);
  const pct = Number(value.replace('%', ''));
  return Math.max(1, Math.ceil((instances * pct) / 100));
}

/** The update policy of a group: the manifest's, with the group's overrides. */
export function groupUpdatePolicy(m: Manifest, g: InstanceGroup): UpdatePolicy {
  return { ...m.update, ...(g.update ?? {}) };
}
