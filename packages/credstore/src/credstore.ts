// The credential store: generated, versioned, encrypted credentials with CA rotation and expiry queries, and deployment variables.
import { createHash, randomUUID } from 'node:crypto';
import { ConflictError, InputError, NotFoundError, type Clock, type Logger, type SecretRegistry } from '@anodyne/common';
import { AuditLog, storeQuery, type Store } from '@anodyne/store';
import { type KeyRing } from './keyring.js';
import { generateCertificate, generatePassword, generateRsa, generateSsh } from './generate.js';
import {
  assertType,
  canonicalJson,
  normalizeName,
  validateParams,
  type CertificateParams,
  type CertificateValue,
  type CredentialType,
  type GeneratableType,
  type RsaValue,
  type GenerateParamsByType,
  type SshParams,
  type UserParams,
  type ValueByType,
} from './types.js';

/** How `generate` treats an existing credential of the same name. */
export type GenerateMode = 'no-overwrite' | 'overwrite' | 'converge';

/** Who is asking; recorded in the audit log for every read of a secret value. */
export interface Actor {
  actor: string;
}

/** A credential version without its value. */
export interface CredentialMeta {
  id: string;
  name: string;
  type: CredentialType;
  version: number;
  created_at: string;
  /** Certificates: trusted but not signing (CA rotation). */
  transitional: boolean;
  /** Certificates: expiry instant. */
  expires_at: string | null;
  /** Certificates: name of the signing CA. */
  ca_name: string | null;
}

export interface Credential<T extends CredentialType = CredentialType> extends CredentialMeta {
  value: ValueByType[T];
}

/** What is stored (encrypted) for a certificate; `ca` is assembled on read. */
interface StoredCertificate {
  certificate: string;
  private_key: string;
  ca_name?: string;
  /** Id of the CA version that signed this certificate. */
  signed_by?: string;
}

interface StoredParams {
  params: Record<string, unknown>;
  signed_by?: string;
}

export interface CredStoreOptions {
  store: Store;
  keys: KeyRing;
  clock: Clock;
  logger: Logger;
  /** Generated and read secret values are registered here so loggers mask them. */
  secrets?: SecretRegistry;
}

export interface ExpiringCertificate {
  name: string;
  id: string;
  version: number;
  expires_at: string;
  transitional: boolean;
  /** A CA (renewing it is a CA rotation), not a leaf. */
  is_ca: boolean;
  /** When this version was issued (its lifetime is from here to `expires_at`). */
  created_at: string;
}

type VersionRow = {
  id: string;
  credential_id: string;
  version: number;
  type: string;
  key_id: string;
  nonce: Buffer;
  ciphertext: Buffer;
  params: string;
  params_hash: string;
  transitional: number;
  expires_at: string | null;
  ca_name: string | null;
  created_at: string;
  name: string;
};

/**
 * Anodyne's credential store (CredHub's role): generated, versioned credentials encrypted
 * at rest with AES-256-GCM. Every change adds a version and keeps the old ones. Values are
 * never logged; each read of a value is audited.
 */
export class CredStore {
  private readonly store: Store;
  private readonly keys: KeyRing;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly audit: AuditLog;
  private readonly secrets: SecretRegistry | undefined;
  /** Per-name chains: concurrent generates of one name in this process run one after another. */
  private readonly nameLocks = new Map<string, Promise<unknown>>();

  constructor(options: CredStoreOptions) {
    this.store = options.store;
    this.keys = options.keys;
    this.clock = options.clock;
    this.logger = options.logger;
    this.audit = new AuditLog(options.store, options.clock);
    this.secrets = options.secrets;
  }

  // ---------------------------------------------------------------- generate / set

  /**
   * Generates a credential. Modes: `no-overwrite` returns the existing latest version
   * unchanged; `overwrite` always adds a version; `converge` (default) adds one only when
   * the parameters differ from those of the latest version, or, for a certificate, when its
   * CA's signing version has changed. Parameters are validated before any work starts.
   */
  async generate<T extends GeneratableType>(
    rawName: string,
    type: T,
    params: GenerateParamsByType[T] | Record<string, never> = {},
    options: Actor & { mode?: GenerateMode } = { actor: 'system' },
  ): Promise<Credential<T>> {
    const name = normalizeName(rawName);
    return this.serialized(name, () => this.generateUnlocked<T>(name, type, params, options));
  }

  private serialized<R>(name: string, fn: () => Promise<R>): Promise<R> {
    const prev = this.nameLocks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.nameLocks.set(name, tail);
    void tail.then(() => {
      if (this.nameLocks.get(name) === tail) this.nameLocks.delete(name);
    });
    return next;
  }

  private async generateUnlocked<T extends GeneratableType>(
    name: string,
    type: T,
    params: GenerateParamsByType[T] | Record<string, never>,
    options: Actor & { mode?: GenerateMode },
  ): Promise<Credential<T>> {
    assertType(type);
    const p = validateParams(type, params);
    const mode = options.mode ?? 'converge';
    const latest = await this.latestRow(name);
    if (latest && latest.type !== type) {
      throw new ConflictError('ANODYNE_E_CREDENTIAL_TYPE_MISMATCH', `credential ${name} exists with type ${latest.type}, not ${type}`, {
        details: { name, type: latest.type },
      });
    }
    let signer: Awaited<ReturnType<CredStore['signingVersion']>> | undefined;
    if (type === 'certificate' && (p as CertificateParams).ca !== undefined) {
      signer = await this.signingVersion(normalizeName((p as CertificateParams).ca!));
    }
    const paramsHash = hashParams(p);
    // What a deployment uses is the version that signs: during a rotation the newest version may be
    // a transitional one, trusted (it is in every bundle) but not used to sign yet.
    const current = latest?.transitional === 1 ? ((await this.signingRow(name)) ?? latest) : latest;
    if (current) {
      if (mode === 'no-overwrite') return this.decode<T>(current, options.actor);
      if (mode === 'converge') {
        const stored = JSON.parse(current.params) as StoredParams;
        const sameSigner = signer === undefined || stored.signed_by === signer.row.id;
        if (current.params_hash === paramsHash && sameSigner) return this.decode<T>(current, options.actor);
      }
    }
    const { value, expiresAt, caName, signedBy } = await this.produce(type, p, signer);
    const row = await this.insertVersion(name, type, value, { params: p, ...(signedBy ? { signed_by: signedBy } : {}) }, paramsHash, {
      expiresAt,
      caName,
      transitional: false,
    });
    await this.audit.record({
      actor: options.actor,
      action: 'credential.generate',
      target: name,
      result: 'ok',
      details: { type, version: row.version, mode },
    });
    this.logger.info({ name, type, version: row.version }, 'credential generated');
    return this.decode<T>(row, options.actor);
  }

  /** Stores a value given by the caller as a new version. */
  async set<T extends CredentialType>(
    rawName: string,
    type: T,
    value: ValueByType[T],
    options: Actor = { actor: 'system' },
  ): Promise<Credential<T>> {
    const name = normalizeName(rawName);
    assertType(type);
    checkSetValue(type, value);
    const latest = await this.latestRow(name);
    if (latest && latest.type !== type) {
      throw new ConflictError('ANODYNE_E_CREDENTIAL_TYPE_MISMATCH', `credential ${name} exists with type ${latest.type}, not ${type}`, {
        details: { name, type: latest.type },
      });
    }
    let expiresAt: string | null = null;
    let stored: unknown = value;
    if (type === 'certificate') {
      const c = value as CertificateValue;
      const { X509Certificate } = await import('node:crypto');
      try {
        expiresAt = new Date(new X509Certificate(c.certificate).validTo).toISOString();
      } catch (err) {
        throw new InputError('ANODYNE_E_CREDENTIAL_PARAMS_INVALID', 'certificate is not a valid PEM certificate', { cause: err });
      }
      stored = { certificate: c.certificate, private_key: c.private_key, ...(c.ca ? { given_ca: c.ca } : {}) };
    }
    const row = await this.insertVersion(name, type, stored, { params: {} }, 'set', { expiresAt, caName: null, transitional: false });
    await this.audit.record({
      actor: options.actor,
      action: 'credential.set',
      target: name,
      result: 'ok',
      details: { type, version: row.version },
    });
    return this.decode<T>(row, options.actor);
  }

  /** Adds a new version with the latest version's parameters. With `transitional`, a CA's new version is trusted but does not sign yet. */
  async regenerate(rawName: string, options: Actor & { transitional?: boolean } = { actor: 'system' }): Promise<Credential> {
    const name = normalizeName(rawName);
    const latest = await this.latestRow(name);
    if (!latest) throw new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', `credential ${name} not found`, { details: { name } });
    const type = latest.type as CredentialType;
    if (type === 'value' || type === 'json' || latest.params_hash === 'set') {
      throw new InputError('ANODYNE_E_CREDENTIAL_PARAMS_INVALID', `credential ${name} was set, not generated, and cannot be regenerated`, {
        details: { name },
      });
    }
    const stored = JSON.parse(latest.params) as StoredParams;
    const p = stored.params;
    if (options.transitional) {
      if (!rotatable(type, p)) {
        throw new ConflictError(
          'ANODYNE_E_CA_ROTATION_INVALID',
          `only a CA or an RSA key can be regenerated as transitional; ${name} is neither`,
          { details: { name } },
        );
      }
      const any = await this.store.db
        .selectFrom('credential_versions')
        .select('id')
        .where('credential_id', '=', latest.credential_id)
        .where('transitional', '=', 1)
        .executeTakeFirst();
      if (any)
        throw new ConflictError(
          'ANODYNE_E_CA_ROTATION_INVALID',
          `CA ${name} already has a transitional version; finish that rotation first`,
          { details: { name } },
        );
    }
    let signer: Awaited<ReturnType<CredStore['signingVersion']>> | undefined;
    if (type === 'certificate' && (p as CertificateParams).ca !== undefined)
      signer = await this.signingVersion(normalizeName((p as CertificateParams).ca!));
    const { value, expiresAt, caName, signedBy } = await this.produce(type, p, signer);
    const row = await this.insertVersion(name, type, value, { params: p, ...(signedBy ? { signed_by: signedBy } : {}) }, hashParams(p), {
      expiresAt,
      caName,
      transitional: options.transitional === true,
    });
    await this.audit.record({
      actor: options.actor,
      action: 'credential.regenerate',
      target: name,
      result: 'ok',
      details: { type, version: row.version, transitional: options.transitional === true },
    });
    return this.decode(row, options.actor);
  }

  // ---------------------------------------------------------------- read

  /** The latest version, or the one given by number or id. Audited as a read of a secret value. */
  async get<T extends CredentialType = CredentialType>(
    rawName: string,
    options: Actor & { version?: number; id?: string } = { actor: 'system' },
  ): Promise<Credential<T>> {
    const name = normalizeName(rawName);
    let q = this.versionQuery().where('credentials.name', '=', name);
    if (options.id !== undefined) q = q.where('credential_versions.id', '=', options.id);
    else if (options.version !== undefined) q = q.where('credential_versions.version', '=', options.version);
    const row = await storeQuery('reading a credential', () =>
      q.orderBy('credential_versions.version', 'desc').limit(1).executeTakeFirst(),
    );
    if (!row) {
      await this.audit.record({
        actor: options.actor,
        action: 'credential.read',
        target: name,
        result: 'error',
        details: { reason: 'not found' },
      });
      throw new NotFoundError(
        'ANODYNE_E_CREDENTIAL_NOT_FOUND',
        `credential ${name}${options.version !== undefined ? ` version ${options.version}` : ''} not found`,
        { details: { name } },
      );
    }
    return this.decode<T>(row, options.actor);
  }

  /** Every version of a credential, newest first, without values. */
  async versions(rawName: string): Promise<CredentialMeta[]> {
    const name = normalizeName(rawName);
    const rows = await storeQuery('listing versions', () =>
      this.versionQuery().where('credentials.name', '=', name).orderBy('credential_versions.version', 'desc').execute(),
    );
    if (rows.length === 0) throw new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', `credential ${name} not found`, { details: { name } });
    return rows.map(meta);
  }

  /** Latest version of every credential whose name starts with the prefix, without values. */
  async list(prefix = '/'): Promise<CredentialMeta[]> {
    const p = prefix.startsWith('/') ? prefix : `/${prefix}`;
    const rows = await storeQuery('listing credentials', () =>
      this.versionQuery()
        .where('credentials.name', 'like', `${p.replace(/[\\%_]/g, (c) => '\\' + c)}%`)
        .where((eb) =>
          eb(
            'credential_versions.version',
            '=',
            eb
              .selectFrom('credential_versions as v2')
              .select((sub) => sub.fn.max('v2.version').as('m'))
              .whereRef('v2.credential_id', '=', 'credentials.id'),
          ),
        )
        .orderBy('credentials.name')
        .execute(),
    );
    return rows.map(meta);
  }

  /**
   * Certificates that must be rotated: every version still in use (the latest leaf, a CA's
   * signing and transitional versions) that expires within `days` days.
   */
  async findExpiring(days: number): Promise<ExpiringCertificate[]> {
    if (!Number.isFinite(days) || days < 0) throw new InputError('ANODYNE_E_INVALID_INPUT', 'days must be a number ≥ 0');
    return this.certificatesInUse(new Date(this.clock.nowMs() + days * 86_400_000).toISOString());
  }

  /** Every certificate version in use (as `findExpiring` counts them), soonest expiry first: what /metrics shows. */
  async certificatesInUse(expiringBy?: string): Promise<ExpiringCertificate[]> {
    // Every certificate version's metadata in one query (no secret is read or decrypted); which
    // versions are in use is worked out here: per credential, the newest one not transitional, and
    // any transitional one.
    const rows = await storeQuery('finding certificates in use', () =>
      this.store.db
        .selectFrom('credential_versions')
        .innerJoin('credentials', 'credentials.id', 'credential_versions.credential_id')
        .select([
          'credential_versions.id',
          'credential_versions.credential_id',
          'credential_versions.version',
          'credential_versions.transitional',
          'credential_versions.expires_at',
          'credential_versions.params',
          'credential_versions.created_at',
          'credentials.name',
        ])
        .where('credential_versions.type', '=', 'certificate')
        .where('credential_versions.expires_at', 'is not', null)
        .execute(),
    );
    const signing = new Map<string, number>();
    for (const r of rows)
      if (Number(r.transitional) === 0) signing.set(r.credential_id, Math.max(signing.get(r.credential_id) ?? 0, Number(r.version)));
    return rows
      .filter((r) => Number(r.transitional) === 1 || signing.get(r.credential_id) === Number(r.version))
      .filter((r) => expiringBy === undefined || r.expires_at! <= expiringBy)
      .sort((a, b) => a.expires_at!.localeCompare(b.expires_at!) || a.name.localeCompare(b.name))
      .map((r) => ({
        name: r.name,
        id: r.id,
        version: Number(r.version),
        expires_at: r.expires_at!,
        transitional: Number(r.transitional) === 1,
        is_ca: (JSON.parse(r.params) as StoredParams).params['is_ca'] === true,
        created_at: r.created_at,
      }));
  }

  // ---------------------------------------------------------------- delete

  /** Deletes a credential and all its versions. */
  async delete(rawName: string, options: Actor = { actor: 'system' }): Promise<void> {
    const name = normalizeName(rawName);
    const res = await storeQuery('deleting a credential', () =>
      this.store.db.deleteFrom('credentials').where('name', '=', name).executeTakeFirst(),
    );
    if (Number(res.numDeletedRows) === 0)
      throw new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', `credential ${name} not found`, { details: { name } });
    await this.audit.record({ actor: options.actor, action: 'credential.delete', target: name, result: 'ok' });
  }

  /** Deletes every credential under a prefix (a cluster's, on cluster delete). Returns how many. */
  async deletePrefix(prefix: string, options: Actor = { actor: 'system' }): Promise<number> {
    const p = normalizeName(prefix.replace(/\/+$/, ''));
    const res = await storeQuery('deleting credentials', () =>
      this.store.db
        .deleteFrom('credentials')
        .where((eb) => eb.or([eb('name', '=', p), eb('name', 'like', `${p.replace(/[\\%_]/g, (c) => '\\' + c)}/%`)]))
        .executeTakeFirst(),
    );
    const n = Number(res.numDeletedRows);
    await this.audit.record({ actor: options.actor, action: 'credential.delete_prefix', target: p, result: 'ok', details: { deleted: n } });
    return n;
  }

  // ---------------------------------------------------------------- CA rotation

  /**
   * Moves the transitional flag of a CA: to the given version id (that version stays
   * trusted but stops signing, the other one signs), or to none (`null`: only the signing
   * version remains active). Together with `regenerate(ca, {transitional: true})` this is
   * CredHub's three-step CA rotation:
   *   1. regenerate(ca, {transitional: true})   new CA trusted everywhere, old CA signs
   *   2. setTransitional(ca, oldVersionId)      new CA signs; regenerate leaves
   *   3. setTransitional(ca, null)              old CA no longer trusted
   */
  async setTransitional(rawName: string, versionId: string | null, options: Actor = { actor: 'system' }): Promise<CredentialMeta[]> {
    const name = normalizeName(rawName);
    const rows = await storeQuery('reading CA versions', () =>
      this.versionQuery().where('credentials.name', '=', name).orderBy('credential_versions.version', 'desc').execute(),
    );
    const latest = rows[0];
    if (!latest) throw new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', `credential ${name} not found`, { details: { name } });
    const params = (JSON.parse(latest.params) as StoredParams).params;
    if (!rotatable(latest.type as CredentialType, params))
      throw new ConflictError('ANODYNE_E_CA_ROTATION_INVALID', `${name} is neither a CA nor an RSA key`, { details: { name } });
    if (versionId !== null) {
      const target = rows.find((r) => r.id === versionId);
      if (!target)
        throw new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', `CA ${name} has no version ${versionId}`, {
          details: { name, versionId },
        });
      if (rows.length < 2)
        throw new ConflictError('ANODYNE_E_CA_ROTATION_INVALID', `CA ${name} has only one version; regenerate it as transitional first`, {
          details: { name },
        });
    }
    await storeQuery('updating the transitional flag', () =>
      this.store.db.transaction().execute(async (tx) => {
        await tx.updateTable('credential_versions').set({ transitional: 0 }).where('credential_id', '=', latest.credential_id).execute();
        if (versionId !== null) await tx.updateTable('credential_versions').set({ transitional: 1 }).where('id', '=', versionId).execute();
      }),
    );
    await this.audit.record({
      actor: options.actor,
      action: 'credential.ca_transitional',
      target: name,
      result: 'ok',
      details: { versionId },
    });
    return this.activeVersions(name);
  }

  /**
   * Where a CA (or RSA key) stands in its rotation: `idle` (one version in use), `trusting` (a newer
   * version is trusted but the older one still signs: step 1 done), `signing` (the newer version
   * signs and the older one is still trusted: step 2 done).
   */
  async rotationPhase(rawName: string): Promise<{ phase: 'idle' | 'trusting' | 'signing'; signing: string; transitional?: string }> {
    const [signing, transitional] = await this.activeVersions(rawName);
    if (!transitional) return { phase: 'idle', signing: signing!.id };
    return {
      phase: transitional.version > signing!.version ? 'trusting' : 'signing',
      signing: signing!.id,
      transitional: transitional.id,
    };
  }

  /** The versions of a certificate in use: the signing version first, then any transitional one. */
  async activeVersions(rawName: string): Promise<CredentialMeta[]> {
    const name = normalizeName(rawName);
    const rows = await storeQuery('reading versions', () =>
      this.versionQuery().where('credentials.name', '=', name).orderBy('credential_versions.version', 'desc').execute(),
    );
    if (rows.length === 0) throw new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', `credential ${name} not found`, { details: { name } });
    const ids = await this.activeVersionIds(rows[0]!.credential_id);
    return ids.map((id) => meta(rows.find((r) => r.id === id)!));
  }

  // ---------------------------------------------------------------- encryption keys

  /**
   * Makes `newKey` the active key and re-encrypts every record sealed with another key, in
   * small batches. Reads and writes keep working throughout: the old keys stay in the ring
   * until the caller removes them. Returns how many records were re-encrypted.
   */
  async rotateEncryptionKey(newKey: Buffer): Promise<{ keyId: string; reencrypted: number }> {
    const keyId = this.keys.activate(newKey);
    let total = 0;
    for (;;) {
      const batch = await storeQuery('reading records to re-encrypt', () =>
        this.versionQuery().where('credential_versions.key_id', '!=', keyId).limit(100).execute(),
      );
      if (batch.length === 0) break;
      for (const row of batch) {
        const aad = aadFor(row.name, row.id);
        const plain = this.keys.open({ keyId: row.key_id, nonce: Buffer.from(row.nonce), ciphertext: Buffer.from(row.ciphertext) }, aad);
        const sealed = this.keys.seal(plain, aad);
        await storeQuery('re-encrypting a record', () =>
          this.store.db
            .updateTable('credential_versions')
            .set({ key_id: sealed.keyId, nonce: sealed.nonce, ciphertext: sealed.ciphertext })
            .where('id', '=', row.id)
            .where('key_id', '=', row.key_id)
            .execute(),
        );
        total++;
      }
    }
    this.logger.info({ keyId, reencrypted: total }, 'credentials re-encrypted under the new key');
    return { keyId, reencrypted: total };
  }

  /** Key ids still referenced by stored records. */
  async keyIdsInUse(): Promise<string[]> {
    const rows = await storeQuery('reading key ids', () =>
      this.store.db.selectFrom('credential_versions').select('key_id').distinct().execute(),
    );
    return rows.map((r) => r.key_id).sort();
  }

  // ---------------------------------------------------------------- internals

  private versionQuery() {
    return this.store.db
      .selectFrom('credential_versions')
      .innerJoin('credentials', 'credentials.id', 'credential_versions.credential_id')
      .select([
        'credential_versions.id',
        'credential_versions.credential_id',
        'credential_versions.version',
        'credential_versions.type',
        'credential_versions.key_id',
        'credential_versions.nonce',
        'credential_versions.ciphertext',
        'credential_versions.params',
        'credential_versions.params_hash',
        'credential_versions.transitional',
        'credential_versions.expires_at',
        'credential_versions.ca_name',
        'credential_versions.created_at',
        'credentials.name',
      ]);
  }

  private async latestRow(name: string): Promise<VersionRow | undefined> {
    return storeQuery('reading a credential', () =>
      this.versionQuery().where('credentials.name', '=', name).orderBy('credential_versions.version', 'desc').limit(1).executeTakeFirst(),
    );
  }

  /** Ids of a certificate's versions in use: the signing version and any transitional one. */
  private async activeVersionIds(credentialId: string): Promise<string[]> {
    const rows = await storeQuery('reading versions', () =>
      this.store.db
        .selectFrom('credential_versions')
        .select(['id', 'version', 'transitional'])
        .where('credential_id', '=', credentialId)
        .orderBy('version', 'desc')
        .execute(),
    );
    const signing = rows.find((r) => r.transitional === 0);
    return [...(signing ? [signing.id] : []), ...rows.filter((r) => r.transitional === 1).map((r) => r.id)];
  }

  /** The newest version not marked transitional. */
  private async signingRow(name: string): Promise<VersionRow | undefined> {
    return storeQuery('reading a credential', () =>
      this.versionQuery()
        .where('credentials.name', '=', name)
        .where('credential_versions.transitional', '=', 0)
        .orderBy('credential_versions.version', 'desc')
        .limit(1)
        .executeTakeFirst(),
    );
  }

  /** The CA version that signs now: the newest version not marked transitional. */
  private async signingVersion(caName: string): Promise<{ row: VersionRow; value: StoredCertificate }> {
    const row = await this.signingRow(caName);
    if (!row || row.type !== 'certificate' || (JSON.parse(row.params) as StoredParams).params['is_ca'] !== true) {
      throw new InputError('ANODYNE_E_CREDENTIAL_CA_NOT_FOUND', `signing CA ${caName} does not exist or is not a CA`, {
        details: { ca: caName },
      });
    }
    return { row, value: this.openRow(row) as StoredCertificate };
  }

  private async caBundle(caName: string): Promise<string> {
    const rows = await storeQuery('reading the CA', () =>
      this.versionQuery().where('credentials.name', '=', caName).orderBy('credential_versions.version', 'desc').execute(),
    );
    if (rows.length === 0) return '';
    const active = await this.activeVersionIds(rows[0]!.credential_id);
    return active.map((id) => (this.openRow(rows.find((r) => r.id === id)!) as StoredCertificate).certificate).join('');
  }

  /** The public keys of an RSA key's active versions, the signing one first. */
  private async publicKeyBundle(credentialId: string, name: string): Promise<string> {
    const rows = await storeQuery('reading the key', () =>
      this.versionQuery().where('credentials.name', '=', name).orderBy('credential_versions.version', 'desc').execute(),
    );
    const active = await this.activeVersionIds(credentialId);
    return active
      .map((id) => (this.openRow(rows.find((r) => r.id === id)!) as RsaValue).public_key)
      .map((k) => (k.endsWith('\n') ? k : `${k}\n`))
      .join('');
  }

  private async produce(
    type: CredentialType,
    p: Record<string, unknown>,
    signer?: { row: VersionRow; value: StoredCertificate },
  ): Promise<{ value: unknown; expiresAt: string | null; caName: string | null; signedBy?: string }> {
    switch (type) {
      case 'password':
        return { value: generatePassword(p), expiresAt: null, caName: null };
      case 'user': {
        const up = p as UserParams;
        return {
          value: {
            username: up.username ?? generatePassword({ length: 20, exclude_upper: true, exclude_number: false }),
            password: generatePassword(up),
          },
          expiresAt: null,
          caName: null,
        };
      }
      case 'rsa':
        return { value: await generateRsa((p as { key_length?: number }).key_length), expiresAt: null, caName: null };
      case 'ssh':
        return { value: await generateSsh((p as SshParams).key_length, (p as SshParams).ssh_comment), expiresAt: null, caName: null };
      case 'certificate': {
        const cp = p as CertificateParams;
        const cert = await generateCertificate(
          cp,
          signer ? { certificate: signer.value.certificate, privateKey: signer.value.private_key } : undefined,
          this.clock.now(),
        );
        const caName = cp.ca !== undefined ? normalizeName(cp.ca) : null;
        const stored: StoredCertificate = {
          certificate: cert.certificate,
          private_key: cert.private_key,
          ...(caName ? { ca_name: caName, signed_by: signer!.row.id } : {}),
        };
        return { value: stored, expiresAt: cert.notAfter.toISOString(), caName, ...(signer ? { signedBy: signer.row.id } : {}) };
      }
      default:
        throw new InputError('ANODYNE_E_CREDENTIAL_PARAMS_INVALID', `credentials of type ${type} cannot be generated`);
    }
  }

  private async insertVersion(
    name: string,
    type: CredentialType,
    value: unknown,
    params: StoredParams,
    paramsHash: string,
    cert: { expiresAt: string | null; caName: string | null; transitional: boolean },
  ): Promise<VersionRow> {
    const now = this.clock.now().toISOString();
    const versionId = randomUUID();
    const sealed = this.keys.seal(Buffer.from(JSON.stringify(value), 'utf8'), aadFor(name, versionId));
    return storeQuery('storing a credential', () =>
      this.store.db.transaction().execute(async (tx) => {
        let cred = await tx.selectFrom('credentials').select(['id', 'type']).where('name', '=', name).executeTakeFirst();
        if (!cred) {
          cred = { id: randomUUID(), type };
          await tx.insertInto('credentials').values({ id: cred.id, name, type, created_at: now, updated_at: now }).execute();
        } else if (cred.type !== type) {
          throw new ConflictError('ANODYNE_E_CREDENTIAL_TYPE_MISMATCH', `credential ${name} exists with type ${cred.type}`);
        } else {
          await tx.updateTable('credentials').set({ updated_at: now }).where('id', '=', cred.id).execute();
        }
        const max = await tx
          .selectFrom('credential_versions')
          .select((eb) => eb.fn.max('version').as('m'))
          .where('credential_id', '=', cred.id)
          .executeTakeFirst();
        const version = Number(max?.m ?? 0) + 1;
        const row = {
          id: versionId,
          credential_id: cred.id,
          version,
          type,
          key_id: sealed.keyId,
          nonce: sealed.nonce,
          ciphertext: sealed.ciphertext,
          params: JSON.stringify(params),
          params_hash: paramsHash,
          transitional: cert.transitional ? 1 : 0,
          expires_at: cert.expiresAt,
          ca_name: cert.caName,
          created_at: now,
        };
        await tx.insertInto('credential_versions').values(row).execute();
        return { ...row, name };
      }),
    );
  }

  private openRow(row: VersionRow): unknown {
    const plain = this.keys.open(
      { keyId: row.key_id, nonce: Buffer.from(row.nonce), ciphertext: Buffer.from(row.ciphertext) },
      aadFor(row.name, row.id),
    );
    return JSON.parse(plain.toString('utf8')) as unknown;
  }

  private async decode<T extends CredentialType>(row: VersionRow, actor: string): Promise<Credential<T>> {
    const raw = this.openRow(row);
    let value: unknown = raw;
    if (row.type === 'certificate') {
      const c = raw as StoredCertificate & { given_ca?: string };
      const params = (JSON.parse(row.params) as StoredParams).params as CertificateParams;
      const ca = c.ca_name ? await this.caBundle(c.ca_name) : params.is_ca ? await this.caBundle(row.name) : (c.given_ca ?? '');
      value = {
        ca,
        certificate: c.certificate,
        private_key: c.private_key,
        ...(c.ca_name ? { ca_name: c.ca_name } : {}),
      } satisfies CertificateValue;
    } else if (row.type === 'rsa') {
      value = { ...(raw as RsaValue), public_keys: await this.publicKeyBundle(row.credential_id, row.name) };
    }
    this.registerSecrets(value);
    await this.audit.record({
      actor,
      action: 'credential.read',
      target: row.name,
      result: 'ok',
      details: { version: row.version, id: row.id },
    });
    return { ...meta(row), value: value as ValueByType[T] };
  }

  private registerSecrets(value: unknown): void {
    if (!this.secrets) return;
    if (typeof value === 'string') this.secrets.add(value);
    else if (value && typeof value === 'object') {
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v === 'string' && (k === 'password' || k === 'private_key')) this.secrets.add(v);
      }
    }
  }
}

/** What has a transitional version during a rotation: a CA, or an RSA key (a service-account signing key). */
function rotatable(type: CredentialType, params: Record<string, unknown>): boolean {
  return (type === 'certificate' && params['is_ca'] === true) || type === 'rsa';
}

function aadFor(name: string, versionId: string): string {
  return `anodyne-credential:${name}:${versionId}`;
}

function hashParams(p: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(p)).digest('hex');
}

function meta(row: VersionRow): CredentialMeta {
  return {
    id: row.id,
    name: row.name,
    type: row.type as CredentialType,
    version: Number(row.version),
    created_at: row.created_at,
    transitional: row.transitional === 1,
    expires_at: row.expires_at,
    ca_name: row.ca_name,
  };
}

function checkSetValue(type: CredentialType, value: unknown): void {
  const bad = (msg: string): InputError => new InputError('ANODYNE_E_CREDENTIAL_PARAMS_INVALID', msg, { details: { type } });
  const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
  const obj = value as Record<string, unknown>;
  switch (type) {
    case 'password':
    case 'value':
      if (!isStr(value)) throw bad(`a ${type} must be a non-empty string`);
      return;
    case 'json':
      if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('a json credential must be an object');
      return;
    case 'user':
      if (!obj || !isStr(obj['username']) || !isStr(obj['password'])) throw bad('a user needs username and password');
      return;
    case 'certificate':
      if (!obj || !isStr(obj['certificate']) || !isStr(obj['private_key'])) throw bad('a certificate needs certificate and private_key');
      return;
    case 'rsa':
    case 'ssh':
      if (!obj || !isStr(obj['public_key']) || !isStr(obj['private_key'])) throw bad(`an ${type} key needs public_key and private_key`);
      return;
  }
}

/**
 * Credentials of a director deployment's manifest `variables`, stored under
 * `/deployments/<deployment>/<name>`. A certificate's `ca` option names another variable of
 * the same deployment. Matches the director's VariableSource.
 */
export class DeploymentVariables {
  constructor(
    private readonly creds: CredStore,
    private readonly actor = 'director',
  ) {}

  private path(deployment: string, name: string): string {
    return `/deployments/${deployment}/${name}`;
  }

  async ensure(
    deployment: string,
    variables: { name: string; type: string; options?: Record<string, unknown> }[],
  ): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    // CAs first, so leaves can be signed by them whatever the order in the manifest.
    const ordered = [...variables].sort((a, b) => Number(b.options?.['is_ca'] === true) - Number(a.options?.['is_ca'] === true));
    for (const v of ordered) {
      const options = { ...(v.options ?? {}) };
      if (v.type === 'certificate' && typeof options['ca'] === 'string' && !options['ca'].startsWith('/'))
        options['ca'] = this.path(deployment, options['ca']);
      const cred = await this.creds.generate(this.path(deployment, v.name), v.type as GeneratableType, options, { actor: this.actor });
      out[v.name] = cred.value;
    }
    return out;
  }

  async remove(deployment: string): Promise<void> {
    await this.creds.deletePrefix(`/deployments/${deployment}`, { actor: this.actor });
  }
}
