// anodyne quotas: shows an owner's quota (the caller's by default).
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('quotas [owner]')
    .description('show a quota (yours by default)')
    .option('--json')
    .action(async (owner: string | undefined, o: { json?: boolean }) => {
      const { client, session } = await authedClient();
      const q = await client.quota(owner ?? session.username ?? session.client_id);
      if (o.json) return json(q);
      printTable([
        ['Owner', 'Max clusters', 'Max workers'],
        [q.owner, String(q.max_clusters), String(q.max_workers)],
      ]);
    });
}
