// anodyne upgrade-clusters: a fleet upgrade as one server-side task (canary clusters first, then batches), followed live (admin).
import { type Command, CommanderError } from 'commander';
import { EXIT } from '../exit.js';
import { followTask, printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

const count = (v: string): number => Number(v);

export function register(p: Command): void {
  p.command('upgrade-clusters')
    .description('upgrade several clusters as one task: canaries one at a time first, then batches; stops at the first failure (admin)')
    .option('--clusters <names>', 'comma-separated cluster names, in order (default: every cluster)')
    .option('--kubernetes-version <version>', 'the version to go to (default: the newest each plan offers)')
    .option('--canaries <n>', 'clusters upgraded first, one at a time', count, 1)
    .option('--max-in-flight <n>', 'clusters upgraded at once after the canaries', count, 1)
    .option('--no-wait', 'print the task id and return')
    .option('--json')
    .action(
      async (o: {
        clusters?: string;
        kubernetesVersion?: string;
        canaries: number;
        maxInFlight: number;
        wait: boolean;
        json?: boolean;
      }) => {
        const names = o.clusters
          ?.split(',')
          .map((x) => x.trim())
          .filter(Boolean);
        if (
          (names && names.length === 0) ||
          !Number.isInteger(o.canaries) ||
          o.canaries < 0 ||
          !Number.isInteger(o.maxInFlight) ||
          o.maxInFlight < 1
        ) {
          throw new CommanderError(EXIT.usage, 'usage', '--clusters needs names; --canaries ≥ 0 and --max-in-flight ≥ 1 are whole numbers');
        }
        const { client } = await authedClient();
        const task = await client.upgradeClusters({
          ...(names ? { clusters: names } : {}),
          canaries: o.canaries,
          max_in_flight: o.maxInFlight,
        });
        if (!o.wait) return o.json ? json(task) : out(`Upgrading clusters (task ${task.id})`);
        const state = await followTask(client, task.id, !!o.json);
        const result = (await client.task(task.id)).result as {
          clusters?: { name: string; state: string; task_id: number | null; message?: string }[];
        } | null;
        if (!o.json && result?.clusters) {
          printTable([
            ['Cluster', 'Upgrade', 'Task', 'Message'],
            ...result.clusters.map((c) => [c.name, c.state, c.task_id === null ? '' : String(c.task_id), c.message ?? '']),
          ]);
        }
        if (state !== 'done') process.exitCode = EXIT.taskFailed;
      },
    );
}
