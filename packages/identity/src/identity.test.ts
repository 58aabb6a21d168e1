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
});
