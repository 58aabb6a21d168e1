// anodyne image-policy NAME [--registry-only | --any]: which images a cluster may run.
import { CommanderError, type Command } from 'commander';
import { EXIT } from '../exit.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('image-policy <name>')
    .description("show or set which images a cluster may run: only the platform registry's (and the release's own), or any")
    .option('--registry-only', 'refuse workloads naming images from elsewhere (at once, naming the image)')
    .option('--any', 'allow any image again')
    .option('--json')
    .action(async (name: string, o: { registryOnly?: boolean; any?: boolean; json?: boolean }) => {
      if (o.registryOnly && o.any) throw new CommanderError(EXIT.usage, 'usage', 'give --registry-only or --any, not both');
      const { client } = await authedClient();
      const v = o.registryOnly || o.any ? await client.setImagePolicy(name, !!o.registryOnly) : await client.imagePolicy(name);
      if (o.json) return json(v);
      out(
        v.registry_only
          ? `Cluster ${name} runs only images from ${v.registry ?? 'the platform registry'}`
          : `Cluster ${name} runs images from anywhere`,
      );
    });
}
