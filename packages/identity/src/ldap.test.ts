// Tests of identity with a real slapd: LDAP logins and group-to-scope mapping, refused logins, the directory being down.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'ldapts';
import { AnodyneError, ManualClock, exec, silentLogger, skipUnless } from '@anodyne/common';
import { openStore, type Store } from '@anodyne/store';
import { CredStore, KeyRing, newRandomKey } from '@anodyne/credstore';
import { Identity, LdapUserStore, SCOPES } from './index.js';

const code = (c: string) => (e: unknown) => e instanceof AnodyneError && e.code === c;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const SUFFIX = 'dc=example,dc=test';
const ROOT_PW = 'root-secret-for-the-test';

/** A real slapd (Debian's), on a free loopback port with its own config and data directory. */
async function startSlapd(dir: string): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  mkdirSync(join(dir, 'data'), { recursive: true });
  writeFileSync(
    join(dir, 'slapd.conf'),
    [
      'include /etc/ldap/schema/core.schema',
      'include /etc/ldap/schema/cosine.schema',
      'include /etc/ldap/schema/inetorgperson.schema',
      'modulepath /usr/lib/ldap',
      'moduleload back_mdb',
      `pidfile ${join(dir, 'slapd.pid')}`,
      'database mdb',
      `suffix "${SUFFIX}"`,
      `rootdn "cn=admin,${SUFFIX}"`,
      `rootpw ${ROOT_PW}`,
      `directory ${join(dir, 'data')}`,
      'maxsize 10485760',
      '',
    ].join('\n'),
  );
  const url = `ldap://127.0.0.1:${port}`;
  const proc = spawn('slapd', ['-d', '0', '-h', `${url}/`, '-f', join(dir, 'slapd.conf')], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const c = new Client({ url, connectTimeout: 500 });
    const up = await c.bind(`cn=admin,${SUFFIX}`, ROOT_PW).then(
      () => true,
      () => false,
    );
    await c.unbind().catch(() => undefined);
    if (up) return { url, proc };
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error('slapd did not start');
}

describe('identity with an LDAP user store (real slapd)', async () => {
  const hasSlapd = await exec(['sh', '-c', 'command -v slapd']).then(
    () => true,
    () => false,
  );
  let dir: string;
  let slapd: { url: string; proc: ChildProcess };
  let store: Store;
  let id: Identity;

  before(async () => {
    if (!hasSlapd) return;
    dir = mkdtempSync(join(tmpdir(), 'anodyne-ldap-'));
    slapd = await startSlapd(join(dir, 'slapd'));
    const admin = new Client({ url: slapd.url });
    await admin.bind(`cn=admin,${SUFFIX}`, ROOT_PW);
    await admin.add(SUFFIX, { objectClass: ['dcObject', 'organization'], dc: 'example', o: 'Example' });
    await admin.add(`ou=people,${SUFFIX}`, { objectClass: 'organizationalUnit', ou: 'people' });
    await admin.add(`ou=groups,${SUFFIX}`, { objectClass: 'organizationalUnit', ou: 'groups' });
    await admin.add(`cn=svc,${SUFFIX}`, {
      objectClass: ['organizationalRole', 'simpleSecurityObject'],
      cn: 'svc',
      userPassword: 'svc-password',
    });
    for (const u of ['dora', 'eve']) {
      await admin.add(`uid=${u},ou=people,${SUFFIX}`, {
        objectClass: 'inetOrgPerson',
        uid: u,
        cn: u,
        sn: u,
        mail: `${u}@example.test`,
        userPassword: `${u}-ldap-password`,
      });
    }
    await admin.add(`cn=k8s-operators,ou=groups,${SUFFIX}`, {
      objectClass: 'groupOfNames',
      cn: 'k8s-operators',
      member: `uid=dora,ou=people,${SUFFIX}`,
    });
    await admin.add(`cn=auditors,ou=groups,${SUFFIX}`, {
      objectClass: 'groupOfNames',
      cn: 'auditors',
      member: [`uid=dora,ou=people,${SUFFIX}`, `uid=eve,ou=people,${SUFFIX}`],
    });
    await admin.unbind();
    store = await openStore({ driver: 'sqlite', path: join(dir, 'anodyne.db') });
    const clock = new ManualClock(new Date('2026-11-22T08:00:00Z'));
    const creds = new CredStore({ store, keys: new KeyRing(newRandomKey()), clock, logger: silentLogger() });
    const ldap = new LdapUserStore(
      {
        url: slapd.url,
        bindDn: `cn=svc,${SUFFIX}`,
        bindPassword: 'svc-password',
        userBase: `ou=people,${SUFFIX}`,
        userFilter: '(uid={0})',
        groupBase: `ou=groups,${SUFFIX}`,
        groupFilter: '(member={0})',
        groupScopes: { 'k8s-operators': [SCOPES.manage], auditors: [SCOPES.adminRead] },
      },
      silentLogger(),
    );
    id = new Identity({
      store,
      creds,
      clock,
      logger: silentLogger(),
      issuer: 'https://127.0.0.1:9021',
      ldap,
      lockout: { maxFailures: 3, lockSeconds: 60 },
    });
    await id.init();
  });
  after(async () => {
    if (!hasSlapd) return;
    await store.close();
    slapd.proc.kill('SIGTERM');
    await new Promise((r) => slapd.proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('a directory user logs in; LDAP groups map to scopes', { skip: skipUnless(hasSlapd, 'slapd not installed') }, async () => {
    const t = await id.token({ grant_type: 'password', username: 'dora', password: 'dora-ldap-password' });
    const p = await id.verify(t.access_token);
    assert.equal(p.name, 'dora');
    assert.deepEqual([...p.scopes].sort(), [SCOPES.adminRead, SCOPES.manage].sort());
    const u = await id.user('dora');
    assert.equal(u.origin, 'ldap');
    assert.equal(u.email, 'dora@example.test');
    const eve = await id.verify((await id.token({ grant_type: 'password', username: 'eve', password: 'eve-ldap-password' })).access_token);
    assert.deepEqual(eve.scopes, [SCOPES.adminRead]);
  });

  it(
    'a wrong password, an unknown user, an empty password and filter injection are refused',
    { skip: skipUnless(hasSlapd, 'slapd not installed') },
    async () => {
      await assert.rejects(id.token({ grant_type: 'password', username: 'eve', password: 'wrong' }), code('ANODYNE_E_BAD_CREDENTIALS'));
      await assert.rejects(id.token({ grant_type: 'password', username: 'nobody', password: 'x' }), code('ANODYNE_E_BAD_CREDENTIALS'));
      await assert.rejects(id.authenticateUser('dora', ''), code('ANODYNE_E_BAD_CREDENTIALS'));
      await assert.rejects(id.authenticateUser('*', 'dora-ldap-password'), code('ANODYNE_E_BAD_CREDENTIALS'));
    },
  );

  it('the directory being down is a clear, retryable error', { skip: skipUnless(hasSlapd, 'slapd not installed') }, async () => {
    const down = new LdapUserStore(
      {
        url: 'ldap://127.0.0.1:1',
        bindDn: 'cn=x',
        bindPassword: 'y',
        userBase: SUFFIX,
        userFilter: '(uid={0})',
        groupBase: SUFFIX,
        groupFilter: '(member={0})',
        groupScopes: {},
        timeoutMs: 500,
      },
      silentLogger(),
    );
    await assert.rejects(
      down.authenticate('dora', 'pw'),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_LDAP_UNAVAILABLE' && e.retryable,
    );
  });
});
