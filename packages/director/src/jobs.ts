// Job definitions and their rendering: `{{ }}` templates filled per instance into the bundle the agent runs, and its hash.
import { createHash } from 'node:crypto';
import { InputError } from '@anodyne/common';
import type { Probe as ReadinessProbe, BundleJob as RenderedJob, AgentBundle as InstanceBundle } from '@anodyne/agent';
import type { InstanceGroup, Manifest } from './manifest.js';

/** Rendered jobs are the agent's protocol types: what reaches the VM is exactly what was rendered. */
export type {
  Probe as ReadinessProbe,
  BundleProcess as RenderedProcess,
  BundleJob as RenderedJob,
  AgentBundle as InstanceBundle,
} from '@anodyne/agent';

/** One supervised process of a job; every string may hold `{{ }}` template expressions. */
export interface ProcessTemplate {
  name: string;
  command: string;
  args?: string[];
  env?: Record<string, string>;
  readiness?: ReadinessProbe;
  /** Started only once this probe passes (the agent checks it; see the agent's BundleProcess). */
  startWhen?: ReadinessProbe;
}

/**
 * A job as a release provides it (BOSH's job spec): processes, files rendered from templates,
 * and optional lifecycle scripts. The director renders it per instance; the agent runs it.
 */
export interface JobDefinition {
  name: string;
  release: string;
  /** Property defaults; a property without a default must be given in the manifest. */
  properties?: Record<string, { default?: unknown; description?: string }>;
  processes: ProcessTemplate[];
  /** Path (under the job's directory, or absolute) → template. */
  files?: Record<string, string>;
  drain?: string;
  pre_start?: string;
  post_start?: string;
  backup?: string;
  restore?: string;
}

/** Where the director finds job definitions: the releases it has uploaded. */
export interface JobCatalog {
  /** The job of a release; `key` names the build of the release when the manifest says which. */
  job(release: string | undefined, name: string, key?: string): JobDefinition | undefined;
}

/** Facts about one instance available to templates as `spec.*`. */
export interface InstanceSpec {
  deployment: string;
  name: string;
  index: number;
  id: string;
  ip: string;
  az: string;
  bootstrap: boolean;
  /** Where the instance's persistent disk is mounted inside the VM; empty when it has none. */
  persistent_disk?: string;
}

export interface RenderContext {
  spec: InstanceSpec;
  /** IPs of every instance group, for `{{ groups.<name>.ips }}` (membership lists). */
  groups: Record<string, { ips: string[] }>;
  /** Variable values from the credential store, for `{{ vars.<name> }}` / `{{ vars.<name>.<field> }}`. */
  vars: Record<string, unknown>;
  /** This instance's own per-instance variables, for `{{ ivars.<name> }}`. */
  ivars?: Record<string, unknown>;
  /** The deployment's load balancers, for `{{ lbs.<name>.ip }}`. */
  lbs?: Record<string, { ip: string; port: number }>;
}

function lookup(root: unknown, path: string[]): unknown {
  let cur = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !(seg in (cur as Record<string, unknown>))) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

const EXPR = /\{\{\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}/g;

/**
 * Fills `{{ expr }}` in a template. `p.x.y` reads properties (manifest, then job defaults),
 * `spec.ip`, `groups.etcd.ips` (comma-separated), `vars.name[.field]`. A missing value is an
 * error naming where it was used.
 */
export function renderTemplate(template: string, scope: Record<string, unknown>, where: string): string {
  return template.replace(EXPR, (_m, expr: string) => {
    const path = expr.split('.');
    const value = lookup(scope, path);
    if (value === undefined)
      throw new InputError('ANODYNE_E_TEMPLATE_INVALID', `${where}: {{ ${expr} }} has no value`, { details: { where, expression: expr } });
    if (Array.isArray(value) && value.every((v) => typeof v === 'string' || typeof v === 'number')) return value.join(',');
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return value.toString();
    return JSON.stringify(value);
  });
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      b && typeof b === 'object' && !Array.isArray(b) && v && typeof v === 'object' && !Array.isArray(v)
        ? deepMerge(b as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/** `a.b.c` keys of job property defaults → nested object. */
function defaultsOf(def: JobDefinition): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(def.properties ?? {})) {
    if (spec.default === undefined) continue;
    const parts = key.split('.');
    let cur = out;
    for (const p of parts.slice(0, -1)) cur = (cur[p] ??= {}) as Record<string, unknown>;
    cur[parts[parts.length - 1]!] = spec.default;
  }
  return out;
}

/** Checks, before any work, that every job of the manifest exists in the catalog. */
export function resolveJobs(m: Manifest, catalog: JobCatalog): Map<string, JobDefinition> {
  const out = new Map<string, JobDefinition>();
  m.instance_groups.forEach((g, i) => {
    g.jobs.forEach((j, k) => {
      const rel = m.releases.find((r) => r.name === j.release) ?? (m.releases.length === 1 ? m.releases[0] : undefined);
      const def = catalog.job(j.release, j.name, rel?.key);
      if (!def)
        throw new InputError('ANODYNE_E_JOB_UNKNOWN', `manifest instance_groups[${i}].jobs[${k}]: no release provides job ${j.name}`, {
          details: { path: `instance_groups[${i}].jobs[${k}].name`, job: j.name },
        });
      out.set(`${g.name}/${j.name}`, def);
    });
  });
  return out;
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

export function bundleHash(jobs: RenderedJob[]): string {
  return createHash('sha256').update(canonical(jobs)).digest('hex');
}

/** Renders every job of an instance group for one instance. */
export function renderInstance(m: Manifest, g: InstanceGroup, defs: Map<string, JobDefinition>, ctx: RenderContext): InstanceBundle {
  const jobs: RenderedJob[] = g.jobs.map((ref) => {
    const def = defs.get(`${g.name}/${ref.name}`)!;
    const p = deepMerge(deepMerge(defaultsOf(def), m.properties ?? {}), ref.properties ?? {});
    for (const [key, spec] of Object.entries(def.properties ?? {})) {
      if (spec.default === undefined && lookup(p, key.split('.')) === undefined) {
        throw new InputError(
          'ANODYNE_E_MANIFEST_INVALID',
          `manifest instance group ${g.name}, job ${ref.name}: property ${key} is required`,
          { details: { path: `instance_groups.${g.name}.jobs.${ref.name}.properties.${key}` } },
        );
      }
    }
    const scope = { p, spec: ctx.spec, groups: ctx.groups, vars: ctx.vars, ivars: ctx.ivars ?? {}, lbs: ctx.lbs ?? {} };
    const at = (what: string) => `job ${ref.name} ${what}`;
    return {
      name: def.name,
      release: def.release,
      processes: def.processes.map((proc) => ({
        name: proc.name,
        command: renderTemplate(proc.command, scope, at(`process ${proc.name} command`)),
        args: (proc.args ?? []).map((a) => renderTemplate(a, scope, at(`process ${proc.name} args`))),
        env: Object.fromEntries(
          Object.entries(proc.env ?? {}).map(([k, v]) => [k, renderTemplate(v, scope, at(`process ${proc.name} env ${k}`))]),
        ),
        ...(proc.readiness
          ? {
              readiness: JSON.parse(
                renderTemplate(JSON.stringify(proc.readiness), scope, at(`process ${proc.name} readiness`)),
              ) as ReadinessProbe,
            }
          : {}),
        ...(proc.startWhen
          ? {
              startWhen: JSON.parse(
                renderTemplate(JSON.stringify(proc.startWhen), scope, at(`process ${proc.name} startWhen`)),
              ) as ReadinessProbe,
            }
          : {}),
      })),
      files: Object.entries(def.files ?? {})
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([path, tpl]) => ({
          path,
          content: renderTemplate(tpl, scope, at(`file ${path}`)),
          mode: /\.(sh|bash)$/.test(path) || path.startsWith('bin/') ? 0o755 : /\.key$/.test(path) ? 0o600 : 0o644,
        })),
      scripts: Object.fromEntries(
        (['drain', 'pre_start', 'post_start', 'backup', 'restore'] as const)
          .filter((s) => def[s] !== undefined)
          .map((s) => [s, renderTemplate(def[s]!, scope, at(s))]),
      ),
    };
  });
  return { deployment: m.name, group: g.name, index: ctx.spec.index, jobs, hash: bundleHash(jobs) };
}
