// anodyne rotate-certificates: issues new leaf certificates for a cluster and, with --wait, follows the roll-out.
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('rotate-certificates <name>')
    .description('issue new leaf certificates and roll them out')
    .option('--wait')
    .option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.rotateCertificates(name);
      if (!o.wait) return o.json ? json(c) : out(`Rotating certificates of ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
