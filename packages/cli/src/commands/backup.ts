// anodyne backup create|list|show|delete|restore: cluster backups (a sealed etcd snapshot and the cluster's record).
import { CommanderError, type Command } from 'commander';
import { formatBytes } from '@anodyne/client';
import { EXIT } from '../exit.js';
import { followTask, printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

const size = formatBytes;

export function register(p: Command): void {
  const b = p.command('backup').description('back up clusters, list and restore backups');
  b.command('create')
    .description(
      "back up a cluster (a consistent etcd snapshot and the cluster's record) or, with --platform, the platform's database; sealed, in the backup store",
    )
    .option('--cluster <name>', 'the cluster to back up')
    .option('--platform', "the platform's database (admins)")
    .option('--wait')
    .option('--json')
    .action(async (o: { cluster?: string; platform?: boolean; wait?: boolean; json?: boolean }) => {
      if (!o.cluster === !o.platform) throw usage('give --cluster NAME or --platform');
      const { client } = await authedClient();
      const what = o.cluster ? `cluster ${o.cluster}` : 'the platform';
      const { backup, task } = o.cluster ? await client.createBackup(o.cluster) : await client.backupPlatform();
      if (!o.wait) return o.json ? json(backup) : out(`Backing up ${what} as ${backup.id} (task ${task.id})`);
      if ((await followTask(client, task.id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
      else if (!o.json) out(`Backup ${backup.id} of ${what} is done`);
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
          x.cluster ?? '(platform)',
          x.state,
          x.created_at,
          x.state === 'done' ? size(x.size_bytes) : '',
          x.manifest?.kind === 'cluster' ? String(x.manifest.etcd.revision) : '',
          x.manifest?.kind === 'cluster' ? (x.manifest.kubernetes_version ?? '') : '',
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
        ['Of', x.cluster ? `cluster ${x.cluster}` : 'the platform'],
        ['Owner', x.owner],
        ['State', x.state + (x.error ? ` (${x.error})` : '')],
        ['Created', x.created_at],
        ['Location', x.location],
        ['Size', size(x.size_bytes)],
      ];
      const m = x.manifest;
      if (m?.kind === 'cluster') {
        rows.push(
          ['Plan', `${m.plan}, ${m.workers} worker(s)`],
          ['Kubernetes', m.kubernetes_version ?? 'unknown'],
          ['etcd', `revision ${m.etcd.revision}, ${m.etcd.total_keys} keys, from ${m.etcd.member}`],
        );
      } else if (m?.kind === 'platform') {
        rows.push(
          ['Database', `${m.driver}, ${m.migrations.length} migrations`],
          ['Holds', `${m.counts.clusters} clusters, ${m.counts.users} users, ${m.counts.tasks} tasks, ${m.counts.credentials} credentials`],
          ['Needs the key file with', m.key_ring.ids.join(', ')],
        );
      }
      if (m) rows.push(...m.files.map((f) => [`File ${f.name}`, `${size(f.size)} sha256 ${f.sha256.slice(0, 16)}…`]));
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
    .option('--to-revision <rev>', 'then replay the changes recorded after the backup up to this etcd revision')
    .option('--to-time <iso>', 'or up to this instant (e.g. 2026-12-03T07:30:00Z)')
    .option('--wait')
    .option('--json')
    .action(async (id: string, o: { cluster?: string; toRevision?: string; toTime?: string; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const task = await client.restoreBackup(id, {
        ...(o.cluster ? { cluster: o.cluster } : {}),
        ...(o.toRevision !== undefined ? { to_revision: whole('--to-revision', o.toRevision) } : {}),
        ...(o.toTime !== undefined ? { to_time: o.toTime } : {}),
      });
      if (!o.wait) return o.json ? json(task) : out(`Restoring backup ${id} (task ${task.id})`);
      if ((await followTask(client, task.id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
    });
  b.command('schedule')
    .description("show or set a cluster's (or the platform's) backup schedule and retention (--off removes it)")
    .option('--cluster <name>', 'the cluster')
    .option('--platform', "the platform's own database (admins)")
    .option('--every <interval>', 'how often: 30m, 6h, 1d (minutes if no unit; at least 5m)')
    .option('--keep <n>', 'of the backups the schedule takes, keep the newest n (default 7)')
    .option('--keep-days <d>', 'and none older than d days')
    .option('--point-in-time', "also record etcd's changes after each backup, for restores to a revision or a time")
    .option('--off', 'remove the schedule (the backups it took stay)')
    .option('--json')
    .action(
      async (o: {
        cluster?: string;
        platform?: boolean;
        every?: string;
        keep?: string;
        keepDays?: string;
        pointInTime?: boolean;
        off?: boolean;
        json?: boolean;
      }) => {
        if ((o.cluster === undefined) === (o.platform !== true)) throw usage('give either --cluster NAME or --platform');
        const target = o.platform ? null : o.cluster!;
        const whose = target === null ? 'the platform' : `cluster ${target}`;
        const { client } = await authedClient();
        if (o.off) {
          await client.deleteBackupSchedule(target);
          return out(`Removed the backup schedule of ${whose}`);
        }
        let s;
        if (o.every === undefined && o.keep === undefined && o.keepDays === undefined) s = await client.backupSchedule(target);
        else {
          if (o.every === undefined) throw usage('--every is needed to set a schedule');
          s = await client.setBackupSchedule(target, {
            every_minutes: minutes(o.every),
            keep_last: o.keep === undefined ? 7 : whole('--keep', o.keep),
            ...(o.keepDays !== undefined ? { keep_days: whole('--keep-days', o.keepDays) } : {}),
            point_in_time: o.pointInTime === true,
          });
        }
        if (o.json) return json(s);
        printTable([
          ['Of', s.cluster === null ? "the platform's database" : `cluster ${s.cluster}`],
          ['Every', `${s.every_minutes} min`],
          ['Keeps', `the newest ${s.keep_last}${s.keep_days !== null ? `, none older than ${s.keep_days} days` : ''}`],
          ['Point in time', s.point_in_time ? "etcd's changes after each backup are recorded" : 'no'],
          ['Next', s.next_at],
          ['Last backup', s.last_backup ?? ''],
          ['Last error', s.last_error ?? ''],
        ]);
      },
    );
}

function whole(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw usage(`${flag} takes a whole number, not ${JSON.stringify(v)}`);
  return Number(v);
}

/** `30m`, `6h`, `1d` or a number of minutes. */
function minutes(v: string): number {
  const m = /^(\d+)([mhd]?)$/.exec(v.trim());
  if (!m) throw usage(`--every takes 30m, 6h, 1d or minutes, not ${JSON.stringify(v)}`);
  return Number(m[1]) * (m[2] === 'h' ? 60 : m[2] === 'd' ? 1440 : 1);
}

const usage = (message: string) => new CommanderError(EXIT.usage, 'usage', message);
