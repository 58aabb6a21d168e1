// Restoring the platform's database from a backup of itself, offline: into an empty database, with the same key file.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AnodyneError, ConflictError, PreconditionError, type PlatformConfig } from '@anodyne/common';
import { loadKeyFile } from '@anodyne/credstore';
import { openStore, restoreSnapshot } from '@anodyne/store';
import { checkArtifacts, type PlatformBackupManifest } from '@anodyne/clusters';
import { backupStore, platformBackupKeys, storeOptionsOf } from './platform.js';

export interface RestoredPlatform {
  backup: string;
  driver: string;
  counts: PlatformBackupManifest['counts'];
}

/**
 * Puts a backup of the platform's database into the database the configuration names, which no
 * platform is using: reads the backup from the configured backup store, checks every artifact
 * (size, sha256, seal) with a key derived from the key file of `dataDir/keys` (the same file the
 * backed-up platform had), refuses a database that holds clusters or users unless `force`, loads the
 * copy and brings its schema up to date. Then `anodyne server` starts on it: clusters, users,
 * tasks and credentials as they were when the backup was taken.
 */
export async function restorePlatform(config: PlatformConfig, id: string, o: { force?: boolean } = {}): Promise<RestoredPlatform> {
  const keyFile = join(config.dataDir, 'keys', 'encryption.key');
  if (!existsSync(keyFile)) {
    throw new PreconditionError(
      'ANODYNE_E_ENCRYPTION_KEY_MISSING',
      `${keyFile} is missing: a platform backup opens with the key file of the platform it was taken of`,
    );
  }
  const ring = loadKeyFile(keyFile);
  const artifacts = await backupStore(config, config.dataDir);
  let manifest: PlatformBackupManifest;
  try {
    manifest = JSON.parse((await artifacts.get(`${id}/manifest.json`)).toString('utf8')) as PlatformBackupManifest;
  } catch (err) {
    if (err instanceof AnodyneError) throw err;
    throw new AnodyneError('ANODYNE_E_BACKUP_CORRUPT', `the manifest of backup ${id} is not readable`);
  }
  if (manifest.kind !== 'platform')
    throw new ConflictError('ANODYNE_E_CONFLICT', `backup ${id} is of a cluster; restore it through the API`);
  const missing = manifest.key_ring.ids.filter((k) => !ring.keyIds.includes(k));
  if (missing.length > 0) {
    throw new PreconditionError(
      'ANODYNE_E_ENCRYPTION_KEY_MISSING',
      `backup ${id} needs key(s) ${missing.join(', ')} of the key file it was taken with`,
      {
        details: { missing },
      },
    );
  }
  const files = await checkArtifacts(artifacts, platformBackupKeys(ring), id, manifest.files);
  const options = storeOptionsOf(config);
  if (options.driver === 'postgres' || existsSync(options.path)) {
    const current = await openStore(options, { migrate: false });
    try {
      const tables = (await current.db.introspection.getTables()).map((t) => t.name);
      const count = async (t: 'clusters' | 'identity_users') =>
        tables.includes(t)
          ? Number(
              (
                await current.db
                  .selectFrom(t)
                  .select((eb) => eb.fn.countAll<number>().as('n'))
                  .executeTakeFirst()
              )?.n ?? 0,
            )
          : 0;
      const [clusters, users] = [await count('clusters'), await count('identity_users')];
      if ((clusters > 0 || users > 0) && !o.force) {
        throw new ConflictError(
          'ANODYNE_E_CONFLICT',
          `the database holds ${clusters} cluster(s) and ${users} user(s): a platform backup is restored into an empty one (or give --force to replace it)`,
          { details: { clusters, users } },
        );
      }
    } finally {
      await current.close();
    }
  }
  await restoreSnapshot(options, { driver: manifest.driver, data: files.get('database')! });
  const store = await openStore(options);
  try {
    // The copy was taken while this backup ran: its record says so; it is done now. Others that ran then did not finish.
    await store.db
      .updateTable('backups')
      .set({
        state: 'done',
        manifest: JSON.stringify(manifest),
        size_bytes: manifest.files.reduce((n, f) => n + f.sealed_size, 0),
        finished_at: manifest.created_at,
      })
      .where('id', '=', id)
      .execute();
    await store.db
      .updateTable('backups')
      .set({ state: 'failed', error: 'interrupted: the platform was restored from a copy taken while it ran' })
      .where('state', '=', 'running')
      .execute();
  } finally {
    await store.close();
  }
  return { backup: id, driver: manifest.driver, counts: manifest.counts };
}
