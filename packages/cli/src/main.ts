import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline/promises';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { ApiClient, ApiError, type Cluster, type CreateUserRequest } from '@anodyne/client';
import { authedClient, loadSession, removeSession, saveSession, sessionFromTokens } from './session.js';
import { mergeKubeconfig, withExecCommand } from './kubeconfig.js';
import { followTask, printTable } from './output.js';

/** Exit codes (documented in docs/cli.md). */
export const EXIT = { ok: 0, taskFailed: 1, usage: 2, unauthenticated: 3, notFound: 4 } as const;

const out = (s: string): void => {
  process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
};
const json = (v: unknown): void => out(JSON.stringify(v, null, 2));

function clusterRows(cs: Cluster[]): string[][] {
  return [['Name', 'Plan', 'Owner', 'Workers', 'Host', 'Last Action', 'State'], ...cs.map((c) => [c.name, c.plan_name, c.owner, String(c.parameters.kubernetes_worker_instances), c.kubernetes_master_ips[0] ?? '', c.last_action, c.last_action_state])];
}

/** Builds the command tree. Commands parse flags and call the API client; nothing else. */
export function program(): Command {
  const p = new Command('anodyne').description('Kubernetes clusters as a service').exitOverride().showHelpAfterError(false);
  p.configureOutput({ writeErr: (s) => process.stderr.write(s) });

  p.command('login').description('log in to an Anodyne API; keeps the token in ~/.anodyne/config.json (0600)')
    .requiredOption('-a, --api <url>', 'API URL, e.g. https://10.244.0.1:9021')
    .option('-u, --username <user>').option('-p, --password <password>')
    .option('--ca-cert <file>', 'CA certificate of the API').option('-k, --skip-ssl-validation', 'do not verify the API certificate')
    .option('--client-name <id>').option('--client-secret <secret>')
    .action(async (o: { api: string; username?: string; password?: string; caCert?: string; skipSslValidation?: boolean; clientName?: string; clientSecret?: string }) => {
      const ca = o.caCert ? readFileSync(o.caCert, 'utf8') : undefined;
      const client = new ApiClient(o.api.replace(/\/$/, ''), ca, undefined, !!o.skipSslValidation);
      let t;
      if (o.clientName && o.clientSecret && !o.username) t = await client.clientToken(o.clientName, o.clientSecret);
      else if (o.username && o.password) t = await client.passwordToken(o.username, o.password, o.clientName ?? 'anodyne_cli', o.clientSecret);
      else throw new CommanderError(EXIT.usage, 'usage', 'login needs -u and -p, or --client-name and --client-secret');
      saveSession(sessionFromTokens({ api: client.url, ...(ca ? { ca_cert: ca } : {}), ...(o.skipSslValidation ? { insecure: true } : {}), ...(o.username ? { username: o.username } : {}), client_id: o.clientName ?? 'anodyne_cli' }, t));
      out(`Logged in to ${client.url} as ${o.username ?? o.clientName} (scopes: ${t.scope || 'none'})`);
    });

  p.command('logout').description('forget the saved session').action(() => {
    removeSession();
    out('Logged out');
  });

  p.command('get-token').description('print an ExecCredential for kubectl (the kubeconfig credential plugin)')
    .option('--api <url>', 'the API the kubeconfig was issued by').action(async (o: { api?: string }) => {
      const s = loadSession();
      if (o.api && o.api.replace(/\/$/, '') !== s.api) throw new ApiError(401, 'ANODYNE_E_NOT_LOGGED_IN', `logged in to ${s.api}, not ${o.api}: run anodyne login -a ${o.api}`);
      const { session } = await authedClient();
      json({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: session.access_token, expirationTimestamp: new Date(session.expires_at).toISOString() } });
    });

  p.command('plans').description('list plans').option('--json').action(async (o: { json?: boolean }) => {
    const { client } = await authedClient();
    const plans = await client.plans();
    if (o.json) return json(plans);
    printTable([['Name', 'Masters', 'Workers (default/max)', 'Description'], ...plans.map((x) => [x.name, String(x.masters), `${x.default_workers}/${x.max_workers}`, x.description])]);
  });

  p.command('clusters').description('list clusters').option('--json').action(async (o: { json?: boolean }) => {
    const { client } = await authedClient();
    const cs = await client.clusters();
    if (o.json) return json(cs);
    printTable(clusterRows(cs));
  });

  p.command('cluster <name>').description('show one cluster').option('--json').action(async (name: string, o: { json?: boolean }) => {
    const { client } = await authedClient();
    const c = await client.cluster(name);
    if (o.json) return json(c);
    printTable([
      ['Name:', c.name], ['Plan Name:', c.plan_name], ['UUID:', c.uuid], ['Owner:', c.owner], ['Last Action:', c.last_action], ['Last Action State:', c.last_action_state],
      ['Last Action Description:', c.last_action_description], ['Kubernetes Master Host:', c.parameters.kubernetes_master_host], ['Kubernetes Master Port:', String(c.parameters.kubernetes_master_port)],
      ['Worker Nodes:', String(c.parameters.kubernetes_worker_instances)], ['Kubernetes Master IP(s):', c.kubernetes_master_ips.join(', ')],
    ], false);
  });

  p.command('create-cluster <name>').description('create a cluster')
    .requiredOption('-p, --plan <plan>').option('-e, --external-hostname <host>').addOption(new Option('-n, --num-nodes <n>', 'worker count').argParser((v) => {
      if (!/^\d+$/.test(v)) throw new CommanderError(EXIT.usage, 'usage', `--num-nodes must be a whole number, not ${v}`);
      return Number(v);
    }))
    .option('--network-profile <profile>').option('--wait', 'wait for the task and show its progress').option('--json')
    .action(async (name: string, o: { plan: string; externalHostname?: string; numNodes?: number; networkProfile?: string; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.createCluster({ name, plan_name: o.plan, ...(o.networkProfile ? { network_profile_name: o.networkProfile } : {}), parameters: { ...(o.externalHostname ? { kubernetes_master_host: o.externalHostname } : {}), ...(o.numNodes !== undefined ? { kubernetes_worker_instances: o.numNodes } : {}) } });
      if (!o.wait) return o.json ? json(c) : out(`Creating cluster ${name} (task ${c.last_task_id}); follow with: anodyne task ${c.last_task_id}`);
      const state = await followTask(client, c.last_task_id!, !!o.json);
      if (state !== 'done') process.exitCode = EXIT.taskFailed;
      else if (o.json) json(await client.cluster(name));
      else out(`Cluster ${name} is ready: anodyne get-credentials ${name}`);
    });

  p.command('update-cluster <name>').description('resize a cluster').requiredOption('--num-nodes <n>', 'worker count', (v) => Number(v)).option('--wait').option('--json')
    .action(async (name: string, o: { numNodes: number; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.updateCluster(name, { kubernetes_worker_instances: o.numNodes });
      if (!o.wait) return o.json ? json(c) : out(`Updating cluster ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });

  p.command('delete-cluster <name>').description('delete a cluster').option('--wait').option('--non-interactive', 'do not ask (the only mode when stdin is not a terminal)').option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean; nonInteractive?: boolean }) => {
      const { client } = await authedClient();
      // In a terminal, ask first (as PKS does); scripts pass --non-interactive or have no terminal.
      if (!o.nonInteractive && process.stdin.isTTY === true && !(await confirm(`Delete cluster ${name} and everything running on it? (y/N) `))) {
        out('Nothing deleted');
        return;
      }
      const c = await client.deleteCluster(name);
      if (!o.wait || c.last_task_id === null || c.last_action_state === 'succeeded') return o.json ? json(c) : out(`Deleting cluster ${name}${c.last_task_id ? ` (task ${c.last_task_id})` : ''}`);
      if ((await followTask(client, c.last_task_id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
      else if (!o.json) out(`Cluster ${name} deleted`);
    });

  /** One line of an answer from the terminal: true for y or yes. */
  async function confirm(question: string): Promise<boolean> {
    const rl = createInterface({ input: process.stdin, output: process.stdout });
    try {
      return /^y(es)?$/i.test((await rl.question(question)).trim());
    } finally {
      rl.close();
    }
  }

  p.command('get-credentials <name>').description('bind to a cluster and merge a context for it into KUBECONFIG or ~/.kube/config')
    .action(async (name: string) => {
      const { client } = await authedClient();
      const { kubeconfig } = await client.bind(name);
      const file = mergeKubeconfig(withExecCommand(kubeconfig));
      out(`Fetched credentials for ${name}; context ${name} selected in ${file}. Try: kubectl get nodes`);
    });

  p.command('upgrade-cluster <name>').description('upgrade a cluster to the platform\'s current release and plan (admin)').option('--wait').option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.upgradeCluster(name);
      if (!o.wait) return o.json ? json(c) : out(`Upgrading cluster ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });

  p.command('upgrade-clusters').description('upgrade several clusters: canaries one at a time first, then the rest in batches (admin)')
    .requiredOption('--clusters <names>', 'comma-separated cluster names')
    .option('--canaries <n>', 'clusters upgraded first, one at a time', (v) => Number(v), 1)
    .option('--max-in-flight <n>', 'clusters upgraded at once after the canaries', (v) => Number(v), 1)
    .action(async (o: { clusters: string; canaries: number; maxInFlight: number }) => {
      const names = o.clusters.split(',').map((x) => x.trim()).filter(Boolean);
      if (names.length === 0 || !Number.isInteger(o.canaries) || o.canaries < 0 || !Number.isInteger(o.maxInFlight) || o.maxInFlight < 1) throw new CommanderError(EXIT.usage, 'usage', '--clusters needs names; --canaries ≥ 0 and --max-in-flight ≥ 1 are whole numbers');
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

  p.command('certificates <name>').description('a cluster\'s certificates and when they expire').option('--json').action(async (name: string, o: { json?: boolean }) => {
    const { client } = await authedClient();
    const cs = await client.certificates(name);
    if (o.json) return json(cs);
    const days = (at: string | null) => (at ? String(Math.floor((Date.parse(at) - Date.now()) / 86_400_000)) : '');
    printTable([['Name', 'CA', 'Version', 'Expires', 'Days left'], ...cs.map((c) => [c.name, c.is_ca ? 'yes' : '', String(c.version), c.expires_at ?? '', days(c.expires_at)])]);
  });

  p.command('vms <name>').description('a cluster\'s VMs and their health, as the platform\'s health monitor last found them').option('--json').action(async (name: string, o: { json?: boolean }) => {
    const { client } = await authedClient();
    const vms = await client.vms(name);
    if (o.json) return json(vms);
    printTable([['Instance', 'IP', 'State', 'Health', 'Since', 'Reason'], ...vms.map((v) => [v.instance, v.ip ?? '', v.state, v.health, v.health_since ?? '', v.health_reason ?? ''])]);
  });

  p.command('rotate-certificates <name>').description('issue new leaf certificates and roll them out').option('--wait').option('--json')
    .action(async (name: string, o: { wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.rotateCertificates(name);
      if (!o.wait) return o.json ? json(c) : out(`Rotating certificates of ${name} (task ${c.last_task_id})`);
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });

  p.command('completion <shell>').description('print a completion script (bash or zsh)').action((shell: string) => {
    const names = program().commands.map((c) => c.name()).join(' ');
    if (shell === 'bash') return out(`_anodyne() { local cur=\${COMP_WORDS[COMP_CWORD]}; [ "$COMP_CWORD" -eq 1 ] && COMPREPLY=( $(compgen -W "${names}" -- "$cur") ); }\ncomplete -F _anodyne anodyne`);
    if (shell === 'zsh') return out(`#compdef anodyne\n_arguments '1: :(${names})'`);
    throw new CommanderError(EXIT.usage, 'usage', `completion supports bash and zsh, not ${shell}`);
  });

  p.command('get-kubeconfig <name>').description('print the admin kubeconfig (pks.clusters.admin)').action(async (name: string) => {
    const { client } = await authedClient();
    out((await client.adminKubeconfig(name)).kubeconfig);
  });

  p.command('tasks').description('list tasks').option('--json').option('--cluster <name>').action(async (o: { json?: boolean; cluster?: string }) => {
    const { client } = await authedClient();
    const ts = await client.tasks(o.cluster ? { cluster: o.cluster } : {});
    if (o.json) return json(ts);
    printTable([['ID', 'Type', 'State', 'Owner', 'Started', 'Description'], ...ts.map((t) => [String(t.id), t.type, t.state, t.owner, t.created_at, t.description])]);
  });

  p.command('task <id>').description('show a task\'s event log; follows it while it runs').option('--json').action(async (id: string, o: { json?: boolean }) => {
    if (!/^\d+$/.test(id)) throw new CommanderError(EXIT.usage, 'usage', `task id must be a number, not ${id}`);
    const { client } = await authedClient();
    if ((await followTask(client, Number(id), !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
  });

  p.command('cancel-task <id>').description('cancel a running task').action(async (id: string) => {
    const { client } = await authedClient();
    const t = await client.cancelTask(id);
    out(`Task ${id}: ${t.state}`);
  });

  p.command('network-profiles').description('list network profiles').option('--json').action(async (o: { json?: boolean }) => {
    const { client } = await authedClient();
    const ps = await client.networkProfiles();
    if (o.json) return json(ps);
    printTable([['Name', 'Pod CIDR', 'Service CIDR', 'Description'], ...ps.map((x) => [x.name, x.pod_cidr, x.service_cidr, x.description])]);
  });

  p.command('quotas [owner]').description('show a quota (yours by default)').option('--json').action(async (owner: string | undefined, o: { json?: boolean }) => {
    const { client, session } = await authedClient();
    const q = await client.quota(owner ?? session.username ?? session.client_id);
    if (o.json) return json(q);
    printTable([['Owner', 'Max clusters', 'Max workers'], [q.owner, String(q.max_clusters), String(q.max_workers)]]);
  });

  p.command('usages [owner]').description('show usage (yours by default)').option('--json').action(async (owner: string | undefined, o: { json?: boolean }) => {
    const { client, session } = await authedClient();
    const u = await client.usage(owner ?? session.username ?? session.client_id);
    if (o.json) return json(u);
    printTable([['Owner', 'Clusters', 'Workers'], [u.owner, String(u.clusters), String(u.workers)]]);
  });

  p.command('create-user <username>').description('create a user (admin)').requiredOption('--password <password>').option('--group <scope...>', 'scopes', []).option('--email <email>')
    .action(async (username: string, o: { password: string; group: string[]; email?: string }) => {
      const { client } = await authedClient();
      await client.createUser({ username, password: o.password, groups: o.group as CreateUserRequest['groups'], ...(o.email ? { email: o.email } : {}) });
      out(`User ${username} created`);
    });

  p.command('users').description('list users and their groups (admin)').option('--json').action(async (o: { json?: boolean }) => {
    const { client } = await authedClient();
    const us = await client.users();
    if (o.json) return json(us);
    printTable([['User', 'Origin', 'Groups', 'Locked'], ...us.map((u) => [u.username, u.origin, u.groups.join(','), u.locked ? 'yes' : ''])]);
  });

  p.command('set-groups <username>').description('set a user\'s groups (scopes) (admin)').option('--group <scope...>', 'scopes; none removes every group', [])
    .action(async (username: string, o: { group: string[] }) => {
      const { client } = await authedClient();
      const u = await client.updateUser(username, { groups: o.group as CreateUserRequest['groups'] });
      out(`${username}: ${u.groups.join(', ') || 'no groups'}`);
    });

  p.command('set-password <username>').description('reset a local user\'s password (admin)').requiredOption('--password <password>', 'at least 8 characters')
    .action(async (username: string, o: { password: string }) => {
      const { client } = await authedClient();
      await client.updateUser(username, { password: o.password });
      out(`Password of ${username} set`);
    });

  p.command('rotate-signing-key').description('rotate the token signing key now (admin; it also rotates by age)')
    .action(async () => {
      const { client } = await authedClient();
      const k = await client.rotateSigningKey();
      out(`Tokens are now signed with ${k.kid}; tokens of the previous key stay valid until they expire`);
    });

  p.command('delete-user <username>').description('delete a user (admin)').action(async (username: string) => {
    const { client } = await authedClient();
    await client.deleteUser(username);
    out(`User ${username} deleted`);
  });

  p.command('server').description('start the platform (API, identity, director) with the embedded defaults')
    .option('-c, --config <file>', 'YAML configuration (defaults + ANODYNE_* environment otherwise)')
    .action(async (o: { config?: string }) => {
      // The platform is its own package, which the CLI never imports (it talks to it over HTTPS
      // only); bin/anodyne starts it directly, and so does this command.
      const main = fileURLToPath(new URL('../../platform/dist/main.js', import.meta.url));
      const child = spawn(process.execPath, [main, ...(o.config ? ['--config', o.config] : [])], { stdio: 'inherit' });
      const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
      process.once('SIGINT', forward('SIGINT'));
      process.once('SIGTERM', forward('SIGTERM'));
      process.exitCode = await new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
    });

  return p;
}

/** Runs the CLI; returns the exit code. Errors print one line: the API's code and message. */
export async function run(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return EXIT.ok;
      if (err.code === 'usage') process.stderr.write(`Error: ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof ApiError) {
      process.stderr.write(`Error: ${err.code}: ${err.message}\n`);
      if (err.status === 401) return EXIT.unauthenticated;
      if (err.status === 404) return EXIT.notFound;
      if (err.status === 400) return EXIT.usage;
      return EXIT.taskFailed;
    }
    process.stderr.write(`Error: ${(err as Error).message}\n`);
    return EXIT.taskFailed;
  }
}
