// anodyne set-groups: replaces a user's groups (scopes) (admin).
import { type Command } from 'commander';
import { type CreateUserRequest } from '@anodyne/client';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('set-groups <username>')
    .description("set a user's groups (scopes) (admin)")
    .option('--group <scope...>', 'scopes; none removes every group', [])
    .action(async (username: string, o: { group: string[] }) => {
      const { client } = await authedClient();
      const u = await client.updateUser(username, { groups: o.group as CreateUserRequest['groups'] });
      out(`${username}: ${u.groups.join(', ') || 'no groups'}`);
    });
}
