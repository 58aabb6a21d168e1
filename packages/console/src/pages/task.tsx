// A task, live: its events as they happen (server-sent events through the typed client), stage k/n, elapsed time and an estimate.
import { useEffect, useState } from 'preact/hooks';
import type { Task, TaskEvent } from '@anodyne/client/api';
import { ErrorNote, Page, Status, seconds, when, type Ctx } from '../ui.js';

const FINAL = ['done', 'error', 'cancelled'];

/** The median duration of earlier finished tasks of the same type: the basis of the estimate (as the CLI does). */
async function typical(ctx: Ctx, t: Task): Promise<number | undefined> {
  const ds = (await ctx.api.tasks({ limit: 100 }).catch((): Task[] => []))
    .filter((x) => x.id !== t.id && x.type === t.type && x.state === 'done' && x.started_at && x.finished_at)
    .map((x) => Date.parse(x.finished_at!) - Date.parse(x.started_at!))
    .sort((a, b) => a - b);
  return ds.length ? ds[Math.floor(ds.length / 2)] : undefined;
}

function availability(result: unknown): string | undefined {
  const a = (result as { availability?: { requests: number; failed: number; longest_gap_ms: number } } | null)?.availability;
  return a
    ? `API during the task: ${a.requests} requests, ${a.failed} failed, longest gap ${(a.longest_gap_ms / 1000).toFixed(1)} s`
    : undefined;
}

export function TaskPage({ ctx, id }: { ctx: Ctx; id: string }) {
  const [task, setTask] = useState<Task | undefined>(undefined);
  const [events, setEvents] = useState<TaskEvent[]>([]);
  const [error, setError] = useState<unknown>(undefined);
  const [estimate, setEstimate] = useState<number | undefined>(undefined);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const stop = new AbortController();
    setTask(undefined);
    setEvents([]);
    void (async () => {
      try {
        const first = await ctx.api.task(id);
        const { events: past, ...t } = first;
        setTask(t);
        setEvents(past);
        void typical(ctx, t).then(setEstimate);
        if (FINAL.includes(t.state)) return;
        await ctx.api.followTask(
          id,
          past.length ? past[past.length - 1]!.id : 0,
          { event: (e) => setEvents((es) => (es.some((x) => x.id === e.id) ? es : [...es, e])), done: (d) => setTask(d) },
          stop.signal,
        );
        setTask(await ctx.api.task(id));
      } catch (e) {
        if (!stop.signal.aborted) setError(e);
      }
    })();
    const tick = setInterval(() => setNow(Date.now()), 1000);
    return () => {
      stop.abort();
      clearInterval(tick);
    };
  }, [id]);
  const running = task && !FINAL.includes(task.state);
  const staged = events.filter((e) => e.stage !== 'Lifecycle');
  const current = staged[staged.length - 1];
  const started = task ? Date.parse(task.started_at ?? task.created_at) : now;
  const ended = task?.finished_at ? Date.parse(task.finished_at) : now;
  const elapsed = ended - started;
  const left = running && estimate !== undefined ? (estimate > elapsed ? `about ${seconds(estimate - elapsed)} left` : 'almost done') : '';
  // A cluster's deployment is named cluster-<name>.
  const cluster = task?.deployment?.startsWith('cluster-') ? task.deployment.slice('cluster-'.length) : undefined;
  return (
    <Page
      title={`Task ${id}`}
      actions={
        running ? (
          <button type="button" class="secondary" onClick={() => void ctx.api.cancelTask(id).then(setTask, setError)}>
            Cancel task
          </button>
        ) : null
      }
    >
      <ErrorNote error={error} />
      {task ? (
        <>
          <dl class="facts">
            <dt>What</dt>
            <dd>
              {task.type}: {task.description}
            </dd>
            {cluster ? (
              <>
                <dt>Cluster</dt>
                <dd>
                  <a href={`#/clusters/${encodeURIComponent(cluster)}`}>{cluster}</a>
                </dd>
              </>
            ) : null}
            <dt>State</dt>
            <dd>
              <Status text={task.state} />
            </dd>
            <dt>Started</dt>
            <dd>{when(task.started_at)}</dd>
          </dl>
          <div class="progress" role="status" aria-live="polite" aria-atomic="true">
            <p>
              <strong>{current ? current.stage : 'Waiting to start'}</strong>
              {current?.index && current.total ? ` · step ${current.index} of ${current.total}` : ''}
              {current?.instance ? ` · ${current.instance}` : ''} · {seconds(elapsed)} {running ? 'elapsed' : 'in all'}
              {left ? ` · ${left}` : ''}
            </p>
            {current?.index && current.total ? (
              <progress max={current.total} value={running ? current.index - 1 : current.total} aria-label={`${current.stage} progress`} />
            ) : null}
          </div>
          {task.error ? (
            <p class="error" role="alert">
              {task.error.code}: {task.error.message}
            </p>
          ) : null}
          {availability(task.result) ? <p>{availability(task.result)}</p> : null}
        </>
      ) : (
        <p aria-busy="true">Loading…</p>
      )}
      <h2>Events</h2>
      <div class="table-wrap">
        <table class="events">
          <caption class="visually-hidden">Events of this task</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Stage</th>
              <th scope="col">Instance</th>
              <th scope="col">Step</th>
              <th scope="col">State</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => (
              <tr key={e.id}>
                <td>{new Date(e.at).toLocaleTimeString()}</td>
                <td>{e.stage}</td>
                <td>{e.instance ?? ''}</td>
                <td>{e.index && e.total ? `${e.index}/${e.total}` : ''}</td>
                <td>
                  <Status text={e.state} />
                </td>
                <td>{e.message ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Page>
  );
}
