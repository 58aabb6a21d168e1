// anodyne task: shows a task's event log and follows it while it runs.
import { type Command, CommanderError } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('task <id>')
    .description("show a task's event log; follows it while it runs")
    .option('--json')
    .action(async (id: string, o: { json?: boolean }) => {
      if (!/^\d+$/.test(id)) throw new CommanderError(EXIT.usage, 'usage', `task id must be a number, not ${id}`);
      const { client } = await authedClient();
      if ((await followTask(client, Number(id), !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
