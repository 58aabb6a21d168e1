import { randomUUID } from 'node:crypto';
import { AnodyneError, InputError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import type { Provider, VmType } from '@anodyne/providers';
import { storeQuery, type InstancesTable, type Store } from '@anodyne/store';
import type { Selectable } from 'kysely';
import { parseManifest, groupUpdatePolicy, resolveMaxInFlight, type Manifest, type Variable } from './manifest.js';
import { renderInstance, renderTemplate, resolveJobs, type InstanceBundle, type JobCatalog } from './jobs.js';
import { plan, type ActualInstance, type DesiredInstance, type PlannedChange } from './planner.js';
import { Updater, type EventSink, type InstanceDriver } from './updater.js';
import { TaskStore, type Task } from './tasks.js';
import { TlsAgentClient, type AgentAddress, type AgentClient, type AgentTlsIssuer } from './agents.js';

/** Where manifest `variables` come from (the credential store, in the platform). */
export interface VariableSource {
  /** Generates missing variables (converge) and returns every value by name. */
  ensure(deployment: string, variables: Variable[]): Promise<Record<string, unknown>>;
  /** Removes a deployment's variables when the deployment is deleted. */
  remove(deployment: string): Promise<void>;
}

export interface AgentStateView {
  healthy: boolean;
  bundleHash: string | null;
  processes: { job: string; name: string; state: string; restarts: number }[];
}

export interface DirectorOptions {
  store: Store;
  provider: Provider;
  catalog: JobCatalog;
  variables: VariableSource;
  tls: AgentTlsIssuer;
  clock: Clock;
  logger: Logger;
  /** The command the provider starts in each VM (the agent); its environment comes from here. */
  agentPort?: number;
  /** How long to wait for a new VM's agent to answer. */
  agentTimeoutMs?: number;
  /** How agents are reached; mutual TLS to `agentPort` unless given (tests on the fake provider). */
  agents?: AgentClient;
}

/** An instance as the director works with it: the store's row without bookkeeping columns. */
type InstanceRow = Omit<Selectable<InstancesTable>, 'state' | 'created_at' | 'updated_at' | 'health' | 'health_reason' | 'health_since'>;

/** One instance as operators see it: where it runs and what the health monitor last found. */
export interface InstanceView {
  /** `group/index` */
  instance: string;
  group: string;
  index: number;
  vm_id: string | null;
  ip: string | null;
  /** started or stopped (by an operator) */
  state: string;
  health: string;
  health_reason: string | null;
  health_since: string | null;
}

/**
 * The deployment engine: turns a manifest into VMs running jobs and keeps them that way. It
 * knows providers, agents, tasks and manifests, and nothing of what the jobs are.
 */
export class Director {
  readonly tasks: TaskStore;
  private readonly running = new Map<number, Promise<void>>();
  private readonly agentPort: number;
  private readonly agents: AgentClient;

  constructor(private readonly o: DirectorOptions) {
    this.tasks = new TaskStore(o.store, o.clock, o.logger);
    this.agentPort = o.agentPort ?? 6868;
    this.agents = o.agents ?? new TlsAgentClient(o.tls, this.agentPort);
  }

  // ---------------------------------------------------------------- agent client

  /** Calls an instance's agent. */
  agentCall(row: AgentAddress, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 30_000): Promise<unknown> {
    return this.agents.call(row, method, path, body, timeoutMs);
  }

  async agentState(row: AgentAddress, timeoutMs = 5000): Promise<AgentStateView> {
    return (await this.agentCall(row, 'GET', '/state', undefined, timeoutMs)) as AgentStateView;
  }

  private async waitForAgent(row: InstanceRow): Promise<void> {
    const deadline = this.o.clock.nowMs() + (this.o.agentTimeoutMs ?? 60_000);
    let last: unknown;
    while (this.o.clock.nowMs() < deadline) {
      try {
        await this.agentState(row);
        return;
      } catch (err) {
        last = err;
        await this.o.clock.sleep(200);
      }
    }
    throw new AnodyneError('ANODYNE_E_UNAVAILABLE', `agent ${row.agent_id} did not answer: ${(last as Error)?.message}`);
  }

  // ---------------------------------------------------------------- store helpers


  async instances(deployment: string): Promise<InstanceRow[]> {
    return storeQuery('reading instances', () => this.o.store.db.selectFrom('instances')
      .select(['id', 'deployment', 'group_name', 'idx', 'vm_id', 'agent_id', 'ip', 'vm_type', 'image', 'disk_mb', 'disk_id', 'network', 'bundle_hash'])
      .where('deployment', '=', deployment).orderBy('group_name').orderBy('idx').execute());
  }

  /** A deployment's instances with their health, for operators (`anodyne vms`). */
  async instanceViews(deployment: string): Promise<InstanceView[]> {
    const rows = await storeQuery('reading instances', () => this.o.store.db.selectFrom('instances').selectAll().where('deployment', '=', deployment).orderBy('group_name').orderBy('idx').execute());
    return rows.map((r) => ({
      instance: `${r.group_name}/${r.idx}`, group: r.group_name, index: r.idx, vm_id: r.vm_id, ip: r.ip, state: r.state,
      health: r.health, health_reason: r.health_reason, health_since: r.health_since,
    }));
  }

  private async setRow(id: string, patch: Partial<InstanceRow> & { health?: string; health_reason?: string | null; health_since?: string | null }): Promise<void> {
    await storeQuery('updating an instance', () => this.o.store.db.updateTable('instances').set({ ...patch, updated_at: this.o.clock.now().toISOString() }).where('id', '=', id).execute());
  }

  // ---------------------------------------------------------------- VMs

  /** Creates the VM of an instance (reusing its IP) and waits for its agent. */
  private async createVm(row: InstanceRow): Promise<InstanceRow> {
    const tls = await this.o.tls.agentTls(row.agent_id);
    const vm = await this.o.provider.createVm({
      agentId: row.agent_id, image: row.image, vmType: JSON.parse(row.vm_type) as string | VmType,
      network: { network: row.network, ...(row.ip ? { ip: row.ip } : {}) },
      env: { ANODYNE_AGENT_LISTEN: `0.0.0.0:${this.agentPort}`, ANODYNE_AGENT_CERT: tls.cert, ANODYNE_AGENT_KEY: tls.key, ANODYNE_AGENT_CA: tls.ca },
      metadata: { deployment: row.deployment, group: row.group_name, index: String(row.idx), instance_id: row.id },
    });
    const updated = { ...row, vm_id: vm.id, ip: vm.ip, bundle_hash: null };
    // A new VM has no health yet: the monitor's next pass decides.
    await this.setRow(row.id, { vm_id: vm.id, ip: vm.ip, bundle_hash: null, health: 'pending', health_reason: null, health_since: this.o.clock.now().toISOString() });
    if (row.disk_id && (await this.o.provider.hasDisk(row.disk_id))) await this.o.provider.attachDisk(vm.id, row.disk_id);
    await this.waitForAgent(updated);
    return updated;
  }

  /**
   * Gives an instance that asks for a persistent disk its disk (created once, kept across VM
   * recreation) attached to its VM; returns where the jobs find it (`spec.persistent_disk`).
   */
  private async ensureDisk(row: InstanceRow, sizeMb: number): Promise<{ row: InstanceRow; path: string }> {
    let diskId = row.disk_id;
    if (!diskId || !(await this.o.provider.hasDisk(diskId))) {
      const disk = await this.o.provider.createDisk(sizeMb, { deployment: row.deployment, group: row.group_name, index: String(row.idx), instance_id: row.id });
      diskId = disk.id;
      await this.setRow(row.id, { disk_id: diskId, disk_mb: sizeMb });
    }
    const { path } = await this.o.provider.attachDisk(row.vm_id!, diskId);
    return { row: { ...row, disk_id: diskId }, path };
  }

  /** Deletes an instance's VM and its persistent disk (the instance is going away). */
  private async deleteInstanceResources(row: InstanceRow): Promise<void> {
    if (row.vm_id) await this.o.provider.deleteVm(row.vm_id);
    const diskId = row.disk_id ?? (await this.instanceDiskId(row.id));
    if (diskId) await this.o.provider.deleteDisk(diskId);
  }

  private async instanceDiskId(id: string): Promise<string | null> {
    const r = await storeQuery('reading an instance', () => this.o.store.db.selectFrom('instances').select('disk_id').where('id', '=', id).executeTakeFirst());
    return r?.disk_id ?? null;
  }

  private async deleteVmOf(row: InstanceRow): Promise<void> {
    if (row.vm_id) await this.o.provider.deleteVm(row.vm_id);
    await this.setRow(row.id, { vm_id: null, bundle_hash: null });
  }

  /** VMs the provider has for this deployment that no instance owns (a create cut off by a crash). */
  private async removeOrphans(deployment: string, sink: EventSink): Promise<void> {
    const rows = await this.instances(deployment);
    const owned = new Set(rows.map((r) => r.vm_id).filter(Boolean));
    const orphans = (await this.o.provider.listVms({ deployment })).filter((v) => !owned.has(v.id));
    for (const [i, vm] of orphans.entries()) {
      await sink.event({ stage: 'Removing orphaned VMs', instance: vm.metadata['instance_id'] ?? vm.id, index: i + 1, total: orphans.length, state: 'started' });
      await this.o.provider.deleteVm(vm.id);
      await sink.event({ stage: 'Removing orphaned VMs', instance: vm.metadata['instance_id'] ?? vm.id, index: i + 1, total: orphans.length, state: 'finished' });
    }
  }

  // ---------------------------------------------------------------- deploy

  /** Validates everything that can be checked before work starts. */
  private preflight(input: unknown): Manifest {
    const m = parseManifest(input);
    resolveJobs(m, this.o.catalog);
    const info = this.o.provider.info();
    m.instance_groups.forEach((g, i) => {
      if (typeof g.vm_type === 'string' && !info.vmTypes[g.vm_type]) {
        throw new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest instance_groups[${i}].vm_type: unknown VM type ${g.vm_type}; the provider offers ${Object.keys(info.vmTypes).join(', ')}`, { details: { path: `instance_groups[${i}].vm_type` } });
      }
      if (!info.networks.some((n) => n.name === g.networks[0]!.name)) {
        throw new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest instance_groups[${i}].networks[0].name: unknown network ${g.networks[0]!.name}`, { details: { path: `instance_groups[${i}].networks[0].name` } });
      }
    });
    if (!info.images.includes(m.image)) throw new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest image: the provider has no image ${m.image}`, { details: { path: 'image' } });
    return m;
  }

  /**
   * Starts a deploy task and returns it at once (queued). Bad manifests are refused before
   * any task exists; a deployment already being changed is refused with
   * ANODYNE_E_DEPLOYMENT_LOCKED.
   */
  async deploy(input: unknown, owner = 'system'): Promise<Task> {
    const m = this.preflight(input);
    const task = await this.tasks.create('deploy', m.name, `deploy ${m.name}`, owner);
    this.launch(task.id, (signal, sink) => this.runDeploy(m, signal, sink));
    return task;
  }

  async deleteDeployment(name: string, owner = 'system'): Promise<Task> {
    const task = await this.tasks.create('delete_deployment', name, `delete ${name}`, owner);
    this.launch(task.id, (_signal, sink) => this.runDelete(name, sink));
    return task;
  }

  /** Recreates the VMs of a deployment (all, one group, or one instance), canaries and batches respected. */
  async recreate(deployment: string, target: { group?: string; index?: number } = {}, owner = 'system'): Promise<Task> {
    const m = await this.manifest(deployment);
    this.checkTarget(m, target.group, target.index);
    const task = await this.tasks.create('recreate', deployment, `recreate ${deployment}${target.group ? ` ${target.group}${target.index !== undefined ? `/${target.index}` : ''}` : ''}`, owner);
    const pick = (g: string, i: number) => (target.group === undefined || target.group === g) && (target.index === undefined || target.index === i);
    this.launch(task.id, (signal, sink) => this.runDeploy(m, signal, sink, { recreate: pick }));
    return task;
  }

  /**
   * The resurrector's repair: recreates the named instances (their VMs are gone or their agents
   * stopped answering) from the deployment's stored manifest and touches nothing else, even
   * when the catalog has changed since the last deploy. Refused while the deployment is locked.
   */
  async resurrect(deployment: string, instances: { group: string; index: number }[], owner = 'health-monitor'): Promise<Task> {
    const m = await this.manifest(deployment);
    for (const x of instances) this.checkTarget(m, x.group, x.index);
    const names = instances.map((x) => `${x.group}/${x.index}`);
    const task = await this.tasks.create('resurrect', deployment, `resurrect ${deployment} ${names.join(' ')}`, owner);
    const pick = (g: string, i: number) => names.includes(`${g}/${i}`);
    this.launch(task.id, (signal, sink) => this.runDeploy(m, signal, sink, { recreate: pick, only: pick }));
    return task;
  }

  /** Drains and stops one instance's processes; its VM stays. */
  async stopInstance(deployment: string, group: string, index: number, owner = 'system'): Promise<Task> {
    return this.instanceTask('stop', 'Stopping instance', deployment, group, index, owner, async (row) => {
      await this.agentCall(row, 'POST', '/drain', undefined, 600_000);
      await this.agentCall(row, 'POST', '/stop', undefined, 120_000);
      return 'stopped';
    });
  }

  /** Starts a stopped instance's processes again. */
  async startInstance(deployment: string, group: string, index: number, owner = 'system'): Promise<Task> {
    return this.instanceTask('start', 'Starting instance', deployment, group, index, owner, async (row) => {
      await this.agentCall(row, 'POST', '/start', undefined, 600_000);
      return 'started';
    });
  }

  /** A one-step task on one instance that ends by recording the instance's new state. */
  private async instanceTask(type: string, stage: string, deployment: string, group: string, index: number, owner: string, work: (row: InstanceRow) => Promise<'started' | 'stopped'>): Promise<Task> {
    const row = await this.instanceRow(deployment, group, index);
    const name = `${group}/${index}`;
    const task = await this.tasks.create(type, deployment, `${type} ${deployment} ${name}`, owner);
    this.launch(task.id, async (_signal, sink) => {
      await sink.event({ stage, instance: name, index: 1, total: 1, state: 'started' });
      const state = await work(row);
      await storeQuery('updating an instance', () => this.o.store.db.updateTable('instances').set({ state }).where('id', '=', row.id).execute());
      await sink.event({ stage, instance: name, index: 1, total: 1, state: 'finished' });
      return { [state]: name };
    });
    return task;
  }

  /** Fetches the tail of every process log of one instance into the task's result. */
  async fetchLogs(deployment: string, group: string, index: number, owner = 'system'): Promise<Task> {
    const row = await this.instanceRow(deployment, group, index);
    const task = await this.tasks.create('fetch_logs', null, `logs ${deployment} ${group}/${index}`, owner);
    this.launch(task.id, async () => (await this.agentCall(row, 'GET', '/logs')));
    return task;
  }

  /**
   * Runs an errand: the group's VMs are created, its jobs run once to completion, their output
   * is kept in the task's result, and the VMs are deleted. A non-zero exit fails the task.
   */
  async runErrand(deployment: string, group: string, owner = 'system'): Promise<Task> {
    const m = await this.manifest(deployment);
    const g = m.instance_groups.find((x) => x.name === group);
    if (!g) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `deployment ${deployment} has no instance group ${group}`, { details: { deployment, group } });
    if (g.lifecycle !== 'errand') throw new InputError('ANODYNE_E_INVALID_INPUT', `instance group ${group} is not an errand`, { details: { group } });
    const task = await this.tasks.create('errand', deployment, `run errand ${group} of ${deployment}`, owner);
    this.launch(task.id, (_signal, sink) => this.runErrandTask(m, g.name, sink));
    return task;
  }

  private async runErrandTask(m: Manifest, group: string, sink: EventSink): Promise<unknown> {
    const g = m.instance_groups.find((x) => x.name === group)!;
    const services = await this.instances(m.name);
    const groupsIps: Record<string, { ips: string[] }> = {};
    for (const r of services) (groupsIps[r.group_name] ??= { ips: [] }).ips.push(r.ip ?? '');
    const vars = await this.o.variables.ensure(m.name, renderVariables((m.variables ?? []).filter((v) => !v.per_instance), groupsIps));
    const defs = resolveJobs(m, this.o.catalog);
    const now = () => this.o.clock.now().toISOString();
    const results: { index: number; results: { job: string; process: string; code: number; output: string }[] }[] = [];
    const rows: InstanceRow[] = [];
    try {
      for (let i = 0; i < g.instances; i++) {
        const row: InstanceRow = {
          id: randomUUID(), deployment: m.name, group_name: g.name, idx: i, vm_id: null, agent_id: `${m.name}-${g.name}-${i}`.slice(0, 64),
          ip: null, vm_type: JSON.stringify(g.vm_type), image: m.image, disk_mb: 0, network: g.networks[0]!.name, bundle_hash: null, disk_id: null,
        };
        await storeQuery('recording an instance', () => this.o.store.db.insertInto('instances').values({ ...row, state: 'started', created_at: now(), updated_at: now() }).execute());
        rows.push(row);
        await sink.event({ stage: 'Creating errand VMs', instance: `${g.name}/${i}`, index: i + 1, total: g.instances, state: 'started' });
        const created = await this.createVm(row);
        rows[i] = created;
        await sink.event({ stage: 'Creating errand VMs', instance: `${g.name}/${i}`, index: i + 1, total: g.instances, state: 'finished' });
      }
      for (const [i, row] of rows.entries()) {
        const bundle = renderInstance(m, g, defs, { spec: { deployment: m.name, name: g.name, index: i, id: row.id, ip: row.ip ?? '', az: 'z1', bootstrap: i === 0 }, groups: groupsIps, vars });
        await this.agentCall(row, 'POST', '/apply', bundle);
        await sink.event({ stage: 'Running errand', instance: `${g.name}/${i}`, index: i + 1, total: rows.length, state: 'started' });
        const r = (await this.agentCall(row, 'POST', '/run_errand', undefined, 3_600_000)) as { results: { job: string; process: string; code: number; output: string }[] };
        results.push({ index: i, results: r.results });
        const failed = r.results.some((x) => x.code !== 0);
        await sink.event({ stage: 'Running errand', instance: `${g.name}/${i}`, index: i + 1, total: rows.length, state: failed ? 'failed' : 'finished' });
      }
    } finally {
      for (const row of rows) await this._removeRow(row).catch(() => undefined);
    }
    const exitCode = results.flatMap((r) => r.results).find((x) => x.code !== 0)?.code ?? 0;
    if (exitCode !== 0) throw new AnodyneError('ANODYNE_E_INTERNAL', `errand ${group} exited with code ${exitCode}`, { details: { result: { exit_code: exitCode, instances: results } } });
    return { exit_code: 0, instances: results };
  }

  private lbId(deployment: string, name: string): string {
    return `${deployment}-${name}`.slice(0, 41);
  }

  /** Creates or updates the deployment's load balancers with the current addresses of their groups. */
  private async ensureLoadBalancers(m: Manifest, groups: Record<string, { ips: string[] }>, sink: EventSink): Promise<Record<string, { ip: string; port: number }>> {
    const out: Record<string, { ip: string; port: number }> = {};
    const specs = m.load_balancers ?? [];
    for (const [i, lb] of specs.entries()) {
      const backends = (groups[lb.instance_group]?.ips ?? []).map((ip) => ({ ip, port: lb.backend_port }));
      await sink.event({ stage: 'Updating load balancers', instance: lb.name, index: i + 1, total: specs.length, state: 'started' });
      const id = this.lbId(m.name, lb.name);
      let info;
      try {
        info = await this.o.provider.updateLoadBalancer(id, backends);
      } catch (err) {
        if (!(err instanceof AnodyneError && err.code === 'ANODYNE_E_PROVIDER_LB_NOT_FOUND')) throw err;
        info = await this.o.provider.createLoadBalancer({ name: id, network: m.instance_groups.find((g) => g.name === lb.instance_group)!.networks[0]!.name, port: lb.port, backends, metadata: { deployment: m.name } });
      }
      out[lb.name] = { ip: info.ip, port: info.port };
      await sink.event({ stage: 'Updating load balancers', instance: lb.name, index: i + 1, total: specs.length, state: 'finished' });
    }
    return out;
  }

  /** The deployment's load balancers as the provider has them (name → address and port). */
  async loadBalancers(deployment: string): Promise<Record<string, { ip: string; port: number }>> {
    const m = await this.manifest(deployment);
    const out: Record<string, { ip: string; port: number }> = {};
    for (const lb of m.load_balancers ?? []) {
      const info = await this.o.provider.getLoadBalancer(this.lbId(deployment, lb.name)).catch(() => undefined);
      if (info) out[lb.name] = { ip: info.ip, port: info.port };
    }
    return out;
  }

  /** Per-instance variables (`per_instance: group`), generated as `<name>/<index>` with spec in their options. */
  private async instanceVariables(m: Manifest, groups: Record<string, { ips: string[] }>, rowOf: (group: string, index: number) => InstanceRow | undefined, lbs: Record<string, { ip: string; port: number }> = {}): Promise<Map<string, Record<string, unknown>>> {
    const out = new Map<string, Record<string, unknown>>();
    for (const v of (m.variables ?? []).filter((x) => x.per_instance)) {
      const g = m.instance_groups.find((x) => x.name === v.per_instance);
      if (!g) continue;
      for (let i = 0; i < g.instances; i++) {
        const row = rowOf(g.name, i);
        const spec = { deployment: m.name, name: g.name, index: i, id: row?.id ?? '', ip: row?.ip ?? '' };
        const [rendered] = renderVariables([{ ...v, name: `${v.name}/${i}` }], groups, spec, lbs);
        const values = await this.o.variables.ensure(m.name, [{ name: rendered!.name, type: rendered!.type, ...(rendered!.options ? { options: rendered!.options } : {}) }]);
        const key = `${g.name}/${i}`;
        out.set(key, { ...(out.get(key) ?? {}), [v.name]: values[rendered!.name] });
      }
    }
    return out;
  }

  private checkTarget(m: Manifest, group?: string, index?: number): void {
    if (group === undefined) return;
    const g = m.instance_groups.find((x) => x.name === group);
    if (!g) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `deployment ${m.name} has no instance group ${group}`, { details: { group } });
    if (index !== undefined && (!Number.isInteger(index) || index < 0 || index >= g.instances)) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `instance group ${group} has no instance ${index}`, { details: { group, index } });
  }

  private async instanceRow(deployment: string, group: string, index: number): Promise<InstanceRow> {
    const row = (await this.instances(deployment)).find((r) => r.group_name === group && r.idx === index);
    if (!row) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `deployment ${deployment} has no instance ${group}/${index}`, { details: { deployment, group, index } });
    return row;
  }

  /** Resolves when the task has ended (in this process). */
  async wait(id: number): Promise<Task> {
    await this.running.get(id);
    return this.tasks.get(id);
  }

  private launch(id: number, work: (signal: AbortSignal, sink: EventSink) => Promise<unknown>): void {
    const ac = new AbortController();
    const sink = this.tasks.sink(id);
    const poll = setInterval(() => {
      void this.tasks.isCancelRequested(id).then((c) => { if (c) ac.abort(); }, () => undefined);
    }, 500);
    const p = (async () => {
      await this.tasks.start(id);
      try {
        const result = await work(ac.signal, sink);
        await this.tasks.finish(id, 'done', { result });
      } catch (err) {
        const cancelled = err instanceof AnodyneError && err.code === 'ANODYNE_E_TASK_CANCELLED';
        this.o.logger.warn({ task: id, err: (err as Error).message }, cancelled ? 'task cancelled' : 'task failed');
        const result = err instanceof AnodyneError ? err.details['result'] : undefined;
        await this.tasks.finish(id, cancelled ? 'cancelled' : 'error', { error: err, ...(result !== undefined ? { result } : {}) });
      } finally {
        clearInterval(poll);
      }
    })();
    this.running.set(id, p);
    void p.finally(() => this.running.delete(id));
  }

  /**
   * Converges a deployment on `full`. `recreate` forces new VMs for the instances it picks;
   * `only` limits the rollout to the instances it picks (plus any whose VM had to be created).
   */
  private async runDeploy(full: Manifest, signal: AbortSignal, sink: EventSink, pick: { recreate?: (group: string, index: number) => boolean; only?: (group: string, index: number) => boolean } = {}): Promise<{ instances: number }> {
    const now = () => this.o.clock.now().toISOString();
    // Errand groups get VMs only while an errand runs.
    const m: Manifest = { ...full, instance_groups: full.instance_groups.filter((g) => g.lifecycle !== 'errand') };
    await this.removeOrphans(m.name, sink);

    // 1. Every desired instance gets a row (so a VM is never created without an owner), then a VM.
    const existing = await this.instances(m.name);
    const byKey = new Map(existing.map((r) => [`${r.group_name}/${r.idx}`, r]));
    const toCreate: InstanceRow[] = [];
    for (const g of m.instance_groups) {
      for (let i = 0; i < g.instances; i++) {
        let row = byKey.get(`${g.name}/${i}`);
        const staticIp = g.networks[0]?.static_ips?.[i] ?? null;
        if (!row) {
          row = {
            id: randomUUID(), deployment: m.name, group_name: g.name, idx: i, vm_id: null, agent_id: `${m.name}-${g.name}-${i}`.slice(0, 64),
            ip: staticIp, vm_type: JSON.stringify(g.vm_type), image: m.image, disk_mb: g.persistent_disk_mb ?? 0, network: g.networks[0]!.name, bundle_hash: null, disk_id: null,
          };
          const r = row;
          await storeQuery('recording an instance', () => this.o.store.db.insertInto('instances').values({ ...r, state: 'started', created_at: now(), updated_at: now() }).execute());
          byKey.set(`${g.name}/${i}`, row);
        }
        const alive = row.vm_id !== null && (await this.o.provider.hasVm(row.vm_id));
        if (!alive) toCreate.push(row);
      }
    }
    const createdNow = new Set<string>();
    const createBatch = Math.max(1, Math.max(...m.instance_groups.map((g) => resolveMaxInFlight(groupUpdatePolicy(m, g).max_in_flight, g.instances)), 1));
    for (let i = 0; i < toCreate.length; i += createBatch) {
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
      await Promise.all(toCreate.slice(i, i + createBatch).map(async (row, j) => {
        const k = i + j + 1;
        const name = `${row.group_name}/${row.idx}`;
        await sink.event({ stage: 'Creating missing VMs', instance: name, index: k, total: toCreate.length, state: 'started' });
        if (row.vm_id) await this.deleteVmOf(row);
        const created = await this.createVm(row);
        byKey.set(name, created);
        createdNow.add(name);
        await sink.event({ stage: 'Creating missing VMs', instance: name, index: k, total: toCreate.length, state: 'finished' });
      }));
    }

    // 2. With every address known: variables (their options may name group IPs), then render
    //    every instance, plan, and roll out.
    const rows = [...byKey.values()];
    const groupsIps = Object.fromEntries(m.instance_groups.map((g) => [g.name, { ips: rows.filter((r) => r.group_name === g.name && r.idx < g.instances).sort((a, b) => a.idx - b.idx).map((r) => r.ip ?? '') }]));
    const lbs = await this.ensureLoadBalancers(m, groupsIps, sink);
    await sink.event({ stage: 'Generating variables', index: 1, total: 1, state: 'started' });
    const vars = await this.o.variables.ensure(m.name, renderVariables((m.variables ?? []).filter((v) => !v.per_instance), groupsIps, undefined, lbs));
    const ivars = await this.instanceVariables(m, groupsIps, (g, i) => byKey.get(`${g}/${i}`), lbs);
    await sink.event({ stage: 'Generating variables', index: 1, total: 1, state: 'finished' });
    const defs = resolveJobs(m, this.o.catalog);
    const desired: DesiredInstance[] = [];
    for (const g of m.instance_groups) {
      for (let i = 0; i < g.instances; i++) {
        let row = byKey.get(`${g.name}/${i}`)!;
        let disk = '';
        if ((g.persistent_disk_mb ?? 0) > 0) {
          const d = await this.ensureDisk(row, g.persistent_disk_mb!);
          row = d.row;
          disk = d.path;
          byKey.set(`${g.name}/${i}`, row);
        }
        const bundle = renderInstance(m, g, defs, { spec: { deployment: m.name, name: g.name, index: i, id: row.id, ip: row.ip ?? '', az: g.azs?.[i % g.azs.length] ?? 'z1', bootstrap: i === 0, persistent_disk: disk }, groups: groupsIps, vars, ivars: ivars.get(`${g.name}/${i}`) ?? {}, lbs });
        desired.push({ group: g.name, index: i, vmType: g.vm_type, image: m.image, diskMb: g.persistent_disk_mb ?? 0, network: g.networks[0]!.name, ...(g.networks[0]?.static_ips?.[i] ? { staticIp: g.networks[0].static_ips[i] } : {}), bundle });
      }
    }
    const actual: ActualInstance[] = rows.map((r) => ({
      group: r.group_name, index: r.idx, vmId: r.vm_id, vmAlive: r.vm_id !== null, vmType: JSON.parse(r.vm_type) as string | VmType, image: r.image,
      diskMb: r.disk_mb, network: r.network, ip: r.ip, bundleHash: r.bundle_hash,
    }));
    const changes = plan(desired, actual).map((c): PlannedChange => {
      // A VM created above is new already: it gets its jobs, never a second VM.
      if (createdNow.has(`${c.group}/${c.index}`)) return c;
      if (pick.only && !pick.only(c.group, c.index)) return { ...c, action: 'keep', reasons: [] };
      if (pick.recreate && (c.action === 'keep' || c.action === 'update') && pick.recreate(c.group, c.index)) return { ...c, action: 'recreate', reasons: ['recreate requested'] };
      return c;
    });
    const driver = new AgentDriver(this, byKey, sink);
    const updater = new Updater({ clock: this.o.clock, driver, events: sink, logger: this.o.logger });
    const knownGroups = new Set(m.instance_groups.map((g) => g.name));
    const groups = m.instance_groups.map((g) => ({ name: g.name, instances: g.instances, policy: groupUpdatePolicy(m, g), changes: changes.filter((c) => c.group === g.name) }));
    const removedGroups = changes.filter((c) => !knownGroups.has(c.group));
    if (removedGroups.length > 0) groups.unshift({ name: '(removed)', instances: removedGroups.length, policy: { ...m.update, canaries: 0 }, changes: removedGroups });
    await updater.run(groups, signal);

    await storeQuery('saving the manifest', () =>
      this.o.store.db.insertInto('deployments').values({ name: full.name, manifest: JSON.stringify(full), created_at: now(), updated_at: now() })
        .onConflict((oc) => oc.column('name').doUpdateSet({ manifest: JSON.stringify(full), updated_at: now() })).execute(),
    );
    return { instances: desired.length };
  }

  private async runDelete(name: string, sink: EventSink): Promise<{ deleted: number }> {
    const rows = await this.instances(name);
    for (const [i, row] of rows.entries()) {
      await sink.event({ stage: 'Deleting instances', instance: `${row.group_name}/${row.idx}`, index: i + 1, total: rows.length, state: 'started' });
      if (row.vm_id && (await this.o.provider.hasVm(row.vm_id))) {
        await this.agentCall(row, 'POST', '/drain', undefined, 60_000).catch(() => undefined);
        await this.agentCall(row, 'POST', '/stop', undefined, 60_000).catch(() => undefined);
      }
      await this.deleteInstanceResources(row);
      await storeQuery('deleting an instance', () => this.o.store.db.deleteFrom('instances').where('id', '=', row.id).execute());
      await sink.event({ stage: 'Deleting instances', instance: `${row.group_name}/${row.idx}`, index: i + 1, total: rows.length, state: 'finished' });
    }
    await this.removeOrphans(name, sink);
    const manifest = await this.manifest(name).catch(() => undefined);
    for (const lb of manifest?.load_balancers ?? []) await this.o.provider.deleteLoadBalancer(this.lbId(name, lb.name));
    await this.o.variables.remove(name);
    await storeQuery('deleting the deployment', () => this.o.store.db.deleteFrom('deployments').where('name', '=', name).execute());
    return { deleted: rows.length };
  }

  /** After a platform restart: end interrupted tasks; their deployments converge on the next deploy. */
  async recover(): Promise<Task[]> {
    return this.tasks.recover();
  }

  async manifest(name: string): Promise<Manifest> {
    const row = await storeQuery('reading a deployment', () => this.o.store.db.selectFrom('deployments').select('manifest').where('name', '=', name).executeTakeFirst());
    if (!row) throw new NotFoundError('ANODYNE_E_DEPLOYMENT_NOT_FOUND', `deployment ${name} not found`, { details: { name } });
    return JSON.parse(row.manifest) as Manifest;
  }

  // ---------------------------------------------------------------- used by the driver

  /** @internal */ async _recreate(row: InstanceRow, desired?: DesiredInstance): Promise<InstanceRow> {
    await this.deleteVmOf(row);
    // The instance takes the desired VM shape, so the next plan sees no difference.
    const shape = desired ? { vm_type: JSON.stringify(desired.vmType), image: desired.image, network: desired.network, disk_mb: desired.diskMb } : {};
    if (desired) await this.setRow(row.id, shape);
    return this.createVm({ ...row, ...shape, vm_id: null });
  }

  /** @internal */ async _setBundle(row: InstanceRow, hash: string | null): Promise<void> {
    await this.setRow(row.id, { bundle_hash: hash });
  }

  /** @internal */ async _removeRow(row: InstanceRow): Promise<void> {
    await this.deleteInstanceResources(row);
    await storeQuery('deleting an instance', () => this.o.store.db.deleteFrom('instances').where('id', '=', row.id).execute());
  }
}

/**
 * Variable options may use `{{ groups.<name>.ips }}`; a list item that is exactly that
 * expression becomes one item per address (certificate SANs of every master, say).
 */
export function renderVariables(variables: Variable[], groups: Record<string, { ips: string[] }>, spec?: Record<string, unknown>, lbs: Record<string, { ip: string; port: number }> = {}): Variable[] {
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

/** The real instance driver: drain, stop, apply the bundle, start — through the agent. */
class AgentDriver implements InstanceDriver {
  constructor(private readonly d: Director, private readonly rows: Map<string, InstanceRow>, private readonly sink: EventSink) {}

  private row(c: PlannedChange): InstanceRow {
    const r = this.rows.get(`${c.group}/${c.index}`);
    if (!r) throw new AnodyneError('ANODYNE_E_INTERNAL', `no instance ${c.group}/${c.index}`);
    return r;
  }

  async apply(c: PlannedChange): Promise<void> {
    let row = this.row(c);
    const name = `${c.group}/${c.index}`;
    // A VM that is being replaced may have an agent that no longer answers (that is often why
    // it is replaced): ask briefly first rather than wait out a drain's timeout.
    const answers = c.action !== 'recreate' || (await this.d.agentState(row).then(() => true, () => false));
    if (!answers) await this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message: 'not drained: the agent does not answer' });
    if (row.bundle_hash !== null && answers) {
      try {
        await this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message: 'drain' });
        await this.d.agentCall(row, 'POST', '/drain', undefined, 600_000);
        await this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message: 'stop' });
        await this.d.agentCall(row, 'POST', '/stop', undefined, 120_000);
      } catch (err) {
        // The agent went away mid-drain of a VM being replaced: go on. An update in place must not.
        if (c.action !== 'recreate' || !(err instanceof AnodyneError && err.code === 'ANODYNE_E_UNAVAILABLE')) throw err;
        await this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message: `not drained: ${err.message}` });
      }
    }
    if (c.action === 'recreate') {
      await this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message: `recreate: ${c.reasons.join(', ')}` });
      row = await this.d._recreate(row, c.desired);
      this.rows.set(name, row);
    }
    const bundle: InstanceBundle = c.desired!.bundle;
    await this.d.agentCall(row, 'POST', '/apply', bundle);
    await this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message: 'start' });
    await this.d.agentCall(row, 'POST', '/start', undefined, 600_000);
    await this.d._setBundle(row, bundle.hash);
    row.bundle_hash = bundle.hash;
  }

  async remove(c: PlannedChange): Promise<void> {
    const row = this.rows.get(`${c.group}/${c.index}`);
    if (!row) return;
    if (row.vm_id) {
      await this.d.agentCall(row, 'POST', '/drain', undefined, 600_000).catch(() => undefined);
      await this.d.agentCall(row, 'POST', '/stop', undefined, 120_000).catch(() => undefined);
    }
    await this.d._removeRow(row);
    this.rows.delete(`${c.group}/${c.index}`);
  }

  async healthy(c: PlannedChange): Promise<boolean> {
    try {
      const s = await this.d.agentState(this.row(c));
      return s.healthy && s.bundleHash === c.desired?.bundle.hash;
    } catch {
      return false;
    }
  }
}
