// Credential types, their generation parameters and values; name normalisation and validation of parameters.
import { isIP } from 'node:net';
import { InputError } from '@anodyne/common';

export const CREDENTIAL_TYPES = ['password', 'user', 'certificate', 'rsa', 'ssh', 'value', 'json'] as const;
export type CredentialType = (typeof CREDENTIAL_TYPES)[number];

export interface PasswordParams {
  length?: number;
  exclude_upper?: boolean;
  exclude_lower?: boolean;
  exclude_number?: boolean;
  include_special?: boolean;
}

export interface UserParams extends PasswordParams {
  username?: string;
}

export const KEY_USAGES = [
  'digital_signature',
  'non_repudiation',
  'key_encipherment',
  'data_encipherment',
  'key_agreement',
  'key_cert_sign',
  'crl_sign',
  'encipher_only',
  'decipher_only',
] as const;
export type KeyUsage = (typeof KEY_USAGES)[number];
export const EXTENDED_KEY_USAGES = ['server_auth', 'client_auth', 'code_signing', 'email_protection', 'timestamping'] as const;
export type ExtendedKeyUsage = (typeof EXTENDED_KEY_USAGES)[number];

export interface CertificateParams {
  common_name?: string;
  alternative_names?: string[];
  organization?: string | string[];
  organization_unit?: string;
  key_usage?: KeyUsage[];
  extended_key_usage?: ExtendedKeyUsage[];
  /** Validity in days. */
  duration?: number;
  /** Name of the CA credential that signs this certificate. */
  ca?: string;
  is_ca?: boolean;
  self_sign?: boolean;
  key_algorithm?: 'rsa' | 'ecdsa';
  key_length?: 2048 | 3072 | 4096;
}

export interface RsaParams {
  key_length?: 2048 | 3072 | 4096;
}

export type SshParams = RsaParams & { ssh_comment?: string };

export interface GenerateParamsByType {
  password: PasswordParams;
  user: UserParams;
  certificate: CertificateParams;
  rsa: RsaParams;
  ssh: SshParams;
  value: never;
  json: never;
}

export interface UserValue {
  username: string;
  password: string;
}

export interface CertificateValue {
  /** Every active version of the signing CA, PEM, concatenated (empty for self-signed leaves). */
  ca: string;
  certificate: string;
  private_key: string;
  /** The signing CA's name, when signed by a stored CA. */
  ca_name?: string;
}

export interface RsaValue {
  public_key: string;
  private_key: string;
  /**
   * Read from the store: the public keys of every active version (the signing one first, then a
   * transitional one), PEM, concatenated: what verifies signatures during a key rotation.
   */
  public_keys?: string;
}

export interface SshValue extends RsaValue {
  public_key_fingerprint: string;
}

export interface ValueByType {
  password: string;
  user: UserValue;
  certificate: CertificateValue;
  rsa: RsaValue;
  ssh: SshValue;
  value: string;
  json: Record<string, unknown>;
}

export type GeneratableType = 'password' | 'user' | 'certificate' | 'rsa' | 'ssh';

export function assertType(type: string): asserts type is CredentialType {
  if (!(CREDENTIAL_TYPES as readonly string[]).includes(type)) {
    throw new InputError(
      'ANODYNE_E_CREDENTIAL_TYPE_UNKNOWN',
      `unknown credential type ${JSON.stringify(type)}; one of ${CREDENTIAL_TYPES.join(', ')}`,
      { details: { type } },
    );
  }
}

const NAME = /^(\/[A-Za-z0-9_.-]+)+$/;

/** Credential names are absolute, slash-separated paths: /clusters/prod/ca. */
export function normalizeName(name: string): string {
  const n = name.startsWith('/') ? name : `/${name}`;
  if (!NAME.test(n) || n.split('/').some((seg) => seg === '.' || seg === '..') || n.length > 512) {
    throw new InputError(
      'ANODYNE_E_CREDENTIAL_NAME_INVALID',
      `invalid credential name ${JSON.stringify(name)}: use /segments/of/letters-digits_.`,
      { details: { name } },
    );
  }
  return n;
}

function bad(message: string, details: Record<string, unknown> = {}): InputError {
  return new InputError('ANODYNE_E_CREDENTIAL_PARAMS_INVALID', message, { details });
}

const HOSTNAME = /^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface ParsedSan {
  type: 'dns' | 'ip';
  value: string;
}

export function parseAlternativeName(name: string): ParsedSan {
  if (typeof name !== 'string' || name.length === 0) throw bad('alternative names must be non-empty strings', { name });
  if (isIP(name)) return { type: 'ip', value: name };
  if (name.length <= 253 && HOSTNAME.test(name)) return { type: 'dns', value: name.toLowerCase() };
  throw bad(`malformed alternative name ${JSON.stringify(name)}: not an IP address or DNS name`, { name });
}

function checkBoolean(params: Record<string, unknown>, keys: string[]): void {
  for (const k of keys) if (params[k] !== undefined && typeof params[k] !== 'boolean') throw bad(`${k} must be true or false`, { key: k });
}

function checkKeyLength(v: unknown): void {
  if (v !== undefined && v !== 2048 && v !== 3072 && v !== 4096) throw bad('key_length must be 2048, 3072 or 4096', { key: 'key_length' });
}

/**
 * Validates generation parameters for `type` before any work starts. Unknown keys are
 * refused, so a typo never silently falls back to a default.
 */
export function validateParams(type: CredentialType, raw: unknown): Record<string, unknown> {
  const params = (raw ?? {}) as Record<string, unknown>;
  if (typeof params !== 'object' || Array.isArray(params)) throw bad('parameters must be an object');
  const allowed: Record<GeneratableType, string[]> = {
    password: ['length', 'exclude_upper', 'exclude_lower', 'exclude_number', 'include_special'],
    user: ['username', 'length', 'exclude_upper', 'exclude_lower', 'exclude_number', 'include_special'],
    certificate: [
      'common_name',
      'alternative_names',
      'organization',
      'organization_unit',
      'key_usage',
      'extended_key_usage',
      'duration',
      'ca',
      'is_ca',
      'self_sign',
      'key_algorithm',
      'key_length',
    ],
    rsa: ['key_length'],
    ssh: ['key_length', 'ssh_comment'],
  };
  if (type === 'value' || type === 'json') throw bad(`credentials of type ${type} cannot be generated; set them`, { type });
  for (const k of Object.keys(params)) {
    if (!allowed[type].includes(k)) throw bad(`unknown parameter ${k} for type ${type}`, { key: k });
  }
  if (type === 'password' || type === 'user') {
    const len = params['length'];
    if (len !== undefined && (!Number.isInteger(len) || (len as number) < 4 || (len as number) > 200))
      throw bad('length must be an integer from 4 to 200', { key: 'length' });
    checkBoolean(params, ['exclude_upper', 'exclude_lower', 'exclude_number', 'include_special']);
    if (params['exclude_upper'] && params['exclude_lower'] && params['exclude_number'] && !params['include_special'])
      throw bad('every character class is excluded');
    if (type === 'user' && params['username'] !== undefined && (typeof params['username'] !== 'string' || params['username'] === ''))
      throw bad('username must be a non-empty string', { key: 'username' });
  }
  if (type === 'rsa' || type === 'ssh') checkKeyLength(params['key_length']);
  if (type === 'certificate') {
    const p = params as CertificateParams;
    checkBoolean(params, ['is_ca', 'self_sign']);
    checkKeyLength(p.key_length);
    if (p.key_algorithm !== undefined && p.key_algorithm !== 'rsa' && p.key_algorithm !== 'ecdsa')
      throw bad('key_algorithm must be rsa or ecdsa', { key: 'key_algorithm' });
    if (p.common_name !== undefined && (typeof p.common_name !== 'string' || p.common_name.length === 0 || p.common_name.length > 64))
      throw bad('common_name must be 1 to 64 characters', { key: 'common_name' });
    if (!p.common_name && !(p.alternative_names && p.alternative_names.length > 0))
      throw bad('a certificate needs a common_name or alternative_names');
    if (p.alternative_names !== undefined) {
      if (!Array.isArray(p.alternative_names)) throw bad('alternative_names must be a list', { key: 'alternative_names' });
      p.alternative_names.forEach(parseAlternativeName);
    }
    if (p.organization !== undefined) {
      const orgs = Array.isArray(p.organization) ? p.organization : [p.organization];
      if (orgs.some((o) => typeof o !== 'string' || o.length === 0 || o.length > 64))
        throw bad('organization must be 1 to 64 characters', { key: 'organization' });
    }
    if (
      p.duration !== undefined &&
      (typeof p.duration !== 'number' || !Number.isInteger(p.duration) || p.duration <= 0 || p.duration > 36500)
    ) {
      throw bad('duration must be a whole number of days greater than 0', { key: 'duration', value: p.duration });
    }
    if (
      p.key_usage !== undefined &&
      (!Array.isArray(p.key_usage) || p.key_usage.some((u) => !(KEY_USAGES as readonly string[]).includes(u)))
    )
      throw bad(`key_usage entries must be among ${KEY_USAGES.join(', ')}`, { key: 'key_usage' });
    if (
      p.extended_key_usage !== undefined &&
      (!Array.isArray(p.extended_key_usage) || p.extended_key_usage.some((u) => !(EXTENDED_KEY_USAGES as readonly string[]).includes(u)))
    ) {
      throw bad(`extended_key_usage entries must be among ${EXTENDED_KEY_USAGES.join(', ')}`, { key: 'extended_key_usage' });
    }
    const signers = [p.ca !== undefined, p.self_sign === true].filter(Boolean).length;
    if (signers > 1) throw bad('ca and self_sign are exclusive');
    if (signers === 0 && !p.is_ca) throw bad('a certificate needs ca, self_sign or is_ca');
    if (p.ca !== undefined) normalizeName(p.ca);
  }
  return params;
}

/** Canonical JSON (sorted keys) of parameters, for converge comparisons. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
