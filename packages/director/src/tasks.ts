// Tasks and their event logs in the store: creation under the deployment lock, listing, events, cancel, recovery after restart.
import { AnodyneError, ConflictError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type Store, type TasksTable } from '@anodyne/store';
import { sql, type Selectable } from 'kysely';
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
const OPEN: TaskState[] = ['queued', 'processing', 'cancelling'];

/** The store channel told of every change to a task (payload: its id). */
const TASK_CHANNEL = 'anodyne_task';
/** The store channel told when a task waits for a replica to take it (payload: its id). */
const QUEUE_CHANNEL = 'anodyne_task_queue';

/** A follower of one task's changes (`TaskStore.watch`). */
export interface TaskWatch {
  next(ms: number): Promise<void>;
  stop(): void;
}

/** What a runner should do with a task it runs, as the store says now. */
export type TaskControl = 'run' | 'cancel' | 'lost';

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

  /** The replica whose tasks these are. */
  get runnerId(): string | null {
    return this.runner;
  }

  /**
   * Creates a queued task and, for a deployment, takes its lock in the same transaction:
   * a second change to a deployment that is being changed is refused.
   */
  async create(type: string, deployment: string | null, description: string, owner: string, input?: unknown): Promise<Task> {
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
            input: input === undefined ? null : JSON.stringify(input),
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
    await this.changed(id);
  }

  /** Tells every replica's followers that task `id` changed (an event stream waits for it). */
  private async changed(id: number): Promise<void> {
    await this.store.signals.notify(TASK_CHANNEL, String(id));
  }

  /**
   * Follows task `id` from now on: `next(ms)` resolves as soon as the task may have changed since
   * the last call (a notice from any replica, or word that notices may have been missed) or after
   * `ms` at the latest; the follower reads the task again then. `stop()` when done.
   */
  watch(id: number): TaskWatch {
    let dirty = false;
    let wake: (() => void) | undefined;
    const stop = this.store.signals.subscribe(TASK_CHANNEL, (p) => {
      if (p !== '' && p !== String(id)) return;
      dirty = true;
      wake?.();
    });
    return {
      next: (ms) =>
        new Promise<void>((resolve) => {
          if (dirty) {
            dirty = false;
            resolve();
            return;
          }
          const timer = setTimeout(done, ms);
          wake = done;
          function done(): void {
            clearTimeout(timer);
            wake = undefined;
            dirty = false;
            resolve();
          }
        }),
      stop,
    };
  }

  /** Calls `wake` whenever a task may be waiting for a replica to take it. Returns the function that stops it. */
  onQueued(wake: () => void): () => void {
    return this.store.signals.subscribe(QUEUE_CHANNEL, () => wake());
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
    await this.changed(id);
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

  /**
   * Ends a task (done, error or cancelled) and releases its lock. Fenced: a runner whose task
   * another replica has taken over (it was thought dead) ends nothing; false then.
   */
  async finish(id: number, state: 'done' | 'error' | 'cancelled', outcome: { result?: unknown; error?: unknown } = {}): Promise<boolean> {
    const err =
      outcome.error === undefined
        ? null
        : outcome.error instanceof AnodyneError
          ? { code: outcome.error.code, message: outcome.error.message }
          : { code: 'ANODYNE_E_INTERNAL', message: String((outcome.error as Error)?.message ?? outcome.error) };
    const runner = this.runner;
    const ended = await storeQuery('finishing a task', () =>
      this.store.db.transaction().execute(async (tx) => {
        let q = tx
          .updateTable('tasks')
          .set({
            state,
            finished_at: this.now(),
            result: outcome.result === undefined ? null : JSON.stringify(outcome.result),
            error: err ? JSON.stringify(err) : null,
          })
          .where('id', '=', id);
        if (runner !== null) q = q.where((eb) => eb.or([eb('runner', '=', runner), eb('runner', 'is', null)]));
        const r = await q.executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) return false;
        await tx.deleteFrom('locks').where('task_id', '=', id).execute();
        return true;
      }),
    );
    if (!ended) this.logger.warn({ task: id }, 'task not ended here: another replica took it over');
    await this.changed(id);
    return ended;
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

  /** Whether the runner of task `id` should go on, stop at its next step (cancel), or stop now because another replica runs it (lost). */
  async control(id: number): Promise<TaskControl> {
    const r = await storeQuery('reading a task', () =>
      this.store.db.selectFrom('tasks').select(['state', 'runner']).where('id', '=', id).executeTakeFirst(),
    );
    if (!r) return 'lost';
    if (this.runner !== null && r.runner !== this.runner) return 'lost';
    return r.state === 'cancelling' ? 'cancel' : 'run';
  }

  /**
   * Takes the oldest task that waits for a replica (put back by `takeOver`) for this one: it runs
   * here from now on. PostgreSQL picks it with `FOR UPDATE SKIP LOCKED`, so replicas claiming at
   * once each get another task and none waits on the others; SQLite runs one write at a time.
   * Undefined when none waits.
   */
  async claim(): Promise<{ task: Task; input: unknown } | undefined> {
    if (this.runner === null) return undefined;
    const runner = this.runner;
    const now = this.now();
    const skipLocked = this.store.dialect === 'postgres' ? sql`for update skip locked` : sql``;
    const row = await storeQuery('claiming a task', async () => {
      const r = await sql<{ id: number | string; input: string }>`
        update tasks set runner = ${runner}, state = 'processing', started_at = coalesce(started_at, ${now})
        where id = (
          select id from tasks where state = 'queued' and runner is null and input is not null
          order by id limit 1 ${skipLocked}
        ) and state = 'queued' and runner is null
        returning id, input`.execute(this.store.db);
      return r.rows[0];
    });
    if (!row) return undefined;
    const id = Number(row.id);
    await this.changed(id);
    return { task: await this.get(id), input: JSON.parse(row.input) as unknown };
  }

  /**
   * The tasks no live replica runs: every task that was queued, processing or cancelling and
   * whose runner is not in `live` (all of them when `live` is not given: a platform restarted
   * alone). One that can run again elsewhere (it has its input, and no cancel was asked) is put
   * back in the queue with its deployment's lock kept, for a replica to `claim` and resume;
   * any other ends in `error` with ANODYNE_E_REPLICA_LOST and releases its lock (the next deploy
   * converges its deployment). Two replicas doing it at once handle each task once: each step is
   * conditional on the task being open and on the runner it had.
   */
  async takeOver(live?: readonly string[]): Promise<{ ended: Task[]; queued: Task[] }> {
    const open = await storeQuery('recovering tasks', () =>
      this.store.db.selectFrom('tasks').select(['id', 'runner', 'state', 'input']).where('state', 'in', OPEN).execute(),
    );
    const ended: Task[] = [];
    const queued: Task[] = [];
    for (const r of open) {
      if (r.runner === null && r.input !== null && r.state === 'queued') continue; // already waiting for a replica
      if (live && r.runner !== null && live.includes(r.runner)) continue;
      const id = Number(r.id);
      if (r.input !== null && r.state !== 'cancelling') {
        if (!(await this.requeue(id, r.runner))) continue;
        await this.event(id, {
          stage: 'Taking over',
          state: 'info',
          message: `the replica that ran this task stopped (${r.runner ?? 'unknown'}); it waits for another replica, which resumes it`,
        });
        this.logger.warn({ task: id, runner: r.runner }, 'task queued again: the replica that ran it stopped');
        queued.push(await this.get(id));
        continue;
      }
      // A cancel was asked: it ends cancelled (its replica stopped it anyway), with the code that says how.
      const cancelled = r.state === 'cancelling';
      const error = new AnodyneError('ANODYNE_E_REPLICA_LOST', 'the platform restarted while this task ran (its replica stopped)');
      if (!(await this.finishOpen(id, error, cancelled ? 'cancelled' : 'error'))) continue;
      await this.event(id, {
        stage: 'Recovering',
        state: 'failed',
        message: cancelled
          ? 'the replica that ran this task stopped while it was being cancelled: it ends cancelled'
          : 'the platform restarted while this task ran (its replica stopped); the next deploy converges the deployment',
      });
      this.logger.warn({ task: id, runner: r.runner }, 'task ended: the replica that ran it stopped');
      ended.push(await this.get(id));
    }
    if (queued.length > 0) await this.store.signals.notify(QUEUE_CHANNEL, String(queued[0]!.id));
    return { ended, queued };
  }

  /** Puts an open task of runner `was` back in the queue (its lock stays), unless it changed meanwhile (false then). */
  private async requeue(id: number, was: string | null): Promise<boolean> {
    const r = await storeQuery('queueing a task again', () =>
      this.store.db
        .updateTable('tasks')
        .set({ state: 'queued', runner: null })
        .where('id', '=', id)
        .where('state', 'in', ['queued', 'processing'])
        .where((eb) => (was === null ? eb('runner', 'is', null) : eb('runner', '=', was)))
        .executeTakeFirst(),
    );
    return Number(r.numUpdatedRows) > 0;
  }

  /** Ends an open task in `error` and releases its lock, unless it has ended meanwhile (false then). */
  private async finishOpen(id: number, error: AnodyneError, state: 'error' | 'cancelled' = 'error'): Promise<boolean> {
    return storeQuery('ending a task', () =>
      this.store.db.transaction().execute(async (tx) => {
        const r = await tx
          .updateTable('tasks')
          .set({ state, finished_at: this.now(), error: JSON.stringify({ code: error.code, message: error.message }) })
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
