// anodyne cluster: shows one cluster's details.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('cluster <name>')
    .description('show one cluster')
    .option('--json')
    .action(async (name: string, o: { json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.cluster(name);
      if (o.json) return json(c);
      printTable(
        [
          ['Name:', c.name],
          ['Plan Name:', c.plan_name],
          ['Kubernetes Version:', c.kubernetes_version],
          ['Release:', c.release ?? ''],
          ['UUID:', c.uuid],
          ['Owner:', c.owner],
          ['Last Action:', c.last_action],
          ['Last Action State:', c.last_action_state],
          ['Last Action Description:', c.last_action_description],
          ['Kubernetes Master Host:', c.parameters.kubernetes_master_host],
          ['Kubernetes Master Port:', String(c.parameters.kubernetes_master_port)],
          ['Worker Nodes:', String(c.parameters.kubernetes_worker_instances)],
          ['Network Isolation:', c.parameters.network_isolation],
          ['Kubernetes Master IP(s):', c.kubernetes_master_ips.join(', ')],
          [
            'VM Health:',
            Object.entries(c.health)
              .filter(([, n]) => n > 0)
              .map(([state, n]) => `${n} ${state}`)
              .join(', ') || 'no VMs',
          ],
        ],
        false,
      );
    });
}
