// The director: runs deploys, deletes, recreates, errands and instance operations as tasks, and reads deployments' state.
import { randomBytes } from 'node:crypto';
import { segmentShare } from './segments.js';
import { AnodyneError, InputError, NotFoundError, UnavailableError, type Clock, type ErrorCode, type Logger } from '@anodyne/common';
import type { Provider } from '@anodyne/providers';
import { storeQuery, type Store } from '@anodyne/store';
import {
  InstanceAgent,
  TlsAgentClient,
  readAgentState,
  type AgentAddress,
  type AgentClient,
  type AgentStateView,
  type AgentTlsIssuer,
  type TlsMaterial,
} from './agents.js';
import { InstanceRepository, azOf, newInstanceRow, type InstanceRow } from './instances.js';
import { renderInstance, resolveJobs, type JobCatalog } from './jobs.js';
import { agentProgramOf, parseManifest, placeOnSegment, type Manifest } from './manifest.js';
import {
  DEPLOY_PHASES,
  loadBalancerId,
  newDeployScope,
  renderVariables,
  type DeployDeps,
  type DeployPick,
  type GroupIps,
  type LbAddresses,
  type VariableSource,
} from './phases.js';
import { TaskStore, type Task } from './tasks.js';
import type { EventSink } from './updater.js';
import { VmLifecycle } from './vms.js';
import type { InstanceHooks } from './driver.js';

/**
 * Restarts before a crash-looping process fails its rollout: with the agent's backoff (0.2 s,
 * doubling, at most 10 s) six restarts take ~13 s. Measured in normal creates: only
 * kube-controller-manager restarts, 1–2 times per master, before its API server is ready.
 */
export const DEFAULT_RESTART_BUDGET = 6;

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
  /**
   * Restarts after which a process that exited again has given up: a rollout watching its instance
   * fails at once with the process's exit and last log lines (default 6, ~13 s of the agent's backoff).
   */
  restartBudget?: number;
  /** The id of the platform replica this director runs in: recorded on every task it starts (platform HA). */
  replica?: string;
}

/** A step the deployments' owner defines once (`defineStep`) and names in a task, run as the task's last step after the deployment converged. */
export interface FollowUp {
  step: string;
  args: Record<string, unknown>;
}

/**
 * What a resumable task stores, so that another replica can run it again when its replica dies:
 * the deploys and deletes, which converge (running one again from the start picks up where the
 * last run stopped).
 */
type TaskInput = { kind: 'deploy'; manifest: Manifest; then?: FollowUp } | { kind: 'delete_deployment'; name: string };

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

/** What an errand's run of one instance returned. */
interface ErrandResult {
  index: number;
  results: { job: string; process: string; code: number; output: string }[];
}

/**
 * The deployment engine: turns a manifest into VMs running jobs and keeps them that way. It
 * knows providers, agents, tasks and manifests, and nothing of what the jobs are.
 */
export class Director {
  readonly tasks: TaskStore;
  private readonly running = new Map<number, Promise<void>>();
  private readonly steps = new Map<string, (args: Record<string, unknown>) => Promise<void>>();
  private claiming: Promise<void> | undefined;
  private claimAgain = false;
  private readonly agents: AgentClient;
  private readonly repo: InstanceRepository;
  private readonly vms: VmLifecycle;
  private deps: DeployDeps;

  constructor(private readonly o: DirectorOptions) {
    // Without a replica id (a tool, a test), this process's own: its tasks are still told from others'.
    this.tasks = new TaskStore(o.store, o.clock, o.logger, o.replica ?? `process-${process.pid}-${randomBytes(4).toString('hex')}`);
    const agentPort = o.agentPort ?? 6868;
    this.agents = o.agents ?? new TlsAgentClient(o.tls, agentPort);
    this.repo = new InstanceRepository(o.store, o.clock);
    this.vms = new VmLifecycle({
      repo: this.repo,
      provider: o.provider,
      agents: this.agents,
      tls: o.tls,
      clock: o.clock,
      agentPort,
      agentTimeoutMs: o.agentTimeoutMs,
    });
    this.deps = {
      repo: this.repo,
      vms: this.vms,
      agents: this.agents,
      provider: o.provider,
      catalog: o.catalog,
      variables: o.variables,
      store: o.store,
      clock: o.clock,
      logger: o.logger,
      restartBudget: o.restartBudget ?? DEFAULT_RESTART_BUDGET,
    };
  }

  /**
   * What the deployments' owner does around each instance's rollout (set once by the composition
   * root, which builds the owner after the director).
   */
  useHooks(hooks: InstanceHooks): void {
    this.deps = { ...this.deps, hooks };
  }

  // ---------------------------------------------------------------- agents and instances

  /** Calls an instance's agent. */
  agentCall(row: AgentAddress, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown, timeoutMs = 30_000): Promise<unknown> {
    return this.agents.call(row, method, path, body, timeoutMs);
  }

  async agentState(row: AgentAddress, timeoutMs = 5000): Promise<AgentStateView> {
    return readAgentState(this.agents, row, timeoutMs);
  }

  async instances(deployment: string): Promise<InstanceRow[]> {
    return this.repo.list(deployment);
  }

  /** A deployment's instances with their health, for operators (`anodyne vms`). */
  /** Every instance of every deployment, counted by the health the monitor last recorded for it. */
  async healthCounts(): Promise<Record<string, number>> {
    const rows = await storeQuery('counting instances by health', () =>
      this.o.store.db
        .selectFrom('instances')
        .select((eb) => ['health', eb.fn.countAll<number | string | bigint>().as('n')])
        .groupBy('health')
        .execute(),
    );
    return Object.fromEntries(rows.map((r) => [r.health, Number(r.n)]));
  }

  async instanceViews(deployment: string): Promise<InstanceView[]> {
    const rows = await this.repo.listRecords(deployment);
    return rows.map((r) => ({
      instance: `${r.group_name}/${r.idx}`,
      group: r.group_name,
      index: r.idx,
      vm_id: r.vm_id,
      ip: r.ip,
      state: r.state,
      health: r.health,
      health_reason: r.health_reason,
      health_since: r.health_since,
    }));
  }

  // ---------------------------------------------------------------- deploy

  /**
   * Validates everything that can be checked before work starts. The manifest is checked at run
   * time too: callers may pass data from outside.
   */
  private preflight(manifest: Manifest): Manifest {
    const m = placeOnSegment(parseManifest(manifest));
    resolveJobs(m, this.o.catalog);
    const info = this.o.provider.info();
    const invalid = (path: string, message: string) =>
      new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest ${path}: ${message}`, { details: { path } });
    if (m.segment) {
      if (!info.capabilities.segments || !info.segments) throw invalid('segment', `the provider ${info.name} has no network segments`);
      const need = m.instance_groups.reduce((n, g) => n + g.instances, 0) + (m.load_balancers?.length ?? 0);
      if (need > info.segments.addresses)
        throw invalid('segment', `${need} instances and load balancers do not fit a segment of ${info.segments.addresses} addresses`);
      if (m.segment_within !== undefined) segmentShare(m.segment_within, info.segments, 'ANODYNE_E_MANIFEST_INVALID', 'segment_within');
    } else if (m.segment_within !== undefined) {
      throw invalid('segment_within', 'a share of the segment pool needs segment: true');
    }
    m.instance_groups.forEach((g, i) => {
      if (typeof g.vm_type === 'string' && !info.vmTypes[g.vm_type]) {
        const offered = Object.keys(info.vmTypes).join(', ');
        throw invalid(`instance_groups[${i}].vm_type`, `unknown VM type ${g.vm_type}; the provider offers ${offered}`);
      }
      if (!m.segment && !info.networks.some((n) => n.name === g.networks[0]!.name)) {
        throw invalid(`instance_groups[${i}].networks[0].name`, `unknown network ${g.networks[0]!.name}`);
      }
    });
    if (!info.images.includes(m.image)) throw invalid('image', `the provider has no image ${m.image}`);
    return m;
  }

  /**
   * Starts a deploy task and returns it at once (queued). Bad manifests are refused before
   * any task exists; a deployment already being changed is refused with
   * ANODYNE_E_DEPLOYMENT_LOCKED.
   */
  /**
   * Converges a deployment on the manifest as a task. `probe`, when given, is started as the task
   * starts and stopped when it ends: what it measured (the availability of what the deployment
   * serves, while it rolls) becomes the task result's `availability`, also when the task fails.
   * `afterSuccess` runs as the task's last step once the deployment has converged.
   */
  async deploy(manifest: Manifest, owner = 'system', options: { probe?: () => AvailabilityProbe; then?: FollowUp } = {}): Promise<Task> {
    const m = this.preflight(manifest);
    await this.checkSegment(m);
    if (options.then) this.stepOf(options.then);
    const input: TaskInput = { kind: 'deploy', manifest: m, ...(options.then ? { then: options.then } : {}) };
    const task = await this.tasks.create('deploy', m.name, `deploy ${m.name}`, owner, input);
    this.launch(task.id, (signal, sink) => withProbe(options.probe, () => this.work(input, signal, sink)));
    return task;
  }

  /**
   * Names a step that deploys may end with (`then`): defined by the deployments' owner on every
   * replica, so that a deploy resumed by another replica ends with it too.
   */
  defineStep(name: string, run: (args: Record<string, unknown>) => Promise<void>): void {
    this.steps.set(name, run);
  }

  private stepOf(f: FollowUp): (args: Record<string, unknown>) => Promise<void> {
    const run = this.steps.get(f.step);
    if (!run) throw new InputError('ANODYNE_E_INVALID_INPUT', `no step ${f.step} is defined`, { details: { step: f.step } });
    return run;
  }

  /** The work of a resumable task, the same whether it runs where it was asked or is resumed elsewhere. */
  private async work(input: TaskInput, signal: AbortSignal, sink: EventSink): Promise<object> {
    if (input.kind === 'delete_deployment') return this.runDelete(input.name, sink);
    const m = this.preflight(input.manifest);
    const result = await this.runDeploy(m, signal, sink);
    // Part of the task: it is done only when its owner has recorded what the rollout changed.
    if (input.then) await this.stepOf(input.then)(input.then.args);
    return result;
  }

  /**
   * Takes and runs the tasks that wait for a replica (their own replica died), one claim at a
   * time, until none waits. Called when told that one waits, and now and then.
   */
  claimQueued(): Promise<void> {
    if (this.claiming) {
      this.claimAgain = true;
      return this.claiming;
    }
    this.claiming = (async () => {
      do {
        this.claimAgain = false;
        for (;;) {
          const claimed = await this.tasks.claim();
          if (!claimed) break;
          const input = claimed.input as TaskInput;
          await this.tasks.event(claimed.task.id, {
            stage: 'Taking over',
            state: 'info',
            message: `resumed by replica ${this.tasks.runnerId ?? 'unknown'} (what the last run measured, if anything, is not carried over)`,
          });
          this.o.logger.info({ task: claimed.task.id, type: claimed.task.type }, 'resuming a task another replica ran');
          this.launch(claimed.task.id, (signal, sink) => this.work(input, signal, sink));
        }
      } while (this.claimAgain);
    })()
      .catch((err: unknown) => this.o.logger.warn({ err: (err as Error).message }, 'claiming queued tasks failed'))
      .finally(() => (this.claiming = undefined));
    return this.claiming;
  }

  /**
   * Starts taking over queued tasks: at once when the store says one waits (PostgreSQL
   * LISTEN/NOTIFY between replicas), and every `everyMs` besides. Returns the function that stops it.
   */
  startQueue(everyMs = 5000): () => void {
    const stop = this.tasks.onQueued(() => void this.claimQueued());
    const timer = setInterval(() => void this.claimQueued(), everyMs);
    timer.unref();
    void this.claimQueued();
    return () => {
      stop();
      clearInterval(timer);
    };
  }

  /**
   * Before a deploy task exists: a deployment does not move onto or off a segment of its own (its
   * VMs and load balancer would all change address), and a new segment needs a free one in the pool.
   */
  private async checkSegment(m: Manifest): Promise<void> {
    const rows = await this.repo.list(m.name);
    if (rows.length > 0 && rows.some((r) => (r.network === m.name) !== Boolean(m.segment))) {
      const now = m.segment ? 'on the shared network' : 'on a segment of its own';
      throw new InputError('ANODYNE_E_MANIFEST_INVALID', `manifest segment: deployment ${m.name} is ${now}; that cannot change`, {
        details: { path: 'segment' },
      });
    }
    if (!m.segment) return;
    const pool = this.o.provider.info().segments;
    if (!pool) return;
    const segments = await this.o.provider.listSegments();
    if (segments.some((x) => x.name === m.name)) return;
    if (m.segment_within === undefined) {
      if (pool.free === 0)
        throw new UnavailableError(
          'ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED',
          `all ${pool.total} network segments of the pool ${pool.pool} are in use`,
          {
            details: { pool: pool.pool, total: pool.total },
          },
        );
      return;
    }
    const share = segmentShare(m.segment_within, pool, 'ANODYNE_E_MANIFEST_INVALID', 'segment_within');
    if (segments.filter((x) => share.holds(x.range)).length >= share.total)
      throw new UnavailableError(
        'ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED',
        `all ${share.total} network segments of the share ${share.cidr} of the pool ${pool.pool} are in use`,
        { details: { pool: pool.pool, within: share.cidr, total: share.total } },
      );
  }

  /**
   * Checks a share of the segment pool (a network profile's) before anything stores it: a CIDR inside the pool, at
   * least one segment wide; `code` and `key` name the caller's input. How many segments it holds.
   */
  checkSegmentShare(within: string, code: ErrorCode, key: string): number {
    const pool = this.o.provider.info().segments;
    if (!pool)
      throw new InputError(code, `${key}: the provider ${this.o.provider.info().name} has no network segments`, { details: { key } });
    return segmentShare(within, pool, code, key).total;
  }

  async deleteDeployment(name: string, owner = 'system'): Promise<Task> {
    const input: TaskInput = { kind: 'delete_deployment', name };
    const task = await this.tasks.create('delete_deployment', name, `delete ${name}`, owner, input);
    this.launch(task.id, (signal, sink) => this.work(input, signal, sink));
    return task;
  }

  /** Recreates the VMs of a deployment (all, one group, or one instance), canaries and batches respected. */
  async recreate(
    deployment: string,
    target: { group?: string; index?: number } = {},
    owner = 'system',
    options: { probe?: () => AvailabilityProbe } = {},
  ): Promise<Task> {
    const m = await this.manifest(deployment);
    this.checkTarget(m, target.group, target.index);
    const what = target.group ? ` ${target.group}${target.index !== undefined ? `/${target.index}` : ''}` : '';
    const task = await this.tasks.create('recreate', deployment, `recreate ${deployment}${what}`, owner);
    const pick = (g: string, i: number) =>
      (target.group === undefined || target.group === g) && (target.index === undefined || target.index === i);
    this.launch(task.id, (signal, sink) => withProbe(options.probe, () => this.runDeploy(m, signal, sink, { recreate: pick })));
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
  private async instanceTask(
    type: string,
    stage: string,
    deployment: string,
    group: string,
    index: number,
    owner: string,
    work: (row: InstanceRow) => Promise<'started' | 'stopped'>,
  ): Promise<Task> {
    const row = await this.instanceRow(deployment, group, index);
    const name = `${group}/${index}`;
    const task = await this.tasks.create(type, deployment, `${type} ${deployment} ${name}`, owner);
    this.launch(task.id, async (_signal, sink) => {
      await sink.event({ stage, instance: name, index: 1, total: 1, state: 'started' });
      const state = await work(row);
      await this.repo.patch(row.id, { state });
      await sink.event({ stage, instance: name, index: 1, total: 1, state: 'finished' });
      return { [state]: name };
    });
    return task;
  }

  /** Fetches the tail of every process log of one instance into the task's result. */
  async fetchLogs(deployment: string, group: string, index: number, owner = 'system'): Promise<Task> {
    const row = await this.instanceRow(deployment, group, index);
    const task = await this.tasks.create('fetch_logs', null, `logs ${deployment} ${group}/${index}`, owner);
    this.launch(task.id, async () => await this.agentCall(row, 'GET', '/logs'));
    return task;
  }

  /**
   * Runs an errand: the group's VMs are created, its jobs run once to completion, their output
   * is kept in the task's result, and the VMs are deleted. A non-zero exit fails the task.
   */
  async runErrand(deployment: string, group: string, owner = 'system'): Promise<Task> {
    const m = await this.manifest(deployment);
    const g = m.instance_groups.find((x) => x.name === group);
    if (!g) {
      const details = { deployment, group };
      throw new NotFoundError('ANODYNE_E_NOT_FOUND', `deployment ${deployment} has no instance group ${group}`, { details });
    }
    if (g.lifecycle !== 'errand') {
      throw new InputError('ANODYNE_E_INVALID_INPUT', `instance group ${group} is not an errand`, { details: { group } });
    }
    const task = await this.tasks.create('errand', deployment, `run errand ${group} of ${deployment}`, owner);
    this.launch(task.id, (_signal, sink) => this.runErrandTask(m, g.name, sink));
    return task;
  }

  private async runErrandTask(m: Manifest, group: string, sink: EventSink): Promise<unknown> {
    const g = m.instance_groups.find((x) => x.name === group)!;
    const services = await this.repo.list(m.name);
    const groupsIps: GroupIps = {};
    for (const r of services) (groupsIps[r.group_name] ??= { ips: [] }).ips.push(r.ip ?? '');
    const vars = await this.o.variables.ensure(
      m.name,
      renderVariables(
        (m.variables ?? []).filter((v) => !v.per_instance),
        groupsIps,
      ),
    );
    const defs = resolveJobs(m, this.o.catalog);
    const results: ErrandResult[] = [];
    const rows: InstanceRow[] = [];
    try {
      for (let i = 0; i < g.instances; i++) {
        const row = newInstanceRow(m, g, i, { ip: null, diskMb: 0 });
        await this.repo.insert(row);
        rows.push(row);
        const step = { stage: 'Creating errand VMs', instance: `${g.name}/${i}`, index: i + 1, total: g.instances };
        await sink.event({ ...step, state: 'started' });
        rows[i] = await this.vms.create(row, agentProgramOf(m));
        await sink.event({ ...step, state: 'finished' });
      }
      for (const [i, row] of rows.entries()) {
        const spec = {
          deployment: m.name,
          name: g.name,
          index: i,
          id: row.id,
          ip: row.ip ?? '',
          az: row.az ?? azOf(g, i),
          bootstrap: i === 0,
        };
        const bundle = renderInstance(m, g, defs, { spec, groups: groupsIps, vars });
        await this.agentCall(row, 'POST', '/apply', bundle);
        const step = { stage: 'Running errand', instance: `${g.name}/${i}`, index: i + 1, total: rows.length };
        await sink.event({ ...step, state: 'started' });
        const r = (await this.agentCall(row, 'POST', '/run_errand', undefined, 3_600_000)) as Omit<ErrandResult, 'index'>;
        results.push({ index: i, results: r.results });
        const failed = r.results.some((x) => x.code !== 0);
        await sink.event({ ...step, state: failed ? 'failed' : 'finished' });
      }
    } finally {
      for (const row of rows) await this.vms.discard(row).catch(() => undefined);
    }
    const exitCode = results.flatMap((r) => r.results).find((x) => x.code !== 0)?.code ?? 0;
    if (exitCode !== 0) {
      const result = { exit_code: exitCode, instances: results };
      throw new AnodyneError('ANODYNE_E_INTERNAL', `errand ${group} exited with code ${exitCode}`, { details: { result } });
    }
    return { exit_code: 0, instances: results };
  }

  /** The deployment's load balancers as the provider has them (name → address and port). */
  async loadBalancers(deployment: string): Promise<LbAddresses> {
    const m = await this.manifest(deployment);
    const out: LbAddresses = {};
    for (const lb of m.load_balancers ?? []) {
      const info = await this.o.provider.getLoadBalancer(loadBalancerId(deployment, lb.name)).catch(() => undefined);
      if (info) out[lb.name] = { ip: info.ip, port: info.port };
    }
    return out;
  }

  private checkTarget(m: Manifest, group?: string, index?: number): void {
    if (group === undefined) return;
    const g = m.instance_groups.find((x) => x.name === group);
    if (!g) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `deployment ${m.name} has no instance group ${group}`, { details: { group } });
    if (index !== undefined && (!Number.isInteger(index) || index < 0 || index >= g.instances)) {
      throw new NotFoundError('ANODYNE_E_NOT_FOUND', `instance group ${group} has no instance ${index}`, { details: { group, index } });
    }
  }

  private async instanceRow(deployment: string, group: string, index: number): Promise<InstanceRow> {
    const row = await this.repo.get(deployment, group, index);
    if (!row) {
      const details = { deployment, group, index };
      throw new NotFoundError('ANODYNE_E_NOT_FOUND', `deployment ${deployment} has no instance ${group}/${index}`, { details });
    }
    return row;
  }

  /**
   * Runs work that is not a change to one deployment (a fleet upgrade that starts and follows
   * other tasks) as a task of its own: events, cancellation, result and error like every task.
   */
  async runTask(
    type: string,
    description: string,
    owner: string,
    work: (signal: AbortSignal, sink: EventSink) => Promise<unknown>,
  ): Promise<Task> {
    const task = await this.tasks.create(type, null, description, owner);
    this.launch(task.id, work);
    return task;
  }

  /**
   * A task that holds the deployment's lock while `work` takes its own steps on the deployment's
   * instances (a backup, a restore): no deploy, resurrection or other change runs meanwhile.
   * Refused with ANODYNE_E_DEPLOYMENT_LOCKED while another task holds it.
   */
  async runDeploymentTask(
    type: string,
    deployment: string,
    description: string,
    owner: string,
    work: (signal: AbortSignal, sink: EventSink) => Promise<unknown>,
  ): Promise<Task> {
    const task = await this.tasks.create(type, deployment, description, owner);
    this.launch(task.id, work);
    return task;
  }

  /**
   * A task that converges one deployment several times in a row and holds its lock throughout (a
   * CA rotation: roll out, change credentials, roll out again): `work` calls `converge` with the
   * manifest as often as it needs, between its own steps. `probe`, as for a deploy, measures
   * availability over the whole task.
   */
  async runConvergingTask(
    type: string,
    deployment: string,
    description: string,
    owner: string,
    work: (converge: (m: Manifest) => Promise<{ instances: number }>, signal: AbortSignal, sink: EventSink) => Promise<object>,
    options: { probe?: () => AvailabilityProbe } = {},
  ): Promise<Task> {
    const task = await this.tasks.create(type, deployment, description, owner);
    this.launch(task.id, (signal, sink) =>
      withProbe(options.probe, () =>
        work(
          (manifest) => {
            const m = this.preflight(manifest);
            if (m.name !== deployment)
              throw new InputError('ANODYNE_E_MANIFEST_INVALID', `this task converges ${deployment}, not ${m.name}`);
            return this.runDeploy(m, signal, sink);
          },
          signal,
          sink,
        ),
      ),
    );
    return task;
  }

  /** Whether an instance has the agent of this id (agents of deleted or recreated VMs are gone). */
  async hasAgent(agentId: string): Promise<boolean> {
    return (await this.deps.repo.byAgent(agentId)) !== undefined;
  }

  /**
   * Hands an instance's agent renewed TLS material (its certificate was about to expire): the
   * agent serves new connections with it at once and keeps it across restarts. Nothing to do for
   * an agent no instance has any more (false).
   */
  async renewAgentTls(agentId: string, tls: TlsMaterial): Promise<boolean> {
    const row = await this.deps.repo.byAgent(agentId);
    if (!row?.ip) return false;
    await this.agents.call(row, 'PUT', '/tls', { cert: tls.cert, key: tls.key, ca: tls.ca }, 15_000);
    return true;
  }

  /** The agent of an instance, for the steps of such a task. */
  agentOf(row: InstanceRow): InstanceAgent {
    return new InstanceAgent(this.agents, row);
  }

  /** Resolves when the task has ended (run by this process, or by another replica: then as the store tells). */
  async wait(id: number): Promise<Task> {
    await this.running.get(id);
    const watch = this.tasks.watch(id);
    try {
      for (;;) {
        const t = await this.tasks.get(id);
        if (['done', 'error', 'cancelled'].includes(t.state)) return t;
        await (this.running.get(id) ?? watch.next(2000));
      }
    } finally {
      watch.stop();
    }
  }

  private readonly taskEndListeners: ((t: { id: number; type: string; state: string; seconds: number }) => void)[] = [];

  /** Told of every task that ends in this process: its type, how it ended and how long it ran (for metrics). */
  onTaskEnd(listener: (t: { id: number; type: string; state: string; seconds: number }) => void): void {
    this.taskEndListeners.push(listener);
  }

  private async taskEnded(id: number): Promise<void> {
    if (this.taskEndListeners.length === 0) return;
    const t = await this.tasks.get(id);
    const seconds = t.started_at && t.finished_at ? (Date.parse(t.finished_at) - Date.parse(t.started_at)) / 1000 : 0;
    for (const l of this.taskEndListeners) l({ id, type: t.type, state: t.state, seconds });
  }

  /** Waits until the tasks this process runs have ended, at most `timeoutMs` (a closing platform, before its store goes). */
  async settle(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...this.running.values()]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  private launch(id: number, work: (signal: AbortSignal, sink: EventSink) => Promise<unknown>): void {
    const ac = new AbortController();
    const sink = this.tasks.sink(id);
    // A cancel asked through any replica stops the work at its next step; so does learning that
    // another replica has taken the task over (this one was thought dead: its lease had ended).
    const poll = setInterval(() => {
      void this.tasks.control(id).then(
        (c) => {
          if (c === 'lost') this.o.logger.warn({ task: id }, 'another replica took this task over: stopping it here');
          if (c !== 'run') ac.abort();
        },
        () => undefined,
      );
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
      await this.taskEnded(id).catch((err: unknown) =>
        this.o.logger.warn({ task: id, err: (err as Error).message }, 'telling of an ended task failed'),
      );
    })().catch((err: unknown) =>
      // Its end could not be stored (the store unreachable or closed): the task stays running in the store, and the
      // queue resumes it as a task whose replica stopped; never an unhandled rejection.
      this.o.logger.warn({ task: id, err: (err as Error).message }, 'recording the end of a task failed'),
    );
    this.running.set(id, p);
    void p.finally(() => this.running.delete(id));
  }

  /** Converges a deployment on `full`: the deploy phases, in order, over one scope. */
  private async runDeploy(full: Manifest, signal: AbortSignal, sink: EventSink, pick: DeployPick = {}): Promise<{ instances: number }> {
    const scope = newDeployScope(this.deps, full, signal, sink, pick);
    for (const phase of DEPLOY_PHASES) await phase.run(scope);
    return { instances: scope.desired.length };
  }

  private async runDelete(name: string, sink: EventSink): Promise<{ deleted: number }> {
    const rows = await this.repo.list(name);
    for (const [i, row] of rows.entries()) {
      const step = { stage: 'Deleting instances', instance: `${row.group_name}/${row.idx}`, index: i + 1, total: rows.length };
      await sink.event({ ...step, state: 'started' });
      if (row.vm_id && (await this.o.provider.hasVm(row.vm_id))) {
        await this.agentCall(row, 'POST', '/drain', undefined, 60_000).catch(() => undefined);
        await this.agentCall(row, 'POST', '/stop', undefined, 60_000).catch(() => undefined);
      }
      await this.vms.discard(row);
      await sink.event({ ...step, state: 'finished' });
    }
    await this.vms.removeOrphans(name, sink);
    const manifest = await this.manifest(name).catch(() => undefined);
    for (const lb of manifest?.load_balancers ?? []) await this.o.provider.deleteLoadBalancer(loadBalancerId(name, lb.name));
    // Its segment, if it had one (also when its first deploy failed before the manifest was saved).
    if (this.o.provider.info().capabilities.segments) await this.o.provider.deleteSegment(name);
    await this.o.variables.remove(name);
    await storeQuery('deleting the deployment', () => this.o.store.db.deleteFrom('deployments').where('name', '=', name).execute());
    return { deleted: rows.length };
  }

  /** Whether the provider gives deployments network segments of their own (`segment: true` in a manifest). */
  segmentsOffered(): boolean {
    return this.o.provider.info().capabilities.segments;
  }

  /**
   * The interrupted tasks (after a restart; with replicas, those of replicas not in `live`): deploys
   * and deletes wait in the queue for a replica to resume them (`claimQueued`), the others end
   * with ANODYNE_E_REPLICA_LOST (their deployments converge on the next deploy).
   */
  async recover(live?: readonly string[]): Promise<{ ended: Task[]; queued: Task[] }> {
    return this.tasks.takeOver(live);
  }

  async manifest(name: string): Promise<Manifest> {
    const row = await storeQuery('reading a deployment', () =>
      this.o.store.db.selectFrom('deployments').select('manifest').where('name', '=', name).executeTakeFirst(),
    );
    if (!row) throw new NotFoundError('ANODYNE_E_DEPLOYMENT_NOT_FOUND', `deployment ${name} not found`, { details: { name } });
    return JSON.parse(row.manifest) as Manifest;
  }
}

/** Something measured while a task runs (the cluster API's availability during a rolling update). */
export interface AvailabilityProbe {
  stop(): Promise<AvailabilityReport>;
}

export interface AvailabilityReport {
  /** What was probed, e.g. `GET https://10.0.0.5:6443/version`. */
  target: string;
  requests: number;
  failed: number;
  /** The longest time without a successful answer, ms. */
  longest_gap_ms: number;
  /** Why the last failed request failed, if one did. */
  last_error?: string;
}

/** Runs work with a probe around it; the report joins the result (or the error's result). */
async function withProbe<T extends object>(
  probe: (() => AvailabilityProbe) | undefined,
  work: () => Promise<T>,
): Promise<T | (T & { availability: AvailabilityReport })> {
  if (!probe) return work();
  const p = probe();
  let result: T;
  try {
    result = await work();
  } catch (err) {
    const availability = await p.stop();
    if (err instanceof AnodyneError) err.details['result'] = { ...(err.details['result'] ?? {}), availability };
    throw err;
  }
  return { ...result, availability: await p.stop() };
}
