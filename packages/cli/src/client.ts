import { request } from 'node:https';

/** An error the API answered with (`{code, message}`), or a transport failure. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface TokenSet {
  access_token: string;
  refresh_token?: string;
  expires_in: number;
  scope: string;
}

/**
 * The typed client of Anodyne's API (shared by the CLI and the console): HTTPS with the
 * platform's CA, bearer tokens, JSON in and out, errors as ApiError with the API's code.
 */
export class ApiClient {
  constructor(readonly url: string, private readonly caPem: string | undefined, private token?: string, private readonly insecure = false) {}

  withToken(token: string): ApiClient {
    return new ApiClient(this.url, this.caPem, token, this.insecure);
  }

  call<T>(method: string, path: string, body?: unknown, options: { form?: boolean; basic?: [string, string]; accept?: string } = {}): Promise<T> {
    const u = new URL(path, this.url);
    const payload = body === undefined ? undefined : options.form ? new URLSearchParams(body as Record<string, string>).toString() : JSON.stringify(body);
    const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
    if (payload !== undefined) headers['content-type'] = options.form ? 'application/x-www-form-urlencoded' : 'application/json';
    if (this.token) headers['authorization'] = `Bearer ${this.token}`;
    if (options.basic) headers['authorization'] = `Basic ${Buffer.from(`${encodeURIComponent(options.basic[0])}:${encodeURIComponent(options.basic[1])}`).toString('base64')}`;
    return new Promise((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port || 443, path: u.pathname + u.search, method, headers, ...(this.caPem ? { ca: this.caPem } : {}), rejectUnauthorized: !this.insecure, timeout: 60_000 }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            // not JSON (metrics, plain text)
          }
          if (status >= 400) {
            const e = (parsed && typeof parsed === 'object' ? parsed : {}) as { code?: string; message?: string; details?: Record<string, unknown> };
            reject(new ApiError(status, e.code ?? `HTTP_${status}`, e.message ?? text.slice(0, 200), e.details ?? {}));
          } else resolve(parsed as T);
        });
      });
      req.on('error', (e) => reject(new ApiError(0, 'ANODYNE_E_UNAVAILABLE', `cannot reach ${this.url}: ${e.message}`)));
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.end(payload);
    });
  }

  passwordToken(username: string, password: string, clientId = 'anodyne_cli', clientSecret?: string): Promise<TokenSet> {
    return this.call('POST', '/oauth/token', { grant_type: 'password', username, password, client_id: clientId, ...(clientSecret ? { client_secret: clientSecret } : {}) }, { form: true });
  }

  clientToken(clientId: string, clientSecret: string): Promise<TokenSet> {
    return this.call('POST', '/oauth/token', { grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }, { form: true });
  }

  refresh(refreshToken: string, clientId = 'anodyne_cli'): Promise<TokenSet> {
    return this.call('POST', '/oauth/token', { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId }, { form: true });
  }
}
