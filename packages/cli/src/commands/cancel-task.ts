// anodyne cancel-task: cancels a running task and prints its state.
import { type Command } from 'commander';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('cancel-task <id>')
    .description('cancel a running task')
    .action(async (id: string) => {
      const { client } = await authedClient();
      const t = await client.cancelTask(id);
      out(`Task ${id}: ${t.state}`);
    });
}
