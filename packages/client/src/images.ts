// Image archives and the registry protocol from Node: reads OCI image layouts and docker-save archives
// (tar), and pushes or inspects images over the OCI distribution API with a bearer token.
import { createHash } from 'node:crypto';
import { request } from 'node:https';
import { ApiError } from './client.js';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

const INDEX_TYPES: string[] = [MEDIA.ociIndex, MEDIA.dockerList];

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** One manifest of an archive: its exact bytes (their sha256 is its digest) and media type. */
export interface ArchiveManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  /** The tag the archive names it by (OCI `org.opencontainers.image.ref.name`, docker `RepoTags`). */
  ref?: string;
}

/** An image archive: its top-level manifests, and every manifest and blob by digest. */
export interface ImageArchive {
  images: ArchiveManifest[];
  manifests: Map<string, ArchiveManifest>;
  blobs: Map<string, Buffer>;
}

const invalid = (message: string) => new ApiError(0, 'ANODYNE_E_IMAGE_ARCHIVE_INVALID', message);
export const sha256Digest = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The regular files of a tar archive (ustar, pax `path` records, GNU long names), by path without `./`. */
export function readTar(buf: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let off = 0;
  let longName: string | undefined;
  const str = (b: Buffer) => b.toString('utf8', 0, b.indexOf(0) === -1 ? b.length : b.indexOf(0));
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const sizeField = str(h.subarray(124, 136)).trim();
    const size = sizeField ? parseInt(sizeField, 8) : 0;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    if (Number.isNaN(size) || parseInt(str(h.subarray(148, 156)).trim(), 8) !== sum)
      throw invalid('not a tar archive (bad header checksum)');
    const type = String.fromCharCode(h[156] || 48);
    const data = buf.subarray(off + 512, off + 512 + size);
    if (data.length < size) throw invalid('the tar archive is truncated');
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
      if (m) longName = m[1];
      continue;
    }
    if (type === 'L') {
      longName = str(data);
      continue;
    }
    const prefix = str(h.subarray(345, 500));
    const name = longName ?? (prefix ? `${prefix}/${str(h.subarray(0, 100))}` : str(h.subarray(0, 100)));
    longName = undefined;
    if (type === '0' || type === '7') files.set(name.replace(/^\.\//, ''), data);
  }
  if (files.size === 0) throw invalid('the archive holds no files');
  return files;
}

/** A tar archive of the given files (ustar, mode 0644, owned by root, time 0): what tests and tools pack. */
export function writeTar(files: { name: string; data: Buffer; mode?: number }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const h = Buffer.alloc(512);
    if (Buffer.byteLength(f.name) > 100) throw new Error(`tar: name too long: ${f.name}`);
    h.write(f.name, 0);
    h.write(`${(f.mode ?? 0o644).toString(8).padStart(7, '0')}\0`, 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${f.data.length.toString(8).padStart(11, '0')}\0`, 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write('0', 156);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const x of h) sum += x;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    parts.push(h, f.data, Buffer.alloc(Math.ceil(f.data.length / 512) * 512 - f.data.length));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function json<T>(b: Buffer | undefined, what: string): T {
  if (!b) throw invalid(`${what} is missing`);
  try {
    return JSON.parse(b.toString('utf8')) as T;
  } catch {
    throw invalid(`${what} is not JSON`);
  }
}

/** Reads an OCI image layout (`index.json`, `blobs/sha256/…`) or a docker-save archive (`manifest.json`). */
export function readImageArchive(tar: Buffer): ImageArchive {
  const files = readTar(tar);
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, ArchiveManifest>();
  if (files.has('index.json')) {
    for (const [name, data] of files) {
      const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
      if (!m) continue;
      const digest = `sha256:${m[1]}`;
      if (sha256Digest(data) !== digest) throw invalid(`blob ${digest} does not match its digest (corrupt archive)`);
      blobs.set(digest, data);
    }
    const blob = (d: Descriptor) => {
      const b = blobs.get(d.digest);
      if (!b) throw invalid(`the archive lacks ${d.digest}`);
      return b;
    };
    const addManifest = (d: Descriptor, ref?: string): ArchiveManifest => {
      const m: ArchiveManifest = { digest: d.digest, mediaType: d.mediaType, bytes: blob(d), ...(ref ? { ref } : {}) };
      manifests.set(d.digest, m);
      if (INDEX_TYPES.includes(d.mediaType))
        for (const child of json<{ manifests?: Descriptor[] }>(m.bytes, `index ${d.digest}`).manifests ?? []) addManifest(child);
      else {
        const man = json<{ config?: Descriptor; layers?: Descriptor[] }>(m.bytes, `manifest ${d.digest}`);
        for (const x of [man.config, ...(man.layers ?? [])]) if (x) blob(x);
      }
      return m;
    };
    const index = json<{ manifests?: Descriptor[] }>(files.get('index.json'), 'index.json');
    const images = (index.manifests ?? []).map((d) => {
      const ref = d.annotations?.['org.opencontainers.image.ref.name'];
      return addManifest(d, ref?.includes(':') ? ref.slice(ref.lastIndexOf(':') + 1) : ref);
    });
    if (images.length === 0) throw invalid('index.json names no image');
    return { images, manifests, blobs };
  }
  if (files.has('manifest.json')) {
    // docker save: a config and uncompressed layer tars per image; pushed as an OCI manifest.
    const entries = json<{ Config: string; RepoTags?: string[] | null; Layers: string[] }[]>(files.get('manifest.json'), 'manifest.json');
    const images = entries.map((e) => {
      const file = (name: string) => {
        const b = files.get(name);
        if (!b) throw invalid(`the archive lacks ${name}`);
        const digest = sha256Digest(b);
        blobs.set(digest, b);
        return { digest, size: b.length };
      };
      const config = { mediaType: MEDIA.ociConfig, ...file(e.Config) };
      const layers = e.Layers.map((l) => ({ mediaType: MEDIA.ociLayer, ...file(l) }));
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers }));
      const tag = e.RepoTags?.[0];
      const m: ArchiveManifest = {
        digest: sha256Digest(bytes),
        mediaType: MEDIA.ociManifest,
        bytes,
        ...(tag ? { ref: tag.slice(tag.lastIndexOf(':') + 1) } : {}),
      };
      manifests.set(m.digest, m);
      return m;
    });
    if (images.length === 0) throw invalid('manifest.json names no image');
    return { images, manifests, blobs };
  }
  throw invalid('neither index.json (OCI image layout) nor manifest.json (docker save) is in the archive');
}

/** The blobs and child manifests a manifest refers to (config and layers; an index's manifests). */
export function referencesOf(m: { mediaType: string; bytes: Buffer }): { blobs: Descriptor[]; manifests: Descriptor[] } {
  const parsed = JSON.parse(m.bytes.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
  if (INDEX_TYPES.includes(m.mediaType)) return { blobs: [], manifests: parsed.manifests ?? [] };
  return { blobs: [...(parsed.config ? [parsed.config] : []), ...(parsed.layers ?? [])], manifests: [] };
}

export interface RegistryAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One request to a registry over HTTPS (trusting `caPem`). */
export function registryRequest(
  url: string,
  o: { method: string; token?: string; headers?: Record<string, string>; body?: Buffer; caPem?: string; timeoutMs?: number },
): Promise<RegistryAnswer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request(
      {
        host: u.hostname,
        port: u.port || 443,
        path: u.pathname + u.search,
        method: o.method,
        headers: {
          ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
          ...(o.body ? { 'content-length': String(o.body.length) } : {}),
          ...o.headers,
        },
        ...(o.caPem ? { ca: o.caPem } : {}),
        timeout: o.timeoutMs ?? 120_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', (e) => reject(new ApiError(0, 'ANODYNE_E_REGISTRY_UNAVAILABLE', `cannot reach the registry: ${e.message}`)));
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.end(o.body);
  });
}

/** The registry's error answer as an ApiError: Anodyne's own code where the platform put one in `detail`. */
export function registryError(a: RegistryAnswer, what: string): ApiError {
  let code = a.status === 401 || a.status === 403 ? 'ANODYNE_E_REGISTRY_DENIED' : 'ANODYNE_E_REGISTRY_UNAVAILABLE';
  let message = `${what}: the registry answered ${a.status}`;
  try {
    const e = (JSON.parse(a.body.toString('utf8')) as { errors?: { code?: string; message?: string; detail?: { code?: string } }[] })
      .errors?.[0];
    if (e?.detail?.code) code = e.detail.code;
    else if (e?.code === 'MANIFEST_UNKNOWN' || e?.code === 'NAME_UNKNOWN') code = 'ANODYNE_E_IMAGE_NOT_FOUND';
    if (e?.message) message = `${what}: ${e.message}`;
  } catch {
    // not a registry error body
  }
  return new ApiError(a.status, code, message);
}

export interface PushOptions {
  /** https://host:port of the registry. */
  registry: string;
  caPem?: string;
  /** `project/name`. */
  repository: string;
  tag: string;
  archive: ImageArchive;
  /** Which of the archive's images (by its tag in the archive) when it holds several. */
  pick?: string;
  /** A registry token for `repository:<repository>:pull,push`. */
  token: string;
  onProgress?: (p: { digest: string; size: number; skipped: boolean }) => void;
}

/** Pushes one image of an archive: blobs the registry lacks (monolithic uploads), child manifests, then the tagged one. */
export async function pushImage(o: PushOptions): Promise<{ digest: string; bytes: number; uploaded: number }> {
  const { archive } = o;
  let image = archive.images[0]!;
  if (o.pick !== undefined) {
    const found = archive.images.find((m) => m.ref === o.pick);
    if (!found)
      throw invalid(`the archive holds no image tagged ${o.pick} (it has ${archive.images.map((m) => m.ref ?? m.digest).join(', ')})`);
    image = found;
  } else if (archive.images.length > 1)
    throw invalid(
      `the archive holds ${archive.images.length} images; say which (${archive.images.map((m) => m.ref ?? m.digest).join(', ')})`,
    );
  const base = `${o.registry}/v2/${o.repository}`;
  const req = (path: string, r: Parameters<typeof registryRequest>[1]) =>
    registryRequest(`${base}${path}`, { token: o.token, ...(o.caPem ? { caPem: o.caPem } : {}), ...r });
  let bytes = 0;
  let uploaded = 0;
  const pushed = new Set<string>();
  const pushBlob = async (d: Descriptor) => {
    if (pushed.has(d.digest)) return;
    pushed.add(d.digest);
    const data = archive.blobs.get(d.digest);
    if (!data) throw invalid(`the archive lacks ${d.digest}`);
    bytes += data.length;
    const head = await req(`/blobs/${d.digest}`, { method: 'HEAD' });
    if (head.status === 200) {
      o.onProgress?.({ digest: d.digest, size: data.length, skipped: true });
      return;
    }
    const start = await req('/blobs/uploads/', { method: 'POST' });
    if (start.status !== 202) throw registryError(start, `starting the upload of ${d.digest}`);
    const location = new URL(String(start.headers['location']), `${base}/`);
    location.searchParams.set('digest', d.digest);
    const put = await registryRequest(location.toString(), {
      method: 'PUT',
      token: o.token,
      body: data,
      headers: { 'content-type': 'application/octet-stream' },
      ...(o.caPem ? { caPem: o.caPem } : {}),
    });
    if (put.status !== 201) throw registryError(put, `uploading ${d.digest}`);
    uploaded += data.length;
    o.onProgress?.({ digest: d.digest, size: data.length, skipped: false });
  };
  const pushManifest = async (m: ArchiveManifest, reference: string) => {
    const refs = referencesOf(m);
    for (const child of refs.manifests) {
      const cm = archive.manifests.get(child.digest);
      if (!cm) throw invalid(`the archive lacks manifest ${child.digest}`);
      await pushManifest(cm, child.digest);
    }
    for (const b of refs.blobs) await pushBlob(b);
    const put = await req(`/manifests/${reference}`, { method: 'PUT', body: m.bytes, headers: { 'content-type': m.mediaType } });
    if (put.status !== 201) throw registryError(put, `pushing the manifest of ${o.repository}:${reference}`);
    bytes += m.bytes.length;
  };
  await pushManifest(image, o.tag);
  return { digest: image.digest, bytes, uploaded };
}

/** `[registry/]project/name[:tag|@digest]` → its parts (the tag defaults to `latest`). */
export function parseImageReference(ref: string): { host?: string; repository: string; tag?: string; digest?: string } {
  const bad = () => new ApiError(0, 'ANODYNE_E_IMAGE_REFERENCE_INVALID', `${ref} is not an image reference (project/name[:tag|@digest])`);
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw bad();
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(tag)) throw bad();
  }
  const parts = rest.split('/');
  let host: string | undefined;
  if (parts.length > 2 && /[.:]|^localhost$/.test(parts[0]!)) host = parts.shift();
  const repository = parts.join('/');
  if (!REPOSITORY.test(repository)) throw bad();
  return { ...(host ? { host } : {}), repository, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** `project/name[/more]`: lower-case path components as the distribution spec allows them. */
export const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$/;

/**
 * An OCI image layout archive of one image with one uncompressed layer (what tests and tools build
 * without a container engine): `files` in the layer, the entrypoint and tag given.
 */
export function imageArchive(o: {
  files: { name: string; data: Buffer; mode?: number }[];
  entrypoint: string[];
  tag: string;
  env?: string[];
}): Buffer {
  const layer = writeTar(o.files);
  const layerDigest = sha256Digest(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Entrypoint: o.entrypoint, Env: o.env ?? ['PATH=/bin'], WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [layerDigest] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: sha256Digest(config), size: config.length },
      layers: [{ mediaType: MEDIA.ociLayer, digest: layerDigest, size: layer.length }],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MEDIA.ociManifest,
          digest: sha256Digest(manifest),
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': o.tag },
        },
      ],
    }),
  );
  const blob = (b: Buffer) => ({ name: `blobs/sha256/${sha256Digest(b).slice(7)}`, data: b });
  return writeTar([
    { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    { name: 'index.json', data: index },
    blob(config),
    blob(manifest),
    blob(layer),
  ]);
}
