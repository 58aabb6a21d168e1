// The client's transport in Node (the CLI, tests): node:https with the platform's CA, or none checked when asked.
import { request } from 'node:https';
import type { HttpAnswer, HttpRequest, Transport } from './client.js';

/** HTTPS through node:https: trusts `caPem` (or the system's CAs), checks nothing if `insecure`; 60 s without an answer fails. */
export function httpsTransport(o: { caPem?: string; insecure?: boolean; timeoutMs?: number } = {}): Transport {
  return {
    send: (r: HttpRequest) =>
      new Promise<HttpAnswer>((resolve, reject) => {
        const u = new URL(r.url);
        const req = request(
          {
            host: u.hostname,
            port: u.port || 443,
            path: u.pathname + u.search,
            method: r.method,
            headers: r.headers,
            ...(o.caPem ? { ca: o.caPem } : {}),
            rejectUnauthorized: !o.insecure,
            timeout: o.timeoutMs ?? 60_000,
          },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.on('timeout', () => req.destroy(new Error('timed out')));
        req.end(r.body);
      }),
  };
}

export * from './images.js';
