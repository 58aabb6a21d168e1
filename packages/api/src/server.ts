import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { Type, type TSchema } from '@sinclair/typebox';
import { NotAllowedError, NotFoundError, QuotaError, UnauthenticatedError, type Clock, type Logger } from '@anodyne/common';
import type { AuditLog, Store } from '@anodyne/store';
import { SCOPES, type Identity, type Principal } from '@anodyne/identity';
import type { ClusterService } from '@anodyne/clusters';
import type { Director, Task } from '@anodyne/director';
import { errorBody } from './errors.js';
import { registerBroker } from './broker.js';
import { Metrics } from './metrics.js';
import { schemas as S } from '@anodyne/client';

export interface ServerOptions {
  identity: Identity;
  clusters: ClusterService;
  director: Director;
  store: Store;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  tls: { cert: string; key: string };
  /** The URL clients use (the issuer's URL too) and the CA that signed the serving certificate. */
  apiUrl: string;
  caPem: string;
  bodyLimit?: number;
  /** Token requests per client address per minute. */
  tokenRateLimit?: number;
  /** The Open Service Broker's own credentials (HTTP basic on /v2). */
  brokerCredentials: () => Promise<{ username: string; password: string }>;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route this server answers (method, URL, scopes), for the OpenAPI and authorisation tests. */
    anodyneRoutes: { method: string; url: string; scopes: string[] | undefined }[];
  }
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** Scopes of which the caller needs one; absent: no token needed; []: any valid token. */
    scopes?: string[];
    audit?: string;
  }
}

const READ = [SCOPES.admin, SCOPES.adminRead, SCOPES.manage];
const WRITE = [SCOPES.admin, SCOPES.manage];
const ADMIN = [SCOPES.admin];
const FINAL = ['done', 'error', 'cancelled'];

const isAdmin = (p: Principal) => p.scopes.includes(SCOPES.admin);
const canReadAll = (p: Principal) => isAdmin(p) || p.scopes.includes(SCOPES.adminRead);

function principal(req: FastifyRequest): Principal {
  if (!req.principal) throw new UnauthenticatedError('ANODYNE_E_TOKEN_MISSING', 'a bearer token is required');
  return req.principal;
}

/**
 * The platform's HTTPS API: identity routes, `/v1` (PKS-compatible), `/openapi.json`,
 * `/healthz` and `/metrics`. Translation only: the work is in identity and clusters.
 */
export async function buildServer(o: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    https: { cert: o.tls.cert, key: o.tls.key, minVersion: 'TLSv1.2' },
    bodyLimit: o.bodyLimit ?? 256 * 1024,
    logger: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    return503OnClosing: true,
    // The router's own refusals (a path segment over maxParamLength, a malformed URL) in the documented shape.
    frameworkErrors: (err, req, res) => {
      const reply = res as unknown as FastifyReply;
      const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
      const status = tooLong ? 414 : 400;
      const message = tooLong ? 'a path segment is too long' : 'the URL is not valid';
      if (req.url.startsWith('/v2/')) return void reply.status(status).send({ description: message });
      return void reply.status(status).send({ code: tooLong ? 'ANODYNE_E_URI_TOO_LONG' : 'ANODYNE_E_INVALID_INPUT', message, details: {} });
    },
  });
  const metrics = new Metrics();
  const tokenHits = new Map<string, { windowStart: number; count: number }>();
  const tokenLimit = o.tokenRateLimit ?? 60;

  app.decorateRequest('principal', null);
  const routes: FastifyInstance['anodyneRoutes'] = [];
  app.decorate('anodyneRoutes', routes);
  app.addHook('onRoute', (r) => {
    for (const m of [r.method].flat()) if (m !== 'HEAD' && !r.url.startsWith('/documentation')) routes.push({ method: m, url: r.url, scopes: (r.config)?.scopes });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Anodyne API', version: '1', description: 'Kubernetes clusters as a service (PKS-compatible /v1).' },
      servers: [{ url: o.apiUrl }],
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' }, brokerBasic: { type: 'http', scheme: 'basic' } } },
    },
  });

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    const fe = err as { validation?: unknown; statusCode?: number; code?: string; message?: string; validationContext?: string };
    let mapped = errorBody(err);
    if (fe.validation) {
      mapped = { status: 400, body: { code: 'ANODYNE_E_INVALID_INPUT', message: `${fe.validationContext ?? 'request'}: ${fe.message ?? 'invalid'}`, details: { validation: fe.validation } } };
    } else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      mapped = { status: 413, body: { code: 'ANODYNE_E_BODY_TOO_LARGE', message: 'the request body is too large', details: {} } };
    } else if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      mapped = { status: 415, body: { code: 'ANODYNE_E_UNSUPPORTED_MEDIA_TYPE', message: fe.message ?? 'unsupported content type', details: {} } };
    } else if (typeof fe.code === 'string' && fe.code.startsWith('FST_ERR_') && fe.statusCode && fe.statusCode < 500) {
      mapped = { status: fe.statusCode, body: { code: 'ANODYNE_E_INVALID_INPUT', message: fe.message ?? 'bad request', details: {} } };
    }
    if (mapped.status >= 500) o.logger.error({ err: (err as Error).message, route: req.routeOptions.url }, 'request failed');
    void reply.status(mapped.status).send(mapped.body);
  });
  // Every request that got through authentication, authorization and validation (/metrics).
  app.addHook('preHandler', (req, _reply, done) => {
    metrics.reached(req.method, req.routeOptions.url ?? req.url);
    done();
  });

  // A path that exists but not with this method: 405 with Allow; otherwise 404.
  const patterns = new Map<string, RegExp>();
  const pattern = (url: string) => {
    let re = patterns.get(url);
    if (!re) patterns.set(url, (re = new RegExp(`^${url.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg === '*' ? '.*' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`)));
    return re;
  };
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0] ?? '/';
    const allow = [...new Set(routes.filter((r) => pattern(r.url).test(path)).map((r) => r.method))];
    if (allow.includes('GET')) allow.push('HEAD');
    if (allow.length > 0) {
      void reply.status(405).header('allow', allow.join(', ')).send({ code: 'ANODYNE_E_METHOD_NOT_ALLOWED', message: `${req.method} is not allowed on ${path}; allowed: ${allow.join(', ')}`, details: { allow } });
      return;
    }
    void reply.status(404).send({ code: 'ANODYNE_E_ROUTE_NOT_FOUND', message: `no route ${req.method} ${path}`, details: {} });
  });

  // Authentication and scope checks, per route (config.scopes), before the body is even read.
  app.addHook('onRequest', async (req) => {
    const scopes = req.routeOptions.config.scopes;
    if (scopes === undefined) return;
    const h = req.headers.authorization;
    if (!h || !/^bearer /i.test(h)) throw new UnauthenticatedError('ANODYNE_E_TOKEN_MISSING', 'a bearer token is required');
    const p = await o.identity.verify(h.slice(7).trim());
    req.principal = p;
    if (scopes.length > 0 && !p.scopes.some((s) => scopes.includes(s))) {
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `this call needs one of the scopes ${scopes.join(', ')}`, { details: { required: scopes } });
    }
    req.principal = p;
  });

  // An access log line and metrics for every request; audit for every mutating call. The line names
  // the route pattern and the path's parameters, never headers, query strings or bodies.
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.observe(req.method, route, reply.statusCode, reply.elapsedTime);
    o.logger.info({ method: req.method, route, params: req.params, status: reply.statusCode, ms: Math.round(reply.elapsedTime), actor: req.principal?.name }, 'request');
    if (req.method === 'GET' || req.method === 'HEAD') return;
    const action = req.routeOptions.config.audit ?? `${req.method} ${route}`;
    const params = req.params as Record<string, string> | undefined;
    const status = reply.statusCode;
    const body = req.body as Record<string, unknown> | undefined;
    const actor = req.principal?.name ?? (route.startsWith('/v2/') ? 'osb-broker' : undefined) ?? (action === 'token.issue' && typeof body?.['username'] === 'string' ? body['username'] : typeof body?.['client_id'] === 'string' ? body['client_id'] : 'anonymous');
    await o.audit.record({
      actor, action, target: params?.['name'] ?? params?.['id'] ?? params?.['username'] ?? params?.['owner'] ?? '',
      result: status < 400 ? 'ok' : status === 401 || status === 403 ? 'denied' : 'error',
      details: { status, ip: req.ip },
    }).catch((err: unknown) => o.logger.warn({ err: (err as Error).message }, 'audit record failed'));
  });

  const route = <T extends TSchema | undefined>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, def: {
    summary: string; tags: string[]; scopes?: string[]; audit?: string;
    params?: TSchema; querystring?: TSchema; body?: T; response?: Record<number, TSchema>;
  }, handler: (req: FastifyRequest, reply: FastifyReply) => unknown) => {
    app.route({
      method, url,
      config: { ...(def.scopes !== undefined ? { scopes: def.scopes } : {}), ...(def.audit ? { audit: def.audit } : {}) },
      schema: {
        summary: def.summary, tags: def.tags,
        ...(def.scopes !== undefined ? { security: [{ bearer: [] }] } : {}),
        ...(def.params ? { params: def.params } : {}),
        ...(def.querystring ? { querystring: def.querystring } : {}),
        ...(def.body ? { body: def.body } : {}),
        response: { ...(def.response ?? {}), '4xx': S.ErrorBody, '5xx': S.ErrorBody },
      },
      handler: async (req, reply) => handler(req, reply),
    });
  };

  // ---------------------------------------------------------------- platform

  route('GET', '/healthz', { summary: 'Liveness and store reachability', tags: ['platform'], response: { 200: S.Health } }, async () => {
    await o.store.ping();
    return { status: 'ok' };
  });
  route('GET', '/metrics', { summary: 'Prometheus metrics', tags: ['platform'] }, async (_req, reply) => {
    return reply.type('text/plain; version=0.0.4').send(metrics.render());
  });
  route('GET', '/openapi.json', { summary: 'This document', tags: ['platform'] }, () => app.swagger());

  // ---------------------------------------------------------------- identity (UAA-compatible)

  route('POST', '/oauth/token', { summary: 'Issue a token (password, client_credentials, refresh_token grants)', tags: ['identity'], body: S.TokenRequest, audit: 'token.issue', response: { 200: S.TokenResponse } }, async (req, reply) => {
    const now = o.clock.nowMs();
    const hit = tokenHits.get(req.ip);
    if (!hit || now - hit.windowStart > 60_000) tokenHits.set(req.ip, { windowStart: now, count: 1 });
    else if (++hit.count > tokenLimit) throw new QuotaError('ANODYNE_E_RATE_LIMITED', `more than ${tokenLimit} token requests a minute from ${req.ip}`);
    const body = { ...(req.body as Record<string, string>) };
    const basic = req.headers.authorization;
    if (basic && /^basic /i.test(basic)) {
      const [id, secret] = Buffer.from(basic.slice(6), 'base64').toString().split(':');
      if (id) body['client_id'] = decodeURIComponent(id);
      if (secret !== undefined) body['client_secret'] = decodeURIComponent(secret);
    }
    const t = await o.identity.token(body);
    void reply.header('cache-control', 'no-store');
    return t;
  });
  route('GET', '/token_keys', { summary: 'Public signing keys (JWKS)', tags: ['identity'] }, () => o.identity.tokenKeys());
  route('GET', '/.well-known/openid-configuration', { summary: 'OIDC discovery', tags: ['identity'] }, () => o.identity.discovery());
  route('GET', '/userinfo', { summary: 'The caller', tags: ['identity'], scopes: [] }, async (req) => o.identity.userinfo(principal(req)));

  route('GET', '/v1/users', { summary: 'List users', tags: ['users'], scopes: ADMIN, response: { 200: Type.Array(S.User) } }, async () => o.identity.users());
  route('POST', '/v1/users', { summary: 'Create a user', tags: ['users'], scopes: ADMIN, body: S.CreateUser, audit: 'user.create', response: { 201: S.User } }, async (req, reply) => {
    const b = req.body as { username: string; password?: string; groups?: string[]; email?: string };
    return reply.status(201).send(await o.identity.createUser(b));
  });
  route('PUT', '/v1/users/:username', { summary: 'Set a user\'s groups (scopes) and/or reset their password', tags: ['users'], scopes: ADMIN, params: S.UserParams, body: S.UserGroups, audit: 'user.update', response: { 200: S.User } }, async (req) => {
    const username = (req.params as { username: string }).username;
    const b = req.body as { groups?: string[]; password?: string };
    if (b.password !== undefined) await o.identity.setPassword(username, b.password);
    return b.groups !== undefined ? o.identity.setGroups(username, b.groups) : o.identity.user(username);
  });
  route('POST', '/v1/token-keys', { summary: 'Rotate the token signing key now (tokens signed by the previous key stay valid)', tags: ['identity'], scopes: ADMIN, audit: 'identity.rotate-key', response: { 200: S.SigningKey } }, async () => {
    return { kid: await o.identity.rotateSigningKey(), rotated: true };
  });
  route('DELETE', '/v1/users/:username', { summary: 'Delete a user', tags: ['users'], scopes: ADMIN, params: S.UserParams, audit: 'user.delete' }, async (req, reply) => {
    const username = (req.params as { username: string }).username;
    await o.identity.deleteUser(username);
    // Their kubectl access ends with their tokens; their bindings go too, so a new user of the same name inherits nothing.
    const { unreachable } = await o.clusters.unbindEverywhere(username);
    if (unreachable.length > 0) await o.audit.record({ actor: principal(req).name, action: 'user.unbind', target: `${username} in ${unreachable.join(', ')}`, result: 'error' });
    return reply.status(204).send();
  });
  route('GET', '/v1/clients', { summary: 'List OAuth clients (no secrets)', tags: ['users'], scopes: ADMIN, response: { 200: Type.Array(S.OAuthClient) } }, async () => o.identity.clients());
  route('POST', '/v1/clients', { summary: 'Create an OAuth client', tags: ['users'], scopes: ADMIN, body: S.CreateClient, audit: 'client.create', response: { 201: S.CreatedClient } }, async (req, reply) => {
    const b = req.body as { client_id: string; client_secret?: string; scopes: string[]; grant_types: string[] };
    await o.identity.createClient({ clientId: b.client_id, ...(b.client_secret ? { secret: b.client_secret } : {}), scopes: b.scopes, grantTypes: b.grant_types });
    return reply.status(201).send({ client_id: b.client_id, scopes: b.scopes, grant_types: b.grant_types });
  });
  route('DELETE', '/v1/clients/:client_id', { summary: 'Delete an OAuth client', tags: ['users'], scopes: ADMIN, params: S.ClientParams, audit: 'client.delete' }, async (req, reply) => {
    await o.identity.deleteClient((req.params as { client_id: string }).client_id);
    return reply.status(204).send();
  });
  route('GET', '/v1/audit', { summary: 'The audit log', tags: ['platform'], scopes: ADMIN, querystring: S.AuditQuery, response: { 200: Type.Array(S.AuditEntry) } }, async (req) => {
    const q = req.query as { actor?: string; action?: string; limit?: number };
    return o.audit.list({ ...(q.actor ? { actor: q.actor } : {}), ...(q.action ? { action: q.action } : {}), limit: q.limit ?? 100 });
  });

  // ---------------------------------------------------------------- clusters (/v1, PKS field names)

  const visibleCluster = async (req: FastifyRequest, name: string, mutate: boolean) => {
    const p = principal(req);
    const owner = await o.clusters.ownerOf(name);
    const mine = owner === p.name;
    if (!mine && !canReadAll(p)) throw new NotFoundError('ANODYNE_E_CLUSTER_NOT_FOUND', `cluster ${name} not found`, { details: { name } });
    if (mutate && !isAdmin(p) && !(mine && p.scopes.includes(SCOPES.manage))) throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `changing cluster ${name} needs ${SCOPES.admin}, or ${SCOPES.manage} as its owner`);
    return p;
  };

  route('GET', '/v1/plans', { summary: 'Plans', tags: ['clusters'], scopes: READ, response: { 200: Type.Array(S.Plan) } }, () =>
    o.clusters.plans.map((p) => ({ name: p.name, description: p.description, masters: p.masters, default_workers: p.defaultWorkers, max_workers: p.maxWorkers, master_vm_type: p.masterVmType, worker_vm_type: p.workerVmType })));

  route('GET', '/v1/clusters', { summary: 'Clusters the caller may see', tags: ['clusters'], scopes: READ, response: { 200: Type.Array(S.Cluster) } }, async (req) => {
    const p = principal(req);
    return o.clusters.list(canReadAll(p) ? {} : { owner: p.name });
  });
  route('POST', '/v1/clusters', { summary: 'Create a cluster (asynchronous)', tags: ['clusters'], scopes: WRITE, body: S.CreateCluster, audit: 'cluster.create', response: { 202: S.Cluster } }, async (req, reply) => {
    const p = principal(req);
    return reply.status(202).send(await o.clusters.create(p.name, req.body as S.CreateClusterBody));
  });
  route('GET', '/v1/clusters/:name', { summary: 'One cluster', tags: ['clusters'], scopes: READ, params: S.NameParams, response: { 200: S.Cluster } }, async (req) => {
    const { name } = req.params as { name: string };
    await visibleCluster(req, name, false);
    return o.clusters.get(name);
  });
  route('PATCH', '/v1/clusters/:name', { summary: 'Resize a cluster (asynchronous)', tags: ['clusters'], scopes: WRITE, params: S.NameParams, body: S.UpdateCluster, audit: 'cluster.update', response: { 202: S.Cluster } }, async (req, reply) => {
    const { name } = req.params as { name: string };
    const p = await visibleCluster(req, name, true);
    return reply.status(202).send(await o.clusters.update(name, req.body as { kubernetes_worker_instances?: number }, p.name));
  });
  route('DELETE', '/v1/clusters/:name', { summary: 'Delete a cluster (asynchronous)', tags: ['clusters'], scopes: WRITE, params: S.NameParams, audit: 'cluster.delete', response: { 202: S.Cluster } }, async (req, reply) => {
    const { name } = req.params as { name: string };
    const p = await visibleCluster(req, name, true);
    return reply.status(202).send(await o.clusters.delete(name, p.name));
  });
  route('POST', '/v1/clusters/:name/binds', { summary: 'Bind the caller: RBAC binding and a kubeconfig that gets tokens from Anodyne', tags: ['clusters'], scopes: WRITE, params: S.NameParams, audit: 'cluster.bind', response: { 200: S.Kubeconfig } }, async (req) => {
    const { name } = req.params as { name: string };
    const p = await visibleCluster(req, name, true);
    if (!p.userName) throw new NotAllowedError('ANODYNE_E_NOT_ALLOWED', 'binds are for users; clients use the admin kubeconfig');
    return { kubeconfig: await o.clusters.bind(name, p.userName, { apiUrl: o.apiUrl, caPem: o.caPem }) };
  });
  route('POST', '/v1/clusters/:name/upgrade', { summary: 'Upgrade a cluster to the platform\'s current release and plan (asynchronous)', tags: ['clusters'], scopes: ADMIN, params: S.NameParams, audit: 'cluster.upgrade', response: { 202: S.Cluster } }, async (req, reply) => {
    const { name } = req.params as { name: string };
    return reply.status(202).send(await o.clusters.upgrade(name, principal(req).name));
  });
  route('GET', '/v1/clusters/:name/certificates', { summary: 'A cluster\'s certificates and their expiry', tags: ['clusters'], scopes: READ, params: S.NameParams, response: { 200: Type.Array(S.Certificate) } }, async (req) => {
    const { name } = req.params as { name: string };
    await visibleCluster(req, name, false);
    return o.clusters.certificates(name);
  });
  route('GET', '/v1/clusters/:name/vms', { summary: 'A cluster\'s VMs and their health (pending, running, failing, unresponsive, missing, stopped)', tags: ['clusters'], scopes: READ, params: S.NameParams, response: { 200: Type.Array(S.Vm) } }, async (req) => {
    const { name } = req.params as { name: string };
    await visibleCluster(req, name, false);
    return o.clusters.vms(name);
  });
  route('POST', '/v1/clusters/:name/rotate-certificates', { summary: 'New leaf certificates, rolled out (asynchronous)', tags: ['clusters'], scopes: WRITE, params: S.NameParams, audit: 'cluster.rotate_certificates', response: { 202: S.Cluster } }, async (req, reply) => {
    const { name } = req.params as { name: string };
    const p = await visibleCluster(req, name, true);
    return reply.status(202).send(await o.clusters.rotateCertificates(name, p.name));
  });
  route('GET', '/v1/clusters/:name/kubeconfig', { summary: 'The admin kubeconfig (client certificate, cluster-admin)', tags: ['clusters'], scopes: ADMIN, params: S.NameParams, response: { 200: S.Kubeconfig } }, async (req) => {
    const { name } = req.params as { name: string };
    await o.audit.record({ actor: principal(req).name, action: 'credential.read', target: `cluster ${name} admin kubeconfig`, result: 'ok' });
    return { kubeconfig: await o.clusters.adminKubeconfig(name) };
  });

  route('GET', '/v1/broker', { summary: 'The Open Service Broker\'s URL and credentials', tags: ['open service broker'], scopes: ADMIN, response: { 200: S.BrokerInfo } }, async (req) => {
    await o.audit.record({ actor: principal(req).name, action: 'credential.read', target: 'open service broker credentials', result: 'ok' });
    return { url: `${o.apiUrl}/v2`, ...(await o.brokerCredentials()) };
  });
  registerBroker(app, { clusters: o.clusters, director: o.director, credentials: o.brokerCredentials });

  // ---------------------------------------------------------------- tasks

  const visibleTask = async (req: FastifyRequest, id: number): Promise<Task> => {
    const p = principal(req);
    const t = await o.director.tasks.get(id);
    if (canReadAll(p) || t.owner === p.name) return t;
    // A task on the caller's own cluster is theirs to see, whoever started it (an admin's upgrade).
    const cluster = t.deployment?.startsWith('cluster-') ? t.deployment.slice('cluster-'.length) : undefined;
    const owner = cluster ? await o.clusters.ownerOf(cluster).catch(() => undefined) : undefined;
    if (owner !== p.name) throw new NotFoundError('ANODYNE_E_TASK_NOT_FOUND', `task ${id} not found`, { details: { id } });
    return t;
  };
  route('GET', '/v1/tasks', { summary: 'Tasks the caller may see', tags: ['tasks'], scopes: READ, querystring: S.TaskQuery, response: { 200: Type.Array(S.Task) } }, async (req) => {
    const p = principal(req);
    const q = req.query as { cluster?: string; limit?: number };
    const own = canReadAll(p) ? {} : { owner: p.name, orDeployments: (await o.clusters.list({ owner: p.name })).map((c) => `cluster-${c.name}`) };
    return o.director.tasks.list({ ...own, ...(q.cluster ? { deployment: `cluster-${q.cluster}` } : {}), limit: q.limit ?? 50 });
  });
  route('GET', '/v1/tasks/:id', { summary: 'A task with its event log', tags: ['tasks'], scopes: READ, params: S.IdParams, response: { 200: S.TaskWithEvents } }, async (req) => {
    const t = await visibleTask(req, (req.params as { id: number }).id);
    return { ...t, events: await o.director.tasks.events(t.id) };
  });
  route('GET', '/v1/tasks/:id/events', { summary: 'A task\'s events; a live stream with Accept: text/event-stream', tags: ['tasks'], scopes: READ, params: S.IdParams, querystring: S.EventsQuery }, async (req, reply) => {
    const t = await visibleTask(req, (req.params as { id: number }).id);
    const after = (req.query as { after?: number }).after ?? 0;
    if (!(req.headers.accept ?? '').includes('text/event-stream')) return o.director.tasks.events(t.id, after);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    let last = after;
    let closed = false;
    req.raw.on('close', () => (closed = true));
    while (!closed) {
      for (const e of await o.director.tasks.events(t.id, last)) {
        res.write(`id: ${e.id}\nevent: task_event\ndata: ${JSON.stringify(e)}\n\n`);
        last = e.id;
      }
      const now = await o.director.tasks.get(t.id);
      if (FINAL.includes(now.state)) {
        res.write(`event: task_done\ndata: ${JSON.stringify(now)}\n\n`);
        break;
      }
      await o.clock.sleep(300);
    }
    res.end();
    return reply;
  });
  route('PUT', '/v1/tasks/:id', { summary: 'Cancel a task ({"state": "cancelled"})', tags: ['tasks'], scopes: WRITE, params: S.IdParams, body: S.CancelTask, audit: 'task.cancel', response: { 200: S.Task } }, async (req) => {
    const p = principal(req);
    const t = await visibleTask(req, (req.params as { id: number }).id);
    if (!isAdmin(p) && t.owner !== p.name) throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', 'only an admin or the task\'s owner may cancel it');
    return o.director.tasks.requestCancel(t.id);
  });

  // ---------------------------------------------------------------- network profiles

  route('GET', '/v1/network-profiles', { summary: 'Network profiles', tags: ['clusters'], scopes: READ, response: { 200: Type.Array(S.NetworkProfile) } }, async () => o.clusters.networkProfiles());
  route('POST', '/v1/network-profiles', { summary: 'Create a network profile', tags: ['clusters'], scopes: ADMIN, body: S.CreateNetworkProfile, audit: 'network_profile.create', response: { 201: S.NetworkProfile } }, async (req, reply) =>
    reply.status(201).send(await o.clusters.createNetworkProfile(req.body as { name: string; description?: string; pod_cidr: string; service_cidr: string })));
  route('DELETE', '/v1/network-profiles/:name', { summary: 'Delete an unused network profile', tags: ['clusters'], scopes: ADMIN, params: S.NameParams, audit: 'network_profile.delete' }, async (req, reply) => {
    await o.clusters.deleteNetworkProfile((req.params as { name: string }).name);
    return reply.status(204).send();
  });

  // ---------------------------------------------------------------- quotas and usages

  const selfOrReader = (req: FastifyRequest, owner: string) => {
    const p = principal(req);
    if (p.name !== owner && !canReadAll(p)) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `no quota for ${owner} visible to you`);
  };
  route('GET', '/v1/quotas/:owner', { summary: 'An owner\'s quota', tags: ['quotas'], scopes: READ, params: S.OwnerParams, response: { 200: S.Quota } }, async (req) => {
    const { owner } = req.params as { owner: string };
    selfOrReader(req, owner);
    return o.clusters.quotaOf(owner);
  });
  route('PUT', '/v1/quotas/:owner', { summary: 'Set an owner\'s quota', tags: ['quotas'], scopes: ADMIN, params: S.OwnerParams, body: S.QuotaBody, audit: 'quota.set', response: { 200: S.Quota } }, async (req) => {
    const { owner } = req.params as { owner: string };
    const b = req.body as { max_clusters: number; max_workers: number };
    await o.clusters.setQuota(owner, b.max_clusters, b.max_workers);
    return o.clusters.quotaOf(owner);
  });
  route('GET', '/v1/usages/:owner', { summary: 'An owner\'s usage', tags: ['quotas'], scopes: READ, params: S.OwnerParams, response: { 200: S.Usage } }, async (req) => {
    const { owner } = req.params as { owner: string };
    selfOrReader(req, owner);
    return o.clusters.usage(owner);
  });

  await app.ready();
  return app;
}
