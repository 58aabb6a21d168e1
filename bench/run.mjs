// `make bench`: every benchmark of bench/, printed as Markdown tables and written to
// docs/benchmarks.md with the machine's core count and memory. Needs root (namespaces, cgroups).
//   node --expose-gc bench/run.mjs [--runs N] [--only clusters,upgrade,backup,api,replicas,director,etcd,lxd,density]
// --runs sets the runs of clusters, etcd and the director (which does at least 5) and, up to 2, of upgrades, backups and LXD;
// the API section times one load per row.
import { cpus, totalmem } from 'node:os';
import { writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { locateRelease, locateReleases } from '@anodyne/release';
import { benchClusters } from './clusters.mjs';
import { benchUpgrade } from './upgrade.mjs';
import { benchBackup } from './backup.mjs';
import { benchApi } from './api.mjs';
import { benchEtcd } from './etcd.mjs';
import { benchDensity } from './density.mjs';
import { benchReplicas } from './replicas.mjs';
import { benchLxd } from './lxd.mjs';
import { execFileSync } from 'node:child_process';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const runs = Number(arg('--runs') ?? 3);
const ALL = ['clusters', 'upgrade', 'backup', 'api', 'replicas', 'director', 'etcd', 'lxd', 'density'];
const only = (arg('--only') ?? ALL.join(',')).split(',');
const release = locateRelease();

const sections = [];
if (only.includes('clusters')) sections.push(await benchClusters(release, { runs }));
if (only.includes('upgrade')) sections.push(await benchUpgrade(locateReleases(), { runs: Math.min(runs, 2) }));
if (only.includes('backup')) sections.push(await benchBackup(release, { runs: Math.min(runs, 2) }));
if (only.includes('api')) sections.push(await benchApi());
if (only.includes('replicas')) sections.push(await benchReplicas());
// In a fresh process: its memory figures must not carry the other sections' heap. A health pass
// takes well under a second, so it always gets at least 5 (its section says how many it ran).
if (only.includes('director'))
  sections.push(
    execFileSync(process.execPath, ['--expose-gc', join(REPO, 'bench', 'director.mjs'), String(Math.max(runs, 5))], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
if (only.includes('etcd')) sections.push(await benchEtcd(release, { runs }));
if (only.includes('lxd')) sections.push(await benchLxd(release, { runs: Math.min(runs, 2) }));
if (only.includes('density')) sections.push(await benchDensity(release));

const md = [
  '# Benchmarks',
  '',
  `Measured by bench/run.mjs (run by \`make bench\`) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB memory,`,
  `release ${release.manifest.release}. Each section says what its raw floor is; the floor is measured in the same run.`,
  '',
  ...sections,
].join('\n');
process.stdout.write(md + '\n');
if (ALL.every((x) => only.includes(x))) writeFileSync(join(REPO, 'docs', 'benchmarks.md'), md + '\n');
else process.stderr.write('bench: a partial run (--only) does not rewrite docs/benchmarks.md\n');
