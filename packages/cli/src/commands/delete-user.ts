// anodyne delete-user: deletes a user (admin).
import { type Command } from 'commander';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('delete-user <username>')
    .description('delete a user (admin)')
    .action(async (username: string) => {
      const { client } = await authedClient();
      await client.deleteUser(username);
      out(`User ${username} deleted`);
    });
}
