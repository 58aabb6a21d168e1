// Tests of the credential store on SQLite and PostgreSQL: generation, CA and key rotation, expiry, encryption at rest; the key file.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { AnodyneError, ManualClock, exec, silentLogger, CommandError } from '@anodyne/common';
import { openStore, AuditLog, type Store } from '@anodyne/store';
import { startPostgres, type TestPostgres } from '@anodyne/store/testing';
import { CredStore, KeyRing, TrustRotation, loadKeyFile, newRandomKey, keyIdFor, type CertificateValue } from './index.js';

const actor = { actor: 'test' };

async function opensslVerify(dir: string, caPem: string, leafPem: string): Promise<boolean> {
  const ca = join(dir, `ca-${Math.random().toString(36).slice(2)}.pem`);
  const leaf = join(dir, `leaf-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(ca, caPem);
  writeFileSync(leaf, leafPem);
  try {
    await exec(['openssl', 'verify', '-CAfile', ca, leaf]);
    return true;
  } catch (err) {
    if (err instanceof CommandError) return false;
    throw err;
  }
}

/** Every file under dir, recursively, as one buffer list (for raw-byte searches). */
function allFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...allFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function suite(
  name: string,
  setup: () => Promise<{ open: () => Promise<{ store: Store; rawFiles: () => Promise<string[]> }>; teardown: () => Promise<void> }>,
): void {
  describe(`credstore on ${name}`, () => {
    let env: Awaited<ReturnType<typeof setup>>;
    let dir: string;
    before(async () => {
      env = await setup();
      dir = mkdtempSync(join(tmpdir(), 'anodyne-cred-'));
    });
    after(async () => {
      await env.teardown();
      rmSync(dir, { recursive: true, force: true });
    });

    const make = async (clock = new ManualClock(new Date())) => {
      const { store, rawFiles } = await env.open();
      const keys = new KeyRing(newRandomKey());
      return { store, rawFiles, keys, clock, creds: new CredStore({ store, keys, clock, logger: silentLogger() }) };
    };

    it('generates passwords and users, converges on same parameters, adds versions on change', async () => {
      const { store, creds } = await make();
      try {
        const a = await creds.generate('/p/admin', 'password', { length: 40 }, actor);
        assert.equal(a.value.length, 40);
        assert.equal(a.version, 1);
        const again = await creds.generate('/p/admin', 'password', { length: 40 }, actor);
        assert.equal(again.id, a.id, 'converge with the same parameters keeps the version');
        assert.equal(again.value, a.value);
        const changed = await creds.generate('/p/admin', 'password', { length: 20 }, actor);
        assert.equal(changed.version, 2);
        assert.equal(changed.value.length, 20);
        const kept = await creds.generate('/p/admin', 'password', { length: 50 }, { ...actor, mode: 'no-overwrite' });
        assert.equal(kept.id, changed.id);
        const over = await creds.generate('/p/admin', 'password', { length: 20 }, { ...actor, mode: 'overwrite' });
        assert.equal(over.version, 3);
        assert.equal((await creds.get('/p/admin', { ...actor, version: 1 })).value, a.value, 'old versions are kept');
        assert.equal((await creds.get('/p/admin', { ...actor, id: changed.id })).version, 2);
        assert.deepEqual(
          (await creds.versions('/p/admin')).map((v) => v.version),
          [3, 2, 1],
        );
        const user = await creds.generate<'user'>('/p/db', 'user', { username: 'anodyne' }, actor);
        assert.equal(user.value.username, 'anodyne');
        assert.equal(user.value.password.length, 30);
        const special = await creds.generate('/p/special', 'password', { length: 64, include_special: true, exclude_number: true }, actor);
        assert.doesNotMatch(special.value, /[0-9]/);
        assert.match(special.value, /[!#%+\-.:=?@^_~]/);
      } finally {
        await store.close();
      }
    });

    it('generates a CA and leaf certificates that openssl verifies, with the SANs, usages and validity asked for', async () => {
      const { store, creds, clock } = await make();
      try {
        const ca = await creds.generate('/c/ca', 'certificate', { is_ca: true, common_name: 'test-ca', duration: 3650 }, actor);
        const leaf = await creds.generate<'certificate'>(
          '/c/apiserver',
          'certificate',
          {
            ca: '/c/ca',
            common_name: 'kube-apiserver',
            alternative_names: ['kubernetes', 'kubernetes.default.svc', '10.96.0.1', '127.0.0.1', '*.example.test'],
            organization: ['system:masters'],
            key_usage: ['digital_signature', 'key_encipherment'],
            extended_key_usage: ['server_auth', 'client_auth'],
            duration: 30,
          },
          actor,
        );
        const v = leaf.value;
        assert.ok(await opensslVerify(dir, ca.value.certificate, v.certificate));
        assert.equal(v.ca, ca.value.certificate);
        assert.equal(v.ca_name, '/c/ca');
        const x = new X509Certificate(v.certificate);
        assert.equal(
          x.subjectAltName,
          'DNS:kubernetes, DNS:kubernetes.default.svc, IP Address:10.96.0.1, IP Address:127.0.0.1, DNS:*.example.test',
        );
        assert.match(x.subject, /CN=kube-apiserver/);
        assert.match(x.subject, /O=system:masters/);
        assert.deepEqual(x.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
        assert.equal(x.ca, false);
        const days = (new Date(x.validTo).getTime() - clock.nowMs()) / 86_400_000;
        assert.ok(days > 29.9 && days <= 30.01, `validity ${days} days`);
        assert.ok(x.checkIssued(new X509Certificate(ca.value.certificate)));
        assert.ok(x.checkPrivateKey((await import('node:crypto')).createPrivateKey(v.private_key)));
        const caX = new X509Certificate(ca.value.certificate);
        assert.equal(caX.ca, true);
        // openssl's own view of the extensions
        const certFile = join(dir, 'leaf-text.pem');
        writeFileSync(certFile, v.certificate);
        const text = (await exec(['openssl', 'x509', '-in', certFile, '-noout', '-text'])).stdout;
        assert.match(text, /Key Usage: critical\s+Digital Signature, Key Encipherment/);
        assert.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
        // ECDSA keys work as well
        const ec = await creds.generate<'certificate'>(
          '/c/ec',
          'certificate',
          { ca: '/c/ca', common_name: 'ec', key_algorithm: 'ecdsa', extended_key_usage: ['client_auth'] },
          actor,
        );
        assert.ok(await opensslVerify(dir, ca.value.certificate, ec.value.certificate));
      } finally {
        await store.close();
      }
    });

    it('converge: same parameters keep the version, changed SANs make a new one', async () => {
      const { store, creds } = await make();
      try {
        await creds.generate('/v/ca', 'certificate', { is_ca: true, common_name: 'ca' }, actor);
        const params = { ca: '/v/ca', common_name: 'svc', alternative_names: ['a.test'], extended_key_usage: ['server_auth' as const] };
        const one = await creds.generate('/v/leaf', 'certificate', params, actor);
        const same = await creds.generate('/v/leaf', 'certificate', { ...params, alternative_names: ['a.test'] }, actor);
        assert.equal(same.id, one.id);
        assert.equal(same.version, 1);
        const changed = await creds.generate('/v/leaf', 'certificate', { ...params, alternative_names: ['a.test', 'b.test'] }, actor);
        assert.equal(changed.version, 2);
        assert.match(new X509Certificate(changed.value.certificate).subjectAltName ?? '', /b\.test/);
      } finally {
        await store.close();
      }
    });

    it('rotates a CA in three steps, as CredHub does', async () => {
      const { store, creds } = await make();
      try {
        const ca1 = await creds.generate('/r/ca', 'certificate', { is_ca: true, common_name: 'rot-ca' }, actor);
        const leafParams = { ca: '/r/ca', common_name: 'node', extended_key_usage: ['client_auth' as const] };
        const leaf1 = await creds.generate<'certificate'>('/r/leaf', 'certificate', leafParams, actor);
        // 1. new CA version, transitional: trusted, not signing
        const ca2 = await creds.regenerate('/r/ca', { ...actor, transitional: true });
        assert.equal(ca2.version, 2);
        assert.equal(ca2.transitional, true);
        const leaf1Now = await creds.get<'certificate'>('/r/leaf', actor);
        assert.equal(leaf1Now.id, leaf1.id);
        const bundle1 = leaf1Now.value.ca;
        assert.equal((bundle1.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'bundle holds both CA versions');
        assert.ok(await opensslVerify(dir, bundle1, leaf1.value.certificate));
        // converge does not re-sign while the old CA still signs
        assert.equal((await creds.generate('/r/leaf', 'certificate', leafParams, actor)).id, leaf1.id);
        // 2. flag moves to the old CA: the new one signs; converge re-signs leaves
        const active = await creds.setTransitional('/r/ca', ca1.id, actor);
        assert.deepEqual(
          active.map((a) => [a.id, a.transitional]),
          [
            [ca2.id, false],
            [ca1.id, true],
          ],
        );
        const leaf2 = await creds.generate<'certificate'>('/r/leaf', 'certificate', leafParams, actor);
        assert.equal(leaf2.version, 2, 'converge re-signs a leaf when the CA that signs changed');
        const v2 = leaf2.value;
        assert.ok(new X509Certificate(v2.certificate).checkIssued(new X509Certificate((ca2.value as CertificateValue).certificate)));
        assert.ok(await opensslVerify(dir, v2.ca, v2.certificate));
        assert.ok(await opensslVerify(dir, v2.ca, leaf1.value.certificate), 'old leaves still verify during the transition');
        // 3. no transitional version: only the new CA is trusted
        await creds.setTransitional('/r/ca', null, actor);
        const final = (await creds.get<'certificate'>('/r/leaf', actor)).value;
        assert.equal((final.ca.match(/BEGIN CERTIFICATE/g) ?? []).length, 1);
        assert.ok(await opensslVerify(dir, final.ca, final.certificate));
        assert.equal(await opensslVerify(dir, final.ca, leaf1.value.certificate), false, 'leaves of the old CA no longer verify');
        // Rotation steps are refused where they make no sense
        await assert.rejects(
          creds.regenerate('/r/leaf', { ...actor, transitional: true }),
          (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_CA_ROTATION_INVALID',
        );
        await creds.regenerate('/r/ca', { ...actor, transitional: true });
        await assert.rejects(
          creds.regenerate('/r/ca', { ...actor, transitional: true }),
          (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_CA_ROTATION_INVALID',
        );
      } finally {
        await store.close();
      }
    });

    it('rotates CAs and a signing key together; a deployment reads the signing versions throughout', async () => {
      const { store, creds } = await make();
      try {
        const rot = new TrustRotation(creds, 'test');
        const names = ['/t/ca', '/t/sa'];
        const ca1 = await creds.generate('/t/ca', 'certificate', { is_ca: true, common_name: 't-ca' }, actor);
        const sa1 = await creds.generate('/t/sa', 'rsa', {}, actor);
        const leafParams = { ca: '/t/ca', common_name: 'node', extended_key_usage: ['client_auth' as const] };
        const leaf1 = await creds.generate<'certificate'>('/t/leaf', 'certificate', leafParams, actor);
        assert.equal(await rot.phase(names), 'idle');
        assert.equal(sa1.value.public_keys, sa1.value.public_key.endsWith('\n') ? sa1.value.public_key : `${sa1.value.public_key}\n`);
        const pems = (s: string) => (s.match(/-----BEGIN [A-Z ]+-----/g) ?? []).length;

        // 1. new versions trusted; what a deployment converges on is still the old, signing, version
        const inUse = async () =>
          (await creds.certificatesInUse()).filter((c) => c.name === '/t/ca').map((c) => [c.version, c.transitional]);
        assert.deepEqual(await inUse(), [[1, false]]);
        await rot.trustNew(names);
        await rot.trustNew(names); // idempotent
        assert.equal(await rot.phase(names), 'trusting');
        assert.deepEqual((await inUse()).sort(), [
          [1, false],
          [2, true],
        ]);
        const ca = await creds.generate<'certificate'>('/t/ca', 'certificate', { is_ca: true, common_name: 't-ca' }, actor);
        assert.equal(ca.id, ca1.id, 'converge gives the signing CA, not the transitional one');
        assert.equal(pems(ca.value.ca), 2, 'whose bundle holds both');
        const sa = await creds.generate<'rsa'>('/t/sa', 'rsa', {}, actor);
        assert.equal(sa.value.private_key, sa1.value.private_key, 'the old key still signs');
        assert.equal(pems(sa.value.public_keys!), 2, 'both public keys verify');
        assert.equal((await creds.generate('/t/leaf', 'certificate', leafParams, actor)).id, leaf1.id, 'leaves unchanged');

        // 2. the new versions sign; leaves converge onto the new CA
        await rot.signWithNew(names);
        assert.equal(await rot.phase(names), 'signing');
        const ca2 = await creds.generate<'certificate'>('/t/ca', 'certificate', { is_ca: true, common_name: 't-ca' }, actor);
        assert.notEqual(ca2.id, ca1.id);
        const leaf2 = await creds.generate<'certificate'>('/t/leaf', 'certificate', leafParams, actor);
        assert.ok(new X509Certificate(leaf2.value.certificate).checkIssued(new X509Certificate(ca2.value.certificate)));
        assert.ok(await opensslVerify(dir, leaf2.value.ca, leaf1.value.certificate), 'old leaves verify during the transition');
        const sa2 = await creds.generate<'rsa'>('/t/sa', 'rsa', {}, actor);
        assert.notEqual(sa2.value.private_key, sa1.value.private_key, 'the new key signs');
        assert.ok(sa2.value.public_keys!.startsWith(sa2.value.public_key), 'signing key first');

        // 3. the old CA is no longer trusted; the old key still verifies (issued tokens)
        await rot.dropOld(names);
        assert.equal(await rot.phase(names), 'idle');
        assert.deepEqual(await inUse(), [[2, false]], 'the old CA is no longer in use');
        const final = (await creds.get<'certificate'>('/t/leaf', actor)).value;
        assert.equal(pems(final.ca), 1);
        assert.equal(await opensslVerify(dir, final.ca, leaf1.value.certificate), false);
        assert.equal(pems((await creds.get<'rsa'>('/t/sa', actor)).value.public_keys!), 2);

        // The next rotation retires the key kept for verification.
        await rot.trustNew(names);
        const sa3 = await creds.generate<'rsa'>('/t/sa', 'rsa', {}, actor);
        assert.equal(sa3.value.private_key, sa2.value.private_key);
        assert.equal(pems(sa3.value.public_keys!), 2);
        assert.ok(!sa3.value.public_keys!.includes(sa1.value.public_key.trim()), 'the first key is gone');
      } finally {
        await store.close();
      }
    });

    it('finds certificates expiring within N days', async () => {
      const { store, creds } = await make();
      try {
        await creds.generate('/e/ca', 'certificate', { is_ca: true, common_name: 'ca', duration: 3650 }, actor);
        await creds.generate('/e/short', 'certificate', { ca: '/e/ca', common_name: 'short', duration: 10 }, actor);
        await creds.generate('/e/long', 'certificate', { ca: '/e/ca', common_name: 'long', duration: 400 }, actor);
        assert.deepEqual(
          (await creds.findExpiring(30)).map((e) => e.name),
          ['/e/short'],
        );
        assert.deepEqual(
          (await creds.findExpiring(5)).map((e) => e.name),
          [],
        );
        assert.deepEqual(
          (await creds.findExpiring(500)).map((e) => e.name),
          ['/e/short', '/e/long'],
        );
        // a replaced leaf version is no longer in use and is not reported
        await creds.generate('/e/short', 'certificate', { ca: '/e/ca', common_name: 'short', duration: 100 }, actor);
        assert.deepEqual(
          (await creds.findExpiring(30)).map((e) => e.name),
          [],
        );
      } finally {
        await store.close();
      }
    });

    it('stores no plaintext secret: the raw bytes hold none of the generated values', async () => {
      const { store, creds, rawFiles } = await make();
      try {
        const secrets: string[] = [];
        const keyBody = (pem: string): string[] => pem.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----'));
        secrets.push((await creds.generate('/s/pw', 'password', {}, actor)).value);
        secrets.push((await creds.generate<'user'>('/s/user', 'user', {}, actor)).value.password);
        const ca = await creds.generate<'certificate'>('/s/ca', 'certificate', { is_ca: true, common_name: 'ca' }, actor);
        secrets.push(...keyBody(ca.value.private_key));
        const leaf = await creds.generate<'certificate'>('/s/leaf', 'certificate', { ca: '/s/ca', common_name: 'leaf' }, actor);
        secrets.push(...keyBody(leaf.value.private_key));
        secrets.push(...keyBody((await creds.generate<'rsa'>('/s/rsa', 'rsa', {}, actor)).value.private_key));
        const ssh = await creds.generate<'ssh'>('/s/ssh', 'ssh', {}, actor);
        secrets.push(...keyBody(ssh.value.private_key));
        secrets.push((await creds.set('/s/value', 'value', 'very-secret-value-0123456789', actor)).value);
        await creds.set('/s/json', 'json', { token: 'json-secret-token-abcdefghij' }, actor);
        secrets.push('json-secret-token-abcdefghij');
        assert.ok(secrets.length > 20);
        const files = await rawFiles();
        assert.ok(files.length > 0);
        const blobs = files.map((f) => readFileSync(f));
        for (const s of secrets) {
          const needle = Buffer.from(s, 'utf8');
          for (const [i, b] of blobs.entries()) assert.equal(b.indexOf(needle), -1, `secret found in ${files[i]}`);
        }
        // and the rows themselves, as the database returns them
        const rows = await sql<{ t: string }>`select id || ':' || params || ':' || key_id as t from credential_versions`.execute(store.db);
        for (const s of secrets) for (const r of rows.rows) assert.ok(!r.t.includes(s));
      } finally {
        await store.close();
      }
    });

    it('rotates the encryption key: everything reads back identical under the new key id', async () => {
      const { store, creds, keys } = await make();
      try {
        const before = new Map<string, unknown>();
        for (const [n, t] of [
          ['/k/pw', 'password'],
          ['/k/rsa', 'rsa'],
          ['/k/ssh', 'ssh'],
        ] as const) {
          before.set(n, (await creds.generate(n, t, {}, actor)).value);
        }
        await creds.generate('/k/ca', 'certificate', { is_ca: true, common_name: 'k' }, actor);
        before.set('/k/ca', (await creds.get('/k/ca', actor)).value);
        before.set('/k/pw', (await creds.generate('/k/pw', 'password', { length: 12 }, actor)).value); // a second version
        before.set('/k/pw@1', (await creds.get('/k/pw', { ...actor, version: 1 })).value);
        const oldId = keys.activeKeyId;
        const newKey = newRandomKey();
        const { keyId, reencrypted } = await creds.rotateEncryptionKey(newKey);
        assert.equal(keyId, keyIdFor(newKey));
        assert.equal(reencrypted, 5, 'every stored version: pw v1+v2, rsa, ssh, ca');
        assert.deepEqual(await creds.keyIdsInUse(), [keyId]);
        keys.remove(oldId);
        for (const [n, v] of before) {
          const [name, version] = n.split('@');
          const got = await creds.get(name!, { ...actor, ...(version ? { version: Number(version) } : {}) });
          assert.deepEqual(got.value, v, n);
        }
        // a key missing from the ring is a coded error, not garbage
        const other = new CredStore({ store, keys: new KeyRing(newRandomKey()), clock: new ManualClock(), logger: silentLogger() });
        await assert.rejects(
          other.get('/k/pw', actor),
          (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_ENCRYPTION_KEY_MISSING',
        );
      } finally {
        await store.close();
      }
    });

    it('audits every read of a secret value', async () => {
      const { store, creds, clock } = await make();
      try {
        await creds.generate('/a/pw', 'password', {}, { actor: 'alice' });
        await creds.get('/a/pw', { actor: 'bob' });
        await assert.rejects(creds.get('/a/missing', { actor: 'bob' }));
        const events = await new AuditLog(store, clock).list({ actor: 'bob' });
        assert.deepEqual(
          events.map((e) => [e.action, e.target, e.result]),
          [
            ['credential.read', '/a/missing', 'error'],
            ['credential.read', '/a/pw', 'ok'],
          ],
        );
        assert.ok(!JSON.stringify(events).includes((await creds.get<'password'>('/a/pw', actor)).value));
      } finally {
        await store.close();
      }
    });

    it('refuses bad input with coded errors and creates nothing', async () => {
      const { store, creds } = await make();
      try {
        const cases: [string, () => Promise<unknown>, string][] = [
          ['unknown type', () => creds.generate('/b/x', 'token' as 'password', {}, actor), 'ANODYNE_E_CREDENTIAL_TYPE_UNKNOWN'],
          [
            'missing CA',
            () => creds.generate('/b/leaf', 'certificate', { ca: '/b/no-such-ca', common_name: 'x' }, actor),
            'ANODYNE_E_CREDENTIAL_CA_NOT_FOUND',
          ],
          [
            'zero duration',
            () => creds.generate('/b/ca', 'certificate', { is_ca: true, common_name: 'x', duration: 0 }, actor),
            'ANODYNE_E_CREDENTIAL_PARAMS_INVALID',
          ],
          [
            'negative duration',
            () => creds.generate('/b/ca', 'certificate', { is_ca: true, common_name: 'x', duration: -5 }, actor),
            'ANODYNE_E_CREDENTIAL_PARAMS_INVALID',
          ],
          [
            'malformed SAN',
            () => creds.generate('/b/ca', 'certificate', { self_sign: true, common_name: 'x', alternative_names: ['not a host!'] }, actor),
            'ANODYNE_E_CREDENTIAL_PARAMS_INVALID',
          ],
          [
            'unknown parameter',
            () => creds.generate('/b/pw', 'password', { lenght: 3 } as never, actor),
            'ANODYNE_E_CREDENTIAL_PARAMS_INVALID',
          ],
          ['bad name', () => creds.generate('../etc', 'password', {}, actor), 'ANODYNE_E_CREDENTIAL_NAME_INVALID'],
          ['generate a value', () => creds.generate('/b/v', 'value' as 'password', {}, actor), 'ANODYNE_E_CREDENTIAL_PARAMS_INVALID'],
          ['no signer', () => creds.generate('/b/leaf', 'certificate', { common_name: 'x' }, actor), 'ANODYNE_E_CREDENTIAL_PARAMS_INVALID'],
          ['not found', () => creds.get('/b/none', actor), 'ANODYNE_E_CREDENTIAL_NOT_FOUND'],
        ];
        for (const [label, fn, code] of cases) {
          await assert.rejects(fn(), (e: unknown) => {
            assert.ok(e instanceof AnodyneError, label);
            assert.equal(e.code, code, label);
            return true;
          });
        }
        await creds.generate('/b/pw', 'password', {}, actor);
        await assert.rejects(
          creds.generate('/b/pw', 'rsa', {}, actor),
          (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_CREDENTIAL_TYPE_MISMATCH',
        );
        assert.deepEqual(
          (await creds.list('/b')).map((c) => c.name),
          ['/b/pw'],
        );
      } finally {
        await store.close();
      }
    });

    it('lists by prefix and deletes, alone or by prefix', async () => {
      const { store, creds } = await make();
      try {
        for (const n of ['/clusters/a/x', '/clusters/a/y', '/clusters/ab/z', '/other']) await creds.generate(n, 'password', {}, actor);
        await creds.generate('/clusters/a/x', 'password', { length: 10 }, actor);
        const listed = await creds.list('/clusters/a/');
        assert.deepEqual(
          listed.map((c) => [c.name, c.version]),
          [
            ['/clusters/a/x', 2],
            ['/clusters/a/y', 1],
          ],
        );
        assert.equal(await creds.deletePrefix('/clusters/a'), 2);
        assert.deepEqual(
          (await creds.list('/')).map((c) => c.name),
          ['/clusters/ab/z', '/other'],
        );
        await creds.delete('/other', actor);
        await assert.rejects(
          creds.delete('/other', actor),
          (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_CREDENTIAL_NOT_FOUND',
        );
      } finally {
        await store.close();
      }
    });

    it('generates the certificate set of one Kubernetes cluster (timed)', async (t) => {
      const { store, creds } = await make();
      try {
        const started = performance.now();
        const p = '/clusters/timed';
        await Promise.all([
          creds.generate(`${p}/ca`, 'certificate', { is_ca: true, common_name: 'kubernetes-ca', duration: 3650 }, actor),
          creds.generate(`${p}/etcd-ca`, 'certificate', { is_ca: true, common_name: 'etcd-ca', duration: 3650 }, actor),
          creds.generate(`${p}/front-proxy-ca`, 'certificate', { is_ca: true, common_name: 'front-proxy-ca', duration: 3650 }, actor),
          creds.generate(`${p}/service-account-key`, 'rsa', {}, actor),
        ]);
        const leaves: [string, string, Record<string, unknown>][] = [
          [
            'apiserver',
            'ca',
            {
              common_name: 'kube-apiserver',
              alternative_names: [
                'kubernetes',
                'kubernetes.default',
                'kubernetes.default.svc',
                'kubernetes.default.svc.cluster.local',
                '10.96.0.1',
                '127.0.0.1',
              ],
              extended_key_usage: ['server_auth'],
            },
          ],
          [
            'apiserver-kubelet-client',
            'ca',
            { common_name: 'kube-apiserver-kubelet-client', organization: 'kubeadm:cluster-admins', extended_key_usage: ['client_auth'] },
          ],
          ['apiserver-etcd-client', 'etcd-ca', { common_name: 'kube-apiserver-etcd-client', extended_key_usage: ['client_auth'] }],
          ['front-proxy-client', 'front-proxy-ca', { common_name: 'front-proxy-client', extended_key_usage: ['client_auth'] }],
          [
            'etcd-server',
            'etcd-ca',
            { common_name: 'etcd', alternative_names: ['localhost', '127.0.0.1'], extended_key_usage: ['server_auth', 'client_auth'] },
          ],
          [
            'etcd-peer',
            'etcd-ca',
            { common_name: 'etcd-peer', alternative_names: ['localhost', '127.0.0.1'], extended_key_usage: ['server_auth', 'client_auth'] },
          ],
          ['etcd-healthcheck-client', 'etcd-ca', { common_name: 'kube-etcd-healthcheck-client', extended_key_usage: ['client_auth'] }],
          ['admin', 'ca', { common_name: 'kubernetes-admin', organization: 'system:masters', extended_key_usage: ['client_auth'] }],
          ['controller-manager', 'ca', { common_name: 'system:kube-controller-manager', extended_key_usage: ['client_auth'] }],
          ['scheduler', 'ca', { common_name: 'system:kube-scheduler', extended_key_usage: ['client_auth'] }],
          [
            'kubelet',
            'ca',
            {
              common_name: 'system:node:worker-0',
              organization: 'system:nodes',
              alternative_names: ['10.0.0.10'],
              extended_key_usage: ['server_auth', 'client_auth'],
            },
          ],
          ['kube-proxy', 'ca', { common_name: 'system:kube-proxy', extended_key_usage: ['client_auth'] }],
        ];
        await Promise.all(
          leaves.map(([n, ca, params]) => creds.generate(`${p}/${n}`, 'certificate', { ca: `${p}/${ca}`, ...params }, actor)),
        );
        const ms = performance.now() - started;
        t.diagnostic(`full cluster certificate set (3 CAs + ${leaves.length} leaves + SA key): ${ms.toFixed(0)} ms`);
        assert.equal((await creds.list(p)).length, 16);
      } finally {
        await store.close();
      }
    });
  });
}

suite('SQLite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-cred-sqlite-'));
  let n = 0;
  return Promise.resolve({
    open: async () => {
      const path = join(dir, `db${++n}`, 'anodyne.db');
      const store = await openStore({ driver: 'sqlite', path });
      return { store, rawFiles: () => Promise.resolve(allFiles(join(dir, `db${n}`))) };
    },
    teardown: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })),
  });
});

suite('PostgreSQL', async () => {
  const server: TestPostgres = await startPostgres();
  return {
    open: async () => {
      const store = await openStore({ driver: 'postgres', url: await server.createDatabase() });
      return {
        store,
        rawFiles: async () => {
          await sql`checkpoint`.execute(store.db);
          return allFiles(server.dataDir);
        },
      };
    },
    teardown: () => server.stop(),
  };
});

describe('key file', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-keyfile-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is created with mode 0600 on first start and gives the same key after', () => {
    const path = join(dir, 'sub', 'credstore.key');
    const first = loadKeyFile(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(loadKeyFile(path).activeKeyId, first.activeKeyId);
  });

  it('refuses a key file readable by others, and a malformed key', () => {
    const path = join(dir, 'open.key');
    writeFileSync(path, newRandomKey().toString('hex'));
    chmodSync(path, 0o644);
    assert.throws(
      () => loadKeyFile(path),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_ENCRYPTION_KEY_INVALID',
    );
    const short = join(dir, 'short.key');
    writeFileSync(short, 'abcd', { mode: 0o600 });
    assert.throws(
      () => loadKeyFile(short),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_ENCRYPTION_KEY_INVALID',
    );
  });
});
