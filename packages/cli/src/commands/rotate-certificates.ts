// anodyne rotate-certificates: issues new leaf certificates (with --ca, new CAs and service-account key too) and, with --wait, follows the roll-out.
import { type Command } from 'commander';
import { EXIT } from '../exit.js';
import { followTask } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

export function register(p: Command): void {
  p.command('rotate-certificates <name>')
    .description('issue new leaf certificates and roll them out; with --ca, new CAs and service-account key too, with no downtime')
    .option('--ca', 'rotate every CA and the service-account key: trusted everywhere, then signing, then the old ones dropped')
    .option('--wait')
    .option('--json')
    .action(async (name: string, o: { ca?: boolean; wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const c = await client.rotateCertificates(name, o.ca ? { ca: true } : {});
      const what = o.ca ? 'CAs and certificates' : 'certificates';
      if (!o.wait) {
        if (o.json) return json(c);
        out(`Rotating the ${what} of ${name} (task ${c.last_task_id})`);
        if (o.ca) out(`When it is done, run \`anodyne get-credentials ${name}\` again: kubeconfigs trust the new CA from then on.`);
        return;
      }
      if ((await followTask(client, c.last_task_id!, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
      else if (o.ca && !o.json) out(`Run \`anodyne get-credentials ${name}\` again: kubeconfigs trust the new CA from now on.`);
    });
}
