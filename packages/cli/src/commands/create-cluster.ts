// anodyne create-cluster: asks the API for a new cluster by plan and, with --wait, follows the task.
import { type Command, CommanderError, Option } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

interface CreateClusterOptions {
  plan: string;
  externalHostname?: string;
  numNodes?: number;
  networkProfile?: string;
  kubernetesVersion?: string;
  wait?: boolean;
  json?: boolean;
}

export function register(p: Command): void {
  p.command('create-cluster <name>')
    .description('create a cluster')
    .requiredOption('-p, --plan <plan>')
    .option('-e, --external-hostname <host>')
    .addOption(
      new Option('-n, --num-nodes <n>', 'worker count').argParser((v) => {
        if (!/^\d+$/.test(v)) throw new CommanderError(EXIT.usage, 'usage', `--num-nodes must be a whole number, not ${v}`);
        return Number(v);
      }),
    )
    .option('--network-profile <profile>')
    .option('--kubernetes-version <version>', 'e.g. 1.33 (its newest patch) or 1.34.4; default: the newest the plan offers')
    .option('--wait', 'wait for the task and show its progress')
    .option('--json')
    .action(async (name: string, o: CreateClusterOptions) => {
      const { client } = await authedClient();
      const c = await client.createCluster({
        name,
        plan_name: o.plan,
        ...(o.kubernetesVersion ? { kubernetes_version: o.kubernetesVersion } : {}),
        ...(o.networkProfile ? { network_profile_name: o.networkProfile } : {}),
        parameters: {
          ...(o.externalHostname ? { kubernetes_master_host: o.externalHostname } : {}),
          ...(o.numNodes !== undefined ? { kubernetes_worker_instances: o.numNodes } : {}),
        },
      });
      if (!o.wait) {
        return o.json ? json(c) : out(`Creating cluster ${name} (task ${c.last_task_id}); follow with: anodyne task ${c.last_task_id}`);
      }
      const state = await followTask(client, c.last_task_id!, !!o.json);
      if (state !== 'done') process.exitCode = EXIT.taskFailed;
      else if (o.json) json(await client.cluster(name));
      else out(`Cluster ${name} is ready: anodyne get-credentials ${name}`);
    });
}
