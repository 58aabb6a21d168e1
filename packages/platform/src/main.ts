// Entry point of `anodyne server` (bin/anodyne dispatches here): `main.js [--config FILE] [--restore-platform BACKUP [--force]]`.
import { parseArgs } from 'node:util';
import { loadConfig, PlatformConfigSchema } from '@anodyne/common';
import { runServer } from './server.js';
import { restorePlatform } from './restore.js';

let values: { config?: string; 'restore-platform'?: string; force?: boolean };
try {
  values = parseArgs({
    args: process.argv.slice(2),
    options: { config: { type: 'string', short: 'c' }, 'restore-platform': { type: 'string' }, force: { type: 'boolean' } },
    strict: true,
    allowPositionals: false,
  }).values;
} catch {
  process.stderr.write(`usage: anodyne server [--config FILE] [--restore-platform BACKUP [--force]]\n`);
  process.exit(2);
}
try {
  const id = values['restore-platform'];
  if (id !== undefined) {
    // Offline: loads a backup of the platform's database into the configured database, then exits.
    const config = loadConfig(PlatformConfigSchema, { file: values.config ?? process.env['ANODYNE_CONFIG_FILE'] });
    const r = await restorePlatform(config, id, { force: values.force === true });
    process.stdout.write(
      `Restored backup ${r.backup} (${r.driver}): ${r.counts.clusters} clusters, ${r.counts.users} users, ${r.counts.tasks} tasks, ` +
        `${r.counts.credentials} credentials. Start the platform with anodyne server.\n`,
    );
  } else await runServer(values.config);
} catch (err) {
  process.stderr.write(`anodyne server: ${(err as Error).message}\n`);
  process.exit(1);
}
