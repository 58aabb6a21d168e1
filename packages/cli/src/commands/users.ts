// anodyne users: lists users and their groups (admin).
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('users')
    .description('list users and their groups (admin)')
    .option('--json')
    .action(async (o: { json?: boolean }) => {
      const { client } = await authedClient();
      const us = await client.users();
      if (o.json) return json(us);
      printTable([
        ['User', 'Origin', 'Groups', 'Locked'],
        ...us.map((u) => [u.username, u.origin, u.groups.join(','), u.locked ? 'yes' : '']),
      ]);
    });
}
