// anodyne login: gets a token from an Anodyne API (password or client credentials) and saves the session.
import { readFileSync } from 'node:fs';
import { type Command, CommanderError } from 'commander';
import { ApiClient } from '@anodyne/client';
import { httpsTransport } from '@anodyne/client/node';
import { EXIT } from '../exit.js';
import { out } from '../print.js';
import { saveSession, sessionFromTokens } from '../session.js';

interface LoginOptions {
  api: string;
  username?: string;
  password?: string;
  caCert?: string;
  skipSslValidation?: boolean;
  clientName?: string;
  clientSecret?: string;
}

export function register(p: Command): void {
  p.command('login')
    .description('log in to an Anodyne API; keeps the token in ~/.anodyne/config.json (0600)')
    .requiredOption('-a, --api <url>', 'API URL, e.g. https://10.244.0.1:9021')
    .option('-u, --username <user>')
    .option('-p, --password <password>')
    .option('--ca-cert <file>', 'CA certificate of the API')
    .option('-k, --skip-ssl-validation', 'do not verify the API certificate')
    .option('--client-name <id>')
    .option('--client-secret <secret>')
    .action(async (o: LoginOptions) => {
      const ca = o.caCert ? readFileSync(o.caCert, 'utf8') : undefined;
      const client = new ApiClient(
        o.api.replace(/\/$/, ''),
        httpsTransport({ ...(ca ? { caPem: ca } : {}), insecure: !!o.skipSslValidation }),
      );
      let t;
      if (o.clientName && o.clientSecret && !o.username) t = await client.clientToken(o.clientName, o.clientSecret);
      else if (o.username && o.password) {
        t = await client.passwordToken(o.username, o.password, o.clientName ?? 'anodyne_cli', o.clientSecret);
      } else throw new CommanderError(EXIT.usage, 'usage', 'login needs -u and -p, or --client-name and --client-secret');
      saveSession(
        sessionFromTokens(
          {
            api: client.url,
            ...(ca ? { ca_cert: ca } : {}),
            ...(o.skipSslValidation ? { insecure: true } : {}),
            ...(o.username ? { username: o.username } : {}),
            client_id: o.clientName ?? 'anodyne_cli',
          },
          t,
        ),
      );
      out(`Logged in to ${client.url} as ${o.username ?? o.clientName} (scopes: ${t.scope || 'none'})`);
    });
}
