// anodyne tasks: lists tasks, optionally of one cluster.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('tasks')
    .description('list tasks')
    .option('--json')
    .option('--cluster <name>')
    .action(async (o: { json?: boolean; cluster?: string }) => {
      const { client } = await authedClient();
      const ts = await client.tasks(o.cluster ? { cluster: o.cluster } : {});
      if (o.json) return json(ts);
      printTable([
        ['ID', 'Type', 'State', 'Owner', 'Started', 'Description'],
        ...ts.map((t) => [String(t.id), t.type, t.state, t.owner, t.created_at, t.description]),
      ]);
    });
}
