// The platform's HTTPS API: the Fastify server, its hooks (authentication, audit, metrics, errors) and the route plugins.
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { NotAllowedError, UnauthenticatedError, type Clock, type Logger } from '@anodyne/common';
import { RateLimits, type AuditLog, type Store } from '@anodyne/store';
import type { Identity, Principal } from '@anodyne/identity';
import type { ClusterService } from '@anodyne/clusters';
import type { Director } from '@anodyne/director';
import { acceptProxyProtocol } from './proxy-protocol.js';
import { errorBody } from './errors.js';
import { brokerRoutes } from './broker.js';
import { Metrics, type PlatformGauges } from './metrics.js';
import { platformRoutes, type PlatformRoutesOptions } from './routes/platform.js';
import { identityRoutes } from './routes/identity.js';
import { clusterRoutes } from './routes/clusters.js';
import { taskRoutes } from './routes/tasks.js';
import { backupRoutes } from './routes/backups.js';
import { repairRoutes } from './routes/repair.js';
import { consoleRoutes } from './routes/console.js';
import { registryRoutes } from './routes/registry.js';
import type { RegistryService } from '@anodyne/registry';
import type { Api } from './routes/kit.js';

export interface ServerOptions {
  identity: Identity;
  clusters: ClusterService;
  director: Director;
  store: Store;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  tls: { cert: string; key: string };
  /** Load balancers whose connections start with a PROXY protocol header naming the client (server.proxyProtocolFrom). */
  proxyProtocolFrom?: string[];
  /** The URL clients use (the issuer's URL too) and the CA that signed the serving certificate. */
  apiUrl: string;
  caPem: string;
  bodyLimit?: number;
  /** Token requests per client address per minute. */
  tokenRateLimit?: number;
  /** The Open Service Broker's own credentials (HTTP basic on /v2). */
  brokerCredentials: () => Promise<{ username: string; password: string }>;
  /** What /metrics shows of the platform besides the API itself. */
  gauges?: PlatformGauges;
  /** The web console's built files, served under /console. */
  consoleDir?: string;
  /** The image registry (its token endpoint and management routes), when the platform runs one. */
  registry?: { service: RegistryService; realm: string };
  /** The platform's replicas on its database and which one leads (`GET /v1/platform/replicas`). */
  replicas?: PlatformRoutesOptions['replicas'];
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
  if (o.proxyProtocolFrom && o.proxyProtocolFrom.length > 0)
    acceptProxyProtocol(app.server, { from: o.proxyProtocolFrom, logger: o.logger });
  const metrics = new Metrics(o.gauges);
  o.director.onTaskEnd((t) => metrics.taskEnded(t.type, t.state, t.seconds));

  app.decorateRequest('principal', null);
  const routes: FastifyInstance['anodyneRoutes'] = [];
  app.decorate('anodyneRoutes', routes);
  app.addHook('onRoute', (r) => {
    for (const m of [r.method].flat())
      if (m !== 'HEAD' && !r.url.startsWith('/documentation')) routes.push({ method: m, url: r.url, scopes: r.config?.scopes });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Anodyne API', version: '1', description: 'Kubernetes clusters as a service (PKS-compatible /v1).' },
      servers: [{ url: o.apiUrl }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          brokerBasic: { type: 'http', scheme: 'basic' },
        },
      },
    },
  });

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    const fe = err as { validation?: unknown; statusCode?: number; code?: string; message?: string; validationContext?: string };
    let mapped = errorBody(err);
    if (fe.validation) {
      mapped = {
        status: 400,
        body: {
          code: 'ANODYNE_E_INVALID_INPUT',
          message: `${fe.validationContext ?? 'request'}: ${fe.message ?? 'invalid'}`,
          details: { validation: fe.validation },
        },
      };
    } else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      mapped = { status: 413, body: { code: 'ANODYNE_E_BODY_TOO_LARGE', message: 'the request body is too large', details: {} } };
    } else if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      mapped = {
        status: 415,
        body: { code: 'ANODYNE_E_UNSUPPORTED_MEDIA_TYPE', message: fe.message ?? 'unsupported content type', details: {} },
      };
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
    if (!re)
      patterns.set(
        url,
        (re = new RegExp(
          `^${url
            .split('/')
            .map((seg) => (seg.startsWith(':') ? '[^/]+' : seg === '*' ? '.*' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
            .join('/')}$`,
        )),
      );
    return re;
  };
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0] ?? '/';
    const allow = [...new Set(routes.filter((r) => pattern(r.url).test(path)).map((r) => r.method))];
    if (allow.includes('GET')) allow.push('HEAD');
    if (allow.length > 0) {
      void reply
        .status(405)
        .header('allow', allow.join(', '))
        .send({
          code: 'ANODYNE_E_METHOD_NOT_ALLOWED',
          message: `${req.method} is not allowed on ${path}; allowed: ${allow.join(', ')}`,
          details: { allow },
        });
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
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `this call needs one of the scopes ${scopes.join(', ')}`, {
        details: { required: scopes },
      });
    }
    req.principal = p;
  });

  // An access log line and metrics for every request; audit for every mutating call. The line names
  // the route pattern and the path's parameters, never headers, query strings or bodies.
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.observe(req.method, route, reply.statusCode, reply.elapsedTime);
    o.logger.info(
      {
        method: req.method,
        route,
        params: req.params,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
        actor: req.principal?.name,
      },
      'request',
    );
    if (req.method === 'GET' || req.method === 'HEAD') return;
    const action = req.routeOptions.config.audit ?? `${req.method} ${route}`;
    const params = req.params as Record<string, string> | undefined;
    const status = reply.statusCode;
    const body = req.body as Record<string, unknown> | undefined;
    const actor =
      req.principal?.name ??
      (route.startsWith('/v2/') ? 'osb-broker' : undefined) ??
      ((action === 'token.issue' || action === 'login') && typeof body?.['username'] === 'string'
        ? body['username']
        : typeof body?.['client_id'] === 'string'
          ? body['client_id']
          : 'anonymous');
    await o.audit
      .record({
        actor,
        action,
        target: params?.['name'] ?? params?.['id'] ?? params?.['username'] ?? params?.['owner'] ?? '',
        result: status < 400 ? 'ok' : status === 401 || status === 403 ? 'denied' : 'error',
        details: { status, ip: req.ip },
      })
      .catch((err: unknown) => o.logger.warn({ err: (err as Error).message }, 'audit record failed'));
  });

  // The routes, one plugin per resource; each gets its request types from its TypeBox schemas.
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  const plugin =
    <T>(routes: (scope: Api, options: T) => void | Promise<void>, options: T) =>
    async (scope: Api) =>
      routes(scope, options);
  await api.register(
    plugin(platformRoutes, {
      store: o.store,
      audit: o.audit,
      metrics,
      openapi: () => app.swagger(),
      ...(o.replicas ? { replicas: o.replicas } : {}),
    }),
  );
  await api.register(
    plugin(identityRoutes, {
      identity: o.identity,
      clusters: o.clusters,
      audit: o.audit,
      clock: o.clock,
      tokenRateLimit: o.tokenRateLimit ?? 60,
      rateLimits: new RateLimits(o.store, o.clock),
    }),
  );
  await api.register(plugin(clusterRoutes, { clusters: o.clusters, audit: o.audit, apiUrl: o.apiUrl }));
  await api.register(plugin(taskRoutes, { clusters: o.clusters }));
  await api.register(plugin(backupRoutes, { clusters: o.clusters }));
  await api.register(plugin(repairRoutes, { clusters: o.clusters }));
  if (o.registry) await api.register(plugin(registryRoutes, { registry: o.registry.service, realm: o.registry.realm, caPem: o.caPem }));
  await api.register(plugin(consoleRoutes, { ...(o.consoleDir ? { dir: o.consoleDir } : {}) }));
  await api.register(
    plugin(brokerRoutes, {
      clusters: o.clusters,
      director: o.director,
      credentials: o.brokerCredentials,
      apiUrl: o.apiUrl,
      audit: o.audit,
    }),
  );

  await app.ready();
  return app;
}
