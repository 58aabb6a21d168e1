// anodyne delete-cluster: deletes a cluster (asking first in a terminal) and, with --wait, follows the task.
import { createInterface } from 'node:readline/promises';
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

/** One line of an answer from the terminal: true for y or yes. */
async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

export function register(p: Command): void {
  p.command('delete-cluster <name>')
    .description('delete a cluster')
    .option('--wait')
    .option('--non-interactive', 'do not ask (the only mode when stdin is not a terminal)')
    .option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean; nonInteractive?: boolean }) => {
      const { client } = await authedClient();
      // In a terminal, ask first (as PKS does); scripts pass --non-interactive or have no terminal.
      const ask = !o.nonInteractive && process.stdin.isTTY === true;
      if (ask && !(await confirm(`Delete cluster ${name} and everything running on it? (y/N) `))) {
        out('Nothing deleted');
        return;
      }
      const c = await client.deleteCluster(name);
      if (!o.wait || c.last_task_id === null || c.last_action_state === 'succeeded') {
        return o.json ? json(c) : out(`Deleting cluster ${name}${c.last_task_id ? ` (task ${c.last_task_id})` : ''}`);
      }
      if ((await followTask(client, c.last_task_id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
      else if (!o.json) out(`Cluster ${name} deleted`);
    });
}
