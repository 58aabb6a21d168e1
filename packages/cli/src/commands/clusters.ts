// anodyne clusters: lists the clusters the caller can see.
import { type Command } from 'commander';
import { printTable } from '../output.js';
import { clusterRows, json } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('clusters')
    .description('list clusters')
    .option('--json')
    .action(async (o: { json?: boolean }) => {
      const { client } = await authedClient();
      const cs = await client.clusters();
      if (o.json) return json(cs);
      printTable(clusterRows(cs));
    });
}
