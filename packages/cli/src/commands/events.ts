// anodyne events: the platform's alerts (expiring certificates, unhealthy and lost instances, meltdowns, failed tasks), newest first.
import { CommanderError, type Command } from 'commander';
import { EXIT } from '../exit.js';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('events')
    .description('list the platform’s alerts, newest first (admins)')
    .option('--after <id>', 'only events after this id')
    .option('--json')
    .action(async (o: { after?: string; json?: boolean }) => {
      const after = o.after === undefined ? undefined : Number(o.after);
      if (after !== undefined && (!Number.isInteger(after) || after < 0))
        throw new CommanderError(EXIT.usage, 'usage', '--after takes an event id (a whole number ≥ 0)');
      const { client } = await authedClient();
      const events = await client.events(after);
      if (o.json) return json(events);
      printTable([
        ['ID', 'At', 'Kind', 'Target', 'Details'],
        ...events.map((e) => [String(e.id), e.at, e.kind, e.target, JSON.stringify(e.details)]),
      ]);
    });
}
