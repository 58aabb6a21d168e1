// anodyne logout: forgets the saved session.
import { type Command } from 'commander';
import { out } from '../print.js';
import { removeSession } from '../session.js';

export function register(p: Command): void {
  p.command('logout')
    .description('forget the saved session')
    .action(() => {
      removeSession();
      out('Logged out');
    });
}
