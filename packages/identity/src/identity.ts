// The platform's UAA-compatible OAuth2/OIDC issuer: local and LDAP users, scopes, OAuth clients, ES256 JWTs with key rotation.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { argon2id, argon2Verify } from 'hash-wasm';
import {
  SignJWT,
  jwtVerify,
  exportJWK,
  generateKeyPair,
  importJWK,
  decodeProtectedHeader,
  errors as joseErrors,
  type JWK,
  type JWTPayload,
} from 'jose';
import { ConflictError, InputError, NotFoundError, UnauthenticatedError, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type Store } from '@anodyne/store';
import type { CredStore } from '@anodyne/credstore';
import type { LdapDirectory } from './ldap.js';

/** The three PKS scopes. Group names are scopes (UAA's model). */
export const SCOPES = {
  admin: 'pks.clusters.admin',
  adminRead: 'pks.clusters.admin.read',
  manage: 'pks.clusters.manage',
} as const;
export const ALL_SCOPES: string[] = Object.values(SCOPES);

/** The CLI's public client (like UAA's `pks_cli`): password and refresh grants, no secret. */
export const CLI_CLIENT = 'anodyne_cli';
/** The web console's public client: authorization code flow with PKCE, redirected back to `<issuer>/console/`. */
export const CONSOLE_CLIENT = 'anodyne_console';
/** Where the console is served, below the issuer. */
export const CONSOLE_PATH = '/console/';
/** Grant types a client may be given. */
export const GRANT_TYPES = ['password', 'client_credentials', 'refresh_token', 'authorization_code'] as const;
/** How long a one-time authorization code may wait for its token request. */
const CODE_SECONDS = 60;
/** The audience of every access token; clusters' API servers trust this client id. */
export const AUDIENCE = 'anodyne';

export interface IdentityOptions {
  store: Store;
  creds: CredStore;
  clock: Clock;
  logger: Logger;
  /** The issuer URL: `iss` of every token and the base of discovery. */
  issuer: string;
  accessTokenSeconds?: number;
  refreshTokenSeconds?: number;
  /** Failed logins in a row before a temporary lock, and its length. */
  lockout?: { maxFailures: number; lockSeconds: number };
  ldap?: LdapDirectory;
}

/** Who is calling, as established from a verified access token. */
export interface Principal {
  /** The user name (password grant) or the client id (client_credentials). */
  name: string;
  userName?: string;
  clientId: string;
  scopes: string[];
  expiresAt: number;
}

export interface TokenRequest {
  grant_type?: string;
  username?: string;
  password?: string;
  client_id?: string;
  client_secret?: string;
  refresh_token?: string;
  scope?: string;
  /** authorization_code grant: the one-time code, where it was sent, and the PKCE verifier. */
  code?: string;
  redirect_uri?: string;
  code_verifier?: string;
}

/** The query of an authorization request (`GET /oauth/authorize`), as the browser sends it. */
export interface AuthorizeRequest {
  response_type?: string;
  client_id?: string;
  redirect_uri?: string;
  code_challenge?: string;
  code_challenge_method?: string;
  state?: string;
  scope?: string;
}

/** A checked authorization request: who asks, where the answer goes, and the PKCE challenge. */
export interface Authorization {
  clientId: string;
  redirectUri: string;
  codeChallenge: string;
  state?: string;
  scope?: string;
}

export interface TokenResponse {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  scope: string;
  jti: string;
  refresh_token?: string;
}

export interface UserView {
  id: string;
  username: string;
  origin: string;
  email: string | null;
  groups: string[];
  locked: boolean;
}

interface SigningKey {
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
  created: string;
}

const KEYS_PATH = '/platform/identity/signing-keys';
const USERNAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** https with no fragment; plain http only for a loopback host (a developer's tool). */
function redirectUriOk(r: string): boolean {
  try {
    const u = new URL(r);
    if (u.hash || r.includes('#')) return false;
    if (u.protocol === 'https:') return true;
    return u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
  } catch {
    return false;
  }
}

async function hashSecret(secret: string): Promise<string> {
  return argon2id({
    password: secret,
    salt: randomBytes(16),
    parallelism: 1,
    iterations: 3,
    memorySize: 19_456,
    hashLength: 32,
    outputType: 'encoded',
  });
}

/**
 * The platform's OAuth2/OIDC issuer, UAA-compatible: users (local with argon2id hashes, or
 * LDAP), groups as scopes, OAuth clients, ES256 JWTs with rotating keys, lockout on repeated
 * failures. It knows nothing of clusters.
 */
export class Identity {
  private keys: SigningKey[] = [];
  /** Imported keys by kid (importing a JWK costs more than using it). */
  private readonly imported = new Map<string, Awaited<ReturnType<typeof importJWK>>>();
  /** Access tokens already verified, until they expire (bounded; emptied when the keys change). */
  private readonly verified = new Map<string, Principal>();
  /** When the signing keys were last read again for a token of an unknown key. */
  private keysReadAt = Number.NEGATIVE_INFINITY;
  private readonly accessTtl: number;
  private readonly refreshTtl: number;
  private readonly lockout: { maxFailures: number; lockSeconds: number };

  constructor(private readonly o: IdentityOptions) {
    this.accessTtl = o.accessTokenSeconds ?? 600;
    this.refreshTtl = o.refreshTokenSeconds ?? 86_400;
    this.lockout = o.lockout ?? { maxFailures: 5, lockSeconds: 60 };
  }

  get issuer(): string {
    return this.o.issuer;
  }

  private nowIso(): string {
    return this.o.clock.now().toISOString();
  }

  // ------------------------------------------------------------------ keys

  /** Loads the signing keys (creating the first on first start) and the CLI client. */
  async init(): Promise<void> {
    const existing = await this.o.creds.get<'json'>(KEYS_PATH, { actor: 'identity' }).catch(() => undefined);
    if (existing) this.keys = (existing.value as unknown as { keys: SigningKey[] }).keys;
    if (this.keys.length === 0) await this.rotateSigningKey();
    const cli = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').select('client_id').where('client_id', '=', CLI_CLIENT).executeTakeFirst(),
    );
    if (!cli) await this.createClient({ clientId: CLI_CLIENT, scopes: ALL_SCOPES, grantTypes: ['password', 'refresh_token'] });
    await this.ensureConsoleClient();
  }

  /**
   * Reads the signing keys again from the credential store (another replica of the platform may
   * have rotated them): new tokens use the newest, and tokens of a key this replica had not seen
   * verify. Returns whether they changed.
   */
  async reloadSigningKeys(): Promise<boolean> {
    const stored = await this.o.creds.get<'json'>(KEYS_PATH, { actor: 'identity' }).catch(() => undefined);
    const keys = stored ? (stored.value as unknown as { keys: SigningKey[] }).keys : [];
    if (keys.length === 0 || keys.map((k) => k.kid).join(' ') === this.keys.map((k) => k.kid).join(' ')) return false;
    this.keys = keys;
    this.imported.clear();
    this.verified.clear();
    return true;
  }

  /** The console's redirect URI follows the issuer, so a platform moved to a new address keeps its console. */
  private async ensureConsoleClient(): Promise<void> {
    const redirect = JSON.stringify([this.consoleUrl]);
    const row = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').select('redirect_uris').where('client_id', '=', CONSOLE_CLIENT).executeTakeFirst(),
    );
    if (!row)
      await this.createClient({
        clientId: CONSOLE_CLIENT,
        scopes: ALL_SCOPES,
        grantTypes: ['authorization_code', 'refresh_token'],
        redirectUris: [this.consoleUrl],
      });
    else if (row.redirect_uris !== redirect)
      await storeQuery('updating a client', () =>
        this.o.store.db.updateTable('identity_clients').set({ redirect_uris: redirect }).where('client_id', '=', CONSOLE_CLIENT).execute(),
      );
  }

  /** The console's address (its redirect URI). */
  get consoleUrl(): string {
    return `${this.o.issuer}${CONSOLE_PATH}`;
  }

  /** How long a refresh token lives (the console's session cookie lives as long). */
  get refreshSeconds(): number {
    return this.refreshTtl;
  }

  /** Adds a new signing key; new tokens use it, tokens signed by the previous key stay valid. */
  async rotateSigningKey(): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const kid = `key-${this.o.clock
      .now()
      .toISOString()
      .replace(/[^0-9]/g, '')
      .slice(0, 14)}-${randomBytes(3).toString('hex')}`;
    const key: SigningKey = {
      kid,
      privateJwk: await exportJWK(privateKey),
      publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' },
      created: this.nowIso(),
    };
    this.keys = [...this.keys.slice(-1), key];
    this.imported.clear();
    this.verified.clear();
    await this.o.creds.set(KEYS_PATH, 'json', { keys: this.keys }, { actor: 'identity' });
    return kid;
  }

  /**
   * Rotates the signing key when the newest one is older than `maxAgeDays` (the platform checks at
   * start and then hourly). Returns the new key's id, or undefined when the newest is young enough.
   */
  async rotateIfOlderThan(maxAgeDays: number): Promise<string | undefined> {
    const newest = this.keys[this.keys.length - 1];
    if (newest && this.o.clock.nowMs() - Date.parse(newest.created) < maxAgeDays * 86_400_000) return undefined;
    const kid = await this.rotateSigningKey();
    this.o.logger.info({ kid }, 'signing key rotated');
    return kid;
  }

  /** The JWKS (public keys only), as `/token_keys` serves it. */
  tokenKeys(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => k.publicJwk) };
  }

  /**
   * OIDC discovery: only what this issuer serves. Tokens come from the token endpoint (password,
   * client_credentials, refresh_token and authorization_code grants); the authorization endpoint
   * offers the `code` response type with PKCE (S256 only). No ID token is issued. Access tokens
   * carry scopes, not groups.
   */
  discovery(): Record<string, unknown> {
    const i = this.o.issuer;
    return {
      issuer: i,
      authorization_endpoint: `${i}/oauth/authorize`,
      token_endpoint: `${i}/oauth/token`,
      jwks_uri: `${i}/token_keys`,
      userinfo_endpoint: `${i}/userinfo`,
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      subject_types_supported: ['public'],
      grant_types_supported: [...GRANT_TYPES],
      scopes_supported: [...ALL_SCOPES],
      claims_supported: ['sub', 'user_name', 'client_id', 'scope', 'iss', 'aud', 'exp', 'iat', 'jti'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'none'],
    };
  }

  // ------------------------------------------------------------------ users, groups, clients

  async createUser(input: {
    username: string;
    password?: string;
    groups?: string[];
    email?: string;
    origin?: 'local' | 'ldap';
  }): Promise<UserView> {
    if (!USERNAME.test(input.username))
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'user names are 1 to 64 letters, digits, dots, dashes, underscores or @', {
        details: { key: 'username' },
      });
    const origin = input.origin ?? 'local';
    if (origin === 'local' && (!input.password || input.password.length < 8))
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'a local user needs a password of at least 8 characters', {
        details: { key: 'password' },
      });
    const groups = [...new Set(input.groups ?? [])];
    for (const g of groups)
      if (!ALL_SCOPES.includes(g))
        throw new InputError('ANODYNE_E_INVALID_INPUT', `unknown group ${g}; groups are ${ALL_SCOPES.join(', ')}`, {
          details: { key: 'groups' },
        });
    const exists = await this.findUser(input.username);
    if (exists)
      throw new ConflictError('ANODYNE_E_USER_EXISTS', `user ${input.username} exists`, { details: { username: input.username } });
    const id = randomUUID();
    const hash = origin === 'local' ? await hashSecret(input.password!) : null;
    await storeQuery('creating a user', () =>
      this.o.store.db.transaction().execute(async (tx) => {
        await tx
          .insertInto('identity_users')
          .values({
            id,
            username: input.username,
            origin,
            password_hash: hash,
            email: input.email ?? null,
            failed_logins: 0,
            locked_until: null,
            created_at: this.nowIso(),
            updated_at: this.nowIso(),
          })
          .execute();
        for (const g of groups) await tx.insertInto('identity_memberships').values({ user_id: id, group_name: g }).execute();
      }),
    );
    return this.user(input.username);
  }

  private async findUser(username: string) {
    return storeQuery('reading a user', () =>
      this.o.store.db.selectFrom('identity_users').selectAll().where('username', '=', username).executeTakeFirst(),
    );
  }

  async user(username: string): Promise<UserView> {
    const u = await this.findUser(username);
    if (!u) throw new NotFoundError('ANODYNE_E_USER_NOT_FOUND', `user ${username} not found`, { details: { username } });
    const groups = await storeQuery('reading groups', () =>
      this.o.store.db.selectFrom('identity_memberships').select('group_name').where('user_id', '=', u.id).orderBy('group_name').execute(),
    );
    return {
      id: u.id,
      username: u.username,
      origin: u.origin,
      email: u.email,
      groups: groups.map((g) => g.group_name),
      locked: !!u.locked_until && u.locked_until > this.nowIso(),
    };
  }

  async users(): Promise<UserView[]> {
    const rows = await storeQuery('listing users', () =>
      this.o.store.db.selectFrom('identity_users').select('username').orderBy('username').execute(),
    );
    return Promise.all(rows.map((r) => this.user(r.username)));
  }

  /** Sets a local user's password (an admin's reset); clears a lockout. */
  async setPassword(username: string, password: string): Promise<void> {
    const row = await this.findUser(username);
    if (!row) throw new NotFoundError('ANODYNE_E_USER_NOT_FOUND', `user ${username} not found`, { details: { username } });
    if (row.origin !== 'local')
      throw new InputError('ANODYNE_E_INVALID_INPUT', `user ${username} comes from LDAP: change the password there`, {
        details: { key: 'password' },
      });
    if (password.length < 8)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'a password needs at least 8 characters', { details: { key: 'password' } });
    const hash = await hashSecret(password);
    const id = row.id;
    await storeQuery('setting a password', () =>
      this.o.store.db
        .updateTable('identity_users')
        .set({ password_hash: hash, failed_logins: 0, locked_until: null, updated_at: this.nowIso() })
        .where('id', '=', id)
        .execute(),
    );
  }

  async setGroups(username: string, groups: string[]): Promise<UserView> {
    for (const g of groups)
      if (!ALL_SCOPES.includes(g))
        throw new InputError('ANODYNE_E_INVALID_INPUT', `unknown group ${g}; groups are ${ALL_SCOPES.join(', ')}`, {
          details: { key: 'groups' },
        });
    const u = await this.user(username);
    await storeQuery('setting groups', () =>
      this.o.store.db.transaction().execute(async (tx) => {
        await tx.deleteFrom('identity_memberships').where('user_id', '=', u.id).execute();
        for (const g of new Set(groups)) await tx.insertInto('identity_memberships').values({ user_id: u.id, group_name: g }).execute();
      }),
    );
    return this.user(username);
  }

  async deleteUser(username: string): Promise<void> {
    const u = await this.user(username);
    await storeQuery('deleting a user', () =>
      this.o.store.db.transaction().execute(async (tx) => {
        await tx.deleteFrom('identity_memberships').where('user_id', '=', u.id).execute();
        await tx.deleteFrom('identity_users').where('id', '=', u.id).execute();
      }),
    );
  }

  /** Creates the first admin on first start; returns its password (to be shown once) or undefined. */
  async ensureAdmin(username = 'admin'): Promise<string | undefined> {
    if (await this.findUser(username)) return undefined;
    const password = randomBytes(18).toString('base64url');
    await this.createUser({ username, password, groups: [SCOPES.admin] });
    return password;
  }

  async createClient(input: {
    clientId: string;
    secret?: string;
    scopes: string[];
    grantTypes: string[];
    redirectUris?: string[];
  }): Promise<void> {
    if (!USERNAME.test(input.clientId))
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'client ids are 1 to 64 letters, digits, dots, dashes or underscores', {
        details: { key: 'client_id' },
      });
    for (const g of input.grantTypes)
      if (!(GRANT_TYPES as readonly string[]).includes(g))
        throw new InputError('ANODYNE_E_INVALID_INPUT', `unknown grant type ${g}`, { details: { key: 'grant_types' } });
    if (input.grantTypes.includes('client_credentials') && !input.secret)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'a client_credentials client needs a secret', { details: { key: 'client_secret' } });
    const redirects = input.redirectUris ?? [];
    if (input.grantTypes.includes('authorization_code') !== redirects.length > 0)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'an authorization_code client needs redirect URIs, and only such a client has them', {
        details: { key: 'redirect_uris' },
      });
    for (const r of redirects)
      if (!redirectUriOk(r))
        throw new InputError(
          'ANODYNE_E_INVALID_INPUT',
          `redirect URI ${r} is not an https URL without a fragment (http only for loopback)`,
          { details: { key: 'redirect_uris' } },
        );
    const exists = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').select('client_id').where('client_id', '=', input.clientId).executeTakeFirst(),
    );
    if (exists)
      throw new ConflictError('ANODYNE_E_CLIENT_EXISTS', `client ${input.clientId} exists`, { details: { client_id: input.clientId } });
    const hash = input.secret ? await hashSecret(input.secret) : null;
    await storeQuery('creating a client', () =>
      this.o.store.db
        .insertInto('identity_clients')
        .values({
          client_id: input.clientId,
          secret_hash: hash,
          scopes: JSON.stringify(input.scopes),
          grant_types: JSON.stringify(input.grantTypes),
          redirect_uris: redirects.length ? JSON.stringify(redirects) : null,
          created_at: this.nowIso(),
        })
        .execute(),
    );
  }

  async clients(): Promise<
    { client_id: string; scopes: string[]; grant_types: string[]; redirect_uris: string[]; confidential: boolean }[]
  > {
    const rows = await storeQuery('listing clients', () =>
      this.o.store.db.selectFrom('identity_clients').selectAll().orderBy('client_id').execute(),
    );
    return rows.map((r) => ({
      client_id: r.client_id,
      scopes: JSON.parse(r.scopes) as string[],
      grant_types: JSON.parse(r.grant_types) as string[],
      redirect_uris: r.redirect_uris ? (JSON.parse(r.redirect_uris) as string[]) : [],
      confidential: r.secret_hash !== null,
    }));
  }

  async deleteClient(clientId: string): Promise<void> {
    await storeQuery('deleting a client', () => this.o.store.db.deleteFrom('identity_clients').where('client_id', '=', clientId).execute());
  }

  // ------------------------------------------------------------------ tokens

  /** The token endpoint: password, client_credentials, refresh_token and authorization_code grants. */
  async token(req: TokenRequest): Promise<TokenResponse> {
    const grant = req.grant_type;
    if (!grant) throw new InputError('ANODYNE_E_INVALID_INPUT', 'grant_type is required', { details: { key: 'grant_type' } });
    if (!(GRANT_TYPES as readonly string[]).includes(grant))
      throw new InputError('ANODYNE_E_GRANT_UNSUPPORTED', `grant type ${grant} is not supported`, { details: { grant_type: grant } });
    const client = await this.authenticateClient(req.client_id ?? CLI_CLIENT, req.client_secret, grant);
    const requested = req.scope ? req.scope.split(/\s+/).filter(Boolean) : undefined;
    if (grant === 'client_credentials') {
      return this.issue({
        sub: client.client_id,
        clientId: client.client_id,
        scopes: this.narrow(client.scopes, requested),
        refresh: false,
        grant,
      });
    }
    if (grant === 'password') {
      if (!req.username || !req.password)
        throw new InputError('ANODYNE_E_INVALID_INPUT', 'username and password are required', { details: { key: 'username' } });
      const user = await this.authenticateUser(req.username, req.password);
      return this.issue({
        sub: user.id,
        userName: user.username,
        clientId: client.client_id,
        scopes: this.narrow(
          user.groups.filter((g) => client.scopes.includes(g)),
          requested,
        ),
        refresh: client.grantTypes.includes('refresh_token'),
        grant,
      });
    }
    if (grant === 'authorization_code') return this.redeemCode(client, req);
    // refresh_token: the user's current groups, so removing a group takes effect on refresh.
    if (!req.refresh_token)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'refresh_token is required', { details: { key: 'refresh_token' } });
    const claims = await this.verifyJwt(req.refresh_token, 'refresh');
    if (claims['client_id'] !== client.client_id)
      throw new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', 'the refresh token was issued to another client');
    const user = await this.user(String(claims['user_name'])).catch(() => {
      throw new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', "the refresh token's user no longer exists");
    });
    return this.issue({
      sub: user.id,
      userName: user.username,
      clientId: client.client_id,
      scopes: this.narrow(
        user.groups.filter((g) => client.scopes.includes(g)),
        requested,
      ),
      refresh: true,
      grant,
    });
  }

  /**
   * Checks an authorization request before anyone is asked for a password: a known client allowed
   * the authorization code flow, one of its redirect URIs exactly, `response_type=code` and a PKCE
   * S256 challenge. Nothing is redirected on a bad request (the caller shows the error).
   */
  async checkAuthorization(req: AuthorizeRequest): Promise<Authorization> {
    const bad = (key: string, message: string) => new InputError('ANODYNE_E_AUTHORIZE_INVALID', message, { details: { key } });
    if (!req.client_id) throw bad('client_id', 'client_id is required');
    const row = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').selectAll().where('client_id', '=', req.client_id!).executeTakeFirst(),
    );
    if (!row) throw bad('client_id', `there is no client ${req.client_id}`);
    if (!(JSON.parse(row.grant_types) as string[]).includes('authorization_code'))
      throw bad('client_id', `client ${req.client_id} may not use the authorization code flow`);
    const redirects = row.redirect_uris ? (JSON.parse(row.redirect_uris) as string[]) : [];
    if (!req.redirect_uri || !redirects.includes(req.redirect_uri))
      throw bad('redirect_uri', `redirect_uri must be one registered for ${req.client_id}: ${redirects.join(', ')}`);
    if (req.response_type !== 'code') throw bad('response_type', 'response_type must be code');
    if (req.code_challenge_method !== 'S256') throw bad('code_challenge_method', 'code_challenge_method must be S256 (PKCE)');
    if (!req.code_challenge || !/^[A-Za-z0-9_-]{43}$/.test(req.code_challenge))
      throw bad('code_challenge', 'code_challenge must be the base64url SHA-256 of the code verifier (43 characters)');
    if (req.state !== undefined && req.state.length > 512) throw bad('state', 'state is longer than 512 characters');
    return {
      clientId: row.client_id,
      redirectUri: req.redirect_uri,
      codeChallenge: req.code_challenge,
      ...(req.state !== undefined ? { state: req.state } : {}),
      ...(req.scope ? { scope: req.scope } : {}),
    };
  }

  /**
   * Signs a user in for a checked authorization request (same password rules and lockout as the
   * password grant) and returns where to send the browser: the redirect URI with a one-time code
   * valid for a minute, and the request's state.
   */
  async authorize(a: Authorization, username: string, password: string): Promise<string> {
    const user = await this.authenticateUser(username, password);
    // The client's secret (if it has one) is checked at the token endpoint, not here.
    const row = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').select('scopes').where('client_id', '=', a.clientId).executeTakeFirst(),
    );
    const clientScopes = row ? (JSON.parse(row.scopes) as string[]) : [];
    const scopes = this.narrow(
      user.groups.filter((g) => clientScopes.includes(g)),
      a.scope ? a.scope.split(/\s+/).filter(Boolean) : undefined,
    );
    const code = randomBytes(32).toString('base64url');
    const now = this.nowIso();
    await storeQuery('storing an authorization code', async () => {
      await this.o.store.db.deleteFrom('identity_codes').where('expires_at', '<', now).execute();
      await this.o.store.db
        .insertInto('identity_codes')
        .values({
          code_hash: sha256(code),
          client_id: a.clientId,
          redirect_uri: a.redirectUri,
          code_challenge: a.codeChallenge,
          user_name: user.username,
          scopes: JSON.stringify(scopes),
          expires_at: new Date(this.o.clock.nowMs() + CODE_SECONDS * 1000).toISOString(),
        })
        .execute();
    });
    const u = new URL(a.redirectUri);
    u.searchParams.set('code', code);
    if (a.state !== undefined) u.searchParams.set('state', a.state);
    return u.toString();
  }

  /** The authorization_code grant: the code is used once, by its client, with its redirect URI and the PKCE verifier. */
  private async redeemCode(
    client: { client_id: string; scopes: string[]; grantTypes: string[] },
    req: TokenRequest,
  ): Promise<TokenResponse> {
    for (const key of ['code', 'redirect_uri', 'code_verifier'] as const)
      if (!req[key]) throw new InputError('ANODYNE_E_INVALID_INPUT', `${key} is required`, { details: { key } });
    const hash = sha256(req.code!);
    const row = await storeQuery('redeeming an authorization code', () =>
      // One statement takes the code away and returns it: two redemptions at once cannot both have it.
      this.o.store.db.deleteFrom('identity_codes').where('code_hash', '=', hash).returningAll().executeTakeFirst(),
    );
    const invalid = (why: string) => new InputError('ANODYNE_E_GRANT_INVALID', `the authorization code is not valid: ${why}`);
    if (!row || row.expires_at < this.nowIso()) throw invalid('unknown, used or expired');
    if (row.client_id !== client.client_id) throw invalid('it was issued to another client');
    if (row.redirect_uri !== req.redirect_uri) throw invalid('redirect_uri differs from the authorization request');
    if (createHash('sha256').update(req.code_verifier!).digest('base64url') !== row.code_challenge)
      throw invalid('code_verifier does not match the code challenge');
    const user = await this.user(row.user_name).catch(() => {
      throw invalid("the code's user no longer exists");
    });
    const granted = JSON.parse(row.scopes) as string[];
    return this.issue({
      sub: user.id,
      userName: user.username,
      clientId: client.client_id,
      scopes: granted.filter((g) => user.groups.includes(g)),
      refresh: client.grantTypes.includes('refresh_token'),
      grant: 'authorization_code',
    });
  }

  private narrow(allowed: string[], requested?: string[]): string[] {
    if (!requested) return allowed;
    return requested.filter((s) => s !== 'openid' && allowed.includes(s));
  }

  private async authenticateClient(clientId: string, secret: string | undefined, grant: string) {
    const row = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').selectAll().where('client_id', '=', clientId).executeTakeFirst(),
    );
    const bad = () => new UnauthenticatedError('ANODYNE_E_BAD_CREDENTIALS', 'bad client credentials');
    if (!row) throw bad();
    if (row.secret_hash) {
      if (!secret || !(await argon2Verify({ password: secret, hash: row.secret_hash }))) throw bad();
    }
    const grantTypes = JSON.parse(row.grant_types) as string[];
    if (!grantTypes.includes(grant))
      throw new InputError('ANODYNE_E_GRANT_UNSUPPORTED', `client ${clientId} may not use the ${grant} grant`, {
        details: { grant_type: grant },
      });
    return { client_id: row.client_id, scopes: JSON.parse(row.scopes) as string[], grantTypes };
  }

  /**
   * A robot account: an OAuth client allowed the client_credentials grant, by its secret. Undefined
   * when no such client has this id (the caller may then be a user); a wrong secret is refused.
   */
  async authenticateRobot(clientId: string, secret: string): Promise<{ scopes: string[] } | undefined> {
    const row = await storeQuery('reading a client', () =>
      this.o.store.db.selectFrom('identity_clients').selectAll().where('client_id', '=', clientId).executeTakeFirst(),
    );
    if (!row || !row.secret_hash || !(JSON.parse(row.grant_types) as string[]).includes('client_credentials')) return undefined;
    return { scopes: (await this.authenticateClient(clientId, secret, 'client_credentials')).scopes };
  }

  /** Checks a password (local hash or LDAP bind), with a temporary lock after repeated failures. */
  async authenticateUser(username: string, password: string): Promise<UserView> {
    let row = await this.findUser(username);
    const now = this.nowIso();
    if (row?.locked_until && row.locked_until > now) {
      throw new UnauthenticatedError(
        'ANODYNE_E_ACCOUNT_LOCKED',
        `too many failed logins for ${username}; try again after ${row.locked_until}`,
        { details: { locked_until: row.locked_until } },
      );
    }
    let ok = false;
    if (row?.origin === 'local' && row.password_hash) {
      ok = await argon2Verify({ password, hash: row.password_hash });
    } else if (this.o.ldap && (!row || row.origin === 'ldap')) {
      const found = await this.o.ldap.authenticate(username, password);
      if (found) {
        ok = true;
        if (!row) {
          await this.createUser({ username, origin: 'ldap', groups: found.scopes, ...(found.email ? { email: found.email } : {}) });
        } else {
          await this.setGroups(username, found.scopes);
        }
        row = await this.findUser(username);
      }
    }
    if (!ok) {
      if (row) {
        // Counted in the database, one statement each (attempts spread over several replicas all count),
        // and the lock set by the statement that reaches the limit.
        const id = row.id;
        const counted = await storeQuery('recording a failed login', () =>
          this.o.store.db
            .updateTable('identity_users')
            .set((eb) => ({ failed_logins: eb('failed_logins', '+', 1), updated_at: now }))
            .where('id', '=', id)
            .returning('failed_logins')
            .executeTakeFirst(),
        );
        const failures = Number(counted?.failed_logins ?? 0);
        const lock =
          failures >= this.lockout.maxFailures ? new Date(this.o.clock.nowMs() + this.lockout.lockSeconds * 1000).toISOString() : null;
        if (lock)
          await storeQuery('locking an account', () =>
            this.o.store.db
              .updateTable('identity_users')
              .set({ failed_logins: 0, locked_until: lock, updated_at: now })
              .where('id', '=', id)
              .execute(),
          );
        this.o.logger.warn({ username, failures, locked: !!lock }, 'failed login');
      }
      throw new UnauthenticatedError('ANODYNE_E_BAD_CREDENTIALS', 'bad user name or password');
    }
    const id = row!.id;
    if (row!.failed_logins !== 0 || row!.locked_until)
      await storeQuery('resetting failed logins', () =>
        this.o.store.db
          .updateTable('identity_users')
          .set({ failed_logins: 0, locked_until: null, updated_at: now })
          .where('id', '=', id)
          .execute(),
      );
    return this.user(username);
  }

  private async issue(p: {
    sub: string;
    userName?: string;
    clientId: string;
    scopes: string[];
    refresh: boolean;
    grant: string;
  }): Promise<TokenResponse> {
    const key = this.keys[this.keys.length - 1]!;
    const signer = await this.importKey(`${key.kid}:private`, key.privateJwk);
    const iat = Math.floor(this.o.clock.nowMs() / 1000);
    const jti = randomUUID();
    const claims: JWTPayload = {
      jti,
      sub: p.sub,
      scope: p.scopes,
      client_id: p.clientId,
      cid: p.clientId,
      grant_type: p.grant,
      token_use: 'access',
      ...(p.userName ? { user_name: p.userName, origin: 'anodyne' } : {}),
    };
    const access = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
      .setIssuer(this.o.issuer)
      .setAudience([AUDIENCE, p.clientId])
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.accessTtl)
      .sign(signer);
    const out: TokenResponse = { access_token: access, token_type: 'bearer', expires_in: this.accessTtl, scope: p.scopes.join(' '), jti };
    if (p.refresh && p.userName) {
      out.refresh_token = await new SignJWT({
        jti: `${jti}-r`,
        sub: p.sub,
        user_name: p.userName,
        client_id: p.clientId,
        token_use: 'refresh',
      })
        .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
        .setIssuer(this.o.issuer)
        .setAudience(AUDIENCE)
        .setIssuedAt(iat)
        .setExpirationTime(iat + this.refreshTtl)
        .sign(signer);
    }
    return out;
  }

  private async verifyJwt(token: string, use: 'access' | 'refresh'): Promise<JWTPayload> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', 'the token is malformed');
    }
    let key = this.keys.find((k) => k.kid === kid);
    // A key this replica has not seen: another replica may have rotated (read again, at most every 5 s).
    if (!key && this.o.clock.nowMs() - this.keysReadAt >= 5000) {
      this.keysReadAt = this.o.clock.nowMs();
      if (await this.reloadSigningKeys()) key = this.keys.find((k) => k.kid === kid);
    }
    if (!key) throw new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', 'the token was signed by an unknown key');
    try {
      const { payload } = await jwtVerify(token, await this.importKey(key.kid, key.publicJwk), {
        issuer: this.o.issuer,
        audience: AUDIENCE,
        algorithms: ['ES256'],
        currentDate: this.o.clock.now(),
      });
      if (payload['token_use'] !== use) throw new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', `not an ${use} token`);
      return payload;
    } catch (err) {
      if (err instanceof UnauthenticatedError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new UnauthenticatedError('ANODYNE_E_TOKEN_EXPIRED', 'the token has expired');
      throw new UnauthenticatedError('ANODYNE_E_TOKEN_INVALID', `the token is not valid: ${(err as Error).message}`);
    }
  }

  private async importKey(id: string, jwk: JWK) {
    let k = this.imported.get(id);
    if (!k) {
      k = await importJWK(jwk, 'ES256');
      this.imported.set(id, k);
    }
    return k;
  }

  /**
   * Verifies an access token (signature, issuer, audience, expiry) and returns the caller. A token
   * verified before is answered from memory until it expires (the same answer: access tokens are
   * stateless, their scopes are inside); rotating the signing key forgets them all.
   */
  async verify(token: string): Promise<Principal> {
    const hit = this.verified.get(token);
    if (hit && hit.expiresAt > this.o.clock.nowMs()) return hit;
    const p = await this.verifyFresh(token);
    if (this.verified.size >= 10_000) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, p);
    return p;
  }

  private async verifyFresh(token: string): Promise<Principal> {
    const c = await this.verifyJwt(token, 'access');
    const userName = typeof c['user_name'] === 'string' ? c['user_name'] : undefined;
    const clientId = String(c['client_id']);
    return {
      name: userName ?? clientId,
      ...(userName ? { userName } : {}),
      clientId,
      scopes: Array.isArray(c['scope']) ? c['scope'].map(String) : [],
      expiresAt: (c.exp ?? 0) * 1000,
    };
  }

  /** OIDC userinfo for a verified caller. */
  async userinfo(p: Principal): Promise<Record<string, unknown>> {
    if (!p.userName) return { sub: p.clientId, client_id: p.clientId };
    const u = await this.user(p.userName);
    return { sub: u.id, user_id: u.id, user_name: u.username, name: u.username, email: u.email, origin: u.origin, groups: u.groups };
  }
}
