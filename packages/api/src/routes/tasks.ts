// Task routes: list, one task with its events, a live event stream (SSE) and cancellation; visibility is the clusters policy.
import { Type } from '@sinclair/typebox';
import { READ_SCOPES, WRITE_SCOPES, type ClusterService } from '@anodyne/clusters';
import { schemas as S } from '@anodyne/client';
import { auth, doc, ok, principal, type Api } from './kit.js';

const FINAL = ['done', 'error', 'cancelled'];

export function taskRoutes(app: Api, o: { clusters: ClusterService }): void {
  const c = o.clusters;
  const tags = ['tasks'];

  app.get(
    '/v1/tasks',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc('Tasks the caller may see', tags, true), querystring: S.TaskQuery, response: ok({ 200: Type.Array(S.Task) }) },
    },
    async (req) => c.tasks(principal(req), req.query),
  );
  app.get(
    '/v1/tasks/:id',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc('A task with its event log', tags, true), params: S.IdParams, response: ok({ 200: S.TaskWithEvents }) },
    },
    async (req) => {
      const t = await c.task(principal(req), req.params.id);
      return { ...t, events: await c.taskEvents(principal(req), t.id) };
    },
  );
  app.get(
    '/v1/tasks/:id/events',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc("A task's events; a live stream with Accept: text/event-stream", tags, true),
        params: S.IdParams,
        querystring: S.EventsQuery,
        response: ok({ 200: Type.Array(S.TaskEvent) }),
      },
    },
    async (req, reply) => {
      const who = principal(req);
      const t = await c.task(who, req.params.id);
      const after = req.query.after ?? 0;
      if (!(req.headers.accept ?? '').includes('text/event-stream')) return c.taskEvents(who, t.id, after);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      let last = after;
      let closed = false;
      // Told of the task's changes by whichever replica runs it (LISTEN/NOTIFY on PostgreSQL); read again at least every 2 s.
      const watch = await c.watchTask(who, t.id);
      req.raw.on('close', () => (closed = true));
      try {
        while (!closed) {
          for (const e of await c.taskEvents(who, t.id, last)) {
            res.write(`id: ${e.id}\nevent: task_event\ndata: ${JSON.stringify(e)}\n\n`);
            last = e.id;
          }
          const now = await c.task(who, t.id);
          if (FINAL.includes(now.state)) {
            res.write(`event: task_done\ndata: ${JSON.stringify(now)}\n\n`);
            break;
          }
          await watch.next(2000);
        }
      } finally {
        watch.stop();
      }
      res.end();
      return reply;
    },
  );
  app.put(
    '/v1/tasks/:id',
    {
      config: auth(WRITE_SCOPES, 'task.cancel'),
      schema: {
        ...doc('Cancel a task ({"state": "cancelled"})', tags, true),
        params: S.IdParams,
        body: S.CancelTask,
        response: ok({ 200: S.Task }),
      },
    },
    async (req) => c.cancelTask(principal(req), req.params.id),
  );
}
