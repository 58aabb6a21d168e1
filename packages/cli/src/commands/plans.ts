// anodyne plans: lists the plans clusters can be created with.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('plans')
    .description('list plans')
    .option('--json')
    .action(async (o: { json?: boolean }) => {
      const { client } = await authedClient();
      const plans = await client.plans();
      if (o.json) return json(plans);
      printTable([
        ['Name', 'Masters', 'Workers (default/max)', 'Kubernetes', 'Updates', 'New namespaces', 'Description'],
        ...plans.map((x) => [
          x.name,
          String(x.masters),
          `${x.default_workers}/${x.max_workers}`,
          x.kubernetes_versions.join(', '),
          `${x.update.canaries} canary, ${x.update.max_in_flight} in flight, drain ≤ ${x.update.drain_timeout_seconds} s`,
          x.default_deny_namespaces ? 'default deny' : 'open',
          x.description,
        ]),
      ]);
    });
}
