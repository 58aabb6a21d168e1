// The Open Service Broker API (/v2) and the admin route that hands out its URL and credentials.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { Type, type TSchema } from '@sinclair/typebox';
import { AnodyneError, toAnodyneError } from '@anodyne/common';
import type { AuditLog } from '@anodyne/store';
import { SCOPES } from '@anodyne/identity';
import { ADMIN_SCOPES, type Actor, type ClusterService } from '@anodyne/clusters';
import type { Director } from '@anodyne/director';
import { schemas as S } from '@anodyne/client';
import { statusOf } from './errors.js';
import { auth, doc, ok, principal, type Api } from './routes/kit.js';

/**
 * Open Service Broker API v2.17 at /v2: one service (Kubernetes clusters) whose plans are the
 * platform's plans; asynchronous provision, update and deprovision with last_operation;
 * bindings are revocable service-account kubeconfigs. Its own credentials (HTTP basic).
 * In the spec's order: 412 without a supported X-Broker-API-Version and 401 without valid
 * credentials, both before the body is read; then validation (400); errors in the spec's shape
 * `{error?, description}`, with 422 ConcurrencyError while the instance has an operation running.
 */
export interface BrokerOptions {
  clusters: ClusterService;
  director: Director;
  credentials: () => Promise<{ username: string; password: string }>;
  apiUrl: string;
  audit: AuditLog;
}

export const BROKER_OWNER = 'osb-broker';
/** The broker acts for itself: it owns the clusters it provisions and manages only those. */
const BROKER: Actor = { name: BROKER_OWNER, scopes: [SCOPES.manage] };
const SERVICE_ID = '5b4c6f1e-7d2a-4e0b-9a55-0d0a1c3e9f21';
const planId = (name: string) => {
  const h = createHash('sha256').update(`anodyne-plan-${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
};
/** Instance ids (GUIDs) map to cluster names: `osb-` and the id's hex digits. */
export const clusterNameFor = (instanceId: string) =>
  `osb-${instanceId
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, 36)}`;

const osbError = (reply: FastifyReply, status: number, error: string | undefined, description: string) =>
  reply.status(status).send({ ...(error ? { error } : {}), description });

const Guid = Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' });

/** `GET /v1/broker` for admins, and the broker itself in its own encapsulated scope (its hooks and error handler). */
export async function brokerRoutes(app: Api, o: BrokerOptions): Promise<void> {
  app.get(
    '/v1/broker',
    {
      config: auth(ADMIN_SCOPES),
      schema: {
        ...doc("The Open Service Broker's URL and credentials", ['open service broker'], true),
        response: ok({ 200: S.BrokerInfo }),
      },
    },
    async (req) => {
      await o.audit.record({
        actor: principal(req).name,
        action: 'credential.read',
        target: 'open service broker credentials',
        result: 'ok',
      });
      return { url: `${o.apiUrl}/v2`, ...(await o.credentials()) };
    },
  );
  await app.register((scope: Api, _options, done) => {
    osbRoutes(scope, o);
    done();
  });
}

// The spec's error body; a 410 Gone of unbind and deprovision is `{}`.
const OsbError = Type.Object({ error: Type.Optional(Type.String()), description: Type.Optional(Type.String()) }, { $id: 'OsbError' });

function osbRoutes(app: Api, o: BrokerOptions): void {
  // Version, then credentials: before the body is parsed or validated (onRequest).
  app.addHook('onRequest', async (req, reply) => {
    const version = String(req.headers['x-broker-api-version'] ?? '');
    const [major, minor] = version.split('.').map(Number);
    if (major !== 2 || (minor ?? 0) < 13)
      return osbError(reply, 412, undefined, `X-Broker-API-Version 2.13 or later is required, got ${version || 'none'}`);
    const h = req.headers.authorization ?? '';
    const expected = await o.credentials();
    const given = /^basic /i.test(h) ? Buffer.from(h.slice(6), 'base64').toString() : '';
    const want = `${expected.username}:${expected.password}`;
    const a = createHash('sha256').update(given).digest();
    const b = createHash('sha256').update(want).digest();
    if (!timingSafeEqual(a, b))
      return reply.status(401).header('www-authenticate', 'Basic realm="anodyne-broker"').send({ description: 'bad broker credentials' });
    return undefined;
  });
  app.setErrorHandler((err: unknown, _req, reply) => {
    const fe = err as { validation?: unknown; validationContext?: string; message?: string; code?: string; statusCode?: number };
    if (fe.validation) return osbError(reply, 400, undefined, `${fe.validationContext ?? 'request'}: ${fe.message ?? 'invalid'}`);
    if (typeof fe.code === 'string' && fe.code.startsWith('FST_ERR_') && fe.statusCode && fe.statusCode < 500)
      return osbError(reply, fe.statusCode, undefined, fe.message ?? 'bad request');
    const e = toAnodyneError(err);
    if (e.code === 'ANODYNE_E_CLUSTER_BUSY') return osbError(reply, 422, 'ConcurrencyError', e.message);
    const status = statusOf(e);
    return osbError(reply, status, undefined, status >= 500 ? 'the broker failed; see the platform log' : e.message);
  });

  const doc = (summary: string) => ({ summary, tags: ['open service broker'], security: [{ brokerBasic: [] }] });
  const answers = <R extends Record<number, TSchema>>(r: R) => ({ ...r, '4xx': OsbError, '5xx': OsbError });
  const instance = Type.Object({ instance_id: Guid });
  const binding = Type.Object({ instance_id: Guid, binding_id: Guid });
  const async = Type.Object({
    accepts_incomplete: Type.Optional(Type.Boolean()),
    service_id: Type.Optional(Type.String()),
    plan_id: Type.Optional(Type.String()),
    operation: Type.Optional(Type.String()),
  });
  // Deprovision and unbind must name the service and plan (the spec's required query parameters).
  const named = Type.Object({
    accepts_incomplete: Type.Optional(Type.Boolean()),
    service_id: Type.String({ minLength: 1 }),
    plan_id: Type.String({ minLength: 1 }),
  });
  const workers = Type.Optional(Type.Object({ workers: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false }));
  const Operation = Type.Object({ operation: Type.Optional(Type.String()), dashboard_url: Type.Optional(Type.String()) });
  const Empty = Type.Object({});
  const Credentials = Type.Object({ credentials: Type.Object({ kubeconfig: Type.String(), server: Type.String() }) });

  const clusterOf = async (instanceId: string) =>
    o.clusters.get(BROKER, clusterNameFor(instanceId)).catch((err: unknown) => {
      if (err instanceof AnodyneError && err.code === 'ANODYNE_E_CLUSTER_NOT_FOUND') return undefined;
      throw err;
    });
  const busy = (c: { last_action_state: string }) => c.last_action_state === 'in progress';
  const bindingId = (bid: string) =>
    bid
      .toLowerCase()
      .replace(/[^a-z0-9]/g, '')
      .slice(0, 40);

  app.get(
    '/v2/catalog',
    { schema: { ...doc('The service catalog'), response: answers({ 200: Type.Object({ services: Type.Array(Type.Unknown()) }) }) } },
    () => {
      return {
        services: [
          {
            id: SERVICE_ID,
            name: 'anodyne-kubernetes',
            description: 'Upstream Kubernetes clusters on demand',
            bindable: true,
            plan_updateable: false,
            instances_retrievable: true,
            bindings_retrievable: false,
            tags: ['kubernetes'],
            metadata: { displayName: 'Anodyne Kubernetes' },
            plans: o.clusters.plans.map((p) => ({
              id: planId(p.name),
              name: p.name,
              description: p.description,
              free: true,
              bindable: true,
              schemas: {
                service_instance: {
                  create: {
                    parameters: {
                      $schema: 'http://json-schema.org/draft-04/schema#',
                      type: 'object',
                      properties: { workers: { type: 'integer', minimum: 0, maximum: p.maxWorkers } },
                      additionalProperties: false,
                    },
                  },
                  update: {
                    parameters: {
                      $schema: 'http://json-schema.org/draft-04/schema#',
                      type: 'object',
                      properties: { workers: { type: 'integer', minimum: 0, maximum: p.maxWorkers } },
                      additionalProperties: false,
                    },
                  },
                },
              },
            })),
          },
        ],
      };
    },
  );

  app.put(
    '/v2/service_instances/:instance_id',
    {
      schema: {
        ...doc('Provision a cluster'),
        params: instance,
        querystring: async,
        body: Type.Object({
          service_id: Type.String(),
          plan_id: Type.String(),
          parameters: workers,
          context: Type.Optional(Type.Unknown()),
          organization_guid: Type.Optional(Type.String()),
          space_guid: Type.Optional(Type.String()),
        }),
        response: answers({ 200: Operation, 202: Operation }),
      },
    },
    async (req, reply) => {
      const { instance_id: iid } = req.params;
      const q = req.query;
      if (!q.accepts_incomplete)
        return osbError(reply, 422, 'AsyncRequired', 'this broker provisions asynchronously; set accepts_incomplete=true');
      const b = req.body;
      const plan = o.clusters.plans.find((p) => planId(p.name) === b.plan_id);
      if (b.service_id !== SERVICE_ID || !plan) return osbError(reply, 400, undefined, 'unknown service_id or plan_id');
      const existing = await clusterOf(iid);
      if (existing) {
        const same =
          existing.plan_name === plan.name &&
          (b.parameters?.workers === undefined || b.parameters.workers === existing.parameters.kubernetes_worker_instances);
        if (!same) return osbError(reply, 409, undefined, `instance ${iid} exists with other attributes`);
        return reply
          .status(existing.last_action_state === 'succeeded' ? 200 : 202)
          .send(existing.last_action_state === 'succeeded' ? { dashboard_url: undefined } : { operation: `task-${existing.last_task_id}` });
      }
      const c = await o.clusters.create(BROKER, {
        name: clusterNameFor(iid),
        plan_name: plan.name,
        ...(b.parameters?.workers !== undefined ? { parameters: { kubernetes_worker_instances: b.parameters.workers } } : {}),
      });
      return reply.status(202).send({ operation: `task-${c.last_task_id}` });
    },
  );

  app.get(
    '/v2/service_instances/:instance_id',
    {
      schema: {
        ...doc('Fetch a service instance'),
        params: instance,
        response: answers({
          200: Type.Object({ service_id: Type.String(), plan_id: Type.String(), parameters: Type.Object({ workers: Type.Integer() }) }),
        }),
      },
    },
    async (req, reply) => {
      const c = await clusterOf(req.params.instance_id);
      if (!c) return osbError(reply, 404, undefined, 'no such instance');
      return { service_id: SERVICE_ID, plan_id: planId(c.plan_name), parameters: { workers: c.parameters.kubernetes_worker_instances } };
    },
  );

  app.patch(
    '/v2/service_instances/:instance_id',
    {
      schema: {
        ...doc('Update a cluster (workers)'),
        params: instance,
        querystring: async,
        body: Type.Object({
          service_id: Type.String(),
          plan_id: Type.Optional(Type.String()),
          parameters: workers,
          previous_values: Type.Optional(Type.Unknown()),
          context: Type.Optional(Type.Unknown()),
        }),
        response: answers({ 200: Empty, 202: Operation }),
      },
    },
    async (req, reply) => {
      if (!req.query.accepts_incomplete) return osbError(reply, 422, 'AsyncRequired', 'set accepts_incomplete=true');
      const { instance_id: iid } = req.params;
      const c = await clusterOf(iid);
      if (!c) return osbError(reply, 404, undefined, 'no such instance');
      if (busy(c)) return osbError(reply, 422, 'ConcurrencyError', 'the instance has an operation in progress');
      const b = req.body;
      if (b.plan_id && b.plan_id !== planId(c.plan_name)) return osbError(reply, 400, undefined, 'plans cannot be changed');
      if (b.parameters?.workers === undefined) return reply.status(200).send({});
      const u = await o.clusters.resize(BROKER, c.name, { kubernetes_worker_instances: b.parameters.workers });
      return reply.status(202).send({ operation: `task-${u.last_task_id}` });
    },
  );

  app.get(
    '/v2/service_instances/:instance_id/last_operation',
    {
      schema: {
        ...doc('Poll the last operation'),
        params: instance,
        querystring: async,
        response: answers({
          200: Type.Object({
            state: Type.Union([Type.Literal('in progress'), Type.Literal('succeeded'), Type.Literal('failed')]),
            description: Type.String(),
          }),
        }),
      },
    },
    async (req, reply) => {
      const { instance_id: iid } = req.params;
      const op = req.query.operation;
      const c = await clusterOf(iid);
      if (!c) {
        // Deprovisioned: the record went when the delete task finished.
        const id = op?.startsWith('task-') ? Number(op.slice(5)) : NaN;
        const t = Number.isInteger(id) ? await o.director.tasks.get(id).catch(() => undefined) : undefined;
        if (t && t.type === 'delete' && t.state === 'done') return osbError(reply, 410, undefined, 'gone');
        return osbError(reply, 410, undefined, 'no such instance');
      }
      return { state: c.last_action_state, description: c.last_action_description };
    },
  );

  app.delete(
    '/v2/service_instances/:instance_id',
    { schema: { ...doc('Deprovision a cluster'), params: instance, querystring: named, response: answers({ 202: Operation }) } },
    async (req, reply) => {
      const q = req.query;
      if (q.service_id !== SERVICE_ID) return osbError(reply, 400, undefined, 'unknown service_id');
      if (!q.accepts_incomplete) return osbError(reply, 422, 'AsyncRequired', 'set accepts_incomplete=true');
      const c = await clusterOf(req.params.instance_id);
      if (!c) return osbError(reply, 410, undefined, 'no such instance');
      if (busy(c) && c.last_action !== 'DELETE')
        return osbError(reply, 422, 'ConcurrencyError', 'the instance has an operation in progress');
      if (busy(c)) return reply.status(202).send({ operation: `task-${c.last_task_id}` });
      const d = await o.clusters.delete(BROKER, c.name);
      return reply.status(202).send({ operation: `task-${d.last_task_id}` });
    },
  );

  app.put(
    '/v2/service_instances/:instance_id/service_bindings/:binding_id',
    {
      schema: {
        ...doc('Bind: a revocable kubeconfig (201 new, 200 the same request again, 409 another request on the same id)'),
        params: binding,
        body: Type.Object({
          service_id: Type.String(),
          plan_id: Type.String(),
          bind_resource: Type.Optional(Type.Unknown()),
          context: Type.Optional(Type.Unknown()),
          parameters: Type.Optional(Type.Object({}, { additionalProperties: false })),
        }),
        response: answers({ 200: Credentials, 201: Credentials }),
      },
    },
    async (req, reply) => {
      const { instance_id: iid, binding_id: bid } = req.params;
      const b = req.body;
      const c = await clusterOf(iid);
      if (!c) return osbError(reply, 404, undefined, 'no such instance');
      if (b.service_id !== SERVICE_ID || b.plan_id !== planId(c.plan_name))
        return osbError(reply, 400, undefined, 'service_id or plan_id does not match the instance');
      if (c.last_action_state !== 'succeeded') return osbError(reply, 422, 'ConcurrencyError', 'the instance has an operation in progress');
      // What identifies "the same binding": the attributes the platform asked with (not its context).
      const fingerprint = createHash('sha256')
        .update(JSON.stringify([b.service_id, b.plan_id, b.parameters ?? {}, b.bind_resource ?? {}]))
        .digest('hex');
      try {
        const { kubeconfig, created } = await o.clusters.binds.serviceAccountKubeconfig(c.name, bindingId(bid), fingerprint);
        return reply
          .status(created ? 201 : 200)
          .send({ credentials: { kubeconfig, server: `https://${c.kubernetes_master_ips[0]}:${c.parameters.kubernetes_master_port}` } });
      } catch (err) {
        if (err instanceof AnodyneError && err.code === 'ANODYNE_E_BINDING_CONFLICT') return osbError(reply, 409, undefined, err.message);
        throw err;
      }
    },
  );

  app.delete(
    '/v2/service_instances/:instance_id/service_bindings/:binding_id',
    { schema: { ...doc('Unbind: revoke the credential'), params: binding, querystring: named, response: answers({ 200: Empty }) } },
    async (req, reply) => {
      const { instance_id: iid, binding_id: bid } = req.params;
      if (req.query.service_id !== SERVICE_ID) return osbError(reply, 400, undefined, 'unknown service_id');
      const c = await clusterOf(iid);
      if (!c) return osbError(reply, 410, undefined, 'no such instance');
      if (busy(c)) return osbError(reply, 422, 'ConcurrencyError', 'the instance has an operation in progress');
      const existed = await o.clusters.binds.revokeServiceAccount(c.name, bindingId(bid));
      return reply.status(existed ? 200 : 410).send({});
    },
  );
}
