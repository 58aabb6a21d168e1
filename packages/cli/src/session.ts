// The saved login (~/.anodyne/config.json, 0600): tokens, refresh before expiry, and a client built from it.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ApiClient, ApiError, type TokenSet } from '@anodyne/client';
import { httpsTransport } from '@anodyne/client/node';

/** What `login` keeps (in a 0600 file under the user's home): the API, its CA and the tokens. */
export interface Session {
  api: string;
  ca_cert?: string;
  insecure?: boolean;
  username?: string;
  client_id: string;
  access_token: string;
  refresh_token?: string;
  expires_at: number;
}

export function sessionPath(): string {
  return process.env['ANODYNE_SESSION_FILE'] ?? join(homedir(), '.anodyne', 'config.json');
}

export function saveSession(s: Session): void {
  const path = sessionPath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export function loadSession(): Session {
  const path = sessionPath();
  if (!existsSync(path)) throw new ApiError(401, 'ANODYNE_E_NOT_LOGGED_IN', 'not logged in: run anodyne login -a URL -u USER -p PASSWORD');
  return JSON.parse(readFileSync(path, 'utf8')) as Session;
}

export function removeSession(): void {
  rmSync(sessionPath(), { force: true });
}

export function sessionFromTokens(
  base: Omit<Session, 'access_token' | 'refresh_token' | 'expires_at'>,
  t: TokenSet,
  now = Date.now(),
): Session {
  return {
    ...base,
    access_token: t.access_token,
    ...(t.refresh_token ? { refresh_token: t.refresh_token } : {}),
    expires_at: now + t.expires_in * 1000,
  };
}

/** A client with a valid access token: refreshed (and saved) when within a minute of expiry. */
export async function authedClient(): Promise<{ client: ApiClient; session: Session }> {
  let s = loadSession();
  const base = new ApiClient(s.api, httpsTransport({ ...(s.ca_cert ? { caPem: s.ca_cert } : {}), insecure: s.insecure ?? false }));
  if (s.expires_at - Date.now() < 60_000) {
    let t: TokenSet;
    if (s.refresh_token) t = await base.refresh(s.refresh_token, s.client_id);
    else throw new ApiError(401, 'ANODYNE_E_TOKEN_EXPIRED', 'the session has expired: run anodyne login again');
    const { access_token: _a, refresh_token: _r, expires_at: _e, ...rest } = s;
    s = sessionFromTokens(rest, t);
    saveSession(s);
  }
  return { client: base.withToken(s.access_token), session: s };
}
