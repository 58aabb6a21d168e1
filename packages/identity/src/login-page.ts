// The identity's own login page for the authorization code flow: plain HTML, no script, the system's light or dark theme.
import type { Authorization } from './identity.js';

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The headers the login page is served with: nothing from elsewhere, no framing, the form posts only here. */
export const LOGIN_PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
} as const;

/**
 * The sign-in form of an authorization request: the checked request travels in hidden fields and
 * comes back with the user name and password to `POST /oauth/authorize`. `error` is shown above the
 * form (a wrong password, a lockout) and read out by screen readers.
 */
export function loginPage(a: Authorization, o: { error?: string; username?: string } = {}): string {
  const hidden: [string, string | undefined][] = [
    ['response_type', 'code'],
    ['client_id', a.clientId],
    ['redirect_uri', a.redirectUri],
    ['code_challenge', a.codeChallenge],
    ['code_challenge_method', 'S256'],
    ['state', a.state],
    ['scope', a.scope],
  ];
  const fields = hidden
    .filter((h): h is [string, string] => h[1] !== undefined)
    .map(([k, v]) => `<input type="hidden" name="${k}" value="${esc(v)}">`)
    .join('\n      ');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Sign in · Anodyne</title>
<style>
  :root { color-scheme: light dark; --bg: #f6f7f9; --fg: #16181d; --card: #fff; --line: #c5cad3; --accent: #1d4ed8; --err: #a4161a; }
  @media (prefers-color-scheme: dark) { :root { --bg: #111318; --fg: #e8eaef; --card: #1b1e25; --line: #4a5060; --accent: #8ab4ff; --err: #ff9a9e; } }
  body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: var(--bg); color: var(--fg); font: 16px/1.5 system-ui, sans-serif; }
  main { width: min(24rem, calc(100vw - 2rem)); background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1.5rem; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  label { display: block; margin-top: 0.8rem; font-weight: 600; }
  input[type=text], input[type=password] { box-sizing: border-box; width: 100%; margin-top: 0.3rem; padding: 0.55rem; font: inherit; color: inherit; background: transparent; border: 1px solid var(--line); border-radius: 4px; }
  button { margin-top: 1.2rem; width: 100%; padding: 0.6rem; font: inherit; font-weight: 600; color: #fff; background: #1d4ed8; border: 0; border-radius: 4px; cursor: pointer; }
  :focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
  .error { color: var(--err); border: 1px solid currentColor; border-radius: 4px; padding: 0.5rem 0.7rem; margin: 0 0 0.5rem; }
  p.client { margin: 0 0 1rem; opacity: 0.85; }
</style>
</head>
<body>
  <main>
    <h1>Sign in to Anodyne</h1>
    <p class="client">for <strong>${esc(a.clientId)}</strong></p>
    ${o.error ? `<p class="error" role="alert" id="login-error">${esc(o.error)}</p>` : ''}
    <form method="post" action="/oauth/authorize">
      ${fields}
      <label for="username">User name</label>
      <input type="text" id="username" name="username" autocomplete="username" required autofocus value="${esc(o.username ?? '')}"${o.error ? ' aria-describedby="login-error"' : ''}>
      <label for="password">Password</label>
      <input type="password" id="password" name="password" autocomplete="current-password" required>
      <button type="submit">Sign in</button>
    </form>
  </main>
</body>
</html>
`;
}

/** A page for an authorization request that cannot go on (unknown client, a redirect URI not registered): nothing is redirected. */
export function authorizeErrorPage(message: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark"><title>Sign-in request refused · Anodyne</title></head>
<body><main><h1>This sign-in request was refused</h1><p role="alert">${esc(message)}</p></main></body></html>
`;
}
