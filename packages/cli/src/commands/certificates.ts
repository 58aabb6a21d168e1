// anodyne certificates: lists a cluster's certificates and how many days each has left.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('certificates <name>')
    .description("a cluster's certificates and when they expire")
    .option('--json')
    .action(async (name: string, o: { json?: boolean }) => {
      const { client } = await authedClient();
      const cs = await client.certificates(name);
      if (o.json) return json(cs);
      const days = (at: string | null) => (at ? String(Math.floor((Date.parse(at) - Date.now()) / 86_400_000)) : '');
      printTable([
        ['Name', 'CA', 'Version', 'Expires', 'Days left'],
        ...cs.map((c) => [c.name, c.is_ca ? 'yes' : '', String(c.version), c.expires_at ?? '', days(c.expires_at)]),
      ]);
    });
}
