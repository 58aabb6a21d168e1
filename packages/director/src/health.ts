// The director's health monitor and resurrector: each instance's health, and recreation of lost ones unless in a meltdown.
import { AnodyneError, type Clock, type Logger } from '@anodyne/common';
import type { Provider } from '@anodyne/providers';
import { storeQuery, type InstancesTable, type Store } from '@anodyne/store';
import type { Selectable } from 'kysely';
import type { Director } from './director.js';
import type { AgentVitals } from './agents.js';

/**
 * What the health monitor found for one instance:
 * - `running`: the agent answers and every process is running and ready;
 * - `failing`: the agent answers but a process is not ready, or its jobs are not the ones applied;
 * - `unresponsive`: the VM exists but its agent does not answer;
 * - `missing`: the provider has no running VM for the instance;
 * - `stopped`: an operator stopped it (not checked, never resurrected);
 * - `pending`: not checked yet, or its jobs were never applied (an interrupted deploy).
 */
export type InstanceHealth = 'pending' | 'running' | 'failing' | 'unresponsive' | 'missing' | 'stopped';

export interface ResurrectionPolicy {
  enabled: boolean;
  /** How long an instance stays missing or unresponsive before it is recreated (default 60 s). */
  afterMs?: number;
  /**
   * Meltdown: when at least `meltdownMin` instances (default 5) and more than `meltdownPercent`
   * of all checked instances (default 30 %) are down at once, the fault is the infrastructure's:
   * nothing is recreated until fewer are down.
   */
  meltdownMin?: number;
  meltdownPercent?: number;
}

export interface ResurrectionEvent {
  /** `unhealthy`: instances that turned failing, unresponsive or missing in this pass (`reason` says why). */
  action: 'resurrect' | 'meltdown' | 'unhealthy';
  deployment?: string;
  instances: string[];
  task?: number;
  error?: string;
  reason?: string;
}

export interface HealthMonitorOptions {
  store: Store;
  provider: Provider;
  director: Director;
  clock: Clock;
  logger: Logger;
  /** Agents asked at once (default 32). */
  concurrency?: number;
  /** How long an agent has to answer (default 5 s). */
  probeTimeoutMs?: number;
  resurrection?: ResurrectionPolicy;
  /** Told of every resurrection and meltdown (the platform writes them to the audit log). */
  onEvent?: (e: ResurrectionEvent) => Promise<void> | void;
}

export interface HealthReport {
  startedAt: string;
  durationMs: number;
  /** Deployments checked. */
  deployments: number;
  /** Instances checked. */
  instances: number;
  counts: Record<InstanceHealth, number>;
  /** Deployments left alone because a task is changing them (or their first deploy has not finished). */
  skipped: string[];
  resurrections: { deployment: string; instances: string[]; task?: number; error?: string }[];
  meltdown: boolean;
  /** What each agent that answered measured of its VM. */
  vitals: { deployment: string; instance: string; vitals: AgentVitals }[];
}

const ROW_COLUMNS = [
  'id',
  'deployment',
  'group_name',
  'idx',
  'vm_id',
  'agent_id',
  'ip',
  'bundle_hash',
  'state',
  'health',
  'health_reason',
  'health_since',
] as const;
type Row = Pick<Selectable<InstancesTable>, (typeof ROW_COLUMNS)[number]>;

interface Finding {
  row: Row;
  health: InstanceHealth;
  reason: string | null;
  since: string;
  vitals?: AgentVitals;
}

const DOWN: InstanceHealth[] = ['missing', 'unresponsive'];

/** Findings by deployment. */
function byDeployment(findings: Finding[]): Map<string, Finding[]> {
  const out = new Map<string, Finding[]>();
  for (const f of findings) {
    const list = out.get(f.row.deployment);
    if (list) list.push(f);
    else out.set(f.row.deployment, [f]);
  }
  return out;
}

/** Runs `work` over `items`, at most `limit` at a time. */
async function pool<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await work(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * The director's health monitor and resurrector (BOSH's HM with its resurrector plugin). One
 * pass reads every instance from the store and every VM from the provider once, asks each
 * live agent for its state, records what changed, and — when resurrection is on — recreates
 * instances that have been missing or unresponsive for longer than the policy allows, unless
 * so many are down that the infrastructure itself is failing (meltdown). Deployments that a
 * task is changing are left to that task.
 */
export class HealthMonitor {
  private current: Promise<HealthReport> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = true;
  private last: HealthReport | null = null;
  /** Per deployment: resurrections tried in a row without it becoming healthy, and when the next may start. */
  private readonly backoff = new Map<string, { attempts: number; notBefore: number }>();

  constructor(private readonly o: HealthMonitorOptions) {}

  /** The last finished pass, if any. */
  lastReport(): HealthReport | null {
    return this.last;
  }

  /** One full pass; a pass already running is shared, never doubled. */
  pass(): Promise<HealthReport> {
    this.current ??= this.runPass().finally(() => (this.current = null));
    return this.current;
  }

  /** Passes every `intervalMs` until `stop()`. A failed pass is logged and the next one runs. */
  start(intervalMs: number): void {
    if (!this.stopped) return;
    this.stopped = false;
    const tick = () => {
      this.timer = setTimeout(() => {
        void this.pass()
          .catch((err: unknown) => this.o.logger.warn({ err: (err as Error).message }, 'health pass failed'))
          .finally(() => {
            if (!this.stopped) tick();
          });
      }, intervalMs);
      this.timer.unref();
    };
    tick();
  }

  /** Stops passing and waits for a pass in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.current?.catch(() => undefined);
  }

  private async runPass(): Promise<HealthReport> {
    const { store, provider, clock } = this.o;
    const t0 = clock.nowMs();
    const startedAt = clock.now().toISOString();
    const [rows, locks, deployed, vms] = await Promise.all([
      storeQuery('reading instances', () => store.db.selectFrom('instances').select(ROW_COLUMNS).execute()),
      storeQuery('reading locks', () => store.db.selectFrom('locks').select('name').execute()),
      storeQuery('reading deployments', () => store.db.selectFrom('deployments').select('name').execute()),
      provider.listVms(),
    ]);
    const locked = new Set(locks.map((l) => l.name.replace(/^deployment:/, '')));
    const settled = new Set(deployed.map((d) => d.name));
    const running = new Set(vms.filter((v) => v.state === 'running').map((v) => v.id));
    const skipped = new Set<string>();
    const checked: Row[] = [];
    for (const r of rows) {
      if (locked.has(r.deployment) || !settled.has(r.deployment)) skipped.add(r.deployment);
      else checked.push(r);
    }

    const timeout = this.o.probeTimeoutMs ?? 5000;
    const findings = await pool(checked, this.o.concurrency ?? 32, async (r): Promise<Finding> => {
      const f = await this.examine(r, running, timeout);
      return { row: r, ...f, since: f.health === r.health && r.health_since ? r.health_since : startedAt };
    });
    await this.record(findings);

    const counts: Record<InstanceHealth, number> = { pending: 0, running: 0, failing: 0, unresponsive: 0, missing: 0, stopped: 0 };
    for (const f of findings) counts[f.health]++;
    const { resurrections, meltdown } = await this.resurrect(findings, t0);
    const report: HealthReport = {
      startedAt,
      durationMs: clock.nowMs() - t0,
      deployments: new Set(checked.map((r) => r.deployment)).size,
      instances: checked.length,
      counts,
      skipped: [...skipped].sort(),
      resurrections,
      meltdown,
      vitals: findings
        .filter((f) => f.vitals !== undefined)
        .map((f) => ({ deployment: f.row.deployment, instance: `${f.row.group_name}/${f.row.idx}`, vitals: f.vitals! })),
    };
    this.last = report;
    this.o.logger.debug({ durationMs: report.durationMs, instances: report.instances, counts }, 'health pass');
    return report;
  }

  private async examine(
    r: Row,
    running: Set<string>,
    timeoutMs: number,
  ): Promise<{ health: InstanceHealth; reason: string | null; vitals?: AgentVitals }> {
    if (r.state === 'stopped') return { health: 'stopped', reason: null };
    if (!r.vm_id || !running.has(r.vm_id)) return { health: 'missing', reason: r.vm_id ? `VM ${r.vm_id} is not running` : 'no VM' };
    try {
      const s = await this.o.director.agentState(r, timeoutMs);
      const v = s.vitals ? { vitals: s.vitals } : {};
      if (r.bundle_hash === null) return { health: 'pending', reason: 'jobs not applied', ...v };
      if (s.bundleHash !== r.bundle_hash) return { health: 'failing', reason: 'the agent runs other jobs than the director applied', ...v };
      if (!s.healthy) {
        const bad = s.processes.filter((p) => p.state !== 'running').map((p) => `${p.job}/${p.name} ${p.state}`);
        return { health: 'failing', reason: bad.length > 0 ? bad.join(', ') : 'a readiness probe fails', ...v };
      }
      return { health: 'running', reason: null, ...v };
    } catch (err) {
      return { health: 'unresponsive', reason: (err as Error).message.slice(0, 300) };
    }
  }

  /** Writes what changed (most passes change nothing) in one transaction, and logs transitions. */
  private async record(findings: Finding[]): Promise<void> {
    const changed = findings.filter((f) => f.health !== f.row.health || f.reason !== f.row.health_reason);
    if (changed.length === 0) return;
    await storeQuery('recording instance health', () =>
      this.o.store.db.transaction().execute(async (tx) => {
        for (const f of changed) {
          await tx
            .updateTable('instances')
            .set({ health: f.health, health_reason: f.reason, health_since: f.since })
            .where('id', '=', f.row.id)
            .where('vm_id', f.row.vm_id === null ? 'is' : '=', f.row.vm_id)
            .execute();
        }
      }),
    );
    for (const f of changed.filter((x) => x.health !== x.row.health)) {
      const at = {
        deployment: f.row.deployment,
        instance: `${f.row.group_name}/${f.row.idx}`,
        from: f.row.health,
        to: f.health,
        reason: f.reason,
      };
      if (f.health === 'running' || f.health === 'stopped' || f.health === 'pending') this.o.logger.info(at, 'instance health changed');
      else {
        this.o.logger.warn(at, 'instance unhealthy');
        await this.tell({
          action: 'unhealthy',
          deployment: f.row.deployment,
          instances: [at.instance],
          reason: `${f.health}${f.reason ? `: ${f.reason}` : ''}`,
        });
      }
    }
  }

  private async resurrect(
    findings: Finding[],
    nowMs: number,
  ): Promise<{ resurrections: HealthReport['resurrections']; meltdown: boolean }> {
    const policy = this.o.resurrection;
    const resurrections: HealthReport['resurrections'] = [];
    // A deployment that is whole again starts its backoff afresh.
    for (const [d, fs] of byDeployment(findings)) if (!fs.some((f) => DOWN.includes(f.health))) this.backoff.delete(d);
    if (!policy?.enabled) return { resurrections, meltdown: false };

    const afterMs = policy.afterMs ?? 60_000;
    const down = findings.filter((f) => DOWN.includes(f.health));
    const meltdown = down.length >= (policy.meltdownMin ?? 5) && down.length * 100 > findings.length * (policy.meltdownPercent ?? 30);
    if (meltdown) {
      this.o.logger.error(
        { down: down.length, instances: findings.length },
        'meltdown: too many instances down at once; resurrection paused',
      );
      await this.tell({ action: 'meltdown', instances: down.map((f) => `${f.row.deployment}:${f.row.group_name}/${f.row.idx}`) });
      return { resurrections, meltdown };
    }
    const due = down.filter((f) => nowMs - Date.parse(f.since) >= afterMs);
    for (const [deployment, fs] of byDeployment(due)) {
      const b = this.backoff.get(deployment) ?? { attempts: 0, notBefore: 0 };
      if (nowMs < b.notBefore) continue;
      const instances = fs.map((f) => ({ group: f.row.group_name, index: f.row.idx }));
      const names = instances.map((x) => `${x.group}/${x.index}`);
      this.backoff.set(deployment, { attempts: b.attempts + 1, notBefore: nowMs + Math.min(afterMs * 2 ** b.attempts, 30 * 60_000) });
      try {
        const task = await this.o.director.resurrect(deployment, instances);
        this.o.logger.warn({ deployment, instances: names, task: task.id }, 'resurrecting instances');
        resurrections.push({ deployment, instances: names, task: task.id });
        await this.tell({ action: 'resurrect', deployment, instances: names, task: task.id });
      } catch (err) {
        // Locked: a task started since the pass read the locks; the next pass looks again.
        if (err instanceof AnodyneError && err.code === 'ANODYNE_E_DEPLOYMENT_LOCKED') {
          this.backoff.set(deployment, b);
          continue;
        }
        this.o.logger.error({ deployment, instances: names, err: (err as Error).message }, 'resurrection failed to start');
        resurrections.push({ deployment, instances: names, error: (err as Error).message });
        await this.tell({ action: 'resurrect', deployment, instances: names, error: (err as Error).message });
      }
    }
    return { resurrections, meltdown: false };
  }

  private async tell(e: ResurrectionEvent): Promise<void> {
    try {
      await this.o.onEvent?.(e);
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, 'health event not recorded');
    }
  }
}
