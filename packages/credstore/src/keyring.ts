// Encryption of credentials at rest: the AES-256-GCM KeyRing, the 0600 key file and keys from the environment.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { AnodyneError, InputError, PreconditionError } from '@anodyne/common';

/** One AES-256 key and the id every record sealed with it carries. */
export interface EncryptionKey {
  readonly id: string;
  readonly key: Buffer;
}

export interface Sealed {
  keyId: string;
  nonce: Buffer;
  /** Ciphertext followed by the 16-byte GCM tag. */
  ciphertext: Buffer;
}

const TAG_BYTES = 16;

/** The id of a key: a short fingerprint, so the same key always has the same id. */
export function keyIdFor(key: Buffer): string {
  return 'k-' + createHash('sha256').update('anodyne-credstore-key').update(key).digest('hex').slice(0, 16);
}

function parseKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-f]{64}$/i.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (key.length !== 32) {
    throw new InputError(
      'ANODYNE_E_ENCRYPTION_KEY_INVALID',
      `the encryption key from ${source} must be 32 bytes (64 hex digits or base64), got ${key.length} bytes`,
      { details: { source } },
    );
  }
  return key;
}

/**
 * The keys that encrypt credentials at rest: one active key that seals new records, and
 * older keys kept to open records not yet re-encrypted. AES-256-GCM with a random 96-bit
 * nonce per record; the record's identity is bound in as additional data, so a ciphertext
 * moved to another row does not open.
 */
export class KeyRing {
  private readonly keys = new Map<string, Buffer>();
  private activeId: string;

  constructor(active: EncryptionKey | Buffer, others: (EncryptionKey | Buffer)[] = []) {
    const norm = (k: EncryptionKey | Buffer): EncryptionKey => (Buffer.isBuffer(k) ? { id: keyIdFor(k), key: k } : k);
    const a = norm(active);
    for (const k of [a, ...others.map(norm)]) {
      if (k.key.length !== 32) throw new InputError('ANODYNE_E_ENCRYPTION_KEY_INVALID', `key ${k.id} must be 32 bytes`);
      this.keys.set(k.id, k.key);
    }
    this.activeId = a.id;
  }

  get activeKeyId(): string {
    return this.activeId;
  }

  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  /** Adds a key and makes it the one that seals new records; old keys stay for reading. */
  activate(key: EncryptionKey | Buffer): string {
    const k = Buffer.isBuffer(key) ? { id: keyIdFor(key), key } : key;
    this.keys.set(k.id, k.key);
    this.activeId = k.id;
    return k.id;
  }

  /** Forgets a key that no record uses any more. */
  remove(id: string): void {
    if (id === this.activeId) throw new PreconditionError('ANODYNE_E_ENCRYPTION_KEY_MISSING', 'the active key cannot be removed');
    this.keys.delete(id);
  }

  /**
   * A 32-byte key derived (HKDF-SHA256) from the ring's key `id` (the active one by default) for
   * another purpose named by `label` (e.g. sealing platform backups); undefined for a key the
   * ring does not have. The ring's own keys never leave it.
   */
  derive(label: string, id = this.activeId): Buffer | undefined {
    const key = this.keys.get(id);
    return key ? Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `anodyne ${label}`, 32)) : undefined;
  }

  seal(plaintext: Buffer, aad: string): Sealed {
    const key = this.keys.get(this.activeId)!;
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return { keyId: this.activeId, nonce, ciphertext: Buffer.concat([body, cipher.getAuthTag()]) };
  }

  open(sealed: Sealed, aad: string): Buffer {
    const key = this.keys.get(sealed.keyId);
    if (!key) {
      throw new PreconditionError(
        'ANODYNE_E_ENCRYPTION_KEY_MISSING',
        `a record is encrypted with key ${sealed.keyId}, which is not configured`,
        { details: { keyId: sealed.keyId } },
      );
    }
    try {
      const body = sealed.ciphertext.subarray(0, sealed.ciphertext.length - TAG_BYTES);
      const tag = sealed.ciphertext.subarray(sealed.ciphertext.length - TAG_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.nonce);
      decipher.setAAD(Buffer.from(aad, 'utf8'));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(body), decipher.final()]);
    } catch (err) {
      throw new AnodyneError('ANODYNE_E_DECRYPTION_FAILED', `a stored record failed authentication with key ${sealed.keyId}`, {
        cause: err,
        details: { keyId: sealed.keyId },
      });
    }
  }
}

/**
 * The key file: the active key on the first line, older keys (still needed to read) after
 * it, one per line as 64 hex digits. Created with mode 0600 holding a fresh random key when
 * absent. A file readable by others is refused.
 */
export function loadKeyFile(path: string): KeyRing {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(tmp, 0o600);
    renameSync(tmp, path);
  }
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new InputError(
      'ANODYNE_E_ENCRYPTION_KEY_INVALID',
      `the key file ${path} is readable by group or others (mode ${mode.toString(8)}); chmod 600 it`,
      { details: { path } },
    );
  }
  const lines = readFileSync(path, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (lines.length === 0) throw new InputError('ANODYNE_E_ENCRYPTION_KEY_INVALID', `the key file ${path} holds no key`);
  const [active, ...older] = lines.map((l, i) => parseKey(l, `${path} line ${i + 1}`));
  return new KeyRing(active!, older);
}

/** Writes a key file atomically with mode 0600: the active key first. */
export function writeKeyFile(path: string, active: Buffer, older: Buffer[] = []): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, [active, ...older].map((k) => k.toString('hex')).join('\n') + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/**
 * Keys from the environment: ANODYNE_ENCRYPTION_KEY (active) and
 * ANODYNE_ENCRYPTION_KEYS_OLD (comma-separated, for reading), or undefined when unset.
 */
export function keyRingFromEnv(env: Record<string, string | undefined> = process.env): KeyRing | undefined {
  const active = env['ANODYNE_ENCRYPTION_KEY'];
  if (!active) return undefined;
  const older = (env['ANODYNE_ENCRYPTION_KEYS_OLD'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return new KeyRing(
    parseKey(active, 'ANODYNE_ENCRYPTION_KEY'),
    older.map((k) => parseKey(k, 'ANODYNE_ENCRYPTION_KEYS_OLD')),
  );
}

export function newRandomKey(): Buffer {
  return randomBytes(32);
}
