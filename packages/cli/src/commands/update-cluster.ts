// anodyne update-cluster: resizes a cluster (its worker count) and, with --wait, follows the task.
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('update-cluster <name>')
    .description('resize a cluster')
    .requiredOption('--num-nodes <n>', 'worker count', (v) => Number(v))
    .option('--wait')
    .option('--json')
    .action(async (name: string, o: { numNodes: number; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.updateCluster(name, { kubernetes_worker_instances: o.numNodes });
      if (!o.wait) return o.json ? json(c) : out(`Updating cluster ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
