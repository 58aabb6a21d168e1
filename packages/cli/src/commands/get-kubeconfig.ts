// anodyne get-kubeconfig: prints a cluster's admin kubeconfig (pks.clusters.admin).
import { type Command } from 'commander';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('get-kubeconfig <name>')
    .description('print the admin kubeconfig (pks.clusters.admin)')
    .action(async (name: string) => {
      const { client } = await authedClient();
      out((await client.adminKubeconfig(name)).kubeconfig);
    });
}
