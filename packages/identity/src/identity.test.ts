// Tests of the identity issuer: password, refresh, client and authorization code (PKCE) grants, token checks, key rotation, lockout, argon2id hashes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, generateKeyPair, decodeJwt } from 'jose';
import { AnodyneError, ManualClock, silentLogger } from '@anodyne/common';
import { openStore, type Store } from '@anodyne/store';
import { CredStore, KeyRing, newRandomKey } from '@anodyne/credstore';
import { Identity, SCOPES, CLI_CLIENT, CONSOLE_CLIENT, escapeFilter, type AuthorizeRequest } from './index.js';

const ISSUER = 'https://127.0.0.1:9021';
const code = (c: string) => (e: unknown) => e instanceof AnodyneError && e.code === c;
/** An error with this code whose details name this key. */
const codeKey = (c: string, key: string) => (e: unknown) => e instanceof AnodyneError && e.code === c && e.details['key'] === key;
const CONSOLE_URL = `${ISSUER}/console/`;
/** A PKCE pair: a random base64url verifier (64 characters) and its S256 challenge. */
const pkce = () => {
  const verifier = randomBytes(48).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
};

describe('identity (UAA-compatible issuer)', () => {
  let dir: string;
  let store: Store;
  let clock: ManualClock;
  let id: Identity;
  let creds: CredStore;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-identity-'));
    store = await openStore({ driver: 'sqlite', path: join(dir, 'anodyne.db') });
    clock = new ManualClock(new Date('2026-11-22T08:00:00Z'));
    creds = new CredStore({ store, keys: new KeyRing(newRandomKey()), clock, logger: silentLogger() });
    id = new Identity({ store, creds, clock, logger: silentLogger(), issuer: ISSUER, lockout: { maxFailures: 3, lockSeconds: 60 } });
    await id.init();
    await id.createUser({ username: 'alice', password: 'alice-password', groups: [SCOPES.manage] });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('password grant: an ES256 JWT with scope, user_name, client_id, iss, aud, exp and a kid from /token_keys', async () => {
    const t = await id.token({ grant_type: 'password', username: 'alice', password: 'alice-password', client_id: CLI_CLIENT });
    assert.equal(t.token_type, 'bearer');
    assert.equal(t.scope, SCOPES.manage);
    const claims = decodeJwt(t.access_token);
    assert.equal(claims.iss, ISSUER);
    assert.deepEqual(claims['scope'], [SCOPES.manage]);
    assert.equal(claims['user_name'], 'alice');
    assert.equal(claims['client_id'], CLI_CLIENT);
    assert.ok((claims.aud as string[]).includes('anodyne'));
    assert.equal(claims.exp! - claims.iat!, 600);
    const header = JSON.parse(Buffer.from(t.access_token.split('.')[0]!, 'base64url').toString()) as { alg: string; kid: string };
    assert.equal(header.alg, 'ES256');
    assert.ok(
      id.tokenKeys().keys.some((k) => k.kid === header.kid && k.d === undefined),
      'public key published, private part never',
    );
    const p = await id.verify(t.access_token);
    assert.equal(p.name, 'alice');
    assert.deepEqual(p.scopes, [SCOPES.manage]);
    assert.ok(t.refresh_token);
  });

  it('refresh_token grant gives a fresh access token; a refresh token is not an access token', async () => {
    const t = await id.token({ grant_type: 'password', username: 'alice', password: 'alice-password' });
    await clock.advance(30_000);
    const r = await id.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token! });
    assert.notEqual(r.access_token, t.access_token);
    assert.equal((await id.verify(r.access_token)).name, 'alice');
    await assert.rejects(id.verify(t.refresh_token!), code('ANODYNE_E_TOKEN_INVALID'));
  });

  it('client_credentials grant for a confidential client; a wrong secret is refused', async () => {
    await id.createClient({
      clientId: 'automation',
      secret: 'automation-secret',
      scopes: [SCOPES.adminRead],
      grantTypes: ['client_credentials'],
    });
    const t = await id.token({ grant_type: 'client_credentials', client_id: 'automation', client_secret: 'automation-secret' });
    const p = await id.verify(t.access_token);
    assert.equal(p.name, 'automation');
    assert.deepEqual(p.scopes, [SCOPES.adminRead]);
    assert.equal(t.refresh_token, undefined);
    await assert.rejects(
      id.token({ grant_type: 'client_credentials', client_id: 'automation', client_secret: 'nope' }),
      code('ANODYNE_E_BAD_CREDENTIALS'),
    );
    await assert.rejects(
      id.token({
        grant_type: 'password',
        client_id: 'automation',
        client_secret: 'automation-secret',
        username: 'alice',
        password: 'alice-password',
      }),
      code('ANODYNE_E_GRANT_UNSUPPORTED'),
    );
    await assert.rejects(id.token({ grant_type: 'implicit' }), code('ANODYNE_E_GRANT_UNSUPPORTED'));
  });

  it('refuses expired tokens, tokens signed by another key, for another audience or issuer', async () => {
    const t = await id.token({ grant_type: 'password', username: 'alice', password: 'alice-password' });
    await clock.advance(601_000);
    await assert.rejects(id.verify(t.access_token), code('ANODYNE_E_TOKEN_EXPIRED'));
    const kid = id.tokenKeys().keys[0]!.kid!;
    const { privateKey } = await generateKeyPair('ES256');
    const now = Math.floor(clock.nowMs() / 1000);
    const forged = await new SignJWT({ scope: [SCOPES.admin], user_name: 'alice', client_id: CLI_CLIENT, token_use: 'access' })
      .setProtectedHeader({ alg: 'ES256', kid })
      .setIssuer(ISSUER)
      .setAudience('anodyne')
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(privateKey);
    await assert.rejects(id.verify(forged), code('ANODYNE_E_TOKEN_INVALID'));
    await assert.rejects(id.verify('not-a-jwt'), code('ANODYNE_E_TOKEN_INVALID'));
    const other = new Identity({
      store,
      creds: new CredStore({ store, keys: new KeyRing(newRandomKey()), clock, logger: silentLogger() }),
      clock,
      logger: silentLogger(),
      issuer: 'https://elsewhere:9021',
    });
    await assert.rejects(
      other.verify((await id.token({ grant_type: 'password', username: 'alice', password: 'alice-password' })).access_token),
      code('ANODYNE_E_TOKEN_INVALID'),
    );
  });

  it('key rotation: new tokens carry the new kid; tokens of the previous key stay valid', async () => {
    const before = await id.token({ grant_type: 'password', username: 'alice', password: 'alice-password' });
    const kid = await id.rotateSigningKey();
    const afterT = await id.token({ grant_type: 'password', username: 'alice', password: 'alice-password' });
    assert.equal((JSON.parse(Buffer.from(afterT.access_token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid, kid);
    assert.equal((await id.verify(before.access_token)).name, 'alice');
    assert.equal(id.tokenKeys().keys.length, 2);
    // A second rotation drops the first key: its tokens are refused, also those verified (and remembered) before.
    await id.rotateSigningKey();
    await assert.rejects(id.verify(before.access_token), { code: 'ANODYNE_E_TOKEN_INVALID' });
    assert.equal((await id.verify(afterT.access_token)).name, 'alice', "the previous key's tokens stay valid");
  });

  it('rotates by age: not while the newest key is young, then once it is older than the limit', async () => {
    const newest = () => id.tokenKeys().keys.at(-1)!.kid;
    const current = newest();
    assert.equal(await id.rotateIfOlderThan(30), undefined, 'a key younger than 30 days stays');
    assert.equal(newest(), current);
    await clock.advance(31 * 86_400_000);
    const rotated = await id.rotateIfOlderThan(30);
    assert.ok(rotated && rotated !== current);
    assert.equal(newest(), rotated);
    assert.equal(id.tokenKeys().keys.length, 2, 'the previous key is kept to verify older tokens');
  });

  it("an admin resets a local user's password; the old one stops working", async () => {
    await id.createUser({ username: 'reset-me', password: 'first-password', groups: [SCOPES.manage] });
    await id.setPassword('reset-me', 'second-password');
    await assert.rejects(
      id.token({ grant_type: 'password', username: 'reset-me', password: 'first-password' }),
      code('ANODYNE_E_BAD_CREDENTIALS'),
    );
    assert.ok((await id.token({ grant_type: 'password', username: 'reset-me', password: 'second-password' })).access_token);
    await assert.rejects(id.setPassword('reset-me', 'short'), code('ANODYNE_E_INVALID_INPUT'));
    await assert.rejects(id.setPassword('nobody-here', 'long-enough-1'), code('ANODYNE_E_USER_NOT_FOUND'));
  });

  it('locks an account after repeated failures, for a while; a good password then works again', async () => {
    await id.createUser({ username: 'bob', password: 'bob-password', groups: [SCOPES.manage] });
    for (let i = 0; i < 3; i++)
      await assert.rejects(id.token({ grant_type: 'password', username: 'bob', password: 'wrong' }), code('ANODYNE_E_BAD_CREDENTIALS'));
    await assert.rejects(id.token({ grant_type: 'password', username: 'bob', password: 'bob-password' }), code('ANODYNE_E_ACCOUNT_LOCKED'));
    await clock.advance(61_000);
    assert.ok((await id.token({ grant_type: 'password', username: 'bob', password: 'bob-password' })).access_token);
    await assert.rejects(id.token({ grant_type: 'password', username: 'nobody', password: 'x' }), code('ANODYNE_E_BAD_CREDENTIALS'));
  });

  it('a key rotated by another replica: its tokens verify here, and this replica signs with it once it has read it', async () => {
    await id.createUser({ username: 'erin', password: 'erin-password', groups: [SCOPES.manage] });
    const other = new Identity({ store, creds, clock, logger: silentLogger(), issuer: ISSUER });
    await other.init();
    const kid = await other.rotateSigningKey();
    const t = await other.token({ grant_type: 'password', username: 'erin', password: 'erin-password' });
    assert.equal((await id.verify(t.access_token)).name, 'erin', 'verified after reading the keys again');
    const mine = await id.token({ grant_type: 'password', username: 'erin', password: 'erin-password' });
    const header = JSON.parse(Buffer.from(mine.access_token.split('.')[0]!, 'base64url').toString()) as { kid: string };
    assert.equal(header.kid, kid);
    assert.equal((await other.verify(mine.access_token)).name, 'erin');
    // A key nobody has: refused (and not read again for every such token).
    const forged = `${Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'key-unknown' })).toString('base64url')}.${t.access_token.split('.').slice(1).join('.')}`;
    await assert.rejects(id.verify(forged), code('ANODYNE_E_TOKEN_INVALID'));
  });

  it('counts failures that arrive at once (as from several replicas): every one counts towards the lockout', async () => {
    await id.createUser({ username: 'carl', password: 'carl-password', groups: [SCOPES.manage] });
    // A second issuer on the same database stands for another replica.
    const other = new Identity({
      store,
      creds,
      clock,
      logger: silentLogger(),
      issuer: ISSUER,
      lockout: { maxFailures: 3, lockSeconds: 60 },
    });
    await Promise.all(
      [id, other, id].map((x) =>
        assert.rejects(x.token({ grant_type: 'password', username: 'carl', password: 'wrong' }), code('ANODYNE_E_BAD_CREDENTIALS')),
      ),
    );
    await assert.rejects(
      id.token({ grant_type: 'password', username: 'carl', password: 'carl-password' }),
      code('ANODYNE_E_ACCOUNT_LOCKED'),
    );
    await assert.rejects(
      other.token({ grant_type: 'password', username: 'carl', password: 'carl-password' }),
      code('ANODYNE_E_ACCOUNT_LOCKED'),
    );
  });

  it('stores argon2id hashes only; the first admin is created once', async () => {
    const pw = await id.ensureAdmin();
    assert.ok(pw && pw.length >= 20);
    assert.equal(await id.ensureAdmin(), undefined);
    assert.deepEqual((await id.user('admin')).groups, [SCOPES.admin]);
    const rows = await store.db.selectFrom('identity_users').select(['password_hash']).execute();
    for (const r of rows) assert.match(r.password_hash ?? '', /^\$argon2id\$/);
    const raw = readFileSync(join(dir, 'anodyne.db'));
    for (const secret of ['alice-password', 'bob-password', pw, 'automation-secret'])
      assert.equal(raw.includes(Buffer.from(secret)), false, 'no password in the database file');
  });

  it('validates users and groups', async () => {
    await assert.rejects(id.createUser({ username: 'bad name', password: 'long-enough' }), code('ANODYNE_E_INVALID_INPUT'));
    await assert.rejects(id.createUser({ username: 'carol', password: 'short' }), code('ANODYNE_E_INVALID_INPUT'));
    await assert.rejects(id.createUser({ username: 'carol', password: 'long-enough', groups: ['root'] }), code('ANODYNE_E_INVALID_INPUT'));
    await assert.rejects(id.createUser({ username: 'alice', password: 'long-enough' }), code('ANODYNE_E_USER_EXISTS'));
    assert.equal(escapeFilter('a*)(uid=*'), 'a\\2a\\29\\28uid=\\2a');
  });

  // ------------------------------------------------------------------ authorization code flow (PKCE)

  /** A valid authorization request for the console, with its PKCE pair; `over` changes fields. */
  const authRequest = (over: Partial<AuthorizeRequest> = {}) => {
    const p = pkce();
    const req: AuthorizeRequest = {
      response_type: 'code',
      client_id: CONSOLE_CLIENT,
      redirect_uri: CONSOLE_URL,
      code_challenge: p.challenge,
      code_challenge_method: 'S256',
      state: 'state-1',
      ...over,
    };
    return { req, verifier: p.verifier };
  };
  /** Checks a request, signs the user in and returns the code, its verifier and where the browser is sent. */
  const codeFor = async (username: string, password: string, over: Partial<AuthorizeRequest> = {}) => {
    const { req, verifier } = authRequest(over);
    const location = new URL(await id.authorize(await id.checkAuthorization(req), username, password));
    const c = location.searchParams.get('code');
    assert.ok(c, 'a code in the redirect');
    return { code: c, verifier, location, redirectUri: req.redirect_uri!, clientId: req.client_id! };
  };
  const redeem = (c: { code: string; verifier: string; redirectUri: string; clientId: string }, over: Record<string, string> = {}) =>
    id.token({
      grant_type: 'authorization_code',
      client_id: c.clientId,
      code: c.code,
      redirect_uri: c.redirectUri,
      code_verifier: c.verifier,
      ...over,
    });
  const codeCount = async () => (await store.db.selectFrom('identity_codes').select('code_hash').execute()).length;

  it('init creates the public console client, redirected to <issuer>/console/; discovery offers the code flow with S256', async () => {
    assert.equal(id.consoleUrl, CONSOLE_URL);
    const consoleClient = (await id.clients()).find((c) => c.client_id === CONSOLE_CLIENT);
    assert.deepEqual(consoleClient, {
      client_id: CONSOLE_CLIENT,
      scopes: [SCOPES.admin, SCOPES.adminRead, SCOPES.manage],
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [CONSOLE_URL],
      confidential: false,
    });
    assert.deepEqual((await id.clients()).find((c) => c.client_id === CLI_CLIENT)?.redirect_uris, []);
    const d = id.discovery();
    assert.equal(d['authorization_endpoint'], `${ISSUER}/oauth/authorize`);
    assert.deepEqual(d['response_types_supported'], ['code']);
    assert.deepEqual(d['code_challenge_methods_supported'], ['S256']);
    assert.ok((d['grant_types_supported'] as string[]).includes('authorization_code'));
  });

  it('init under another issuer moves the console redirect; init under the first one moves it back', async () => {
    const moved = 'https://anodyne.example:9443';
    const other = new Identity({ store, creds, clock, logger: silentLogger(), issuer: moved });
    await other.init();
    const consoles = (await id.clients()).filter((c) => c.client_id === CONSOLE_CLIENT);
    assert.equal(consoles.length, 1, 'updated, not duplicated');
    assert.deepEqual(consoles[0]!.redirect_uris, [`${moved}/console/`]);
    await assert.rejects(id.checkAuthorization(authRequest().req), codeKey('ANODYNE_E_AUTHORIZE_INVALID', 'redirect_uri'));
    await id.init();
    assert.deepEqual((await id.clients()).find((c) => c.client_id === CONSOLE_CLIENT)?.redirect_uris, [CONSOLE_URL]);
    assert.ok(await id.checkAuthorization(authRequest().req));
  });

  it('authorization code with PKCE: a code and the state in the redirect, stored hashed; redeemed for access and refresh tokens', async () => {
    const { req, verifier } = authRequest({ state: 'a b&c=d/é' });
    assert.ok(verifier.length >= 43);
    const a = await id.checkAuthorization(req);
    assert.deepEqual(a, { clientId: CONSOLE_CLIENT, redirectUri: CONSOLE_URL, codeChallenge: req.code_challenge, state: 'a b&c=d/é' });
    const location = new URL(await id.authorize(a, 'alice', 'alice-password'));
    assert.equal(`${location.origin}${location.pathname}`, CONSOLE_URL);
    assert.equal(location.searchParams.get('state'), 'a b&c=d/é');
    const c = location.searchParams.get('code')!;
    assert.match(c, /^[A-Za-z0-9_-]{43,}$/);
    const rows = await store.db.selectFrom('identity_codes').selectAll().execute();
    assert.equal(rows.filter((r) => r.code_hash === createHash('sha256').update(c).digest('hex')).length, 1, 'the code is kept hashed');
    assert.equal(JSON.stringify(rows).includes(c), false, 'the code itself is not stored');

    const t = await id.token({
      grant_type: 'authorization_code',
      client_id: CONSOLE_CLIENT,
      code: c,
      redirect_uri: CONSOLE_URL,
      code_verifier: verifier,
    });
    assert.equal(t.scope, SCOPES.manage);
    const p = await id.verify(t.access_token);
    assert.equal(p.name, 'alice');
    assert.equal(p.clientId, CONSOLE_CLIENT);
    assert.deepEqual(p.scopes, [SCOPES.manage]);
    const aud = decodeJwt(t.access_token).aud as string[];
    assert.ok(aud.includes('anodyne') && aud.includes(CONSOLE_CLIENT));
    assert.ok(t.refresh_token);
    await assert.rejects(id.verify(t.refresh_token), code('ANODYNE_E_TOKEN_INVALID'));

    await clock.advance(30_000);
    const r = await id.token({ grant_type: 'refresh_token', client_id: CONSOLE_CLIENT, refresh_token: t.refresh_token });
    assert.notEqual(r.access_token, t.access_token);
    const rp = await id.verify(r.access_token);
    assert.equal(rp.name, 'alice');
    assert.equal(rp.clientId, CONSOLE_CLIENT);
    assert.deepEqual(rp.scopes, [SCOPES.manage]);
    await assert.rejects(
      id.token({ grant_type: 'refresh_token', client_id: CLI_CLIENT, refresh_token: t.refresh_token }),
      code('ANODYNE_E_TOKEN_INVALID'),
      "the console's refresh token is not the CLI's",
    );
  });

  it('no state in the request, no state in the redirect; a requested scope narrows the code', async () => {
    await id.createUser({ username: 'frank', password: 'frank-password', groups: [SCOPES.admin, SCOPES.manage] });
    const all = await codeFor('frank', 'frank-password', { state: undefined });
    assert.equal(all.location.searchParams.has('state'), false);
    assert.deepEqual((await id.verify((await redeem(all)).access_token)).scopes, [SCOPES.admin, SCOPES.manage]);
    const narrowed = await codeFor('frank', 'frank-password', { scope: `openid ${SCOPES.manage}` });
    assert.deepEqual((await id.verify((await redeem(narrowed)).access_token)).scopes, [SCOPES.manage]);
  });

  it('a code is redeemed once', async () => {
    const c = await codeFor('alice', 'alice-password');
    assert.ok((await redeem(c)).access_token);
    await assert.rejects(redeem(c), code('ANODYNE_E_GRANT_INVALID'));
  });

  it('a wrong code verifier is refused, and spends the code', async () => {
    const c = await codeFor('alice', 'alice-password');
    await assert.rejects(redeem(c, { code_verifier: pkce().verifier }), code('ANODYNE_E_GRANT_INVALID'));
    await assert.rejects(redeem(c), code('ANODYNE_E_GRANT_INVALID'));
    const d = await codeFor('alice', 'alice-password');
    await assert.rejects(redeem(d, { code_verifier: '' }), code('ANODYNE_E_INVALID_INPUT'));
    assert.ok((await redeem(d)).access_token, 'a request missing its verifier does not spend the code');
  });

  it('a redirect_uri other than the authorization request one is refused, even one registered for the client', async () => {
    await id.createClient({
      clientId: 'two-redirects',
      scopes: [SCOPES.manage],
      grantTypes: ['authorization_code'],
      redirectUris: ['https://a.example/cb', 'https://b.example/cb'],
    });
    const c = await codeFor('alice', 'alice-password', { client_id: 'two-redirects', redirect_uri: 'https://a.example/cb' });
    assert.equal(`${c.location.origin}${c.location.pathname}`, 'https://a.example/cb');
    await assert.rejects(redeem(c, { redirect_uri: 'https://b.example/cb' }), code('ANODYNE_E_GRANT_INVALID'));
    const d = await codeFor('alice', 'alice-password', { client_id: 'two-redirects', redirect_uri: 'https://a.example/cb' });
    const t = await redeem(d);
    assert.equal((await id.verify(t.access_token)).clientId, 'two-redirects');
    assert.equal(t.refresh_token, undefined, 'no refresh token for a client without the refresh_token grant');
  });

  it("a code is only redeemed by its client; a client without the authorization_code grant can't redeem", async () => {
    const c = await codeFor('alice', 'alice-password');
    await assert.rejects(redeem(c, { client_id: 'two-redirects' }), code('ANODYNE_E_GRANT_INVALID'));
    const d = await codeFor('alice', 'alice-password');
    await assert.rejects(redeem(d, { client_id: CLI_CLIENT }), code('ANODYNE_E_GRANT_UNSUPPORTED'));
  });

  it('a code is valid for 60 seconds', async () => {
    const young = await codeFor('alice', 'alice-password');
    await clock.advance(59_000);
    assert.ok((await redeem(young)).access_token);
    const old = await codeFor('alice', 'alice-password');
    await clock.advance(61_000);
    await assert.rejects(redeem(old), code('ANODYNE_E_GRANT_INVALID'));
  });

  it('checkAuthorization refuses each bad field, naming it', async () => {
    const refused = (key: string) => codeKey('ANODYNE_E_AUTHORIZE_INVALID', key);
    const check = (over: Partial<AuthorizeRequest>) => id.checkAuthorization(authRequest(over).req);
    assert.ok(await check({}), 'the base request is accepted');
    assert.ok(await check({ state: 'x'.repeat(512) }));
    await assert.rejects(check({ client_id: undefined }), refused('client_id'));
    await assert.rejects(check({ client_id: 'no-such-client' }), refused('client_id'));
    await assert.rejects(check({ client_id: CLI_CLIENT }), refused('client_id'));
    for (const redirect_uri of [
      undefined,
      `${ISSUER}/console`,
      `${ISSUER}/console/x`,
      `${CONSOLE_URL}?a=1`,
      'https://evil.example/console/',
    ])
      await assert.rejects(check({ redirect_uri }), refused('redirect_uri'), String(redirect_uri));
    await assert.rejects(check({ response_type: 'token' }), refused('response_type'));
    await assert.rejects(check({ response_type: undefined }), refused('response_type'));
    await assert.rejects(check({ code_challenge_method: 'plain' }), refused('code_challenge_method'));
    await assert.rejects(check({ code_challenge_method: undefined }), refused('code_challenge_method'));
    const v = pkce().verifier;
    for (const code_challenge of [
      undefined,
      '',
      'a'.repeat(42),
      'a'.repeat(44),
      `${'a'.repeat(42)}+`,
      createHash('sha256').update(v).digest('base64'), // padded standard base64
      createHash('sha256').update(v).digest('hex'),
    ])
      await assert.rejects(check({ code_challenge }), refused('code_challenge'), String(code_challenge));
    await assert.rejects(check({ state: 'x'.repeat(513) }), refused('state'));
  });

  it('authorize: a wrong password is refused with no code stored, and counts towards the lockout of the password grant', async () => {
    await id.createUser({ username: 'dora', password: 'dora-password', groups: [SCOPES.manage] });
    const a = await id.checkAuthorization(authRequest().req);
    const codes = await codeCount();
    await assert.rejects(id.authorize(a, 'nobody-at-all', 'x'), code('ANODYNE_E_BAD_CREDENTIALS'));
    for (let i = 0; i < 3; i++) await assert.rejects(id.authorize(a, 'dora', 'wrong'), code('ANODYNE_E_BAD_CREDENTIALS'));
    await assert.rejects(id.authorize(a, 'dora', 'dora-password'), code('ANODYNE_E_ACCOUNT_LOCKED'));
    await assert.rejects(
      id.token({ grant_type: 'password', username: 'dora', password: 'dora-password' }),
      code('ANODYNE_E_ACCOUNT_LOCKED'),
    );
    assert.equal(await codeCount(), codes, 'no code for a refused sign-in');
    await clock.advance(61_000);
    const location = new URL(await id.authorize(a, 'dora', 'dora-password'));
    assert.ok(location.searchParams.get('code'));
  });

  it('createClient: redirect URIs iff authorization_code; https, or http on loopback; no fragment', async () => {
    const bad = codeKey('ANODYNE_E_INVALID_INPUT', 'redirect_uris');
    const make = (clientId: string, redirectUris?: string[], grantTypes = ['authorization_code']) =>
      id.createClient({ clientId, scopes: [SCOPES.manage], grantTypes, ...(redirectUris ? { redirectUris } : {}) });
    await assert.rejects(make('web-none'), bad);
    await assert.rejects(make('web-empty', []), bad);
    await assert.rejects(make('pw-with-redirect', ['https://a.example/cb'], ['password']), bad);
    for (const r of [
      'http://a.example/cb',
      'https://a.example/cb#frag',
      'not a url',
      '/relative/cb',
      'ftp://a.example/cb',
      'http://127.0.0.1.example/cb',
    ])
      await assert.rejects(make('web-bad', ['https://ok.example/cb', r]), bad, r);
    const ok = ['https://a.example/cb', 'http://127.0.0.1:8080/cb', 'http://localhost/cb', 'http://[::1]:9000/cb'];
    await make('web-good', ok);
    const listed = await id.clients();
    assert.deepEqual(listed.find((c) => c.client_id === 'web-good')?.redirect_uris, ok);
    for (const gone of ['web-none', 'web-empty', 'pw-with-redirect', 'web-bad'])
      assert.equal(
        listed.some((c) => c.client_id === gone),
        false,
        `${gone} not created`,
      );
    const c = await codeFor('alice', 'alice-password', { client_id: 'web-good', redirect_uri: 'http://[::1]:9000/cb' });
    assert.equal(c.location.host, '[::1]:9000');
    assert.ok((await redeem(c)).access_token);
  });
});
