// anodyne get-token: prints an ExecCredential for kubectl (the kubeconfig credential plugin).
import { type Command } from 'commander';
import { ApiError } from '@anodyne/client';
import { json } from '../print.js';
import { authedClient, loadSession } from '../session.js';

export function register(p: Command): void {
  p.command('get-token')
    .description('print an ExecCredential for kubectl (the kubeconfig credential plugin)')
    .option('--api <url>', 'the API the kubeconfig was issued by')
    .action(async (o: { api?: string }) => {
      const s = loadSession();
      if (o.api && o.api.replace(/\/$/, '') !== s.api) {
        throw new ApiError(401, 'ANODYNE_E_NOT_LOGGED_IN', `logged in to ${s.api}, not ${o.api}: run anodyne login -a ${o.api}`);
      }
      const { session } = await authedClient();
      json({
        apiVersion: 'client.authentication.k8s.io/v1',
        kind: 'ExecCredential',
        status: { token: session.access_token, expirationTimestamp: new Date(session.expires_at).toISOString() },
      });
    });
}
