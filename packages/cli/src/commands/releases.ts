// anodyne releases / delete-release: the Kubernetes releases clusters can run, and removing an unused one (admin).
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('releases')
    .description('list the Kubernetes releases clusters can run, newest first')
    .option('--json')
    .action(async (o: { json?: boolean }) => {
      const { client } = await authedClient();
      const rs = await client.releases();
      if (o.json) return json(rs);
      printTable([
        ['Kubernetes', 'Release', 'Clusters', 'Default'],
        ...rs.map((r) => [r.kubernetes_version, r.key, String(r.clusters), r.default ? 'yes' : '']),
      ]);
    });
  p.command('delete-release <key>')
    .description('delete a release no cluster runs (admin)')
    .action(async (key: string) => {
      const { client } = await authedClient();
      await client.deleteRelease(key);
      out(`Deleted release ${key}`);
    });
}
