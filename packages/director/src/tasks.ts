// Tasks and their event logs in the store: creation under the deployment lock, listing, events, cancel, recovery after restart.
import { AnodyneError, ConflictError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type Store, type TasksTable } from '@anodyne/store';
import type { Selectable } from 'kysely';
import type { EventSink, TaskEventInput } from './updater.js';

export type TaskState = 'queued' | 'processing' | 'done' | 'error' | 'cancelling' | 'cancelled';

export interface Task {
  id: number;
  type: string;
  deployment: string | null;
  state: TaskState;
  description: string;
  owner: string;
  result: unknown;
  error: { code: string; message: string } | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface TaskEvent extends TaskEventInput {
  id: number;
  task_id: number;
  at: string;
}

const FINAL: TaskState[] = ['done', 'error', 'cancelled'];

/**
 * Tasks and their append-only event logs, in the store. Every change to a deployment runs as
 * a task holding that deployment's lock. Nothing here lives only in memory: after a platform
 * restart `recover()` ends every task that was in flight.
 */
/** A stored task row as the director hands it out (JSON columns parsed). */
function toTask(r: Selectable<TasksTable>): Task {
  return {
    ...r,
    id: Number(r.id),
    state: r.state as TaskState,
    result: r.result ? (JSON.parse(r.result) as unknown) : null,
    error: r.error ? (JSON.parse(r.error) as Task['error']) : null,
  };
}

export class TaskStore {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: Logger,
    /** The platform replica that runs the tasks this store creates (recorded on each). */
    private readonly runner: string | null = null,
  ) {}

  private now(): string {
    return this.clock.now().toISOString();
  }

  /**
   * Creates a queued task and, for a deployment, takes its lock in the same transaction:
   * a second change to a deployment that is being changed is refused.
   */
  async create(type: string, deployment: string | null, description: string, owner: string): Promise<Task> {
    return storeQuery('creating a task', () =>
      this.store.db.transaction().execute(async (tx) => {
        const row = await tx
          .insertInto('tasks')
          .values({
            type,
            deployment,
            state: 'queued',
            description,
            owner,
            result: null,
            error: null,
            created_at: this.now(),
            started_at: null,
            finished_at: null,
            runner: this.runner,
          })
          .returning('id')
          .executeTakeFirstOrThrow();
        const id = Number(row.id);
        if (deployment !== null) {
          // Who holds it, so the refused caller knows what to wait for (a resurrection, a cloud check, a user's change).
          const held = await tx
            .selectFrom('locks')
            .leftJoin('tasks', 'tasks.id', 'locks.task_id')
            .select(['locks.task_id', 'tasks.type', 'tasks.owner'])
            .where('locks.name', '=', `deployment:${deployment}`)
            .executeTakeFirst();
          if (held) {
            const by = held.type ? ` (${held.type}, started by ${held.owner})` : '';
            throw new ConflictError(
              'ANODYNE_E_DEPLOYMENT_LOCKED',
              `deployment ${deployment} is being changed by task ${held.task_id}${by}`,
              {
                details: { deployment, task: held.task_id, task_type: held.type ?? null, task_owner: held.owner ?? null },
              },
            );
          }
          await tx
            .insertInto('locks')
            .values({ name: `deployment:${deployment}`, task_id: id, acquired_at: this.now() })
            .execute();
        }
        return (await this.getIn(tx, id))!;
      }),
    );
  }

  private async getIn(db: Store['db'], id: number): Promise<Task | undefined> {
    const r = await db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toTask(r) : undefined;
  }

  async get(id: number): Promise<Task> {
    const t = await storeQuery('reading a task', () => this.getIn(this.store.db, id));
    if (!t) throw new NotFoundError('ANODYNE_E_TASK_NOT_FOUND', `task ${id} not found`, { details: { id } });
    return t;
  }

  /** Several tasks by id in one read per 500 ids (a listing of clusters shows each one's last task). */
  async getMany(ids: number[]): Promise<Map<number, Task>> {
    const out = new Map<number, Task>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += 500) {
      const chunk = unique.slice(i, i + 500);
      const rows = await storeQuery('reading tasks', () =>
        this.store.db.selectFrom('tasks').selectAll().where('id', 'in', chunk).execute(),
      );
      for (const r of rows) out.set(Number(r.id), toTask(r));
    }
    return out;
  }

  /** How many tasks there are of each type in each state. */
  async counts(): Promise<{ type: string; state: string; count: number }[]> {
    const rows = await storeQuery('counting tasks', () =>
      this.store.db
        .selectFrom('tasks')
        .select((eb) => ['type', 'state', eb.fn.countAll<number | string | bigint>().as('n')])
        .groupBy(['type', 'state'])
        .execute(),
    );
    return rows.map((r) => ({ type: r.type, state: r.state, count: Number(r.n) }));
  }

  /**
   * Tasks, newest first. `owner` keeps a caller's own tasks; with `orDeployments` also every task
   * on those deployments (whoever started it: an owner sees an admin's upgrade of their cluster).
   */
  async list(
    filter: { deployment?: string; state?: TaskState; owner?: string; orDeployments?: string[]; limit?: number } = {},
  ): Promise<Task[]> {
    let q = this.store.db.selectFrom('tasks').select('id');
    if (filter.deployment) q = q.where('deployment', '=', filter.deployment);
    const owner = filter.owner;
    const deps = filter.orDeployments ?? [];
    if (owner !== undefined)
      q = deps.length > 0 ? q.where((eb) => eb.or([eb('owner', '=', owner), eb('deployment', 'in', deps)])) : q.where('owner', '=', owner);
    if (filter.state) q = q.where('state', '=', filter.state);
    const ids = await storeQuery('listing tasks', () =>
      q
        .orderBy('id', 'desc')
        .limit(filter.limit ?? 100)
        .execute(),
    );
    return Promise.all(ids.map((r) => this.get(Number(r.id))));
  }

  async start(id: number): Promise<void> {
    await storeQuery('starting a task', () =>
      this.store.db
        .updateTable('tasks')
        .set({ state: 'processing', started_at: this.now() })
        .where('id', '=', id)
        .where('state', '=', 'queued')
        .execute(),
    );
  }

  /** An event sink writing to this task's log. */
  sink(id: number): EventSink {
    return { event: (e) => this.event(id, e) };
  }

  async event(id: number, e: TaskEventInput): Promise<void> {
    await storeQuery('recording a task event', () =>
      this.store.db
        .insertInto('task_events')
        .values({
          task_id: id,
          at: this.now(),
          stage: e.stage,
          instance: e.instance ?? null,
          idx: e.index ?? null,
          total: e.total ?? null,
          state: e.state,
          message: e.message ?? null,
        })
        .execute(),
    );
  }

  /** Events after `afterId`, oldest first (for live following). */
  async events(id: number, afterId = 0): Promise<TaskEvent[]> {
    const rows = await storeQuery('reading task events', () =>
      this.store.db.selectFrom('task_events').selectAll().where('task_id', '=', id).where('id', '>', afterId).orderBy('id').execute(),
    );
    return rows.map((r) => ({
      id: Number(r.id),
      task_id: Number(r.task_id),
      at: r.at,
      stage: r.stage,
      state: r.state as TaskEventInput['state'],
      ...(r.instance !== null ? { instance: r.instance } : {}),
      ...(r.idx !== null ? { index: r.idx } : {}),
      ...(r.total !== null ? { total: r.total } : {}),
      ...(r.message !== null ? { message: r.message } : {}),
    }));
  }

  /** Ends a task (done, error or cancelled) and releases its lock. */
  async finish(id: number, state: 'done' | 'error' | 'cancelled', outcome: { result?: unknown; error?: unknown } = {}): Promise<void> {
    const err =
      outcome.error === undefined
        ? null
        : outcome.error instanceof AnodyneError
          ? { code: outcome.error.code, message: outcome.error.message }
          : { code: 'ANODYNE_E_INTERNAL', message: String((outcome.error as Error)?.message ?? outcome.error) };
    await storeQuery('finishing a task', () =>
      this.store.db.transaction().execute(async (tx) => {
        await tx
          .updateTable('tasks')
          .set({
            state,
            finished_at: this.now(),
            result: outcome.result === undefined ? null : JSON.stringify(outcome.result),
            error: err ? JSON.stringify(err) : null,
          })
          .where('id', '=', id)
          .execute();
        await tx.deleteFrom('locks').where('task_id', '=', id).execute();
      }),
    );
  }

  /** Asks a running task to stop at its next step boundary. Returns the task. */
  async requestCancel(id: number): Promise<Task> {
    const t = await this.get(id);
    if (FINAL.includes(t.state)) return t;
    await storeQuery('cancelling a task', () =>
      this.store.db
        .updateTable('tasks')
        .set({ state: 'cancelling' })
        .where('id', '=', id)
        .where('state', 'in', ['queued', 'processing'])
        .execute(),
    );
    return this.get(id);
  }

  async isCancelRequested(id: number): Promise<boolean> {
    return (await this.get(id)).state === 'cancelling';
  }

  /**
   * Ends the tasks no live replica runs: every task that was queued, processing or cancelling
   * and whose runner is not in `live` (all of them when `live` is not given: a platform restarted
   * alone) ends in `error` (its work is resumed by the next deploy, which converges) and releases
   * its lock. Two replicas doing it at once end each task once: the end is conditional on the task
   * being open still.
   */
  async recover(live?: readonly string[]): Promise<Task[]> {
    const open = await storeQuery('recovering tasks', () =>
      this.store.db.selectFrom('tasks').select(['id', 'runner']).where('state', 'in', ['queued', 'processing', 'cancelling']).execute(),
    );
    const out: Task[] = [];
    for (const r of open) {
      if (live && r.runner !== null && live.includes(r.runner)) continue;
      const id = Number(r.id);
      const error = new AnodyneError('ANODYNE_E_REPLICA_LOST', 'the platform restarted while this task ran (its replica stopped)');
      if (!(await this.finishOpen(id, error))) continue;
      await this.event(id, {
        stage: 'Recovering',
        state: 'failed',
        message: 'the platform restarted while this task ran (its replica stopped); the next deploy converges the deployment',
      });
      this.logger.warn({ task: id, runner: r.runner }, 'task ended: the replica that ran it stopped');
      out.push(await this.get(id));
    }
    return out;
  }

  /** Ends an open task in `error` and releases its lock, unless it has ended meanwhile (false then). */
  private async finishOpen(id: number, error: AnodyneError): Promise<boolean> {
    return storeQuery('ending a task', () =>
      this.store.db.transaction().execute(async (tx) => {
        const r = await tx
          .updateTable('tasks')
          .set({ state: 'error', finished_at: this.now(), error: JSON.stringify({ code: error.code, message: error.message }) })
          .where('id', '=', id)
          .where('state', 'in', ['queued', 'processing', 'cancelling'])
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) return false;
        await tx.deleteFrom('locks').where('task_id', '=', id).execute();
        return true;
      }),
    );
  }
}
