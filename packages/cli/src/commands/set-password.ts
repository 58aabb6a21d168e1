// anodyne set-password: resets a local user's password (admin).
import { type Command } from 'commander';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('set-password <username>')
    .description("reset a local user's password (admin)")
    .requiredOption('--password <password>', 'at least 8 characters')
    .action(async (username: string, o: { password: string }) => {
      const { client } = await authedClient();
      await client.updateUser(username, { password: o.password });
      out(`Password of ${username} set`);
    });
}
