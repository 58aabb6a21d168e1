// The BOSH-style rollout: per group, deletions, then canaries, then batches of max_in_flight, each watched until healthy.
import { AnodyneError, type Clock, type Logger } from '@anodyne/common';
import { parseWatchTime, resolveMaxInFlight, type UpdatePolicy } from './manifest.js';
import type { PlannedChange } from './planner.js';

/** One line of a task's event log. */
export interface TaskEventInput {
  stage: string;
  /** The step's subject, e.g. `web/2`. */
  instance?: string;
  /** Step k of n within the stage. */
  index?: number;
  total?: number;
  state: 'started' | 'finished' | 'failed' | 'info';
  message?: string;
}

export interface EventSink {
  event(e: TaskEventInput): Promise<void>;
}

/**
 * What the updater needs done to one instance; the director's real driver talks to the
 * provider and the agent, unit tests use the fake provider.
 */
export interface InstanceDriver {
  /** Drains and stops the old processes (if any), creates/updates/recreates, starts. */
  apply(change: PlannedChange, signal: AbortSignal): Promise<void>;
  /** Removes an instance no longer in the manifest (drained and stopped first). */
  remove(change: PlannedChange, signal: AbortSignal): Promise<void>;
  /** After the instance became healthy (the owner's hooks may now let work back onto it). */
  settled?(change: PlannedChange): Promise<void>;
  /**
   * Whether every process of the instance is running and ready; `{failed}` when it never will be
   * (a process gave up: the watch ends at once with that reason).
   */
  /** `waitMs`: the driver may wait up to this long for the answer to become true (an agent's long poll). */
  healthy(change: PlannedChange, waitMs?: number): Promise<boolean | { failed: string }>;
  /** What is not ready on an instance whose watch time ran out (its processes, their state and last lines). */
  unready?(change: PlannedChange): Promise<string | undefined>;
  /** The order in which a group's running instances roll (default: as planned, by index). */
  order?(group: string, changes: PlannedChange[]): Promise<PlannedChange[]>;
}

export interface GroupPlan {
  name: string;
  instances: number;
  policy: UpdatePolicy;
  changes: PlannedChange[];
}

export interface UpdaterOptions {
  clock: Clock;
  driver: InstanceDriver;
  events: EventSink;
  logger: Logger;
  /** How often to ask an instance whether it is healthy while watching (default 1 s). */
  pollMs?: number;
}

/** The longest an instance's health question may be held by the driver (see InstanceDriver.healthy). */
const LONG_POLL_MS = 5000;

/** An instance that never ran: nothing on it to protect, so no canary and no batch holds it back. */
function isFresh(c: PlannedChange): boolean {
  return c.action === 'create' || (c.actual !== undefined && c.actual.bundleHash === null);
}

function cancelled(): AnodyneError {
  return new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled');
}

/**
 * Rolls changes out the way BOSH does: per instance group, deletions first, then canaries
 * one at a time, then the rest in batches of max_in_flight; each instance is applied and
 * watched until healthy within its watch time (a range `min-max`: first check after min,
 * give up after max). A failing canary stops the update with every other instance untouched;
 * a failing batch stops it after that batch. Groups run one after another unless a group
 * says `serial: false`, in which case it starts together with the group before it.
 * Cancellation is honoured between steps, never in the middle of one.
 */
export class Updater {
  private readonly pollMs: number;

  constructor(private readonly opts: UpdaterOptions) {
    this.pollMs = opts.pollMs ?? 1000;
  }

  async run(groups: GroupPlan[], signal: AbortSignal): Promise<void> {
    let pending: Promise<void>[] = [];
    for (const g of groups) {
      // A group of instances that never ran protects nothing by waiting: it starts with the group
      // before it (a new cluster's workers start with its masters; their processes wait for the API).
      const allFresh = g.changes.length > 0 && g.changes.every((c) => c.action === 'keep' || isFresh(c));
      const startsNow = g.changes.some((c) => c.action !== 'keep');
      if ((g.policy.serial === false || (allFresh && startsNow)) && pending.length > 0) {
        pending.push(this.updateGroup(g, signal));
        continue;
      }
      await Promise.all(pending);
      pending = [this.updateGroup(g, signal)];
    }
    await Promise.all(pending);
  }

  /** True when healthy in time; otherwise why not (a process that gave up, or the watch time spent). */
  private async watch(change: PlannedChange, range: { min: number; max: number }): Promise<true | string> {
    const { clock, driver } = this.opts;
    await clock.sleep(range.min);
    let waited = range.min;
    for (;;) {
      // The driver may hold the question up to a few seconds and answer as soon as the instance is
      // healthy; one that answers at once is asked again after pollMs.
      const asked = clock.nowMs();
      const h = await driver.healthy(change, Math.max(0, Math.min(LONG_POLL_MS, range.max - waited)));
      if (h === true) return true;
      if (typeof h === 'object') return `${change.group}/${change.index} failed: ${h.failed}`;
      waited += clock.nowMs() - asked;
      if (waited >= range.max) {
        const why = await driver.unready?.(change).catch(() => undefined);
        return `${change.group}/${change.index} is not healthy after ${range.max} ms${why ? `: ${why}` : ''}`;
      }
      const step = Math.min(Math.max(0, this.pollMs - (clock.nowMs() - asked)), range.max - waited);
      if (step > 0) await clock.sleep(step);
      waited += step;
    }
  }

  private async step(g: GroupPlan, change: PlannedChange, k: number, n: number, canary: boolean, signal: AbortSignal): Promise<void> {
    const { driver, events } = this.opts;
    const instance = `${change.group}/${change.index}`;
    const stage = canary ? 'Updating instance (canary)' : 'Updating instance';
    await events.event({
      stage,
      instance,
      index: k,
      total: n,
      state: 'started',
      message: `${change.action}: ${change.reasons.join(', ')}`,
    });
    // Only a canary that was changed and then not healthy goes back: one whose step failed before it
    // ran anything new (a drain that a disruption budget held back) is as it was.
    let applied = false;
    try {
      await driver.apply(change, signal);
      applied = true;
      const range = parseWatchTime(canary ? g.policy.canary_watch_time : g.policy.update_watch_time);
      const watched = await this.watch(change, range);
      if (watched !== true) {
        throw new AnodyneError(canary ? 'ANODYNE_E_CANARY_FAILED' : 'ANODYNE_E_INSTANCE_UNHEALTHY', watched, { details: { instance } });
      }
      await driver.settled?.(change);
    } catch (err) {
      await events.event({ stage, instance, index: k, total: n, state: 'failed', message: (err as Error).message });
      if (canary && applied && change.previous && change.desired) await this.rollBack(g, change, err as Error, signal);
      throw err;
    }
    await events.event({ stage, instance, index: k, total: n, state: 'finished' });
  }

  /**
   * A canary that failed goes back to the bundle it ran before (same VM), so the deployment is as
   * it was: no other instance was touched. The task still fails, with the canary's reason.
   */
  private async rollBack(g: GroupPlan, change: PlannedChange, why: Error, signal: AbortSignal): Promise<never> {
    const { driver, events } = this.opts;
    const instance = `${change.group}/${change.index}`;
    const stage = 'Rolling back canary';
    await events.event({
      stage,
      instance,
      index: 1,
      total: 1,
      state: 'started',
      message: `back to bundle ${change.previous!.hash.slice(0, 12)}`,
    });
    const back: PlannedChange = {
      ...change,
      action: 'update',
      reasons: ['canary rollback'],
      desired: { ...change.desired!, bundle: change.previous! },
    };
    try {
      await driver.apply(back, signal);
      const range = parseWatchTime(g.policy.update_watch_time);
      const watched = await this.watch(back, range);
      if (watched !== true) throw new Error(`on its previous bundle: ${watched}`);
      await driver.settled?.(back);
    } catch (err) {
      await events.event({ stage, instance, index: 1, total: 1, state: 'failed', message: (err as Error).message });
      throw new AnodyneError('ANODYNE_E_CANARY_FAILED', `${why.message}; rolling it back failed too: ${(err as Error).message}`, {
        details: { instance, rolled_back: false },
      });
    }
    await events.event({ stage, instance, index: 1, total: 1, state: 'finished' });
    throw new AnodyneError(
      'ANODYNE_E_CANARY_FAILED',
      `${why.message}; the canary was rolled back to its previous bundle and no other instance was touched`,
      {
        details: { instance, rolled_back: true },
      },
    );
  }

  private async updateGroup(g: GroupPlan, signal: AbortSignal): Promise<void> {
    const { driver, events } = this.opts;
    const deletes = g.changes.filter((c) => c.action === 'delete');
    const updates = g.changes.filter((c) => c.action !== 'delete' && c.action !== 'keep');
    for (const [i, c] of deletes.entries()) {
      if (signal.aborted) throw cancelled();
      const instance = `${c.group}/${c.index}`;
      await events.event({ stage: 'Deleting unneeded instances', instance, index: i + 1, total: deletes.length, state: 'started' });
      await driver.remove(c, signal);
      await events.event({ stage: 'Deleting unneeded instances', instance, index: i + 1, total: deletes.length, state: 'finished' });
    }
    if (updates.length === 0) return;
    const n = updates.length;
    let k = 0;
    // Instances that never ran have no workload to protect: they start together, so clustered
    // jobs (an etcd of three) can form their quorum. Canaries and batches guard the rest.
    const fresh = updates.filter(isFresh);
    if (fresh.length > 0) {
      if (signal.aborted) throw cancelled();
      const results = await Promise.allSettled(fresh.map((c) => this.step(g, c, ++k, n, false, signal)));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
    const planned = updates.filter((c) => !fresh.includes(c));
    const existing = this.opts.driver.order ? await this.opts.driver.order(g.name, planned) : planned;
    const canaries = existing.slice(0, Math.min(g.policy.canaries, existing.length));
    const rest = existing.slice(canaries.length);
    for (const c of canaries) {
      if (signal.aborted) throw cancelled();
      await this.step(g, c, ++k, n, true, signal);
    }
    const inFlight = resolveMaxInFlight(g.policy.max_in_flight, g.instances);
    for (let i = 0; i < rest.length; i += inFlight) {
      if (signal.aborted) throw cancelled();
      const batch = rest.slice(i, i + inFlight);
      const results = await Promise.allSettled(batch.map((c) => this.step(g, c, ++k, n, false, signal)));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
  }
}
