// The S3 artifact store: objects in a bucket of an S3-compatible object store (path-style URLs, AWS Signature Version 4).
import { createHash, createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { InputError, NotFoundError, UnavailableError } from '@anodyne/common';
import { checkKey, type ArtifactStore, type StoredObject } from './store.js';

export interface S3StoreOptions {
  /** `http(s)://host[:port]`, without a path. */
  endpoint: string;
  bucket: string;
  /** Folder of the bucket that holds the artifacts (`a/b`); none by default. */
  prefix?: string;
  /** Signing region; `us-east-1` by default. */
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** PEM certificates to trust for an https endpoint (besides the system's). */
  ca?: string;
  /** How long a request may wait for the store to answer (connect or next bytes); 30 s by default. */
  timeoutMs?: number;
  /** Keys per ListObjectsV2 page, 1–1000 (1000 by default). */
  maxKeys?: number;
}

interface Response {
  status: number;
  body: Buffer;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const EMPTY_SHA256 = sha256(Buffer.alloc(0));

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - . _ ~ (and `/` in paths). */
function encode(s: string, keepSlash = false): string {
  const out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? out.replace(/%2F/g, '/') : out;
}

function decodeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);/g, (_, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" }[e] ?? '';
  });
}

/** The texts of every `<name>…</name>` element in `xml` (no attributes, as S3 writes them). */
function elements(xml: string, name: string): string[] {
  return [...xml.matchAll(new RegExp(`<${name}>([\\s\\S]*?)</${name}>`, 'g'))].map((m) => m[1] ?? '');
}

function element(xml: string, name: string): string | undefined {
  const v = elements(xml, name)[0];
  return v === undefined ? undefined : decodeXml(v);
}

function invalid(message: string, details: Record<string, unknown>): InputError {
  return new InputError('ANODYNE_E_INVALID_INPUT', message, { details });
}

/** Artifacts in a bucket of an S3-compatible object store; PutObject replaces an object whole, as the contract wants. */
export class S3ArtifactStore implements ArtifactStore {
  readonly location: string;
  private readonly url: URL;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly region: string;
  private readonly accessKeyId: string;
  private readonly secretAccessKey: string;
  private readonly ca: string | undefined;
  private readonly timeoutMs: number;
  private readonly maxKeys: number;

  constructor(options: S3StoreOptions) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch {
      throw invalid(`S3 endpoint ${JSON.stringify(options.endpoint)} is not a URL`, { endpoint: options.endpoint });
    }
    if (!['http:', 'https:'].includes(url.protocol) || url.username || url.password || url.pathname !== '/' || url.search || url.hash)
      throw invalid(`S3 endpoint ${JSON.stringify(options.endpoint)} is not http(s)://host[:port]`, { endpoint: options.endpoint });
    const bucket = options.bucket;
    if (typeof bucket !== 'string' || !BUCKET.test(bucket) || bucket.includes('..') || /^\d+\.\d+\.\d+\.\d+$/.test(bucket))
      throw invalid(
        `S3 bucket name ${JSON.stringify(bucket)} is not valid (3-63 of a-z 0-9 . -, starting and ending with a letter or digit)`,
        {
          bucket,
        },
      );
    const prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    if (prefix !== '' && (!PREFIX.test(prefix) || prefix.split('/').some((p) => p === '.' || p === '..')))
      throw invalid(`S3 prefix ${JSON.stringify(options.prefix)} is not a relative path of [A-Za-z0-9._-]`, { prefix: options.prefix });
    const region = options.region ?? 'us-east-1';
    if (!/^[a-z0-9-]+$/.test(region)) throw invalid(`S3 region ${JSON.stringify(region)} is not valid`, { region });
    if (typeof options.accessKeyId !== 'string' || !/^[A-Za-z0-9+=.@_-]+$/.test(options.accessKeyId))
      throw invalid('S3 access key id is missing or has characters other than A-Z a-z 0-9 + = . @ _ -', {});
    if (typeof options.secretAccessKey !== 'string' || options.secretAccessKey === '') throw invalid('S3 secret access key is missing', {});
    const timeoutMs = options.timeoutMs ?? 30_000;
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw invalid('S3 timeoutMs must be a positive integer', { timeoutMs });
    const maxKeys = options.maxKeys ?? 1000;
    if (!Number.isInteger(maxKeys) || maxKeys < 1 || maxKeys > 1000) throw invalid('S3 maxKeys must be 1-1000', { maxKeys });
    if (url.protocol === 'http:' && options.ca !== undefined)
      throw invalid('S3 ca is given for an http endpoint', { endpoint: url.origin });
    this.url = url;
    this.bucket = bucket;
    this.prefix = prefix;
    this.region = region;
    this.accessKeyId = options.accessKeyId;
    this.secretAccessKey = options.secretAccessKey;
    this.ca = options.ca;
    this.timeoutMs = timeoutMs;
    this.maxKeys = maxKeys;
    this.location = `s3://${bucket}/${prefix}`;
  }

  /** Creates the bucket unless it exists (HEAD, then PUT on 404). */
  async ensureBucket(): Promise<void> {
    const head = await this.request('HEAD', '', {});
    if (head.status === 200) return;
    if (head.status !== 404) this.fail('HeadBucket', head);
    const body =
      this.region === 'us-east-1'
        ? undefined
        : Buffer.from(`<CreateBucketConfiguration><LocationConstraint>${this.region}</LocationConstraint></CreateBucketConfiguration>`);
    const created = await this.request('PUT', '', {}, body);
    if (created.status !== 200 && element(created.body.toString('utf8'), 'Code') !== 'BucketAlreadyOwnedByYou')
      this.fail('CreateBucket', created);
  }

  async put(key: string, body: Buffer): Promise<void> {
    checkKey(key);
    const res = await this.request('PUT', this.objectKey(key), {}, body);
    if (res.status !== 200) this.fail('PutObject', res, key);
  }

  async get(key: string): Promise<Buffer> {
    checkKey(key);
    const res = await this.request('GET', this.objectKey(key), {});
    if (res.status === 200) return res.body;
    if (res.status === 404 && element(res.body.toString('utf8'), 'Code') !== 'NoSuchBucket')
      throw new NotFoundError('ANODYNE_E_BACKUP_NOT_FOUND', `no artifact ${key} in ${this.location}`, { details: { key } });
    return this.fail('GetObject', res, key);
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    const res = await this.request('DELETE', this.objectKey(key), {});
    if (res.status === 200 || res.status === 204) return;
    if (res.status === 404 && element(res.body.toString('utf8'), 'Code') !== 'NoSuchBucket') return;
    this.fail('DeleteObject', res, key);
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const base = this.prefix === '' ? '' : `${this.prefix}/`;
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const query: Record<string, string> = { 'list-type': '2', prefix: base + prefix, 'max-keys': String(this.maxKeys) };
      if (token !== undefined) query['continuation-token'] = token;
      const res = await this.request('GET', '', query);
      if (res.status !== 200) this.fail('ListObjectsV2', res, prefix);
      const xml = res.body.toString('utf8');
      for (const c of elements(xml, 'Contents')) {
        const key = element(c, 'Key') ?? '';
        if (key.startsWith(base)) out.push({ key: key.slice(base.length), size: Number(element(c, 'Size') ?? 0) });
      }
      token = element(xml, 'IsTruncated') === 'true' ? element(xml, 'NextContinuationToken') : undefined;
      if (element(xml, 'IsTruncated') === 'true' && !token)
        throw new UnavailableError(
          'ANODYNE_E_BACKUP_STORE_UNAVAILABLE',
          `S3 store ${this.url.origin} sent a truncated list without a token`,
        );
    } while (token !== undefined);
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  private objectKey(key: string): string {
    return this.prefix === '' ? key : `${this.prefix}/${key}`;
  }

  /** Throws the error an unexpected answer means. */
  private fail(op: string, res: Response, key?: string): never {
    const xml = res.body.toString('utf8');
    const code = element(xml, 'Code') ?? `HTTP ${res.status}`;
    const said = element(xml, 'Message');
    const what = `${op} ${this.bucket}${key === undefined ? '' : `/${this.objectKey(key)}`} at ${this.url.origin}`;
    const details = { endpoint: this.url.origin, bucket: this.bucket, key, status: res.status, s3Code: code };
    const reason = `${code}${said ? `: ${said}` : ''}`;
    if (res.status === 403)
      throw new UnavailableError(
        'ANODYNE_E_BACKUP_STORE_UNAVAILABLE',
        `S3 store refused access to bucket ${this.bucket} (${what}: ${reason}); check the access key ${this.accessKeyId}, its secret and its permissions`,
        { details, retryable: false },
      );
    if (res.status === 404 && code === 'NoSuchBucket')
      throw new UnavailableError('ANODYNE_E_BACKUP_STORE_UNAVAILABLE', `S3 bucket ${this.bucket} does not exist (${what})`, {
        details,
        retryable: false,
      });
    const retryable = res.status >= 500 || res.status === 429;
    throw new UnavailableError('ANODYNE_E_BACKUP_STORE_UNAVAILABLE', `S3 store failed ${what}: ${reason}`, { details, retryable });
  }

  /** One signed request; `path` is the object's key within the bucket ('' for the bucket itself). */
  private request(method: string, path: string, query: Record<string, string>, body?: Buffer): Promise<Response> {
    const uri = `/${this.bucket}${path === '' ? '' : `/${encode(path, true)}`}`;
    const search = Object.keys(query)
      .sort()
      .map((k) => `${encode(k)}=${encode(query[k] ?? '')}`)
      .join('&');
    const amzDate = new Date()
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '');
    const day = amzDate.slice(0, 8);
    const payloadHash = body ? sha256(body) : EMPTY_SHA256;
    const headers: Record<string, string> = { host: this.url.host, 'x-amz-content-sha256': payloadHash, 'x-amz-date': amzDate };
    const signed = Object.keys(headers).sort();
    const canonical = [method, uri, search, ...signed.map((h) => `${h}:${headers[h]}`), '', signed.join(';'), payloadHash].join('\n');
    const scope = `${day}/${this.region}/s3/aws4_request`;
    const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
    let signingKey = hmac(`AWS4${this.secretAccessKey}`, day);
    for (const part of [this.region, 's3', 'aws4_request']) signingKey = hmac(signingKey, part);
    const signature = createHmac('sha256', signingKey).update(toSign).digest('hex');
    headers['authorization'] =
      `AWS4-HMAC-SHA256 Credential=${this.accessKeyId}/${scope}, SignedHeaders=${signed.join(';')}, Signature=${signature}`;
    headers['content-length'] = String(body?.length ?? 0);
    if (body) headers['content-type'] = method === 'PUT' && path !== '' ? 'application/octet-stream' : 'application/xml';

    const what = `${method} ${this.bucket}${path === '' ? '' : `/${path}`}`;
    return new Promise<Response>((resolve, reject) => {
      const unavailable = (reason: string, cause?: unknown) =>
        new UnavailableError('ANODYNE_E_BACKUP_STORE_UNAVAILABLE', `S3 store ${this.url.origin} does not answer (${what}): ${reason}`, {
          details: { endpoint: this.url.origin, bucket: this.bucket },
          cause,
        });
      const options: https.RequestOptions = {
        method,
        protocol: this.url.protocol,
        hostname: this.url.hostname.replace(/^\[|\]$/g, ''),
        port: this.url.port || undefined,
        path: search ? `${uri}?${search}` : uri,
        headers,
        timeout: this.timeoutMs,
        ...(this.ca === undefined ? {} : { ca: this.ca }),
      };
      const req = (this.url.protocol === 'https:' ? https : http).request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', (err) => reject(unavailable(err.message, err)));
      });
      req.on('timeout', () => req.destroy(unavailable(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof UnavailableError) reject(err);
        else reject(unavailable(err.code ? `${err.code} (${err.message})` : err.message, err));
      });
      req.end(body);
    });
  }
}
