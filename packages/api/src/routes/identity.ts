// Identity routes (UAA-compatible): tokens, signing keys, OIDC discovery, the caller, users and OAuth clients.
import { Type } from '@sinclair/typebox';
import { QuotaError, type Clock } from '@anodyne/common';
import type { AuditLog, RateLimits } from '@anodyne/store';
import { CONSOLE_CLIENT, LOGIN_PAGE_HEADERS, authorizeErrorPage, loginPage, type Authorization, type Identity } from '@anodyne/identity';
import type { FastifyReply, FastifyRequest } from 'fastify';
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
  /** Where the requests are counted (the store: every replica shares the count). */
  rateLimits: RateLimits;
}

const AnyObject = Type.Record(Type.String(), Type.Unknown());
const Jwks = Type.Object({ keys: Type.Array(AnyObject) });
/** An answer that is an HTML page for a browser, or the error body for the API's own refusals (validation, rate limit). */
const pageOrError = (description: string) => ({
  description,
  content: { 'text/html': { schema: Type.String() }, 'application/json': { schema: S.ErrorBody } },
});

/**
 * The console keeps no refresh token where scripts can read it: the token endpoint hands the
 * console client's refresh token over as this cookie (httpOnly, Secure, SameSite=Strict, only
 * sent to /oauth), and takes it from there on a refresh. Logout clears it.
 */
const SESSION_COOKIE = 'anodyne_console_session';
function sessionCookie(value: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/oauth; Max-Age=${maxAgeSeconds}; HttpOnly; Secure; SameSite=Strict`;
}
function readCookie(req: FastifyRequest, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function identityRoutes(app: Api, o: IdentityRoutesOptions): void {
  /** Token requests and sign-ins count together against one limit per client address, across replicas. */
  const limit = async (req: FastifyRequest) => {
    if ((await o.rateLimits.hit(`token:${req.ip}`, 60_000)) > o.tokenRateLimit)
      throw new QuotaError('ANODYNE_E_RATE_LIMITED', `more than ${o.tokenRateLimit} token requests a minute from ${req.ip}`);
  };
  const page = (reply: FastifyReply, status: number, html: string) => reply.status(status).headers(LOGIN_PAGE_HEADERS).send(html);

  app.post(
    '/oauth/token',
    {
      config: auth(undefined, 'token.issue'),
      schema: {
        ...doc(
          'Issue a token (password, client_credentials, refresh_token and authorization_code grants). For the console client the refresh token travels in an httpOnly cookie, not in the body.',
          ['identity'],
          false,
        ),
        body: S.TokenRequest,
        response: ok({ 200: S.TokenResponse }),
      },
    },
    async (req, reply) => {
      await limit(req);
      const body: Record<string, string> = { ...req.body };
      const basic = req.headers.authorization;
      if (basic && /^basic /i.test(basic)) {
        const [id, secret] = Buffer.from(basic.slice(6), 'base64').toString().split(':');
        if (id) body['client_id'] = decodeURIComponent(id);
        if (secret !== undefined) body['client_secret'] = decodeURIComponent(secret);
      }
      const console = body['client_id'] === CONSOLE_CLIENT;
      if (console && body['grant_type'] === 'refresh_token' && !body['refresh_token']) {
        const kept = readCookie(req, SESSION_COOKIE);
        if (kept) body['refresh_token'] = kept;
      }
      const t = await o.identity.token(body);
      void reply.header('cache-control', 'no-store');
      if (console && t.refresh_token) {
        void reply.header('set-cookie', sessionCookie(t.refresh_token, o.identity.refreshSeconds));
        delete t.refresh_token;
      }
      return t;
    },
  );
  app.get(
    '/oauth/authorize',
    {
      schema: {
        ...doc('The authorization endpoint (code flow with PKCE S256): the sign-in page', ['identity'], false),
        querystring: S.AuthorizeQuery,
        response: {
          200: pageOrError('the sign-in page'),
          400: pageOrError('a request that cannot go on (unknown client, unregistered redirect URI, no PKCE challenge)'),
          '5xx': S.ErrorBody,
        },
      },
    },
    async (req, reply) => {
      let a: Authorization;
      try {
        a = await o.identity.checkAuthorization(req.query);
      } catch (err) {
        return page(reply, 400, authorizeErrorPage((err as Error).message));
      }
      return page(reply, 200, loginPage(a));
    },
  );
  app.post(
    '/oauth/authorize',
    {
      config: auth(undefined, 'login'),
      schema: {
        ...doc(
          'Sign in for an authorization request: a 303 back to the client with a one-time code, or the page again with the error',
          ['identity'],
          false,
        ),
        body: S.AuthorizeForm,
        response: {
          303: Type.Null({ description: 'to the redirect URI with code and state' }),
          400: pageOrError('a request that cannot go on'),
          401: pageOrError('the sign-in page again: a wrong user name or password, or a locked account'),
          429: S.ErrorBody,
          '5xx': S.ErrorBody,
        },
      },
    },
    async (req, reply) => {
      await limit(req);
      const { username, password, ...request } = req.body;
      let a: Authorization;
      try {
        a = await o.identity.checkAuthorization(request);
      } catch (err) {
        return page(reply, 400, authorizeErrorPage((err as Error).message));
      }
      try {
        const location = await o.identity.authorize(a, username, password);
        return reply.status(303).header('cache-control', 'no-store').header('location', location).send(null);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== 'ANODYNE_E_BAD_CREDENTIALS' && code !== 'ANODYNE_E_ACCOUNT_LOCKED') throw err;
        return page(reply, 401, loginPage(a, { error: (err as Error).message, username }));
      }
    },
  );
  app.post(
    '/oauth/logout',
    {
      config: auth(undefined, 'logout'),
      schema: {
        ...doc("End the console's session: its refresh-token cookie is cleared", ['identity'], false),
        response: ok({ 204: Type.Null() }),
      },
    },
    async (_req, reply) => reply.status(204).header('set-cookie', sessionCookie('', 0)).header('cache-control', 'no-store').send(null),
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
        ...(b.redirect_uris ? { redirectUris: b.redirect_uris } : {}),
      });
      return reply
        .status(201)
        .send({ client_id: b.client_id, scopes: b.scopes, grant_types: b.grant_types, redirect_uris: b.redirect_uris ?? [] });
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
