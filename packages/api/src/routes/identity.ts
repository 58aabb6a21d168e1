// Identity routes (UAA-compatible): tokens, signing keys, OIDC discovery, the caller, users and OAuth clients.
import { Type } from '@sinclair/typebox';
import { QuotaError, type Clock } from '@anodyne/common';
import type { AuditLog } from '@anodyne/store';
import type { Identity } from '@anodyne/identity';
import { ADMIN_SCOPES, type ClusterService } from '@anodyne/clusters';
import { schemas as S } from '@anodyne/client';
import { auth, doc, ok, principal, type Api } from './kit.js';

export interface IdentityRoutesOptions {
  identity: Identity;
  clusters: ClusterService;
  audit: AuditLog;
  clock: Clock;
  /** Token requests per client address per minute. */
  tokenRateLimit: number;
}

const AnyObject = Type.Record(Type.String(), Type.Unknown());
const Jwks = Type.Object({ keys: Type.Array(AnyObject) });

export function identityRoutes(app: Api, o: IdentityRoutesOptions): void {
  const tokenHits = new Map<string, { windowStart: number; count: number }>();

  app.post(
    '/oauth/token',
    {
      config: auth(undefined, 'token.issue'),
      schema: {
        ...doc('Issue a token (password, client_credentials, refresh_token grants)', ['identity'], false),
        body: S.TokenRequest,
        response: ok({ 200: S.TokenResponse }),
      },
    },
    async (req, reply) => {
      const now = o.clock.nowMs();
      const hit = tokenHits.get(req.ip);
      if (!hit || now - hit.windowStart > 60_000) tokenHits.set(req.ip, { windowStart: now, count: 1 });
      else if (++hit.count > o.tokenRateLimit)
        throw new QuotaError('ANODYNE_E_RATE_LIMITED', `more than ${o.tokenRateLimit} token requests a minute from ${req.ip}`);
      const body: Record<string, string> = { ...req.body };
      const basic = req.headers.authorization;
      if (basic && /^basic /i.test(basic)) {
        const [id, secret] = Buffer.from(basic.slice(6), 'base64').toString().split(':');
        if (id) body['client_id'] = decodeURIComponent(id);
        if (secret !== undefined) body['client_secret'] = decodeURIComponent(secret);
      }
      const t = await o.identity.token(body);
      void reply.header('cache-control', 'no-store');
      return t;
    },
  );
  app.get('/token_keys', { schema: { ...doc('Public signing keys (JWKS)', ['identity'], false), response: ok({ 200: Jwks }) } }, () =>
    o.identity.tokenKeys(),
  );
  app.get(
    '/.well-known/openid-configuration',
    { schema: { ...doc('OIDC discovery', ['identity'], false), response: ok({ 200: AnyObject }) } },
    () => o.identity.discovery(),
  );
  app.get(
    '/userinfo',
    { config: auth([]), schema: { ...doc('The caller', ['identity'], true), response: ok({ 200: AnyObject }) } },
    async (req) => o.identity.userinfo(principal(req)),
  );
  app.post(
    '/v1/token-keys',
    {
      config: auth(ADMIN_SCOPES, 'identity.rotate-key'),
      schema: {
        ...doc('Rotate the token signing key now (tokens signed by the previous key stay valid)', ['identity'], true),
        response: ok({ 200: S.SigningKey }),
      },
    },
    async () => ({ kid: await o.identity.rotateSigningKey(), rotated: true }),
  );

  // ---------------------------------------------------------------- users

  app.get(
    '/v1/users',
    { config: auth(ADMIN_SCOPES), schema: { ...doc('List users', ['users'], true), response: ok({ 200: Type.Array(S.User) }) } },
    async () => o.identity.users(),
  );
  app.post(
    '/v1/users',
    {
      config: auth(ADMIN_SCOPES, 'user.create'),
      schema: { ...doc('Create a user', ['users'], true), body: S.CreateUser, response: ok({ 201: S.User }) },
    },
    async (req, reply) => reply.status(201).send(await o.identity.createUser(req.body)),
  );
  app.put(
    '/v1/users/:username',
    {
      config: auth(ADMIN_SCOPES, 'user.update'),
      schema: {
        ...doc("Set a user's groups (scopes) and/or reset their password", ['users'], true),
        params: S.UserParams,
        body: S.UserGroups,
        response: ok({ 200: S.User }),
      },
    },
    async (req) => {
      const { username } = req.params;
      const b = req.body;
      if (b.password !== undefined) await o.identity.setPassword(username, b.password);
      return b.groups !== undefined ? o.identity.setGroups(username, b.groups) : o.identity.user(username);
    },
  );
  app.delete(
    '/v1/users/:username',
    {
      config: auth(ADMIN_SCOPES, 'user.delete'),
      schema: { ...doc('Delete a user', ['users'], true), params: S.UserParams, response: ok({ 204: Type.Null() }) },
    },
    async (req, reply) => {
      const { username } = req.params;
      await o.identity.deleteUser(username);
      // Their kubectl access ends with their tokens; their bindings go too, so a new user of the same name inherits nothing.
      const { unreachable } = await o.clusters.binds.unbindEverywhere(username);
      if (unreachable.length > 0) {
        await o.audit.record({
          actor: principal(req).name,
          action: 'user.unbind',
          target: `${username} in ${unreachable.join(', ')}`,
          result: 'error',
        });
      }
      return reply.status(204).send(null);
    },
  );

  // ---------------------------------------------------------------- OAuth clients

  app.get(
    '/v1/clients',
    {
      config: auth(ADMIN_SCOPES),
      schema: { ...doc('List OAuth clients (no secrets)', ['users'], true), response: ok({ 200: Type.Array(S.OAuthClient) }) },
    },
    async () => o.identity.clients(),
  );
  app.post(
    '/v1/clients',
    {
      config: auth(ADMIN_SCOPES, 'client.create'),
      schema: { ...doc('Create an OAuth client', ['users'], true), body: S.CreateClient, response: ok({ 201: S.CreatedClient }) },
    },
    async (req, reply) => {
      const b = req.body;
      await o.identity.createClient({
        clientId: b.client_id,
        ...(b.client_secret ? { secret: b.client_secret } : {}),
        scopes: b.scopes,
        grantTypes: b.grant_types,
      });
      return reply.status(201).send({ client_id: b.client_id, scopes: b.scopes, grant_types: b.grant_types });
    },
  );
  app.delete(
    '/v1/clients/:client_id',
    {
      config: auth(ADMIN_SCOPES, 'client.delete'),
      schema: { ...doc('Delete an OAuth client', ['users'], true), params: S.ClientParams, response: ok({ 204: Type.Null() }) },
    },
    async (req, reply) => {
      await o.identity.deleteClient(req.params.client_id);
      return reply.status(204).send(null);
    },
  );
}
