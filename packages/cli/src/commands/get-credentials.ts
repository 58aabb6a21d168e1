// anodyne get-credentials: binds to a cluster and merges a kubectl context for it into the kubeconfig.
import { type Command } from 'commander';
import { mergeKubeconfig, withExecCommand } from '../kubeconfig.js';
import { out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('get-credentials <name>')
    .description('bind to a cluster and merge a context for it into KUBECONFIG or ~/.kube/config')
    .action(async (name: string) => {
      const { client } = await authedClient();
      const { kubeconfig } = await client.bind(name);
      const file = mergeKubeconfig(withExecCommand(kubeconfig));
      out(`Fetched credentials for ${name}; context ${name} selected in ${file}. Try: kubectl get nodes`);
    });
}
