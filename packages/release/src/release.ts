// A built release (upstream binaries and OCI image archives): finding it, its programs and images, checking sha256 sums.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PreconditionError } from '@anodyne/common';

export interface ReleaseFile {
  component: string;
  version: string;
  file: string;
  sha256: string;
}

export interface ReleaseManifest {
  release: string;
  kubernetes: string;
  etcd: string;
  helm: string;
  coredns: string;
  flannel: string;
  metrics_server: string;
  /** The network policy controller's upstream (absent in releases built before it). */
  network_policy?: string;
  images: Record<ImageName, string>;
  files: ReleaseFile[];
  debian: Record<string, string>;
  built_in_seconds: number;
}

/** Programs of the multi-call binary, each a symlink in bin/. */
export const PROGRAMS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'kubectl', 'etcd', 'etcdctl', 'etcdutl', 'helm', 'coredns', 'flanneld', 'network-policy'] as const;
export type Program = (typeof PROGRAMS)[number];

/** The OCI image archives of a release (images/<name>.tar), each imported into every worker's containerd. */
export const IMAGES = ['pause', 'busybox', 'coredns', 'metrics-server'] as const;
export type ImageName = (typeof IMAGES)[number];

/** A built release: upstream binaries and OCI image archives in one directory outside the repo. */
export class Release {
  constructor(
    readonly dir: string,
    readonly manifest: ReleaseManifest,
  ) {}

  /** The content-addressed name: `kubernetes-<version>-<source hash>`. */
  get key(): string {
    return this.manifest.release;
  }

  /** The Kubernetes version without its `v`, e.g. `1.34.4`. */
  get version(): string {
    return this.manifest.kubernetes.replace(/^v/, '');
  }

  /** The minor version, e.g. `1.34`. */
  get minor(): string {
    return this.version.split('.').slice(0, 2).join('.');
  }

  bin(program: Program): string {
    return join(this.dir, 'bin', program);
  }

  image(name: ImageName): { archive: string; ref: string } {
    return { archive: join(this.dir, 'images', `${name}.tar`), ref: this.manifest.images[name] };
  }

  /** Checks every file against the manifest's sha256. */
  async verify(): Promise<void> {
    for (const f of this.manifest.files) {
      const sum = await sha256File(join(this.dir, f.file));
      if (sum !== f.sha256) {
        throw new PreconditionError('ANODYNE_E_RELEASE_CORRUPT', `release file ${f.file} does not match its manifest (sha256 ${sum}, expected ${f.sha256})`, { details: { file: f.file } });
      }
    }
  }
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path).on('data', (b) => h.update(b)).on('error', reject).on('end', () => resolve(h.digest('hex')));
  });
}

export interface LocateOptions {
  /** An explicit release directory (ANODYNE_RELEASE_DIR). */
  dir?: string | undefined;
  /** The cache holding releases/current (ANODYNE_CACHE, default /var/cache/anodyne). */
  cacheDir?: string | undefined;
}

/**
 * Finds the release: the given directory, else $ANODYNE_RELEASE_DIR, else
 * <cache>/releases/current as left by `make release`. Throws ANODYNE_E_RELEASE_NOT_FOUND with
 * the fix when there is none.
 */
export function locateRelease(options: LocateOptions = {}): Release {
  const cache = options.cacheDir ?? process.env['ANODYNE_CACHE'] ?? '/var/cache/anodyne';
  const dir = options.dir ?? process.env['ANODYNE_RELEASE_DIR'] ?? join(cache, 'releases', 'current');
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    throw new PreconditionError('ANODYNE_E_RELEASE_NOT_FOUND', `no release at ${dir}: run make release`, { details: { dir } });
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as ReleaseManifest;
  return new Release(realpathSync(dir), manifest);
}

/**
 * Every release built for the current sources, newest Kubernetes first: the releases listed in
 * `index.json` next to the located release (written by `release/build.sh`), or that release
 * alone when there is no index (an explicit directory elsewhere).
 */
export function locateReleases(options: LocateOptions = {}): Release[] {
  const first = locateRelease(options);
  const parent = dirname(first.dir);
  const index = join(parent, 'index.json');
  if (!existsSync(index)) return [first];
  const keys = (JSON.parse(readFileSync(index, 'utf8')) as { releases?: string[] }).releases ?? [];
  if (!keys.includes(basename(first.dir))) return [first];
  const all = keys.filter((k) => existsSync(join(parent, k, 'manifest.json'))).map((k) => locateRelease({ dir: join(parent, k) }));
  return all.sort((a, b) => compareVersions(b.version, a.version));
}

/** Orders `1.33.13` before `1.34.4` (numeric, part by part). */
export function compareVersions(a: string, b: string): number {
  const pa = a.replace(/^v/, '').split('.').map(Number);
  const pb = b.replace(/^v/, '').split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
