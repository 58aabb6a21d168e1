// anodyne rotate-signing-key: rotates the token signing key now (admin).
import { type Command } from 'commander';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('rotate-signing-key')
    .description('rotate the token signing key now (admin; it also rotates by age)')
    .action(async () => {
      const { client } = await authedClient();
      const k = await client.rotateSigningKey();
      out(`Tokens are now signed with ${k.kid}; tokens of the previous key stay valid until they expire`);
    });
}
