// Test harness shared by the director's integration tests, the fault-test child process and
// other packages' integration tests (`@anodyne/director/testing`). Not part of the main door.
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger, systemClock } from '@anodyne/common';
import { openStore, type Store } from '@anodyne/store';
import { CredStore, DeploymentVariables, KeyRing } from '@anodyne/credstore';
import { LocalProvider } from '@anodyne/providers';
import { removeStaleProviders } from '@anodyne/providers/testing';
import { Director, agentTlsIssuer, type JobCatalog, type JobDefinition, type Manifest, type VariableSource } from './index.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The test release: an HTTP server job from the host's busybox. */
export const httpd: JobDefinition = {
  name: 'httpd',
  release: 'test',
  properties: { port: { default: 8080 }, greeting: { default: 'hello' } },
  processes: [
    {
      name: 'httpd',
      command: 'busybox',
      args: ['httpd', '-f', '-p', '{{ spec.ip }}:{{ p.port }}', '-h', 'www'],
      env: { SECRET: '{{ vars.secret }}' },
      readiness: { http: { host: '{{ spec.ip }}', port: '{{ p.port }}', path: '/' } },
    },
  ],
  files: { 'www/index.html': '{{ p.greeting }} from {{ spec.name }}/{{ spec.index }}' },
  drain: 'echo drained >> ../drain.log',
};
/** An errand: prints a word and exits with the code asked for. */
export const smoke: JobDefinition = {
  name: 'smoke',
  release: 'test',
  properties: { word: { default: 'ok' }, code: { default: 0 } },
  processes: [{ name: 'smoke', command: 'sh', args: ['-c', 'echo errand-output {{ p.word }} from {{ spec.ip }}; exit {{ p.code }}'] }],
};
/** Keeps a random id on the persistent disk (written once) and serves the disk over HTTP. */
export const keeper: JobDefinition = {
  name: 'keeper',
  release: 'test',
  processes: [
    {
      name: 'keeper',
      command: 'sh',
      args: [
        '-c',
        [
          'd={{ spec.persistent_disk }}; test -n "$d" || exit 9;',
          'test -f $d/id || head -c 8 /dev/urandom | od -An -tx1 | tr -d " \\n" > $d/id;',
          'exec busybox httpd -f -p {{ spec.ip }}:8080 -h $d',
        ].join(' '),
      ],
      readiness: { http: { host: '{{ spec.ip }}', port: 8080, path: '/id' } },
    },
  ],
};
export const catalog: JobCatalog = { job: (_r, name) => ({ httpd, smoke, keeper })[name] };

export function manifest(greeting: string, extra: Partial<Manifest> = {}): Manifest {
  return {
    name: 'web',
    releases: [{ name: 'test', version: '1' }],
    image: 'host-usr',
    update: { canaries: 1, max_in_flight: 2, canary_watch_time: '300-30000', update_watch_time: '300-30000' },
    instance_groups: [
      {
        name: 'web',
        instances: 5,
        vm_type: 'small',
        networks: [{ name: 'default' }],
        jobs: [{ name: 'httpd', properties: { greeting } }],
      },
    ],
    variables: [{ name: 'secret', type: 'password', options: { length: 12 } }],
    ...extra,
  };
}

export interface Harness {
  store: Store;
  creds: CredStore;
  provider: LocalProvider;
  director: Director;
}

/** A director on the local provider over SQLite in `dir`, with credstore-backed TLS and variables. */
export async function makeHarness(
  dir: string,
  tag: string,
  key: Buffer,
  options: {
    catalog?: JobCatalog;
    binds?: { host: string; guest: string }[];
    network?: string;
    segments?: { pool: string; prefix: number };
  } = {},
): Promise<Harness> {
  const store = await openStore({ driver: 'sqlite', path: join(dir, 'anodyne.db') });
  const creds = new CredStore({ store, keys: new KeyRing(key), clock: systemClock, logger: silentLogger() });
  const network = options.network ?? '10.198.5.0/24';
  // A killed earlier run of the suite (same ranges, another tag) would hold its ranges: removed first.
  await removeStaleProviders([network, ...(options.segments ? [options.segments.pool] : [])]);
  const provider = new LocalProvider({
    dataDir: join(dir, 'provider'),
    tag,
    network,
    ...(options.segments ? { segments: options.segments } : {}),
    agentCommand: ['/opt/anodyne/packages/agent/dist/anodyne-agent'],
    binds: [{ host: REPO, guest: '/opt/anodyne', readOnly: true }, ...(options.binds ?? [])],
    logger: silentLogger(),
    clock: systemClock,
  });
  const tls = agentTlsIssuer(async (name, o) => (await creds.generate(name, 'certificate', o, { actor: 'director' })).value);
  const variables: VariableSource = new DeploymentVariables(creds);
  const director = new Director({
    store,
    provider,
    catalog: options.catalog ?? catalog,
    variables,
    tls,
    clock: systemClock,
    logger: silentLogger(),
  });
  return { store, creds, provider, director };
}
export { FakeAgents } from './fake-agents.js';
