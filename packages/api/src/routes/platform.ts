// Routes about the platform itself: liveness, Prometheus metrics, this OpenAPI document and the audit log.
import { Type, type Static } from '@sinclair/typebox';
import type { AuditLog, Store } from '@anodyne/store';
import { ADMIN_SCOPES } from '@anodyne/clusters';
import { schemas as S } from '@anodyne/client';
import type { Metrics } from '../metrics.js';

/** Audit actions that are alerts (the /v1/events feed). */
const ALERT_PREFIX = 'alert.';
import { auth, doc, ok, type Api } from './kit.js';

export interface PlatformRoutesOptions {
  store: Store;
  audit: AuditLog;
  metrics: Metrics;
  /** The whole server's OpenAPI document (the root instance knows every route). */
  openapi: () => object;
  /** The platform's replicas on its database and which one leads. */
  replicas?: () => Promise<Static<typeof S.PlatformReplicas>>;
}

export function platformRoutes(app: Api, o: PlatformRoutesOptions): void {
  app.get(
    '/healthz',
    { schema: { ...doc('Liveness and store reachability', ['platform'], false), response: ok({ 200: S.Health }) } },
    async () => {
      await o.store.ping();
      return { status: 'ok' as const };
    },
  );
  app.get(
    '/metrics',
    {
      schema: {
        ...doc('Prometheus metrics (text exposition format)', ['platform'], false),
        response: {
          200: { description: 'the metrics', content: { 'text/plain': { schema: Type.String() } } },
          '4xx': S.ErrorBody,
          '5xx': S.ErrorBody,
        },
      },
    },
    async (_req, reply) => reply.type(o.metrics.contentType).send(await o.metrics.render()),
  );
  app.get(
    '/openapi.json',
    { schema: { ...doc('This document', ['platform'], false), response: ok({ 200: Type.Record(Type.String(), Type.Unknown()) }) } },
    () => o.openapi() as Record<string, unknown>,
  );
  app.get(
    '/v1/events',
    {
      config: auth(ADMIN_SCOPES),
      schema: {
        ...doc(
          'Alerts, newest first: certificates about to expire, instances lost, meltdowns, failed tasks (each also in the audit log)',
          ['platform'],
          true,
        ),
        querystring: S.PlatformEventsQuery,
        response: ok({ 200: Type.Array(S.PlatformEvent) }),
      },
    },
    async (req) =>
      (
        await o.audit.list({
          actionPrefix: ALERT_PREFIX,
          ...(req.query.after !== undefined ? { afterId: req.query.after } : {}),
          limit: req.query.limit ?? 100,
        })
      ).map((e) => ({ id: e.id, at: e.at, kind: e.action.slice(ALERT_PREFIX.length), target: e.target, details: e.details })),
  );
  const replicas = o.replicas;
  if (replicas)
    app.get(
      '/v1/platform/replicas',
      {
        config: auth(ADMIN_SCOPES),
        schema: {
          ...doc("The platform's replicas alive on its database, and the leader's lease", ['platform'], true),
          response: ok({ 200: S.PlatformReplicas }),
        },
      },
      () => replicas(),
    );
  app.get(
    '/v1/audit',
    {
      config: auth(ADMIN_SCOPES),
      schema: { ...doc('The audit log', ['platform'], true), querystring: S.AuditQuery, response: ok({ 200: Type.Array(S.AuditEntry) }) },
    },
    async (req) => {
      const q = req.query;
      return o.audit.list({ ...(q.actor ? { actor: q.actor } : {}), ...(q.action ? { action: q.action } : {}), limit: q.limit ?? 100 });
    },
  );
}
