// anodyne upgrade-clusters: upgrades a fleet client-side, canaries one at a time first, then the rest in batches (admin).
import { type Command, CommanderError } from 'commander';
import { EXIT } from '../exit.js';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('upgrade-clusters').description('upgrade several clusters: canaries one at a time first, then the rest in batches (admin)')
    .requiredOption('--clusters <names>', 'comma-separated cluster names')
    .option('--canaries <n>', 'clusters upgraded first, one at a time', (v) => Number(v), 1)
    .option('--max-in-flight <n>', 'clusters upgraded at once after the canaries', (v) => Number(v), 1)
    .action(async (o: { clusters: string; canaries: number; maxInFlight: number }) => {
      const names = o.clusters.split(',').map((x) => x.trim()).filter(Boolean);
      if (names.length === 0 || !Number.isInteger(o.canaries) || o.canaries < 0 || !Number.isInteger(o.maxInFlight) || o.maxInFlight < 1) {
        throw new CommanderError(EXIT.usage, 'usage',
          '--clusters needs names; --canaries ≥ 0 and --max-in-flight ≥ 1 are whole numbers');
      }
      const { client } = await authedClient();
      const upgrade = async (name: string): Promise<boolean> => {
        const c = await client.upgradeCluster(name);
        for (;;) {
          const t = await client.task(c.last_task_id!);
          if (['done', 'error', 'cancelled'].includes(t.state)) {
            out(`${name}: upgrade ${t.state} (task ${c.last_task_id})`);
            return t.state === 'done';
          }
          await new Promise((r) => setTimeout(r, 1000));
        }
      };
      const canaries = names.slice(0, o.canaries);
      for (const n of canaries) {
        if (!(await upgrade(n))) {
          process.exitCode = EXIT.taskFailed;
          return out(`Canary ${n} failed: the other clusters were not touched`);
        }
      }
      const rest = names.slice(o.canaries);
      for (let i = 0; i < rest.length; i += o.maxInFlight) {
        const ok = await Promise.all(rest.slice(i, i + o.maxInFlight).map(upgrade));
        if (ok.includes(false)) {
          process.exitCode = EXIT.taskFailed;
          return out('An upgrade failed: later batches were not started');
        }
      }
      out(`Upgraded ${names.length} cluster(s)`);
    });
}
