// The console's session: sign-in through the identity's authorization code flow with PKCE; the access token lives in memory, the refresh token in an httpOnly cookie.
import { ApiClient, fetchTransport, type TokenSet } from '@anodyne/client/api';

export const CLIENT_ID = 'anodyne_console';
const PENDING = 'anodyne.console.signin';

/** Where the identity sends the browser back: the console's own address (registered for its client). */
export const redirectUri = (): string => `${location.origin}/console/`;

/** The client without a token: the token endpoint, sign-out. */
export const anonymous = new ApiClient(location.origin, fetchTransport());

function base64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const random = (n: number) => base64url(crypto.getRandomValues(new Uint8Array(n)));

async function challengeOf(verifier: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
}

/**
 * Starts a sign-in: a fresh PKCE verifier and state (kept in this tab's sessionStorage until the
 * identity answers), then the identity's sign-in page. `returnTo` is the console page to come back to.
 */
export async function signIn(returnTo: string): Promise<void> {
  const verifier = random(32);
  const state = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, returnTo }));
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: CLIENT_ID,
    redirect_uri: redirectUri(),
    code_challenge: await challengeOf(verifier),
    code_challenge_method: 'S256',
    state,
  });
  location.assign(`/oauth/authorize?${q.toString()}`);
}

/**
 * Finishes a sign-in (the identity sent the browser back with `?code=&state=`) or resumes the
 * session through the refresh cookie (a reload). Undefined: nobody is signed in.
 */
export async function resume(): Promise<TokenSet | undefined> {
  const q = new URLSearchParams(location.search);
  const code = q.get('code');
  if (code !== null) {
    const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? 'null') as { verifier: string; state: string; returnTo: string } | null;
    sessionStorage.removeItem(PENDING);
    history.replaceState(null, '', `/console/${pending?.returnTo ?? '#/clusters'}`);
    if (!pending || pending.state !== q.get('state'))
      throw new Error('The sign-in answer does not belong to a sign-in started here; sign in again.');
    return anonymous.codeToken(code, redirectUri(), pending.verifier, CLIENT_ID);
  }
  return refresh().catch(() => undefined);
}

/** A new access token through the refresh cookie. */
export function refresh(): Promise<TokenSet> {
  return anonymous.refresh(undefined, CLIENT_ID);
}

/** Ends the session: the cookie goes; the access token is dropped by the caller. */
export function signOut(): Promise<void> {
  return anonymous.logout();
}
