// A client of LXD's REST API (its unix socket, or HTTPS with a client certificate): sync and async answers, operations waited for.
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { AnodyneError, PreconditionError } from '@anodyne/common';

/** Where the LXD daemon answers: its unix socket, or its HTTPS address with a trusted client certificate. */
export type LxdEndpoint =
  | { socket: string }
  | {
      url: string;
      /** PEM client certificate and key (added to the daemon's trust store beforehand). */
      cert: string;
      key: string;
      /** PEM of the daemon's certificate, which is self-signed: it is pinned rather than checked against a CA. */
      serverCert: string;
    };

interface LxdResponse {
  type: 'sync' | 'async' | 'error';
  status_code?: number;
  error_code?: number;
  error?: string;
  operation?: string;
  metadata?: unknown;
}

interface Operation {
  id: string;
  /** The cluster member running it (`none` outside a cluster). */
  location?: string;
  status: string;
  status_code: number;
  err: string;
  metadata: Record<string, unknown> | null;
}

export interface RequestOptions {
  body?: unknown;
  /** A raw body (an image tarball, a file's bytes) sent as is. */
  raw?: Buffer;
  headers?: Record<string, string>;
  /** How long to wait for an async operation to end. */
  waitMs?: number;
}

/** An HTTP status from LXD with its message, before it is turned into a domain error. */
export class LxdStatusError extends AnodyneError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    // Asking again may succeed: LXD unavailable, an operation still running, an instance busy with another.
    const transient = status === 503 || status === 504 || /busy|already running an? /i.test(message);
    super('ANODYNE_E_PROVIDER_REFUSED', message, { details: { status }, retryable: transient });
  }
}

/**
 * One LXD daemon (or cluster), in one project. `call` answers a sync response's metadata, or the
 * finished operation's metadata for an async one (an operation that failed throws with LXD's own
 * message). A connection refused or a missing socket is ANODYNE_E_PROVIDER_UNREACHABLE.
 */
export class LxdClient {
  private readonly agent: HttpAgent | HttpsAgent;

  constructor(
    readonly endpoint: LxdEndpoint,
    readonly project: string,
  ) {
    const pinned = 'socket' in endpoint ? '' : new X509Certificate(endpoint.serverCert).fingerprint256;
    this.agent =
      'socket' in endpoint
        ? new HttpAgent({ keepAlive: true })
        : new HttpsAgent({
            keepAlive: true,
            cert: endpoint.cert,
            key: endpoint.key,
            ca: endpoint.serverCert,
            // LXD's certificate names no host: what is checked is that the daemon presents the very
            // certificate configured (its fingerprint), not one that certificate (were it a CA) signed.
            checkServerIdentity: (_host, cert) =>
              cert.fingerprint256 === pinned
                ? undefined
                : new Error(`the daemon's certificate ${cert.fingerprint256} is not the pinned one`),
          });
  }

  /** Where the daemon is, for messages. */
  get where(): string {
    return 'socket' in this.endpoint ? `unix:${this.endpoint.socket}` : this.endpoint.url;
  }

  async call<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, options);
    if (res.type === 'async' && res.operation) {
      return (await this.wait(res.operation, options.waitMs ?? 120_000, (res.metadata as Operation | undefined)?.location)) as T;
    }
    return res.metadata as T;
  }

  /**
   * Starts a request whose operation the caller does not wait for (a migration offered to another
   * member, which ends only when that member has pulled it): the operation's id and metadata.
   */
  async start(method: string, path: string, options: RequestOptions = {}): Promise<{ id: string; metadata: Record<string, unknown> }> {
    const res = await this.send(method, path, options);
    const op = res.metadata as Operation | undefined;
    if (res.type !== 'async' || !op?.id) throw new LxdStatusError(500, `LXD answered ${method} ${path} without an operation`);
    return { id: op.id, metadata: op.metadata ?? {} };
  }

  /** GET that answers undefined for a 404. */
  async find<T = unknown>(path: string): Promise<T | undefined> {
    try {
      return await this.call<T>('GET', path);
    } catch (err) {
      if (err instanceof LxdStatusError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Any method whose 404 means "already gone" (idempotent deletes). */
  async ignoringMissing(method: string, path: string, options: RequestOptions = {}): Promise<void> {
    try {
      await this.call(method, path, options);
    } catch (err) {
      if (err instanceof LxdStatusError && err.status === 404) return;
      throw err;
    }
  }

  close(): void {
    this.agent.destroy();
  }

  /** Waits for an operation: on the member that runs it, in a cluster (another member answers only its record). */
  private async wait(operation: string, waitMs: number, location?: string): Promise<Record<string, unknown> | null> {
    const seconds = Math.max(1, Math.ceil(waitMs / 1000));
    const target = location && location !== 'none' ? `&target=${encodeURIComponent(location)}` : '';
    // A cluster answers the operation's path with its project (`…?project=default`): the wait is on the path alone.
    const path = operation.split('?')[0]!;
    const res = await this.send('GET', `${path}/wait?timeout=${seconds}${target}`, {});
    const op = res.metadata as Operation;
    if (op.status_code === 200) return op.metadata;
    if (op.status_code < 200) throw new LxdStatusError(504, `LXD operation ${op.id} still ${op.status} after ${seconds} s`);
    throw new LxdStatusError(500, op.err || `LXD operation ${op.id} ended ${op.status}`);
  }

  private withProject(path: string): string {
    if (this.project === 'default' || path.startsWith('/1.0/operations')) return path;
    return `${path}${path.includes('?') ? '&' : '?'}project=${encodeURIComponent(this.project)}`;
  }

  private send(method: string, path: string, options: RequestOptions): Promise<LxdResponse> {
    const body = options.raw ?? (options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body)));
    const headers: Record<string, string> = {
      ...(body
        ? { 'content-type': options.raw ? 'application/octet-stream' : 'application/json', 'content-length': String(body.length) }
        : {}),
      ...options.headers,
    };
    const target = this.withProject(path);
    return new Promise<LxdResponse>((resolve, reject) => {
      const onResponse = (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: LxdResponse;
          try {
            parsed = JSON.parse(text) as LxdResponse;
          } catch {
            reject(
              new LxdStatusError(res.statusCode ?? 500, `LXD answered ${method} ${path} with ${res.statusCode}: ${text.slice(0, 200)}`),
            );
            return;
          }
          if (parsed.type === 'error' || (res.statusCode ?? 500) >= 400) {
            const status = parsed.error_code || res.statusCode || 500;
            reject(new LxdStatusError(status, `LXD refused ${method} ${path}: ${parsed.error ?? status}`));
            return;
          }
          resolve(parsed);
        });
      };
      const common = { method, headers, agent: this.agent };
      const req =
        'socket' in this.endpoint
          ? httpRequest({ ...common, socketPath: this.endpoint.socket, host: 'lxd', path: target }, onResponse)
          : httpsRequest(new URL(target, this.endpoint.url), common, onResponse);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (/CERT|SELF_SIGNED|ERR_TLS|SSL/.test(err.code ?? '') || /not the pinned one/.test(err.message)) {
          reject(
            new PreconditionError(
              'ANODYNE_E_PROVIDER_MISCONFIGURED',
              `LXD at ${this.where} did not present the pinned certificate (or refused ours): ${err.message}`,
              { details: { endpoint: this.where } },
            ),
          );
          return;
        }
        if (err.code === 'EACCES') {
          reject(
            new PreconditionError('ANODYNE_E_PROVIDER_MISCONFIGURED', `LXD at ${this.where} refuses this process (${err.message})`, {
              details: { endpoint: this.where },
            }),
          );
          return;
        }
        const unreachable = ['ENOENT', 'ECONNREFUSED', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET'].includes(err.code ?? '');
        reject(
          unreachable
            ? new AnodyneError('ANODYNE_E_PROVIDER_UNREACHABLE', `LXD at ${this.where} cannot be reached: ${err.message}`, {
                details: { endpoint: this.where },
              })
            : err,
        );
      });
      if (body) req.write(body);
      req.end();
    });
  }
}
