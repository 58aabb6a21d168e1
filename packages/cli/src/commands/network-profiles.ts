// anodyne network-profiles: lists the network profiles clusters can be created with.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('network-profiles')
    .description('list network profiles')
    .option('--json')
    .action(async (o: { json?: boolean }) => {
      const { client } = await authedClient();
      const ps = await client.networkProfiles();
      if (o.json) return json(ps);
      printTable([
        ['Name', 'Pod CIDR', 'Service CIDR', 'New namespaces', 'Segment pool', 'Description'],
        ...ps.map((x) => [
          x.name,
          x.pod_cidr,
          x.service_cidr,
          x.default_deny_namespaces === null ? "plan's" : x.default_deny_namespaces ? 'default deny' : 'open',
          x.segment_pool ?? 'whole pool',
          x.description,
        ]),
      ]);
    });
}
