// A deploy as ordered phases over one scope: segment, orphans, rows, missing VMs, load balancers, variables, render, plan, roll out, save.
import { AnodyneError, InputError, type Clock, type Logger } from '@anodyne/common';
import type { Provider, VmType } from '@anodyne/providers';
import { storeQuery, type Store } from '@anodyne/store';
import type { AgentClient } from './agents.js';
import { AgentDriver, type InstanceHooks } from './driver.js';
import { azOf, newInstanceRow, type InstanceRepository, type InstanceRow } from './instances.js';
import {
  renderInstance,
  renderTemplate,
  resolveJobs,
  type InstanceBundle,
  type InstanceSpec,
  type JobCatalog,
  type JobDefinition,
} from './jobs.js';
import { agentProgramOf, groupUpdatePolicy, resolveMaxInFlight, type Manifest, type Variable } from './manifest.js';
import { plan, type ActualInstance, type DesiredInstance, type PlannedChange } from './planner.js';
import { Updater, type EventSink, type GroupPlan } from './updater.js';
import type { VmLifecycle } from './vms.js';

/** Where manifest `variables` come from (the credential store, in the platform). */
export interface VariableSource {
  /** Generates missing variables (converge) and returns every value by name. */
  ensure(deployment: string, variables: Variable[]): Promise<Record<string, unknown>>;
  /** Removes a deployment's variables when the deployment is deleted. */
  remove(deployment: string): Promise<void>;
}

/** IPs of every instance group, by group name (`{{ groups.<name>.ips }}`). */
export type GroupIps = Record<string, { ips: string[] }>;
/** A deployment's load balancers, by name (`{{ lbs.<name>.ip }}`). */
export type LbAddresses = Record<string, { ip: string; port: number }>;

/**
 * Variable options may use `{{ groups.<name>.ips }}`; a list item that is exactly that
 * expression becomes one item per address (certificate SANs of every master, say).
 */
export function renderVariables(
  variables: Variable[],
  groups: GroupIps,
  spec?: Record<string, unknown>,
  lbs: LbAddresses = {},
): Variable[] {
  const scope = { groups, lbs, ...(spec ? { spec } : {}) };
  const render = (v: unknown, where: string): unknown => {
    if (typeof v === 'string') return renderTemplate(v, scope, where);
    if (Array.isArray(v)) {
      return v.flatMap((item) => {
        const m = typeof item === 'string' ? /^\{\{\s*groups\.([A-Za-z0-9_-]+)\.ips\s*\}\}$/.exec(item) : null;
        if (m) {
          const g = groups[m[1]!];
          if (!g) throw new InputError('ANODYNE_E_TEMPLATE_INVALID', `${where}: no instance group ${m[1]}`);
          return g.ips;
        }
        return [render(item, where)];
      });
    }
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, render(x, where)]));
    return v;
  };
  return variables.map((v) => (v.options ? { ...v, options: render(v.options, `variable ${v.name}`) as Record<string, unknown> } : v));
}

/** The provider's id of a deployment's load balancer. */
export function loadBalancerId(deployment: string, name: string): string {
  return `${deployment}-${name}`.slice(0, 41);
}

/** What the phases work with: the director's collaborators. */
export interface DeployDeps {
  repo: InstanceRepository;
  vms: VmLifecycle;
  agents: AgentClient;
  provider: Provider;
  catalog: JobCatalog;
  variables: VariableSource;
  store: Store;
  clock: Clock;
  logger: Logger;
  hooks?: InstanceHooks | undefined;
  /** Restarts after which a process that is still not running fails its rollout (see DirectorOptions). */
  restartBudget?: number;
}

/**
 * Which instances a deploy singles out. `recreate` forces new VMs for the instances it picks;
 * `only` limits the rollout to the instances it picks (plus any whose VM had to be created).
 */
export interface DeployPick {
  recreate?: (group: string, index: number) => boolean;
  only?: (group: string, index: number) => boolean;
}

/** Everything one deploy knows and accumulates, phase by phase. */
export interface DeployScope {
  readonly deps: DeployDeps;
  /** The manifest as given (saved at the end). */
  readonly full: Manifest;
  /** The manifest without errand groups: those get VMs only while an errand runs. */
  readonly manifest: Manifest;
  readonly signal: AbortSignal;
  readonly sink: EventSink;
  readonly pick: DeployPick;
  /** Every instance by `group/index` (removed ones too), kept current as VMs and disks change. */
  rows: Map<string, InstanceRow>;
  /** Desired instances without a running VM, found by the rows phase. */
  missing: InstanceRow[];
  /** Instances (`group/index`) whose VM this deploy created: they get their jobs, never a second VM. */
  createdNow: Set<string>;
  groupIps: GroupIps;
  lbs: LbAddresses;
  variables: Record<string, unknown>;
  /** Per-instance variable values by `group/index`. */
  instanceVariables: Map<string, Record<string, unknown>>;
  jobDefs: Map<string, JobDefinition>;
  desired: DesiredInstance[];
  /** What each instance runs now, by `group/index`, where the stored manifest renders to its recorded hash. */
  previous: Map<string, InstanceBundle>;
  changes: PlannedChange[];
}

/** One step of a deploy. */
export interface DeployPhase {
  name: string;
  run(scope: DeployScope): Promise<void> | void;
}

/** The scope of a deploy of `full` before its first phase. */
export function newDeployScope(deps: DeployDeps, full: Manifest, signal: AbortSignal, sink: EventSink, pick: DeployPick = {}): DeployScope {
  return {
    deps,
    full,
    manifest: { ...full, instance_groups: full.instance_groups.filter((g) => g.lifecycle !== 'errand') },
    signal,
    sink,
    pick,
    rows: new Map(),
    missing: [],
    createdNow: new Set(),
    groupIps: {},
    lbs: {},
    variables: {},
    instanceVariables: new Map(),
    jobDefs: new Map(),
    desired: [],
    previous: new Map(),
    changes: [],
  };
}

const key = (group: string, index: number): string => `${group}/${index}`;

/** A deployment on a segment of its own: the segment exists before any VM (idempotent: an existing one is kept). */
async function ensureSegment(s: DeployScope): Promise<void> {
  if (!s.manifest.segment) return;
  const step = { stage: 'Preparing network segment', instance: s.manifest.name, index: 1, total: 1 };
  await s.sink.event({ ...step, state: 'started' });
  const seg = await s.deps.provider.createSegment({
    name: s.manifest.name,
    metadata: { deployment: s.manifest.name },
    ...(s.manifest.segment_within !== undefined ? { within: s.manifest.segment_within } : {}),
  });
  await s.sink.event({ ...step, state: 'finished', message: `range ${seg.range}` });
}

/** Deletes VMs of the deployment that no instance owns (a create cut off by a crash). */
async function removeOrphans(s: DeployScope): Promise<void> {
  await s.deps.vms.removeOrphans(s.manifest.name, s.sink);
}

/** Every desired instance gets a row first, so a VM is never created without an owner. */
async function recordRows(s: DeployScope): Promise<void> {
  const m = s.manifest;
  for (const r of await s.deps.repo.list(m.name)) s.rows.set(key(r.group_name, r.idx), r);
  for (const g of m.instance_groups) {
    for (let i = 0; i < g.instances; i++) {
      let row = s.rows.get(key(g.name, i));
      if (!row) {
        row = newInstanceRow(m, g, i, { ip: g.networks[0]?.static_ips?.[i] ?? null, diskMb: g.persistent_disk_mb ?? 0 });
        await s.deps.repo.insert(row);
        s.rows.set(key(g.name, i), row);
      } else if (row.az !== azOf(g, i)) {
        // The group's zones changed (or the row predates them): its next VM goes to the zone the manifest says.
        row = { ...row, az: azOf(g, i) };
        await s.deps.repo.patch(row.id, { az: row.az });
        s.rows.set(key(g.name, i), row);
      }
      const alive = row.vm_id !== null && (await s.deps.provider.hasVm(row.vm_id));
      // A VM that never ran a bundle and whose agent does not answer is a create cut short: made again.
      const stillborn = alive && row.bundle_hash === null && !(await s.deps.vms.agentAnswers(row));
      if (!alive || stillborn) s.missing.push(row);
    }
  }
}

/** Creates the missing VMs, as many at once as the largest max_in_flight; then every address is known. */
async function createMissingVms(s: DeployScope): Promise<void> {
  const m = s.manifest;
  const todo = s.missing;
  const inFlight = m.instance_groups.map((g) => resolveMaxInFlight(groupUpdatePolicy(m, g).max_in_flight, g.instances));
  // In batches of max_in_flight, also for a new deployment: a director killed while it makes VMs leaves at most
  // one batch half-made (all at once left VMs whose agents never came up; the next deploy then failed on them).
  const batch = Math.max(1, Math.max(...inFlight, 1));
  for (let i = 0; i < todo.length; i += batch) {
    if (s.signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
    await Promise.all(
      todo.slice(i, i + batch).map(async (row, j) => {
        const name = key(row.group_name, row.idx);
        const step = { stage: 'Creating missing VMs', instance: name, index: i + j + 1, total: todo.length };
        await s.sink.event({ ...step, state: 'started' });
        if (row.vm_id) await s.deps.vms.deleteVmOf(row);
        s.rows.set(name, await s.deps.vms.create(row, agentProgramOf(s.manifest)));
        s.createdNow.add(name);
        await s.sink.event({ ...step, state: 'finished' });
      }),
    );
  }
  const rows = [...s.rows.values()];
  s.groupIps = Object.fromEntries(
    m.instance_groups.map((g) => [
      g.name,
      {
        ips: rows
          .filter((r) => r.group_name === g.name && r.idx < g.instances)
          .sort((a, b) => a.idx - b.idx)
          .map((r) => r.ip ?? ''),
      },
    ]),
  );
}

/** Creates or updates the deployment's load balancers with the current addresses of their groups. */
async function ensureLoadBalancers(s: DeployScope): Promise<void> {
  const m = s.manifest;
  const { provider } = s.deps;
  const specs = m.load_balancers ?? [];
  for (const [i, lb] of specs.entries()) {
    const backends = (s.groupIps[lb.instance_group]?.ips ?? []).map((ip) => ({ ip, port: lb.backend_port }));
    const step = { stage: 'Updating load balancers', instance: lb.name, index: i + 1, total: specs.length };
    await s.sink.event({ ...step, state: 'started' });
    const id = loadBalancerId(m.name, lb.name);
    const healthCheck = lb.health_check ? { httpPath: lb.health_check.path, ...(lb.health_check.tls ? { tls: true } : {}) } : undefined;
    let info;
    try {
      info = await provider.updateLoadBalancer(id, backends, healthCheck);
    } catch (err) {
      if (!(err instanceof AnodyneError && err.code === 'ANODYNE_E_PROVIDER_LB_NOT_FOUND')) throw err;
      const network = m.instance_groups.find((g) => g.name === lb.instance_group)!.networks[0]!.name;
      info = await provider.createLoadBalancer({
        name: id,
        network,
        port: lb.port,
        backends,
        ...(healthCheck ? { healthCheck } : {}),
        metadata: { deployment: m.name },
      });
    }
    s.lbs[lb.name] = { ip: info.ip, port: info.port };
    await s.sink.event({ ...step, state: 'finished' });
  }
}

/**
 * Generates the deployment's variables (their options may name group IPs and load balancers),
 * then the per-instance ones (`per_instance: group`), as `<name>/<index>` with spec in their options.
 */
async function generateVariables(s: DeployScope): Promise<void> {
  const m = s.manifest;
  const { variables } = s.deps;
  const step = { stage: 'Generating variables', index: 1, total: 1 };
  await s.sink.event({ ...step, state: 'started' });
  const shared = (m.variables ?? []).filter((v) => !v.per_instance);
  s.variables = await variables.ensure(m.name, renderVariables(shared, s.groupIps, undefined, s.lbs));
  for (const v of (m.variables ?? []).filter((x) => x.per_instance)) {
    const g = m.instance_groups.find((x) => x.name === v.per_instance);
    if (!g) continue;
    for (let i = 0; i < g.instances; i++) {
      const row = s.rows.get(key(g.name, i));
      const spec = { deployment: m.name, name: g.name, index: i, id: row?.id ?? '', ip: row?.ip ?? '' };
      const [rendered] = renderVariables([{ ...v, name: `${v.name}/${i}` }], s.groupIps, spec, s.lbs);
      const values = await variables.ensure(m.name, [
        {
          name: rendered!.name,
          type: rendered!.type,
          ...(rendered!.options ? { options: rendered!.options } : {}),
        },
      ]);
      s.instanceVariables.set(key(g.name, i), { ...(s.instanceVariables.get(key(g.name, i)) ?? {}), [v.name]: values[rendered!.name] });
    }
  }
  await s.sink.event({ ...step, state: 'finished' });
}

/** Renders every desired instance's bundle (attaching persistent disks first: the bundle names their path). */
async function renderInstances(s: DeployScope): Promise<void> {
  const m = s.manifest;
  s.jobDefs = resolveJobs(m, s.deps.catalog);
  const stored = await storedManifest(s);
  for (const g of m.instance_groups) {
    for (let i = 0; i < g.instances; i++) {
      let row = s.rows.get(key(g.name, i))!;
      let disk = '';
      if ((g.persistent_disk_mb ?? 0) > 0) {
        const d = await s.deps.vms.ensureDisk(row, g.persistent_disk_mb!);
        row = d.row;
        disk = d.path;
        s.rows.set(key(g.name, i), row);
      }
      const spec = {
        deployment: m.name,
        name: g.name,
        index: i,
        id: row.id,
        ip: row.ip ?? '',
        az: azOf(g, i),
        bootstrap: i === 0,
        persistent_disk: disk,
      };
      const bundle = renderInstance(m, g, s.jobDefs, {
        spec,
        groups: s.groupIps,
        vars: s.variables,
        ivars: s.instanceVariables.get(key(g.name, i)) ?? {},
        lbs: s.lbs,
      });
      const before = previousBundle(s, stored, g.name, spec, row.bundle_hash);
      if (before) s.previous.set(key(g.name, i), before);
      const staticIp = g.networks[0]?.static_ips?.[i];
      s.desired.push({
        group: g.name,
        index: i,
        vmType: g.vm_type,
        image: m.image,
        diskMb: g.persistent_disk_mb ?? 0,
        network: g.networks[0]!.name,
        ...(staticIp ? { staticIp } : {}),
        bundle,
      });
    }
  }
}

/** The manifest the deployment last converged on, with its jobs, if there is one. */
async function storedManifest(s: DeployScope): Promise<{ manifest: Manifest; defs: Map<string, JobDefinition> } | undefined> {
  const row = await storeQuery('reading a deployment', () =>
    s.deps.store.db.selectFrom('deployments').select('manifest').where('name', '=', s.manifest.name).executeTakeFirst(),
  );
  if (!row) return undefined;
  try {
    const manifest = JSON.parse(row.manifest) as Manifest;
    return { manifest, defs: resolveJobs(manifest, s.deps.catalog) };
  } catch {
    return undefined; // a manifest this release can no longer resolve: nothing to go back to
  }
}

/** The instance's current bundle, rendered from the stored manifest, when its hash is the one recorded for the instance. */
function previousBundle(
  s: DeployScope,
  stored: { manifest: Manifest; defs: Map<string, JobDefinition> } | undefined,
  group: string,
  spec: InstanceSpec,
  recorded: string | null,
): InstanceBundle | undefined {
  const g = stored?.manifest.instance_groups.find((x) => x.name === group);
  if (!stored || !g || recorded === null || spec.index >= g.instances) return undefined;
  try {
    const bundle = renderInstance(stored.manifest, g, stored.defs, {
      spec,
      groups: s.groupIps,
      vars: s.variables,
      ivars: s.instanceVariables.get(key(group, spec.index)) ?? {},
      lbs: s.lbs,
    });
    return bundle.hash === recorded ? bundle : undefined;
  } catch {
    return undefined;
  }
}

/** Compares desired with actual instances; the deploy's picks narrow or force the changes. */
function planChanges(s: DeployScope): void {
  const actual: ActualInstance[] = [...s.rows.values()].map((r) => ({
    group: r.group_name,
    index: r.idx,
    vmId: r.vm_id,
    vmAlive: r.vm_id !== null,
    vmType: JSON.parse(r.vm_type) as string | VmType,
    image: r.image,
    diskMb: r.disk_mb,
    network: r.network,
    ip: r.ip,
    bundleHash: r.bundle_hash,
  }));
  const { pick } = s;
  s.changes = plan(s.desired, actual).map((planned): PlannedChange => {
    const before = s.previous.get(key(planned.group, planned.index));
    const c = before ? { ...planned, previous: before } : planned;
    // A VM created by this deploy is new already: it gets its jobs, never a second VM.
    if (s.createdNow.has(key(c.group, c.index))) return c;
    if (pick.only && !pick.only(c.group, c.index)) return { ...c, action: 'keep', reasons: [] };
    if (pick.recreate && (c.action === 'keep' || c.action === 'update') && pick.recreate(c.group, c.index)) {
      return { ...c, action: 'recreate', reasons: ['recreate requested'] };
    }
    return c;
  });
}

/** Rolls the changes out group by group (removed groups first), canaries and batches respected. */
async function rollOut(s: DeployScope): Promise<void> {
  const m = s.manifest;
  const { clock, logger } = s.deps;
  const updater = new Updater({ clock, driver: new AgentDriver(s.deps, s.rows, s.sink, agentProgramOf(m)), events: s.sink, logger });
  const knownGroups = new Set(m.instance_groups.map((g) => g.name));
  const groups: GroupPlan[] = m.instance_groups.map((g) => ({
    name: g.name,
    instances: g.instances,
    policy: groupUpdatePolicy(m, g),
    changes: s.changes.filter((c) => c.group === g.name),
  }));
  const removedGroups = s.changes.filter((c) => !knownGroups.has(c.group));
  if (removedGroups.length > 0) {
    groups.unshift({ name: '(removed)', instances: removedGroups.length, policy: { ...m.update, canaries: 0 }, changes: removedGroups });
  }
  await updater.run(groups, s.signal);
}

/** Stores the manifest as deployed (errand groups included: errands run from it). */
async function saveManifest(s: DeployScope): Promise<void> {
  const { full } = s;
  const now = () => s.deps.clock.now().toISOString();
  const manifest = JSON.stringify(full);
  await storeQuery('saving the manifest', () =>
    s.deps.store.db
      .insertInto('deployments')
      .values({ name: full.name, manifest, created_at: now(), updated_at: now() })
      .onConflict((oc) => oc.column('name').doUpdateSet({ manifest, updated_at: now() }))
      .execute(),
  );
}

/** The phases of a deploy, in the order they run. */
export const DEPLOY_PHASES: readonly DeployPhase[] = [
  { name: 'segment', run: ensureSegment },
  { name: 'orphans', run: removeOrphans },
  { name: 'rows', run: recordRows },
  { name: 'missing VMs', run: createMissingVms },
  { name: 'load balancers', run: ensureLoadBalancers },
  { name: 'variables', run: generateVariables },
  { name: 'render', run: renderInstances },
  { name: 'plan', run: planChanges },
  { name: 'roll out', run: rollOut },
  { name: 'save', run: saveManifest },
];
