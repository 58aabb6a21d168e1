// anodyne backup create|list|show|delete|restore: cluster backups (a sealed etcd snapshot and the cluster's record).
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask, printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

const size = (n: number) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`);

export function register(p: Command): void {
  const b = p.command('backup').description('back up clusters, list and restore backups');
  b.command('create')
    .description("back up a cluster: a consistent etcd snapshot and the cluster's record, sealed, in the platform's backup store")
    .requiredOption('--cluster <name>', 'the cluster to back up')
    .option('--wait')
    .option('--json')
    .action(async (o: { cluster: string; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const { backup, task } = await client.createBackup(o.cluster);
      if (!o.wait) return o.json ? json(backup) : out(`Backing up cluster ${o.cluster} as ${backup.id} (task ${task.id})`);
      if ((await followTask(client, task.id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
      else if (!o.json) out(`Backup ${backup.id} of cluster ${o.cluster} is done`);
    });
  b.command('list')
    .description('backups you may see, newest first')
    .option('--cluster <name>', 'of one cluster')
    .option('--json')
    .action(async (o: { cluster?: string; json?: boolean }) => {
      const { client } = await authedClient();
      const list = await client.backups(o.cluster);
      if (o.json) return json(list);
      printTable([
        ['ID', 'Cluster', 'State', 'Created', 'Size', 'etcd revision', 'Kubernetes'],
        ...list.map((x) => [
          x.id,
          x.cluster,
          x.state,
          x.created_at,
          x.state === 'done' ? size(x.size_bytes) : '',
          x.manifest ? String(x.manifest.etcd.revision) : '',
          x.manifest?.kubernetes_version ?? '',
        ]),
      ]);
    });
  b.command('show <id>')
    .description('one backup and its manifest')
    .option('--json')
    .action(async (id: string, o: { json?: boolean }) => {
      const { client } = await authedClient();
      const x = await client.backup(id);
      if (o.json) return json(x);
      const rows = [
        ['ID', x.id],
        ['Cluster', x.cluster],
        ['Owner', x.owner],
        ['State', x.state + (x.error ? ` (${x.error})` : '')],
        ['Created', x.created_at],
        ['Location', x.location],
        ['Size', size(x.size_bytes)],
      ];
      if (x.manifest) {
        const m = x.manifest;
        rows.push(
          ['Plan', `${m.plan}, ${m.workers} worker(s)`],
          ['Kubernetes', m.kubernetes_version ?? 'unknown'],
          ['etcd', `revision ${m.etcd.revision}, ${m.etcd.total_keys} keys, from ${m.etcd.member}`],
          ...m.files.map((f) => [`File ${f.name}`, `${size(f.size)} sha256 ${f.sha256.slice(0, 16)}…`]),
        );
      }
      printTable(rows);
    });
  b.command('delete <id>')
    .description('delete a backup and its artifacts')
    .action(async (id: string) => {
      const { client } = await authedClient();
      await client.deleteBackup(id);
      out(`Deleted backup ${id}`);
    });
  b.command('restore <id>')
    .description('restore a backup onto the cluster it was taken of, or into a new cluster (--cluster NEW)')
    .option('--cluster <name>', 'a new cluster to restore into')
    .option('--wait')
    .option('--json')
    .action(async (id: string, o: { cluster?: string; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const task = await client.restoreBackup(id, o.cluster);
      if (!o.wait) return o.json ? json(task) : out(`Restoring backup ${id} (task ${task.id})`);
      if ((await followTask(client, task.id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
}
