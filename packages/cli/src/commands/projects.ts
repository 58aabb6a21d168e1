// anodyne projects list|show|create|update|grant|revoke|delete: registry projects and who may pull or push them.
import type { Command } from 'commander';
import type { RegistryProject } from '@anodyne/client';
import { printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';
import { formatBytes as bytes } from '@anodyne/client';

const quota = (p: RegistryProject) => `${bytes(p.used_bytes)} of ${p.quota_bytes === null ? 'no limit' : bytes(p.quota_bytes)}`;
const parseBytes = (s: string): number | null => {
  if (s === 'none') return null;
  const m = /^(\d+)([KMG]i?)?B?$/i.exec(s);
  if (!m) throw new Error(`${s} is not a size (e.g. 500Mi, 2Gi, or none)`);
  const unit = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[(m[2] ?? '').charAt(0).toUpperCase() as 'K' | 'M' | 'G'] ?? 1;
  return Number(m[1]) * unit;
};

export function register(p: Command): void {
  const r = p.command('projects').description('registry projects: who may pull and push which images');
  r.command('list')
    .description('projects you may pull from (yours is made on first sight)')
    .option('--json')
    .action(async (o: { json?: boolean }) => {
      const { client } = await authedClient();
      const list = await client.registryProjects();
      if (o.json) return json(list);
      printTable([
        ['Project', 'Owner', 'Public', 'Repositories', 'Stored'],
        ...list.map((x) => [x.name, x.owner ?? '(shared)', x.public ? 'yes' : 'no', String(x.repositories), quota(x)]),
      ]);
    });
  r.command('show <project>')
    .option('--json')
    .action(async (name: string, o: { json?: boolean }) => {
      const { client } = await authedClient();
      const x = await client.registryProject(name);
      if (o.json) return json(x);
      printTable(
        [
          ['Project', x.name],
          ['Owner', x.owner ?? '(shared)'],
          ['Public', x.public ? 'yes' : 'no'],
          ['Stored', quota(x)],
          ...(x.grants ?? []).map((g) => [`Grant ${g.subject}`, g.actions.join(',')]),
        ],
        false,
      );
    });
  r.command('create <project>')
    .description('create a project (admins: shared ones, or for a user with --owner; users: their own)')
    .option('--owner <user>')
    .option('--public', 'everyone may pull')
    .option('--quota <size>', 'stored bytes allowed (e.g. 2Gi, or none)')
    .action(async (name: string, o: { owner?: string; public?: boolean; quota?: string }) => {
      const { client } = await authedClient();
      const x = await client.createRegistryProject({
        name,
        ...(o.owner ? { owner: o.owner } : {}),
        ...(o.public ? { public: true } : {}),
        ...(o.quota ? { quota_bytes: parseBytes(o.quota) } : {}),
      });
      out(`Created project ${x.name} (${quota(x)})`);
    });
  r.command('update <project>')
    .description('make a project public or private, or change its quota (admins)')
    .option('--public')
    .option('--private')
    .option('--quota <size>', 'e.g. 2Gi, or none')
    .action(async (name: string, o: { public?: boolean; private?: boolean; quota?: string }) => {
      const { client } = await authedClient();
      const x = await client.updateRegistryProject(name, {
        ...(o.public ? { public: true } : o.private ? { public: false } : {}),
        ...(o.quota ? { quota_bytes: parseBytes(o.quota) } : {}),
      });
      out(`Project ${x.name}: ${x.public ? 'public' : 'private'}, ${quota(x)}`);
    });
  r.command('grant <project> <subject>')
    .description('let user:<name>, group:<scope>, client:<id> (a robot) or cluster:<name> pull (or with --push, push too)')
    .option('--push')
    .action(async (project: string, subject: string, o: { push?: boolean }) => {
      const { client } = await authedClient();
      await client.grantRegistry(project, subject, o.push ? ['pull', 'push'] : ['pull']);
      out(`${subject} may ${o.push ? 'pull and push' : 'pull'} ${project}`);
    });
  r.command('revoke <project> <subject>').action(async (project: string, subject: string) => {
    const { client } = await authedClient();
    await client.revokeRegistry(project, subject);
    out(`${subject} no longer has a grant on ${project}`);
  });
  r.command('delete <project>')
    .description('delete an empty project')
    .action(async (name: string) => {
      const { client } = await authedClient();
      await client.deleteRegistryProject(name);
      out(`Deleted project ${name}`);
    });
}
