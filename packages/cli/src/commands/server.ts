// anodyne server: starts the platform (API, identity, director) as a child process and forwards signals to it.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type Command } from 'commander';

export function register(p: Command): void {
  p.command('server')
    .description('start the platform (API, identity, director) with the embedded defaults')
    .option('-c, --config <file>', 'YAML configuration (defaults + ANODYNE_* environment otherwise)')
    .option(
      '--restore-platform <backup>',
      "instead of starting: load a backup of the platform's database into an empty database, then exit",
    )
    .option('--force', 'with --restore-platform: replace a database that holds clusters or users')
    .action(async (o: { config?: string; restorePlatform?: string; force?: boolean }) => {
      // The platform is its own package, which the CLI never imports (it talks to it over HTTPS
      // only); bin/anodyne starts it directly, and so does this command. This file is built to
      // packages/cli/dist/commands/server.js, hence three levels up to packages/.
      const main = fileURLToPath(new URL('../../../platform/dist/main.js', import.meta.url));
      const args = [
        ...(o.config ? ['--config', o.config] : []),
        ...(o.restorePlatform ? ['--restore-platform', o.restorePlatform] : []),
        ...(o.force ? ['--force'] : []),
      ];
      const child = spawn(process.execPath, [main, ...args], { stdio: 'inherit' });
      const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
      process.once('SIGINT', forward('SIGINT'));
      process.once('SIGTERM', forward('SIGTERM'));
      process.exitCode = await new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
    });
}
