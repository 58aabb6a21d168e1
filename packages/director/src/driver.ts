// The real instance driver of a rollout: drain, stop, (re)create, apply the bundle, start — through the agent.
import { AnodyneError } from '@anodyne/common';
import { readAgentState, type AgentClient } from './agents.js';
import type { InstanceRepository, InstanceRow } from './instances.js';
import type { InstanceBundle } from './jobs.js';
import type { PlannedChange } from './planner.js';
import type { EventSink, InstanceDriver } from './updater.js';
import type { VmLifecycle } from './vms.js';

export interface AgentDriverDeps {
  repo: InstanceRepository;
  vms: VmLifecycle;
  agents: AgentClient;
  /** What the deployment's owner does around each instance (the clusters package drains Kubernetes nodes). */
  hooks?: InstanceHooks | undefined;
  /** Restarts after which a process that exited again has given up (absent: never, the watch time decides). */
  restartBudget?: number;
}

/** The last few lines a process wrote, each cut short: enough to say why it exits. */
export function lastLines(log: string, n = 5, width = 240): string[] {
  return log
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-n)
    .map((l) => (l.length > width ? `${l.slice(0, width)}…` : l));
}

/** An instance as hooks see it. */
export interface HookInstance {
  deployment: string;
  group: string;
  index: number;
  /** Adds a line to the task's events for this instance (what the hook checked or waited for). */
  note?: (message: string) => Promise<void>;
}

/**
 * Steps around an instance's rollout that only the deployment's owner knows how to take: the
 * director calls them and stays ignorant of what runs on the instances. A hook that throws fails
 * the instance's step (and with it the task), before anything of the instance was stopped.
 */
export interface InstanceHooks {
  /**
   * The order in which a group's running instances are rolled (a permutation of `indexes`; e.g. the
   * etcd leader last, so one rollout changes etcd's leader once). Absent or failing: index order.
   */
  order?(deployment: string, group: string, indexes: number[]): Promise<number[]>;
  /** Before an instance that is running is stopped for an update or a recreate (e.g. cordon and drain a node). */
  beforeStop?(i: HookInstance, signal: AbortSignal): Promise<void>;
  /** After it runs again and is healthy (e.g. uncordon the node). */
  afterHealthy?(i: HookInstance): Promise<void>;
  /** Before an instance no longer in the manifest is stopped and deleted. */
  beforeRemove?(i: HookInstance, signal: AbortSignal): Promise<void>;
  /** After it was deleted (e.g. delete its Node object). */
  afterRemove?(i: HookInstance): Promise<void>;
}

/** Applies planned changes to instances; `rows` (by `group/index`) is kept current as VMs change. */
export class AgentDriver implements InstanceDriver {
  constructor(
    private readonly d: AgentDriverDeps,
    private readonly rows: Map<string, InstanceRow>,
    private readonly sink: EventSink,
    /** The agent program of the deployment's release, for VMs it recreates. */
    private readonly agentProgram?: string,
  ) {}

  /** The hooks' order for these changes of one group (index order when they have none, or it fails). */
  async order(group: string, changes: PlannedChange[]): Promise<PlannedChange[]> {
    const hook = this.d.hooks?.order?.bind(this.d.hooks);
    if (!hook || changes.length < 2) return changes;
    const deployment = this.row(changes[0]!).deployment;
    const wanted = await hook(
      deployment,
      group,
      changes.map((c) => c.index),
    ).catch(() => undefined);
    if (!wanted) return changes;
    const rank = (c: PlannedChange) => {
      const at = wanted.indexOf(c.index);
      return at < 0 ? wanted.length + c.index : at;
    };
    return [...changes].sort((a, b) => rank(a) - rank(b));
  }

  private row(c: PlannedChange): InstanceRow {
    const r = this.rows.get(`${c.group}/${c.index}`);
    if (!r) throw new AnodyneError('ANODYNE_E_INTERNAL', `no instance ${c.group}/${c.index}`);
    return r;
  }

  private hookInstance(row: InstanceRow): HookInstance {
    const instance = `${row.group_name}/${row.idx}`;
    return {
      deployment: row.deployment,
      group: row.group_name,
      index: row.idx,
      note: (message) => this.sink.event({ stage: 'Lifecycle', instance, state: 'info', message }),
    };
  }

  async apply(c: PlannedChange, signal: AbortSignal): Promise<void> {
    let row = this.row(c);
    const name = `${c.group}/${c.index}`;
    const info = (message: string) => this.sink.event({ stage: 'Lifecycle', instance: name, state: 'info', message });
    // A VM that is being replaced may have an agent that no longer answers (that is often why
    // it is replaced): ask briefly first rather than wait out a drain's timeout.
    const answers =
      c.action !== 'recreate' ||
      (await readAgentState(this.d.agents, row).then(
        () => true,
        () => false,
      ));
    if (!answers) await info('not drained: the agent does not answer');
    if (row.bundle_hash !== null && answers && this.d.hooks?.beforeStop) {
      await info('before stop');
      await this.d.hooks.beforeStop(this.hookInstance(row), signal);
    }
    if (row.bundle_hash !== null && answers) {
      try {
        await info('drain');
        await this.d.agents.call(row, 'POST', '/drain', undefined, 600_000);
        await info('stop');
        await this.d.agents.call(row, 'POST', '/stop', undefined, 120_000);
      } catch (err) {
        // The agent went away mid-drain of a VM being replaced: go on. An update in place must not.
        if (c.action !== 'recreate' || !(err instanceof AnodyneError && err.code === 'ANODYNE_E_UNAVAILABLE')) throw err;
        await info(`not drained: ${err.message}`);
      }
    }
    if (c.action === 'recreate') {
      await info(`recreate: ${c.reasons.join(', ')}`);
      row = await this.d.vms.recreate(row, c.desired, this.agentProgram);
      this.rows.set(name, row);
    }
    const bundle: InstanceBundle = c.desired!.bundle;
    await this.d.agents.call(row, 'POST', '/apply', bundle, 30_000);
    await info('start');
    await this.d.agents.call(row, 'POST', '/start', undefined, 600_000);
    await this.d.repo.patch(row.id, { bundle_hash: bundle.hash });
    row.bundle_hash = bundle.hash;
  }

  async settled(c: PlannedChange): Promise<void> {
    if (this.d.hooks?.afterHealthy) await this.d.hooks.afterHealthy(this.hookInstance(this.row(c)));
  }

  async remove(c: PlannedChange, signal: AbortSignal): Promise<void> {
    const row = this.rows.get(`${c.group}/${c.index}`);
    if (!row) return;
    if (row.vm_id && row.bundle_hash !== null && this.d.hooks?.beforeRemove) {
      await this.sink.event({ stage: 'Lifecycle', instance: `${c.group}/${c.index}`, state: 'info', message: 'before remove' });
      await this.d.hooks.beforeRemove(this.hookInstance(row), signal);
    }
    if (row.vm_id) {
      await this.d.agents.call(row, 'POST', '/drain', undefined, 600_000).catch(() => undefined);
      await this.d.agents.call(row, 'POST', '/stop', undefined, 120_000).catch(() => undefined);
    }
    await this.d.vms.discard(row);
    this.rows.delete(`${c.group}/${c.index}`);
    if (this.d.hooks?.afterRemove) await this.d.hooks.afterRemove(this.hookInstance(row));
  }

  /**
   * Healthy when the instance runs the desired bundle and every process is ready. A process of
   * that bundle that has spent its restart budget and exited again (waiting to be restarted) has
   * given up: the answer then says which, how it last exited and the last lines it wrote.
   */
  async healthy(c: PlannedChange, waitMs = 0): Promise<boolean | { failed: string }> {
    const row = this.row(c);
    let s;
    try {
      s = await readAgentState(this.d.agents, row, 5000 + waitMs, waitMs > 0 ? { waitMs, bundle: c.desired?.bundle.hash } : undefined);
    } catch {
      return false;
    }
    if (s.bundleHash !== c.desired?.bundle.hash) return false;
    if (s.healthy) return true;
    const budget = this.d.restartBudget;
    const spent = budget === undefined ? undefined : s.processes.find((p) => p.state === 'failing' && p.restarts >= budget);
    if (!spent) return false;
    const exit = spent.lastExit
      ? spent.lastExit.signal
        ? `last killed by ${spent.lastExit.signal}`
        : `last exit code ${spent.lastExit.code}`
      : 'no exit recorded';
    const logs = (await this.d.agents.call(row, 'GET', '/logs', undefined, 5000).catch(() => null)) as {
      logs?: Record<string, string>;
    } | null;
    const lines = lastLines(logs?.logs?.[`${spent.job}/${spent.name}`] ?? '');
    return {
      failed: `${spent.job}/${spent.name} exited ${spent.restarts} times (${exit})${lines.length ? `: ${lines.join(' | ')}` : ''}`,
    };
  }

  /** Which processes are not ready, how often they restarted, and the last lines of the first of them. */
  async unready(c: PlannedChange): Promise<string | undefined> {
    const row = this.row(c);
    const s = await readAgentState(this.d.agents, row);
    if (s.bundleHash !== c.desired?.bundle.hash) return `the agent runs bundle ${s.bundleHash?.slice(0, 12) ?? 'none'}, not the new one`;
    const waiting = s.processes.filter((p) => p.state !== 'running');
    if (waiting.length === 0) return undefined;
    const first = waiting[0]!;
    const logs = (await this.d.agents.call(row, 'GET', '/logs', undefined, 5000).catch(() => null)) as {
      logs?: Record<string, string>;
    } | null;
    const lines = lastLines(logs?.logs?.[`${first.job}/${first.name}`] ?? '', 3);
    return `${waiting.map((p) => `${p.job}/${p.name} ${p.state} (${p.restarts} restarts)`).join(', ')}${lines.length ? `; ${first.job}/${first.name} last wrote: ${lines.join(' | ')}` : ''}`;
  }
}
