import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { AnodyneError } from '@anodyne/common';
import type { ClusterService } from '@anodyne/clusters';
import type { Director } from '@anodyne/director';

/**
 * Open Service Broker API v2.17 at /v2: one service (Kubernetes clusters) whose plans are the
 * platform's plans; asynchronous provision, update and deprovision with last_operation;
 * bindings are revocable service-account kubeconfigs. Its own credentials (HTTP basic).
 */
export interface BrokerOptions {
  clusters: ClusterService;
  director: Director;
  credentials: () => Promise<{ username: string; password: string }>;
}

export const BROKER_OWNER = 'osb-broker';
const SERVICE_ID = '5b4c6f1e-7d2a-4e0b-9a55-0d0a1c3e9f21';
const planId = (name: string) => {
  const h = createHash('sha256').update(`anodyne-plan-${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
};
/** Instance ids (GUIDs) map to cluster names: `osb-` and the id's hex digits. */
export const clusterNameFor = (instanceId: string) => `osb-${instanceId.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 36)}`;

const osbError = (reply: FastifyReply, status: number, error: string | undefined, description: string) =>
  reply.status(status).send({ ...(error ? { error } : {}), description });

const Guid = Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' });

export function registerBroker(app: FastifyInstance, o: BrokerOptions): void {
  const authorise = async (req: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    const version = String(req.headers['x-broker-api-version'] ?? '');
    const [major, minor] = version.split('.').map(Number);
    if (major !== 2 || (minor ?? 0) < 13) {
      await osbError(reply, 412, undefined, `X-Broker-API-Version 2.13 or later is required, got ${version || 'none'}`);
      return false;
    }
    const h = req.headers.authorization ?? '';
    const expected = await o.credentials();
    const given = /^basic /i.test(h) ? Buffer.from(h.slice(6), 'base64').toString() : '';
    const want = `${expected.username}:${expected.password}`;
    const a = createHash('sha256').update(given).digest();
    const b = createHash('sha256').update(want).digest();
    if (!timingSafeEqual(a, b)) {
      await reply.status(401).header('www-authenticate', 'Basic realm="anodyne-broker"').send({ description: 'bad broker credentials' });
      return false;
    }
    return true;
  };

  const schema = (summary: string, extra: Record<string, unknown> = {}) => ({ summary, tags: ['open service broker'], security: [{ brokerBasic: [] }], ...extra });
  const instance = Type.Object({ instance_id: Guid });
  const binding = Type.Object({ instance_id: Guid, binding_id: Guid });
  const async = Type.Object({ accepts_incomplete: Type.Optional(Type.Boolean()), service_id: Type.Optional(Type.String()), plan_id: Type.Optional(Type.String()), operation: Type.Optional(Type.String()) });

  const clusterOf = async (instanceId: string) => o.clusters.get(clusterNameFor(instanceId)).catch((err: unknown) => {
    if (err instanceof AnodyneError && err.code === 'ANODYNE_E_CLUSTER_NOT_FOUND') return undefined;
    throw err;
  });

  app.get('/v2/catalog', { schema: schema('The service catalog') }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    return {
      services: [{
        id: SERVICE_ID, name: 'anodyne-kubernetes', description: 'Upstream Kubernetes clusters on demand', bindable: true, plan_updateable: false, instances_retrievable: true, bindings_retrievable: false,
        tags: ['kubernetes'], metadata: { displayName: 'Anodyne Kubernetes' },
        plans: o.clusters.plans.map((p) => ({
          id: planId(p.name), name: p.name, description: p.description, free: true, bindable: true,
          schemas: { service_instance: { create: { parameters: { $schema: 'http://json-schema.org/draft-04/schema#', type: 'object', properties: { workers: { type: 'integer', minimum: 0, maximum: p.maxWorkers } }, additionalProperties: false } }, update: { parameters: { $schema: 'http://json-schema.org/draft-04/schema#', type: 'object', properties: { workers: { type: 'integer', minimum: 0, maximum: p.maxWorkers } }, additionalProperties: false } } } },
        })),
      }],
    };
  });

  app.put('/v2/service_instances/:instance_id', { schema: schema('Provision a cluster', { params: instance, querystring: async, body: Type.Object({ service_id: Type.String(), plan_id: Type.String(), parameters: Type.Optional(Type.Object({ workers: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false })), context: Type.Optional(Type.Unknown()), organization_guid: Type.Optional(Type.String()), space_guid: Type.Optional(Type.String()) }) }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    const { instance_id: iid } = req.params as { instance_id: string };
    const q = req.query as { accepts_incomplete?: boolean };
    if (!q.accepts_incomplete) return osbError(reply, 422, 'AsyncRequired', 'this broker provisions asynchronously; set accepts_incomplete=true');
    const b = req.body as { service_id: string; plan_id: string; parameters?: { workers?: number } };
    const plan = o.clusters.plans.find((p) => planId(p.name) === b.plan_id);
    if (b.service_id !== SERVICE_ID || !plan) return osbError(reply, 400, undefined, 'unknown service_id or plan_id');
    const existing = await clusterOf(iid);
    if (existing) {
      const same = existing.plan_name === plan.name && (b.parameters?.workers === undefined || b.parameters.workers === existing.parameters.kubernetes_worker_instances);
      if (!same) return osbError(reply, 409, undefined, `instance ${iid} exists with other attributes`);
      return reply.status(existing.last_action_state === 'succeeded' ? 200 : 202).send(existing.last_action_state === 'succeeded' ? { dashboard_url: undefined } : { operation: `task-${existing.last_task_id}` });
    }
    const c = await o.clusters.create(BROKER_OWNER, { name: clusterNameFor(iid), plan_name: plan.name, ...(b.parameters?.workers !== undefined ? { parameters: { kubernetes_worker_instances: b.parameters.workers } } : {}) });
    return reply.status(202).send({ operation: `task-${c.last_task_id}` });
  });

  app.get('/v2/service_instances/:instance_id', { schema: schema('Fetch a service instance', { params: instance }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    const c = await clusterOf((req.params as { instance_id: string }).instance_id);
    if (!c) return osbError(reply, 404, undefined, 'no such instance');
    return { service_id: SERVICE_ID, plan_id: planId(c.plan_name), parameters: { workers: c.parameters.kubernetes_worker_instances } };
  });

  app.patch('/v2/service_instances/:instance_id', { schema: schema('Update a cluster (workers)', { params: instance, querystring: async, body: Type.Object({ service_id: Type.String(), plan_id: Type.Optional(Type.String()), parameters: Type.Optional(Type.Object({ workers: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false })), previous_values: Type.Optional(Type.Unknown()), context: Type.Optional(Type.Unknown()) }) }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    if (!(req.query as { accepts_incomplete?: boolean }).accepts_incomplete) return osbError(reply, 422, 'AsyncRequired', 'set accepts_incomplete=true');
    const { instance_id: iid } = req.params as { instance_id: string };
    const c = await clusterOf(iid);
    if (!c) return osbError(reply, 404, undefined, 'no such instance');
    const b = req.body as { plan_id?: string; parameters?: { workers?: number } };
    if (b.plan_id && b.plan_id !== planId(c.plan_name)) return osbError(reply, 400, undefined, 'plans cannot be changed');
    if (b.parameters?.workers === undefined) return reply.status(200).send({});
    const u = await o.clusters.update(c.name, { kubernetes_worker_instances: b.parameters.workers }, BROKER_OWNER);
    return reply.status(202).send({ operation: `task-${u.last_task_id}` });
  });

  app.get('/v2/service_instances/:instance_id/last_operation', { schema: schema('Poll the last operation', { params: instance, querystring: async }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    const { instance_id: iid } = req.params as { instance_id: string };
    const op = (req.query as { operation?: string }).operation;
    const c = await clusterOf(iid);
    if (!c) {
      // Deprovisioned: the record went when the delete task finished.
      const id = op?.startsWith('task-') ? Number(op.slice(5)) : NaN;
      const t = Number.isInteger(id) ? await o.director.tasks.get(id).catch(() => undefined) : undefined;
      if (t && t.type === 'delete' && t.state === 'done') return osbError(reply, 410, undefined, 'gone');
      return osbError(reply, 410, undefined, 'no such instance');
    }
    return { state: c.last_action_state, description: c.last_action_description };
  });

  app.delete('/v2/service_instances/:instance_id', { schema: schema('Deprovision a cluster', { params: instance, querystring: async }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    if (!(req.query as { accepts_incomplete?: boolean }).accepts_incomplete) return osbError(reply, 422, 'AsyncRequired', 'set accepts_incomplete=true');
    const c = await clusterOf((req.params as { instance_id: string }).instance_id);
    if (!c) return osbError(reply, 410, undefined, 'no such instance');
    const d = await o.clusters.delete(c.name, BROKER_OWNER);
    return reply.status(202).send({ operation: `task-${d.last_task_id}` });
  });

  app.put('/v2/service_instances/:instance_id/service_bindings/:binding_id', { schema: schema('Bind: a revocable kubeconfig', { params: binding, body: Type.Object({ service_id: Type.String(), plan_id: Type.String(), bind_resource: Type.Optional(Type.Unknown()), context: Type.Optional(Type.Unknown()), parameters: Type.Optional(Type.Object({}, { additionalProperties: false })) }) }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    const { instance_id: iid, binding_id: bid } = req.params as { instance_id: string; binding_id: string };
    const c = await clusterOf(iid);
    if (!c) return osbError(reply, 404, undefined, 'no such instance');
    if (c.last_action_state !== 'succeeded') return osbError(reply, 422, 'ConcurrencyError', 'the instance has an operation in progress');
    const id = bid.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 40);
    const kubeconfig = await o.clusters.serviceAccountKubeconfig(c.name, id);
    return reply.status(201).send({ credentials: { kubeconfig, server: `https://${c.kubernetes_master_ips[0]}:${c.parameters.kubernetes_master_port}` } });
  });

  app.delete('/v2/service_instances/:instance_id/service_bindings/:binding_id', { schema: schema('Unbind: revoke the credential', { params: binding, querystring: async }) }, async (req, reply) => {
    if (!(await authorise(req, reply))) return reply;
    const { instance_id: iid, binding_id: bid } = req.params as { instance_id: string; binding_id: string };
    const c = await clusterOf(iid);
    if (!c) return osbError(reply, 410, undefined, 'no such instance');
    const existed = await o.clusters.revokeServiceAccount(c.name, bid.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 40));
    return reply.status(existed ? 200 : 410).send({});
  });
}
