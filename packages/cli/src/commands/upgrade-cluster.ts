// anodyne upgrade-cluster: upgrades one cluster to the platform's current release and plan (admin).
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('upgrade-cluster <name>')
    .description("upgrade a cluster to the platform's current release and plan (admin)")
    .option('--wait')
    .option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.upgradeCluster(name);
      if (!o.wait) return o.json ? json(c) : out(`Upgrading cluster ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
