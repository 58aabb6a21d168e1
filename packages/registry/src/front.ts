// The registry's front door: HTTPS with the platform's certificate, forwarding to the registry's socket,
// with project quotas, push records and audit where the registry itself has none.
import { createServer, type Server } from 'node:https';
import { request, type IncomingMessage, type ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import { AnodyneError, type Logger } from '@anodyne/common';
import { sha256Digest } from '@anodyne/client/node';
import { projectOf, quotaError, type RegistryService } from './service.js';
import { tokenSubject } from './tokens.js';

const MANIFEST_LIMIT = 4 * 1024 * 1024;
const NAME = /^\/v2\/(.+?)\/(blobs\/uploads|blobs|manifests|tags)(\/.*)?$/;

export interface RegistryFrontOptions {
  /** The registry's unix socket. */
  socket: string;
  tls: { cert: string; key: string };
  logger: Logger;
  /** Whether the registry can take requests now (false while garbage is collected). */
  available: () => boolean;
}

/** A Docker-registry error body; `detail.code` carries Anodyne's code for clients that know it. */
function send(res: ServerResponse, status: number, code: string, message: string, anodyneCode: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ errors: [{ code, message, detail: { code: anodyneCode } }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export class RegistryFront {
  readonly server: Server;
  /** The policy and records; the service needs the front's address, so it is given once the front listens (`serve`). */
  private service: RegistryService | undefined;

  constructor(private readonly o: RegistryFrontOptions) {
    this.server = createServer({ cert: o.tls.cert, key: o.tls.key }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (err instanceof AnodyneError) {
          const status = err.kind === 'quota_exceeded' ? 403 : err.kind === 'invalid_input' ? 400 : err.kind === 'unavailable' ? 503 : 500;
          send(res, status, err.kind === 'quota_exceeded' ? 'DENIED' : 'UNKNOWN', err.message, err.code);
          return;
        }
        o.logger.error({ err: (err as Error).message }, 'the registry front failed a request');
        send(res, 500, 'UNKNOWN', 'internal error', 'ANODYNE_E_INTERNAL');
      });
    });
  }

  /** Starts answering with `service`'s records and quotas (until then every request is told to come back). */
  serve(service: RegistryService): void {
    this.service = service;
  }

  /** A renewed serving certificate is used for new connections at once. */
  reload(tls: { cert: string; key: string }): void {
    this.server.setSecureContext(tls);
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://registry');
    if (!url.pathname.startsWith('/v2/')) {
      send(res, 404, 'NOT_FOUND', 'this is the image registry: its API is under /v2/', 'ANODYNE_E_ROUTE_NOT_FOUND');
      return;
    }
    const service = this.service;
    if (!service || !this.o.available()) {
      res.setHeader('retry-after', '5');
      const why = service ? 'the registry is collecting garbage' : 'the registry is starting';
      send(res, 503, 'UNAVAILABLE', `${why}; try again shortly`, 'ANODYNE_E_REGISTRY_UNAVAILABLE');
      return;
    }
    const m = NAME.exec(url.pathname);
    const repository = m?.[1];
    const kind = m?.[2];
    const method = req.method ?? 'GET';
    const who = tokenSubject(req.headers.authorization) ?? 'anonymous';
    if (repository && kind === 'manifests' && method === 'PUT') {
      await this.putManifest(service, req, res, repository, m[3]!.slice(1), who);
      return;
    }
    if (repository && kind === 'blobs/uploads' && (method === 'PATCH' || method === 'PUT' || method === 'POST')) {
      const room = await service.headroom(projectOf(repository));
      if (room) {
        const limit = room.quota - room.used;
        const declared = Number(req.headers['content-length'] ?? 0);
        if (declared > limit) throw quotaError(projectOf(repository), room.quota, room.used + declared);
        await this.forward(req, res, { limit, onLimit: (n) => quotaError(projectOf(repository), room.quota, room.used + n) });
        return;
      }
    }
    const upstream = await this.forward(req, res);
    if (repository && kind === 'manifests' && method === 'DELETE' && upstream === 202)
      await service.forgetManifest(repository, m[3]!.slice(1), who);
  }

  /** Manifests are small: read whole, checked against the quota, forwarded, recorded once the registry took them. */
  private async putManifest(
    service: RegistryService,
    req: IncomingMessage,
    res: ServerResponse,
    repository: string,
    reference: string,
    who: string,
  ): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MANIFEST_LIMIT) {
        send(res, 413, 'SIZE_INVALID', `a manifest may have at most ${MANIFEST_LIMIT} bytes`, 'ANODYNE_E_BODY_TOO_LARGE');
        return;
      }
      chunks.push(c);
    }
    const bytes = Buffer.concat(chunks);
    const mediaType = String(req.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    let parsedType = mediaType;
    try {
      parsedType = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? mediaType;
    } catch {
      send(res, 400, 'MANIFEST_INVALID', 'the manifest is not JSON', 'ANODYNE_E_INVALID_INPUT');
      return;
    }
    const manifest = { digest: sha256Digest(bytes), mediaType: parsedType || mediaType, bytes };
    await service.checkManifestQuota(repository, manifest);
    const status = await this.forward(req, res, { body: bytes });
    if (status === 201) await service.recordManifest(repository, reference, manifest, who);
  }

  /**
   * Forwards one request to the registry's socket and its answer back; resolves with the registry's
   * status. `limit`: request bytes allowed through (an upload over it is cut and refused).
   */
  private forward(
    req: IncomingMessage,
    res: ServerResponse,
    o: { body?: Buffer; limit?: number; onLimit?: (bytes: number) => AnodyneError } = {},
  ): Promise<number> {
    return new Promise((resolve, reject) => {
      const headers = { ...req.headers, 'x-forwarded-proto': 'https' };
      if (o.body) headers['content-length'] = String(o.body.length);
      const up = request({ socketPath: this.o.socket, method: req.method, path: req.url, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.on('end', () => resolve(answer.statusCode ?? 502));
        answer.on('error', reject);
      });
      up.on('error', (err: NodeJS.ErrnoException) => {
        if (cut) return;
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
          res.setHeader('retry-after', '5');
          send(res, 503, 'UNAVAILABLE', 'the image registry is not running', 'ANODYNE_E_REGISTRY_UNAVAILABLE');
          resolve(503);
        } else reject(err);
      });
      let cut = false;
      if (o.body) {
        up.end(o.body);
        return;
      }
      if (o.limit === undefined) {
        req.pipe(up);
        return;
      }
      let seen = 0;
      const limit = o.limit;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          seen += chunk.length;
          if (seen > limit) {
            cut = true;
            up.destroy();
            req.unpipe(counter);
            reject(o.onLimit!(seen));
            req.resume();
            return;
          }
          done(null, chunk);
        },
      });
      req.pipe(counter).pipe(up);
    });
  }
}
