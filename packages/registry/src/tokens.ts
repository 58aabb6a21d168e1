// Registry tokens (the Docker registry token protocol): ES256 JWTs the registry trusts through the platform CA.
import { createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { InputError, type Clock } from '@anodyne/common';

/** One `type:name:actions` grant of a token, as the registry reads it from the `access` claim. */
export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

/** The signing certificate (issued by the platform CA, which is the registry's root bundle) and its key. */
export interface SigningCertificate {
  certificate: string;
  private_key: string;
}

export interface TokenSignerOptions {
  /** `iss` of every token; the registry's `auth.token.issuer`. */
  issuer: string;
  /** `aud`: the registry's `auth.token.service`. */
  service: string;
  clock: Clock;
  ttlSeconds: number;
}

/**
 * Signs registry tokens. The header carries the signing certificate (`x5c`): the registry checks it
 * chains to the platform CA, so a renewed certificate needs no registry restart.
 */
export class RegistryTokenSigner {
  private key!: KeyObject;
  private x5c!: string[];

  constructor(
    cert: SigningCertificate,
    private readonly o: TokenSignerOptions,
  ) {
    this.reload(cert);
  }

  reload(cert: SigningCertificate): void {
    this.key = createPrivateKey(cert.private_key);
    this.x5c = [new X509Certificate(cert.certificate).raw.toString('base64')];
  }

  get service(): string {
    return this.o.service;
  }

  sign(subject: string, access: TokenAccess[]): { token: string; expires_in: number; issued_at: string } {
    const now = Math.floor(this.o.clock.nowMs() / 1000);
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const head = b64({ typ: 'JWT', alg: 'ES256', x5c: this.x5c });
    const body = b64({
      iss: this.o.issuer,
      sub: subject,
      aud: this.o.service,
      iat: now,
      nbf: now - 10,
      exp: now + this.o.ttlSeconds,
      jti: randomBytes(12).toString('hex'),
      access,
    });
    const input = `${head}.${body}`;
    const sig = sign('sha256', Buffer.from(input), { key: this.key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    return { token: `${input}.${sig}`, expires_in: this.o.ttlSeconds, issued_at: new Date(now * 1000).toISOString() };
  }
}

/** The `sub` of a registry token, unverified: only for naming who did what after the registry accepted it. */
export function tokenSubject(authorization: string | undefined): string | undefined {
  const m = /^Bearer\s+[^.]+\.([^.]+)\.[^.]+$/i.exec(authorization ?? '');
  if (!m) return undefined;
  try {
    const sub = (JSON.parse(Buffer.from(m[1]!, 'base64url').toString('utf8')) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** `repository:alice/app:pull,push` (several per parameter, space-separated, or repeated) → what they ask for. */
export function parseScopes(scopes: string[]): TokenAccess[] {
  const out: TokenAccess[] = [];
  for (const s of scopes.flatMap((x) => x.split(' ')).filter(Boolean)) {
    const first = s.indexOf(':');
    const last = s.lastIndexOf(':');
    if (first <= 0 || last === first)
      throw new InputError('ANODYNE_E_INVALID_INPUT', `scope ${s} is not type:name:actions`, { details: { key: 'scope' } });
    out.push({
      type: s.slice(0, first),
      name: s.slice(first + 1, last),
      actions: s
        .slice(last + 1)
        .split(',')
        .filter(Boolean),
    });
  }
  return out;
}
