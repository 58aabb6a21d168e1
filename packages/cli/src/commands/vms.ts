// anodyne vms: lists a cluster's VMs and their health as the platform's health monitor last found them.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('vms <name>')
    .description("a cluster's VMs and their health, as the platform's health monitor last found them")
    .option('--json')
    .action(async (name: string, o: { json?: boolean }) => {
      const { client } = await authedClient();
      const vms = await client.vms(name);
      if (o.json) return json(vms);
      printTable([
        ['Instance', 'IP', 'State', 'Health', 'Since', 'Reason'],
        ...vms.map((v) => [v.instance, v.ip ?? '', v.state, v.health, v.health_since ?? '', v.health_reason ?? '']),
      ]);
    });
}
