// Fleet upgrade as one server-side task: canary clusters one at a time, then batches, stopping at the first failure.
import { AnodyneError, InputError } from '@anodyne/common';
import type { Director, EventSink, Task } from '@anodyne/director';
import type { ClusterLifecycle } from './lifecycle.js';
import type { ClusterRecords } from './records.js';
import type { ReleaseRegistry } from './releases.js';

export interface FleetUpgradeRequest {
  /** Clusters to upgrade, in this order; absent: every cluster not being deleted, by name. */
  clusters?: string[];
  /** The Kubernetes version to upgrade to (a minor picks its newest patch); absent: the newest each plan offers. */
  kubernetes_version?: string;
  /** Clusters upgraded first, one at a time; a failure among them stops the fleet (default 1). */
  canaries?: number;
  /** Clusters upgraded at once after the canaries (default 1). */
  max_in_flight?: number;
}

/** How each cluster of a fleet upgrade ended (the task's result). */
export interface FleetOutcome {
  name: string;
  state: 'done' | 'failed' | 'not started';
  task_id: number | null;
  message?: string;
}

export class ClusterFleet {
  constructor(
    private readonly director: Director,
    private readonly records: ClusterRecords,
    private readonly lifecycle: ClusterLifecycle,
    private readonly releases: ReleaseRegistry,
  ) {}

  /**
   * Checks the whole request first (every cluster exists and is idle), then starts one task that
   * upgrades them. Nothing is started when any check fails.
   */
  async upgrade(actor: string, request: FleetUpgradeRequest): Promise<Task> {
    const req = { ...request, canaries: request.canaries ?? 1, max_in_flight: request.max_in_flight ?? 1 };
    if (!Number.isInteger(req.canaries) || req.canaries < 0 || !Number.isInteger(req.max_in_flight) || req.max_in_flight < 1) {
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'canaries is a whole number ≥ 0 and max_in_flight a whole number ≥ 1', {
        details: { key: 'canaries' },
      });
    }
    const names = req.clusters ?? (await this.records.list()).filter((c) => c.last_action !== 'DELETE').map((c) => c.name);
    if (names.length === 0) throw new InputError('ANODYNE_E_INVALID_INPUT', 'no clusters to upgrade', { details: { key: 'clusters' } });
    if (new Set(names).size !== names.length)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'a cluster is named twice', { details: { key: 'clusters' } });
    // Every cluster exists, is idle and may go to the version asked for (skew rules), before anything starts.
    const target = await this.releases.resolve(req.kubernetes_version);
    for (const n of names) {
      const r = await this.records.row(n);
      await this.records.assertIdle(r);
      const running = this.releases.versionOf(r.release);
      if (running && req.kubernetes_version !== undefined) this.releases.checkUpgrade(running, target.version);
    }
    const description = `upgrade ${names.length} cluster(s): ${names.join(', ')}`;
    return this.director.runTask('upgrade_clusters', description, actor, (signal, sink) => this.run(names, req, actor, signal, sink));
  }

  private async run(
    names: string[],
    req: { canaries: number; max_in_flight: number; kubernetes_version?: string },
    actor: string,
    signal: AbortSignal,
    sink: EventSink,
  ): Promise<{ clusters: FleetOutcome[] }> {
    const outcomes = new Map<string, FleetOutcome>(names.map((n) => [n, { name: n, state: 'not started', task_id: null }]));
    const result = () => ({ clusters: names.map((n) => outcomes.get(n)!) });
    let k = 0;
    const one = async (name: string, stage: string): Promise<boolean> => {
      const index = ++k;
      await sink.event({ stage, instance: name, index, total: names.length, state: 'started' });
      let ok = false;
      try {
        const view = await this.lifecycle.redeploy(
          name,
          { kind: 'upgrade', ...(req.kubernetes_version !== undefined ? { kubernetesVersion: req.kubernetes_version } : {}) },
          actor,
        );
        const task = await this.director.wait(view.last_task_id!);
        ok = task.state === 'done';
        const message = task.error?.message;
        outcomes.set(name, { name, state: ok ? 'done' : 'failed', task_id: task.id, ...(message ? { message } : {}) });
      } catch (err) {
        outcomes.set(name, { name, state: 'failed', task_id: null, message: (err as Error).message });
      }
      const message = outcomes.get(name)!.message;
      await sink.event({
        stage,
        instance: name,
        index,
        total: names.length,
        state: ok ? 'finished' : 'failed',
        ...(message ? { message } : {}),
      });
      return ok;
    };
    const stop = (why: string): never => {
      throw new AnodyneError('ANODYNE_E_FLEET_UPGRADE_FAILED', why, { details: { result: result() } });
    };
    const canaries = names.slice(0, req.canaries);
    for (const n of canaries) {
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled', { details: { result: result() } });
      if (!(await one(n, 'Upgrading canary clusters'))) stop(`canary cluster ${n} failed: the other clusters were not touched`);
    }
    const rest = names.slice(req.canaries);
    for (let i = 0; i < rest.length; i += req.max_in_flight) {
      if (signal.aborted) throw new AnodyneError('ANODYNE_E_TASK_CANCELLED', 'the task was cancelled', { details: { result: result() } });
      const batch = rest.slice(i, i + req.max_in_flight);
      const ok = await Promise.all(batch.map((n) => one(n, 'Upgrading clusters')));
      const failed = batch.filter((_, j) => !ok[j]);
      if (failed.length > 0) stop(`upgrading ${failed.join(', ')} failed: later batches were not started`);
    }
    return result();
  }
}
