// Starts what exists of the platform with its embedded defaults and says what is there.
// Grows as components land: the API server (issue 8) will be started from here.
import { loadConfig, PlatformConfigSchema, createLogger } from '@anodyne/common';
import { openStore } from '@anodyne/store';
import { isAbsolute, join } from 'node:path';

const release = process.argv[2];
const config = loadConfig(PlatformConfigSchema, { file: process.env.ANODYNE_CONFIG });
const logger = createLogger({ name: 'anodyne', level: config.log.level });
const path = isAbsolute(config.store.path) ? config.store.path : join(config.dataDir, config.store.path);
const store = await openStore(config.store.driver === 'sqlite' ? { driver: 'sqlite', path, logger } : { driver: 'postgres', url: config.store.url ?? '', logger });
const applied = await store.appliedMigrations();
await store.close();

console.log(`
Anodyne
  release:   ${release}
             ${release}/bin/kubectl version --client
  store:     ${config.store.driver} ${config.store.driver === 'sqlite' ? path : '(url from config)'} — schema ${applied.at(-1)}

Not yet available in this build: the platform API server, identity and the anodyne CLI
(see the open issues). Until then the release can be used directly, for example:
  ${release}/bin/etcd --version
`);
