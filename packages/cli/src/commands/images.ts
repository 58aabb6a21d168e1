// anodyne images push|list|delete|gc: images in the platform's registry.
import { readFileSync } from 'node:fs';
import { CommanderError, type Command } from 'commander';
import { ApiError, formatBytes } from '@anodyne/client';
import { pushImage, readImageArchive } from '@anodyne/client/node';
import { EXIT } from '../exit.js';
import { followTask, printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

const bytes = formatBytes;

export function register(p: Command): void {
  const i = p.command('images').description("images in the platform's registry: push, list, delete, collect garbage");
  i.command('push <file>')
    .description('push an image archive (OCI image layout or docker save, as .tar) as <project>/<name>:<tag>')
    .option('--project <project>', 'the project (default: your own)')
    .requiredOption('--name <name:tag>', 'the repository in the project, and its tag (default tag: latest)')
    .option('--image <tag>', 'which image of an archive that holds several (by its tag in the archive)')
    .option('--json')
    .action(async (file: string, o: { project?: string; name: string; image?: string; json?: boolean }) => {
      const colon = o.name.lastIndexOf(':');
      const name = colon > 0 ? o.name.slice(0, colon) : o.name;
      const tag = colon > 0 ? o.name.slice(colon + 1) : 'latest';
      let data: Buffer;
      try {
        data = readFileSync(file);
      } catch (e) {
        throw new ApiError(0, 'ANODYNE_E_IMAGE_ARCHIVE_INVALID', `cannot read ${file}: ${(e as Error).message}`);
      }
      // Checked before anything is sent: a bad archive never reaches the registry.
      const archive = readImageArchive(data);
      const { client, session } = await authedClient();
      const info = await client.registryInfo();
      const project = o.project ?? info.own_project;
      if (!project) throw usage('give --project (you have no project of your own)');
      const repository = `${project}/${name}`;
      const { token } = await client.registryToken([`repository:${repository}:pull,push`]);
      const r = await pushImage({
        registry: `https://${info.address}`,
        caPem: session.ca_cert ?? info.ca,
        repository,
        tag,
        archive,
        ...(o.image ? { pick: o.image } : {}),
        token,
      });
      const ref = `${info.address}/${repository}:${tag}`;
      if (o.json) return json({ image: ref, digest: r.digest, bytes: r.bytes, uploaded_bytes: r.uploaded });
      out(`Pushed ${ref} (${r.digest}, ${bytes(r.bytes)}, ${bytes(r.uploaded)} uploaded)`);
    });
  i.command('list [project]')
    .description('images you may pull (in one project, or all)')
    .option('--json')
    .action(async (project: string | undefined, o: { json?: boolean }) => {
      const { client } = await authedClient();
      const [info, list] = await Promise.all([client.registryInfo(), client.images(project)]);
      if (o.json) return json(list);
      printTable([
        ['Image', 'Tags', 'Digest', 'Size', 'Pushed by', 'Pushed at'],
        ...list.map((x) => [
          `${info.address}/${x.repository}`,
          x.tags.join(',') || '(untagged)',
          x.digest.slice(0, 19),
          bytes(x.size_bytes),
          x.pushed_by,
          x.pushed_at,
        ]),
      ]);
    });
  i.command('delete <image>')
    .description('delete an image (project/name:tag or project/name@sha256:…) and every tag naming it; `images gc` frees its blobs')
    .action(async (image: string) => {
      const { client } = await authedClient();
      const info = await client.registryInfo();
      const ref = image.startsWith(`${info.address}/`) ? image.slice(info.address.length + 1) : image;
      const d = await client.deleteImage(ref);
      out(`Deleted ${d.repository}@${d.digest}${d.tags.length ? ` (tags ${d.tags.join(', ')})` : ''}`);
    });
  i.command('gc')
    .description("collect the registry's garbage: blobs no image refers to are removed (admins; the registry pauses meanwhile)")
    .option('--wait')
    .option('--json')
    .action(async (o: { wait?: boolean; json?: boolean }) => {
      const { client } = await authedClient();
      const task = await client.collectRegistryGarbage();
      if (!o.wait) return o.json ? json(task) : out(`Collecting the registry's garbage (task ${task.id})`);
      if ((await followTask(client, task.id, !!o.json)) !== 'done') process.exitCode = EXIT.taskFailed;
      else if (!o.json) {
        const done = await client.task(task.id);
        const r = done.result as { bytesBefore?: number; bytesAfter?: number } | null;
        out(
          r?.bytesBefore !== undefined
            ? `Garbage collected: ${bytes(r.bytesBefore)} → ${bytes(r.bytesAfter ?? 0)} stored`
            : 'Garbage collected',
        );
      }
    });
}

function usage(message: string): CommanderError {
  return new CommanderError(EXIT.usage, 'usage', message);
}
