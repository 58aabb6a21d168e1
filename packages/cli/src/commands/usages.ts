// anodyne usages: shows an owner's usage, clusters and workers (the caller's by default).
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('usages [owner]')
    .description('show usage (yours by default)')
    .option('--json')
    .action(async (owner: string | undefined, o: { json?: boolean }) => {
      const { client, session } = await authedClient();
      const u = await client.usage(owner ?? session.username ?? session.client_id);
      if (o.json) return json(u);
      printTable([
        ['Owner', 'Clusters', 'Workers'],
        [u.owner, String(u.clusters), String(u.workers)],
      ]);
    });
}
