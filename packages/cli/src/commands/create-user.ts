// anodyne create-user: creates a local user with a password and groups (admin).
import { type Command } from 'commander';
import { type CreateUserRequest } from '@anodyne/client';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('create-user <username>')
    .description('create a user (admin)')
    .requiredOption('--password <password>')
    .option('--group <scope...>', 'scopes', [])
    .option('--email <email>')
    .action(async (username: string, o: { password: string; group: string[]; email?: string }) => {
      const { client } = await authedClient();
      const groups = o.group as CreateUserRequest['groups'];
      await client.createUser({ username, password: o.password, groups, ...(o.email ? { email: o.email } : {}) });
      out(`User ${username} created`);
    });
}
