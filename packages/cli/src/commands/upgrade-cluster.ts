// anodyne upgrade-cluster: upgrades one cluster to another Kubernetes release (default the newest) and the current plan (admin).
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('upgrade-cluster <name>')
    .description('upgrade a cluster to another Kubernetes version (default: the newest its plan offers), rolling (admin)')
    .option('--kubernetes-version <version>', 'e.g. 1.34 (its newest patch) or 1.34.4; one minor at a time, never down')
    .option('--wait')
    .option('--json')
    .action(async (name: string, o: { kubernetesVersion?: string; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.upgradeCluster(name, o.kubernetesVersion ? { kubernetes_version: o.kubernetesVersion } : {});
      if (!o.wait) return o.json ? json(c) : out(`Upgrading cluster ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
