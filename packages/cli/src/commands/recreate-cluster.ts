// anodyne recreate-cluster: repaves a cluster, every VM onto a fresh root, rolling like an update.
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('recreate-cluster <name>')
    .description('recreate every VM of a cluster on a fresh root (repave), one at a time, workers drained first')
    .option('--wait')
    .option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.recreateCluster(name);
      if (!o.wait) return o.json ? json(c) : out(`Recreating cluster ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
