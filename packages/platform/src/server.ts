// `anodyne server`: the platform in the foreground, with the banner that tells a new user what to do next.
import { createLogger, loadConfig, PlatformConfigSchema, SecretRegistry, systemClock } from '@anodyne/common';
import { startPlatform } from './platform.js';

/** `anodyne server`: the platform in the foreground until SIGINT/SIGTERM. */
export async function runServer(configFile?: string): Promise<void> {
  const config = loadConfig(PlatformConfigSchema, { file: configFile ?? process.env['ANODYNE_CONFIG_FILE'] });
  const secrets = new SecretRegistry();
  const logger = createLogger({ level: config.log.level, name: 'anodyne', secrets });
  const platform = await startPlatform({ config, logger, clock: systemClock, secrets });
  const lines = [
    '',
    `Anodyne is up: ${platform.url}`,
    `  CA certificate: ${platform.caFile}`,
    `  Web console: ${platform.url}/console/ (the browser will not know the platform's CA: trust ${platform.caFile} or accept the warning)`,
    ...(platform.adminPassword
      ? [
          '  First admin user (shown once; change it with bin/anodyne set-password admin --password NEW, or create your own admins):',
          '    username: admin',
          `    password: ${platform.adminPassword}`,
        ]
      : ['  Admin user: admin (its password was shown on the first start)']),
    '',
    'Create a cluster and use kubectl on it:',
    `  bin/anodyne login -a ${platform.url} -u admin -p '<password>' --ca-cert ${platform.caFile}`,
    '  bin/anodyne plans',
    '  bin/anodyne create-cluster demo -p small -n 1 --wait',
    '  bin/anodyne get-credentials demo',
    `  ${platform.releaseKubectl} get nodes`,
    '',
    ...(platform.registry
      ? [
          `Image registry: ${platform.registry.address} (your clusters pull from it with no pull secret)`,
          '  bin/anodyne images push app.tar --name app:1      (an OCI or docker-save archive, into your own project)',
          `  ${platform.releaseKubectl} create deployment app --image=${platform.registry.address}/admin/app:1`,
          '',
        ]
      : []),
    'Stop with Ctrl-C (clusters keep running; the next start picks them up).',
    '',
  ];
  process.stdout.write(lines.join('\n'));
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await platform.close();
}
