// Where backup artifacts live: the contract every artifact store keeps, and the local-directory store.
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { InputError, NotFoundError } from '@anodyne/common';

/** One stored object. */
export interface StoredObject {
  key: string;
  size: number;
}

/**
 * An artifact store: objects by key (`<backup id>/<file>`), written whole. Keys are relative
 * paths of letters, digits, `.`, `_`, `-` and `/` (no `..`, no leading `/`).
 */
export interface ArtifactStore {
  /** Where it is, for manifests and the API: `file:///var/lib/…/backups` or `s3://bucket/prefix`. */
  readonly location: string;
  /** Writes an object whole (replacing one of the same key); a reader never sees half of it. */
  put(key: string, body: Buffer): Promise<void>;
  /** Reads an object; ANODYNE_E_BACKUP_NOT_FOUND if there is none. */
  get(key: string): Promise<Buffer>;
  /** Deletes an object; idempotent. */
  delete(key: string): Promise<void>;
  /** Objects whose key starts with `prefix`, by key. */
  list(prefix: string): Promise<StoredObject[]>;
}

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Refuses a key that is not a plain relative path. */
export function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length > 512 || !KEY.test(key) || key.split('/').some((p) => p === '.' || p === '..')) {
    throw new InputError('ANODYNE_E_INVALID_INPUT', `artifact key ${JSON.stringify(key)} is not a relative path of [A-Za-z0-9._-]`, {
      details: { key },
    });
  }
}

/** Artifacts in a local directory (0700), written to a temporary name and renamed into place. */
export class LocalArtifactStore implements ArtifactStore {
  readonly location: string;

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.location = `file://${dir}`;
  }

  put(key: string, body: Buffer): Promise<void> {
    checkKey(key);
    const path = join(this.dir, key);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.partial`;
    writeFileSync(tmp, body, { mode: 0o600 });
    renameSync(tmp, path);
    return Promise.resolve();
  }

  get(key: string): Promise<Buffer> {
    checkKey(key);
    try {
      return Promise.resolve(readFileSync(join(this.dir, key)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return Promise.reject(new NotFoundError('ANODYNE_E_BACKUP_NOT_FOUND', `no artifact ${key}`, { details: { key } }));
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  delete(key: string): Promise<void> {
    checkKey(key);
    rmSync(join(this.dir, key), { force: true });
    return Promise.resolve();
  }

  list(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    const walk = (d: string) => {
      let entries;
      try {
        entries = readdirSync(d, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (!e.name.endsWith('.partial')) {
          const key = relative(this.dir, p).split(sep).join('/');
          if (key.startsWith(prefix)) out.push({ key, size: statSync(p).size });
        }
      }
    };
    walk(this.dir);
    return Promise.resolve(out.sort((a, b) => a.key.localeCompare(b.key)));
  }
}
