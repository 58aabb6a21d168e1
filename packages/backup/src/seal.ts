// Sealed artifacts: AES-256-GCM under a key derived (HKDF-SHA256) from a backup key the credential store keeps.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { AnodyneError } from '@anodyne/common';

/** A backup key: its id (the credential version that holds it) and its secret. */
export interface BackupKey {
  id: string;
  secret: string;
}

/** The keys that seal and open artifacts: the current one, and any earlier one by id. */
export interface BackupKeys {
  current(): Promise<BackupKey>;
  /** Undefined when this platform does not have that key (an artifact of another platform). */
  byId(id: string): Promise<BackupKey | undefined>;
}

const MAGIC = Buffer.from('ANODYNE-BACKUP-1\n');
const TAG_BYTES = 16;

interface Header {
  alg: 'aes-256-gcm';
  kdf: 'hkdf-sha256';
  key_id: string;
  salt: string;
  iv: string;
}

function derive(secret: string, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), salt, 'anodyne backup artifact', 32));
}

const corrupt = (why: string) => new AnodyneError('ANODYNE_E_BACKUP_CORRUPT', `the artifact is damaged: ${why}`, { details: { why } });

/**
 * Seals `plain`: magic, header length (4 bytes), header JSON (key id, salt, IV), ciphertext, GCM
 * tag. The header is authenticated too (it is the cipher's additional data).
 */
export function seal(plain: Buffer, key: BackupKey): Buffer {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const header: Header = {
    alg: 'aes-256-gcm',
    kdf: 'hkdf-sha256',
    key_id: key.id,
    salt: salt.toString('base64'),
    iv: iv.toString('base64'),
  };
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  const cipher = createCipheriv('aes-256-gcm', derive(key.secret, salt), iv);
  cipher.setAAD(h);
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([MAGIC, len, h, body, cipher.getAuthTag()]);
}

/** The key id a sealed artifact names, without opening it; ANODYNE_E_BACKUP_CORRUPT if it has no readable header. */
export function sealedKeyId(sealed: Buffer): string {
  return readHeader(sealed).header.key_id;
}

function readHeader(sealed: Buffer): { header: Header; bodyAt: number } {
  if (sealed.length < MAGIC.length + 4 || !sealed.subarray(0, MAGIC.length).equals(MAGIC)) throw corrupt('not an Anodyne backup artifact');
  const len = sealed.readUInt32BE(MAGIC.length);
  const at = MAGIC.length + 4;
  if (len > 4096 || sealed.length < at + len + TAG_BYTES) throw corrupt('its header is cut short');
  let header: Header;
  try {
    header = JSON.parse(sealed.subarray(at, at + len).toString('utf8')) as Header;
  } catch {
    throw corrupt('its header is not readable');
  }
  if (header.alg !== 'aes-256-gcm' || header.kdf !== 'hkdf-sha256' || typeof header.key_id !== 'string') throw corrupt('unknown cipher');
  return { header, bodyAt: at + len };
}

/**
 * Opens a sealed artifact. ANODYNE_E_BACKUP_WRONG_KEY when this platform has no key of its id,
 * ANODYNE_E_BACKUP_CORRUPT when it does not open (any changed byte fails the GCM tag).
 */
export async function open(sealed: Buffer, keys: BackupKeys): Promise<Buffer> {
  const { header, bodyAt } = readHeader(sealed);
  const key = await keys.byId(header.key_id);
  if (!key) {
    throw new AnodyneError('ANODYNE_E_BACKUP_WRONG_KEY', 'the artifact was sealed with a key this platform does not have', {
      details: { key_id: header.key_id },
    });
  }
  const h = sealed.subarray(MAGIC.length + 4, bodyAt);
  const decipher = createDecipheriv(
    'aes-256-gcm',
    derive(key.secret, Buffer.from(header.salt, 'base64')),
    Buffer.from(header.iv, 'base64'),
  );
  decipher.setAAD(h);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(bodyAt, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw corrupt('it does not authenticate (changed, truncated or sealed with another key of the same id)');
  }
}
