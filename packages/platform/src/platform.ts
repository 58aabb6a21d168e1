// The composition root: builds every component from one configuration and starts the platform.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { InputError, PreconditionError, type Clock, type Logger, type PlatformConfig, type SecretRegistry } from '@anodyne/common';
import { AuditLog, RateLimits, openStore, type Store, type StoreOptions } from '@anodyne/store';
import { CredStore, DeploymentVariables, TrustRotation, loadKeyFile, type KeyRing } from '@anodyne/credstore';
import { LocalProvider, LxdProvider, type BindMount } from '@anodyne/providers';
import { recorderRoute } from './recorder-route.js';
import { CloudCheck, Director, HealthMonitor, Replicas, agentTlsIssuer, type AgentTlsIssuer } from '@anodyne/director';
import { AUDIENCE, Identity, LdapUserStore, SCOPES } from '@anodyne/identity';
import { ClusterService, deploymentName, releaseCatalog, RELEASES_GUEST_DIR, type Plan } from '@anodyne/clusters';
import { samePassword } from '@anodyne/registry';
import { locateReleases, sha256File } from '@anodyne/release';
import { LocalArtifactStore, S3ArtifactStore, type ArtifactStore, type BackupKeys } from '@anodyne/backup';
import { buildServer } from '@anodyne/api';
import { CertificateRenewal, isDue } from './renewal.js';
import { startRegistry, type PlatformRegistry } from './registry.js';

/** The web console's build (`make build`: packages/console/build.mjs), beside this package in the checkout. */
const CONSOLE_DIR = fileURLToPath(new URL('../../console/dist/', import.meta.url));

export interface PlatformOptions {
  config: PlatformConfig;
  logger: Logger;
  clock: Clock;
  /** The logger's secret mask: every credential the platform reads or generates is added to it. */
  secrets?: SecretRegistry;
  /** Short name for the provider's host objects (bridge, netns, cgroups). */
  providerTag?: string;
  /** Release directory; by default the one the cache's `current` points at. */
  releaseDir?: string;
  /** The plans clusters are created by (default: the built-in plans). */
  plans?: Plan[];
}

export interface Platform {
  app: FastifyInstance;
  url: string;
  caFile: string;
  caPem: string;
  /** kubectl of the release the clusters run. */
  releaseKubectl: string;
  /** Set on the first start only: the first admin's password, shown once. */
  adminPassword: string | undefined;
  store: Store;
  creds: CredStore;
  provider: PlatformProvider;
  director: Director;
  health: HealthMonitor;
  /** The certificate renewal pass (scheduled; `pass()` runs one now). */
  renewal: CertificateRenewal;
  /** This replica among the platform's replicas on its database, and whether it leads. */
  replicas: Replicas;
  identity: Identity;
  clusters: ClusterService;
  /** The image registry (absent when `registry.enabled` is false). */
  registry: PlatformRegistry | undefined;
  /** Stops the API and closes the store; VMs keep running (a restart picks them up). With no VM left, the VM network is removed too. */
  close(): Promise<void>;
}

/**
 * Where backups go: the local directory, or the configured S3-compatible store (its bucket made if
 * missing; a store that does not answer stops the start with its code). Its secret key joins the log mask.
 */
export async function backupStore(config: PlatformConfig, dataDir: string, secrets?: SecretRegistry): Promise<ArtifactStore> {
  const b = config.backup;
  if (b.store === 'local') return new LocalArtifactStore(isAbsolute(b.dir) ? b.dir : join(dataDir, b.dir));
  secrets?.add(b.s3.secretAccessKey);
  const store = new S3ArtifactStore({
    endpoint: b.s3.endpoint,
    bucket: b.s3.bucket,
    region: b.s3.region,
    accessKeyId: b.s3.accessKeyId,
    secretAccessKey: b.s3.secretAccessKey,
    ...(b.s3.prefix ? { prefix: b.s3.prefix } : {}),
    ...(b.s3.caFile ? { ca: readFileSync(b.s3.caFile, 'utf8') } : {}),
  });
  await store.ensureBucket();
  return store;
}

/** The database the configuration names. */
export function storeOptionsOf(config: PlatformConfig): StoreOptions {
  return config.store.driver === 'postgres'
    ? { driver: 'postgres', url: config.store.url ?? '', poolSize: config.store.poolSize }
    : { driver: 'sqlite', path: isAbsolute(config.store.path) ? config.store.path : join(config.dataDir, config.store.path) };
}

/**
 * Keys for backups of the platform itself: derived from the credential store's key file (not
 * kept in the database they protect), so a platform that lost its database opens them with the
 * same key file. The id names the key ring key they come from.
 */
export function platformBackupKeys(ring: KeyRing): BackupKeys {
  const of = (ringId: string) => {
    const k = ring.derive('platform backup', ringId);
    return k ? { id: `keyring:${ringId}`, secret: k.toString('hex') } : undefined;
  };
  return {
    current: () => Promise.resolve(of(ring.activeKeyId)!),
    byId: (id) => Promise.resolve(id.startsWith('keyring:') ? of(id.slice('keyring:'.length)) : undefined),
  };
}

/** The backup key: a long random secret in the credential store; each version stays to open what it sealed. */
export function backupKeys(creds: CredStore): BackupKeys {
  const name = '/platform/backup-key';
  const actor = { actor: 'backups' };
  return {
    current: async () => {
      const c = await creds.generate(name, 'password', { length: 64 }, actor);
      return { id: c.id, secret: c.value };
    },
    byId: async (id) => {
      const c = await creds.get<'password'>(name, { ...actor, id }).catch(() => undefined);
      return c ? { id: c.id, secret: c.value } : undefined;
    },
  };
}

/** Agent mTLS material from the credential store (the director's agent PKI). */
export function agentTlsFromCredStore(creds: CredStore): AgentTlsIssuer {
  return agentTlsIssuer(async (name, options) => (await creds.generate(name, 'certificate', options, { actor: 'director' })).value);
}

/** The providers the platform runs on: the local one (the default), or LXD. */
export type PlatformProvider = LocalProvider | LxdProvider;

/**
 * The provider `provider.type` names, on the configured network, segment pool and tag. An LXD
 * endpoint given by URL needs its certificate files, read here (a missing one is named).
 */
export function makeProvider(
  config: PlatformConfig,
  o: { dataDir: string; tag: string; agentCommand: string[]; binds: BindMount[]; logger: Logger; clock: Clock },
): PlatformProvider {
  const common = {
    tag: o.tag,
    network: config.provider.network,
    segments: { pool: config.provider.segmentPool, prefix: config.provider.segmentPrefix },
    agentCommand: o.agentCommand,
    binds: o.binds,
    logger: o.logger,
    clock: o.clock,
  };
  if (config.provider.type !== 'lxd') return new LocalProvider({ ...common, dataDir: o.dataDir });
  const l = config.provider.lxd;
  const read = (key: string, file: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new PreconditionError(
        'ANODYNE_E_CONFIG_INVALID',
        `provider.lxd.${key} ${JSON.stringify(file)} cannot be read: ${(err as Error).message}`,
        {
          details: { key: `provider.lxd.${key}` },
        },
      );
    }
  };
  const endpoint = l.url
    ? {
        url: l.url,
        cert: read('certFile', l.certFile),
        key: read('keyFile', l.keyFile),
        serverCert: read('serverCertFile', l.serverCertFile),
      }
    : { socket: l.socket };
  const { segments, ...rest } = common;
  return new LxdProvider({
    ...rest,
    endpoint,
    project: l.project,
    storagePool: l.storagePool,
    ...(l.vxlan.hostInterface ? { vxlan: l.vxlan } : {}),
    // Segments need the host side here (their isolation is this host's firewall): a daemon on this host, or VXLAN.
    ...('socket' in endpoint || l.vxlan.hostInterface ? { segments } : {}),
  });
}

/**
 * The composition root: store, credential store, provider, director, identity, clusters and
 * the HTTPS API, from one configuration. The API listens on the host's address on the VM
 * network, so clusters' API servers reach the identity issuer; that address is the issuer URL.
 */
export async function startPlatform(o: PlatformOptions): Promise<Platform> {
  const { config, logger, clock } = o;
  const dataDir = config.dataDir;
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (config.provider.type === 'fake')
    throw new PreconditionError(
      'ANODYNE_E_CONFIG_INVALID',
      "the platform runs with the local or the LXD provider; the fake provider is for the director's unit tests only",
    );
  const notIp = config.server.proxyProtocolFrom.filter((a) => isIP(a) === 0);
  if (notIp.length > 0)
    throw new InputError('ANODYNE_E_CONFIG_INVALID', `server.proxyProtocolFrom takes IP addresses, not ${notIp.join(', ')}`, {
      details: { key: 'server.proxyProtocolFrom' },
    });
  // Every release built for these sources, newest first; clusters pick theirs, VMs see them all.
  const releases = locateReleases(o.releaseDir ? { dir: o.releaseDir } : {});
  const release = releases[0]!;
  const store = await openStore(storeOptionsOf(config));
  let registry: PlatformRegistry | undefined;
  try {
    const keys = loadKeyFile(join(dataDir, 'keys', 'encryption.key'));
    // Every secret the store hands out is registered with the logger's mask (when one is shared).
    const creds = new CredStore({ store, keys, clock, logger, ...(o.secrets ? { secrets: o.secrets } : {}) });
    const rotation = new TrustRotation(creds, 'clusters');
    const provider = makeProvider(config, {
      dataDir: join(dataDir, 'provider'),
      tag: o.providerTag ?? config.provider.tag,
      // Each VM starts the agent its cluster's release carries (the director passes its path): nothing in
      // a VM comes from this checkout.
      agentCommand: ['/bin/sh', '-c', 'exec "${ANODYNE_AGENT_PROGRAM:?no agent program: the release carries none}"'],
      binds: [
        // The releases side by side (a cluster's jobs name theirs), and the newest at the jobs' default path.
        { host: dirname(release.dir), guest: RELEASES_GUEST_DIR, readOnly: true },
        { host: release.dir, guest: '/var/lib/anodyne/release', readOnly: true },
      ],
      logger,
      clock,
    });
    const { gateway } = await provider.prepareNetwork();
    const host = config.server.host === '127.0.0.1' ? gateway : config.server.host;
    // This replica's own address, and the one clients and clusters use (the same unless replicas share a load balancer).
    const ownUrl = `https://${host}:${config.server.port}`;
    const url = config.server.publicUrl ?? ownUrl;
    const publicHost = new URL(url).hostname.replace(/^\[|\]$/g, '');

    // The platform CA and the API's serving certificate, from the credential store.
    const actor = { actor: 'platform' };
    const ca = (
      await creds.generate(
        '/platform/ca',
        'certificate',
        { is_ca: true, common_name: 'anodyne-platform-ca', key_algorithm: 'ecdsa', duration: 3650 },
        actor,
      )
    ).value;
    const serving = (
      await creds.generate(
        '/platform/api-server',
        'certificate',
        {
          ca: '/platform/ca',
          common_name: host,
          alternative_names: [...new Set([host, gateway, publicHost, '127.0.0.1', 'localhost', ...config.server.altNames])],
          extended_key_usage: ['server_auth'],
          key_algorithm: 'ecdsa',
          duration: 365,
        },
        actor,
      )
    ).value;
    const caFile = join(dataDir, 'ca.pem');
    writeFileSync(caFile, ca.certificate, { mode: 0o644 });

    // This replica among those on the database: registered before anything is ended as interrupted,
    // so that only the tasks of replicas that are gone are (all of them when it runs alone).
    const replicas = new Replicas({ store, clock, logger, url: ownUrl, leaseMs: config.server.leaseSeconds * 1000 });
    await replicas.register();
    const director = new Director({
      replica: replicas.id,
      store,
      provider: provider,
      // Each cluster's jobs as its release's build carries them.
      catalog: releaseCatalog(dirname(release.dir)),
      variables: new DeploymentVariables(creds),
      tls: agentTlsFromCredStore(creds),
      clock,
      logger,
    });
    // Tasks of a replica that stopped (this one's last run, or another's): deploys and deletes wait
    // for a replica to resume them (this one takes them once it is up), the others end.
    const recovered = await director.recover(await replicas.alive());
    if (recovered.ended.length > 0)
      logger.warn({ tasks: recovered.ended.map((t) => t.id) }, 'tasks interrupted by the last stop were ended');
    if (recovered.queued.length > 0)
      logger.warn({ tasks: recovered.queued.map((t) => t.id) }, 'tasks interrupted by the last stop will be resumed');
    /** What runs once for the whole platform: on the leader only (checked at each pass). */
    const leading =
      <T>(what: () => Promise<T>) =>
      (): Promise<T | undefined> =>
        replicas.isLeader() ? what() : Promise.resolve(undefined);

    const ldapCfg = config.identity.ldap;
    const ldap = ldapCfg.url ? new LdapUserStore({ ...ldapCfg, url: ldapCfg.url }, logger) : undefined;
    const identity = new Identity({
      store,
      creds,
      clock,
      logger,
      issuer: url,
      accessTokenSeconds: config.identity.accessTokenSeconds,
      refreshTokenSeconds: config.identity.refreshTokenSeconds,
      ...(ldap ? { ldap } : {}),
    });
    await identity.init();
    const adminPassword = await identity.ensureAdmin();
    // Signing keys rotate by age: checked now and hourly (new tokens use the new key; older ones still verify).
    // The leader rotates; the others read the keys again (tokens of a key they have not seen also make them read).
    const rotateKeys = () =>
      (replicas.isLeader() ? identity.rotateIfOlderThan(config.identity.signingKeyDays) : identity.reloadSigningKeys()).catch(
        (err: unknown) => logger.warn({ err: (err as Error).message }, 'signing key rotation failed'),
      );
    await rotateKeys();
    const keyTimer = setInterval(() => void rotateKeys(), 3_600_000);
    keyTimer.unref();

    const audit = new AuditLog(store, clock);
    // The image registry: its address goes into every cluster's manifest (nodes trust and pull from it).
    // eslint-disable-next-line prefer-const -- made below; the registry asks it only once requests come
    let clusters: ClusterService;
    if (config.registry.enabled)
      registry = await startRegistry({
        config,
        host,
        apiUrl: url,
        caPem: ca.certificate,
        serving,
        creds,
        store,
        audit,
        clock,
        logger,
        collector: (owner, work) =>
          director.runTask('registry-gc', "collect the image registry's garbage", owner, async (_signal, sink) => {
            await sink.event({ stage: 'Collecting garbage', state: 'started' });
            const report = await work();
            await sink.event({ stage: 'Collecting garbage', state: 'finished' });
            await audit.record({ actor: owner, action: 'registry.gc', target: 'registry', result: 'ok', details: { ...report } });
            return report;
          }),
        callers: {
          bearer: (t) => identity.verify(t),
          password: async (u, p) => {
            const user = await identity.authenticateUser(u, p);
            return { username: user.username, groups: user.groups };
          },
          client: (c, secret) => identity.authenticateRobot(c, secret),
          // A cluster's nodes: the password is the cluster's `registry-pull` variable; they act for its owner.
          cluster: async (name, password) => {
            const row = (await clusters.records.rows({ name }))[0];
            if (!row) return undefined;
            const stored = await creds
              .get<'password'>(`/deployments/${deploymentName(name)}/registry-pull`, { actor: 'registry' })
              .catch(() => undefined);
            return stored && samePassword(password, stored.value) ? row.owner : undefined;
          },
        },
      });
    // The cloud check's every action (ignoring a finding too) goes to the audit log.
    const cloudCheck = new CloudCheck({
      store,
      provider,
      director,
      clock,
      logger,
      onAction: ({ actor, finding, action }) =>
        audit.record({
          actor,
          action: `cloud_check.${action.resolution}`,
          target: finding.object ?? finding.deployment ?? 'platform',
          result: action.result === 'error' ? 'error' : 'ok',
          details: {
            finding: finding.id,
            type: finding.type,
            ...(finding.deployment ? { deployment: finding.deployment } : {}),
            outcome: action.result,
            detail: action.detail,
            ...(action.task !== undefined ? { task: action.task } : {}),
          },
        }),
    });
    // Change records run in the leader; the other replicas send it their orders.
    const records = recorderRoute({ signals: store.signals, leads: () => replicas.isLeader(), logger });
    clusters = new ClusterService({
      recorderRoute: records.route,
      cloudCheck,
      ...(registry ? { registry: { address: registry.address, caPem: ca.certificate } } : {}),
      ...(o.plans ? { plans: o.plans } : {}),
      store,
      director,
      vmAgents: async () => (await provider.listVms()).map((v) => v.metadata['agent_program'] ?? '').filter(Boolean),
      // Backups are sealed with a key the credential store keeps (its version id names it in each artifact).
      backups: {
        artifacts: await backupStore(config, dataDir, o.secrets),
        keys: backupKeys(creds),
        platform: {
          snapshot: () => store.snapshot(),
          migrations: () => store.appliedMigrations(),
          keys: platformBackupKeys(keys),
          keyRing: () => ({ active: keys.activeKeyId, ids: keys.keyIds }),
        },
      },
      clock,
      logger,
      credentials: {
        adminCertificate: async (deployment, who) =>
          (await creds.get<'certificate'>(`/deployments/${deployment}/admin`, { actor: who })).value,
        certificates: async (deployment) =>
          (await creds.list(`/deployments/${deployment}/`))
            .filter((c) => c.type === 'certificate')
            .map((c) => ({
              name: c.name.slice(`/deployments/${deployment}/`.length),
              expires_at: c.expires_at,
              is_ca: c.ca_name === null,
              version: c.version,
            })),
        // The API servers' etcd client certificate: what the platform's change record watches etcd with.
        etcdClient: async (deployment) => {
          const client = await creds.get<'certificate'>(`/deployments/${deployment}/apiserver-etcd-client`, { actor: 'backups' });
          // `ca`: every etcd CA version trusted now (both, during a CA rotation).
          return { ca: client.value.ca, certificate: client.value.certificate, private_key: client.value.private_key };
        },
        // A CA rotation's three steps, over the deployment's credentials.
        caPhase: (deployment, names) => rotation.phase(names.map((n) => `/deployments/${deployment}/${n}`)),
        trustNewCas: (deployment, names, who) =>
          rotation.trustNew(
            names.map((n) => `/deployments/${deployment}/${n}`),
            who,
          ),
        signWithNewCas: (deployment, names, who) =>
          rotation.signWithNew(
            names.map((n) => `/deployments/${deployment}/${n}`),
            who,
          ),
        dropOldCas: (deployment, names, who) =>
          rotation.dropOld(
            names.map((n) => `/deployments/${deployment}/${n}`),
            who,
          ),
        regenerateLeaves: async (deployment, who) => {
          const leaves = (await creds.list(`/deployments/${deployment}/`)).filter((c) => c.type === 'certificate' && c.ca_name !== null);
          for (const c of leaves) await creds.regenerate(c.name, { actor: who });
          return leaves.length;
        },
      },
      oidc: {
        issuerUrl: url,
        caPem: ca.certificate,
        audience: AUDIENCE,
        usernameClaim: 'user_name',
        usernamePrefix: 'anodyne:',
        anyScope: [SCOPES.manage, SCOPES.admin],
      },
    });
    // Workers are drained through the Kubernetes API before the director stops them, and their Nodes go with them.
    director.useHooks(clusters.nodes);
    await clusters.releases.register(
      await Promise.all(
        releases.map(async (r) => ({
          key: r.key,
          version: r.version,
          dir: r.dir,
          manifestSha256: await sha256File(join(r.dir, 'manifest.json')),
        })),
      ),
    );
    // Records of finished deletes are removed here, not by reads: at start and every 10 s.
    // And request counts of windows that have ended (the token rate limit's).
    const rateLimits = new RateLimits(store, clock);
    const reap = leading(() =>
      Promise.all([clusters.records.reapDeleted(), rateLimits.prune(60_000)]).catch((err: unknown) =>
        logger.warn({ err: (err as Error).message }, "removing deleted clusters' records failed"),
      ),
    );
    await reap();
    const reapTimer = setInterval(() => void reap(), 10_000);
    reapTimer.unref();
    // Scheduled backups and their retention, one pass a minute (configurable).
    const schedulePass = leading(() =>
      clusters.backups.runSchedules().then(
        (r) => (r.started.length || r.removed.length ? logger.info(r, 'backup schedules') : undefined),
        (err: unknown) => logger.warn({ err: (err as Error).message }, 'a backup schedule pass failed'),
      ),
    );
    const scheduleTimer = setInterval(() => void schedulePass(), config.backup.schedulePassSeconds * 1000);
    scheduleTimer.unref();
    const resumeRecording = () =>
      clusters.backups
        .resumeRecording()
        .then((c) => (c.length ? logger.info({ clusters: c }, "recording etcd's changes again") : undefined))
        .catch((err: unknown) => logger.warn({ err: (err as Error).message }, "resuming etcd's change records failed"));
    if (replicas.isLeader()) await resumeRecording();
    const stopServingRecords = records.serve((order) => clusters.recorder.apply(order));
    const dc = config.director;
    const health = new HealthMonitor({
      store,
      provider,
      director,
      clock,
      logger,
      resurrection: {
        enabled: dc.resurrection,
        afterMs: dc.resurrectAfterSeconds * 1000,
        meltdownMin: dc.meltdownMin,
        meltdownPercent: dc.meltdownPercent,
      },
      onEvent: async (e) => {
        const details = {
          instances: e.instances,
          ...(e.task !== undefined ? { task: e.task } : {}),
          ...(e.error ? { error: e.error } : {}),
          ...(e.reason ? { reason: e.reason } : {}),
        };
        const target = e.deployment ?? 'platform';
        // Resurrections and meltdowns are the director's actions; a health change is only an alert.
        if (e.action !== 'unhealthy')
          await audit.record({
            actor: 'health-monitor',
            action: `director.${e.action}`,
            target,
            result: e.error ? 'error' : 'ok',
            details,
          });
        // And each is an alert (the /v1/events feed).
        const kind = { resurrect: 'instance_lost', meltdown: 'meltdown', unhealthy: 'instance_unhealthy' }[e.action];
        await audit.record({ actor: 'health-monitor', action: `alert.${kind}`, target, result: e.error ? 'error' : 'ok', details });
      },
    });
    // A task that failed is an alert too.
    director.onTaskEnd((t) => {
      if (t.state !== 'error') return;
      void director.tasks
        .get(t.id)
        .then((task) =>
          audit.record({
            actor: 'director',
            action: 'alert.task_failed',
            target: task.deployment ?? `task ${t.id}`,
            result: 'error',
            details: { task: t.id, type: t.type, ...(task.error ? { error: task.error.code } : {}) },
          }),
        )
        .catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'recording a failed task as an alert failed'));
    });
    const takeOver = leading(async () => {
      const live = await replicas.alive();
      const { ended, queued } = await director.recover(live);
      if (ended.length > 0) logger.warn({ tasks: ended.map((t) => t.id) }, 'tasks of replicas that stopped were ended');
      if (queued.length > 0) logger.warn({ tasks: queued.map((t) => t.id) }, 'tasks of replicas that stopped wait to be resumed');
      await replicas.forgetGone(live);
    });
    const takeOverNow = () =>
      void takeOver().catch((err: unknown) =>
        logger.warn({ err: (err as Error).message }, 'taking over the tasks of stopped replicas failed'),
      );
    const takeOverTimer = setInterval(takeOverNow, config.server.leaseSeconds * 1000);
    takeOverTimer.unref();
    // The health monitor and resurrector, and the change records, run on the leader: started and
    // stopped with its leadership. The leader also ends the tasks of replicas that died.
    if (replicas.isLeader()) health.start(dc.healthIntervalSeconds * 1000);
    replicas.onLeadership((lead) => {
      if (lead) {
        health.start(dc.healthIntervalSeconds * 1000);
        void resumeRecording();
        // A new leader looks at once for the tasks of the replica that stopped leading (it may have died).
        takeOverNow();
      } else {
        void health.stop();
        void clusters.recorder.stopAll();
      }
    });
    replicas.start();
    // Every replica resumes tasks whose replica stopped (the queue), at once when told of one.
    const stopQueue = director.startQueue();
    // Certificates that expire within `certificates.renewalDays` are alerted and renewed: at start, then every pass.
    const apiTls: { reload?: (c: { certificate: string; private_key: string }) => void } = {};
    const renewal = new CertificateRenewal({
      creds,
      clusters,
      agents: director,
      audit,
      clock,
      logger,
      days: config.certificates.renewalDays,
      platform: [
        { name: '/platform/api-server', reload: (c) => apiTls.reload?.(c) },
        ...(registry
          ? [{ name: '/platform/registry-token', reload: (c: { certificate: string; private_key: string }) => registry!.signer.reload(c) }]
          : []),
        // The director reads its client certificate from the store for every call to an agent.
        { name: '/director/client' },
      ],
    });
    const renewalPass = leading(() =>
      renewal.pass().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'a certificate renewal pass failed')),
    );
    const renewalTimer = setInterval(() => void renewalPass(), config.certificates.renewalPassSeconds * 1000);
    renewalTimer.unref();
    let brokerCreds: Promise<{ username: string; password: string }> | undefined;
    const app = await buildServer({
      identity,
      clusters,
      director,
      store,
      audit,
      clock,
      logger,
      tls: { cert: serving.certificate, key: serving.private_key },
      proxyProtocolFrom: config.server.proxyProtocolFrom,
      apiUrl: url,
      caPem: ca.certificate,
      consoleDir: CONSOLE_DIR,
      ...(registry ? { registry: { service: registry.service, realm: registry.realm } } : {}),
      replicas: async () => {
        const v = await replicas.views();
        return { self: replicas.id, leader: v.leader ?? null, replicas: v.replicas };
      },
      gauges: {
        certificates: async () =>
          (await creds.certificatesInUse()).map((c) => ({ ...c, due: isDue(c, clock.nowMs(), config.certificates.renewalDays) })),
        instances: () => director.healthCounts(),
        health: () => {
          const r = health.lastReport();
          return r ? { meltdown: r.meltdown, vitals: r.vitals } : null;
        },
        tasks: () => director.tasks.counts(),
      },
      brokerCredentials: () =>
        (brokerCreds ??= creds
          .generate('/platform/osb-broker', 'password', { length: 32 }, { actor: 'osb-broker' })
          .then((c) => ({ username: 'broker', password: c.value }))),
    });
    await app.listen({ host, port: config.server.port });
    logger.info({ url: ownUrl, ...(url !== ownUrl ? { publicUrl: url } : {}) }, 'API listening');
    // A renewed serving certificate is used for new connections at once.
    apiTls.reload = (c) => {
      (app.server as unknown as TlsServer).setSecureContext({ cert: c.certificate, key: c.private_key });
      registry?.front.reload({ cert: c.certificate, key: c.private_key });
    };
    // The release's images in the registry's public `library` project (in the background: start does not wait).
    if (registry && config.registry.pushReleaseImages)
      void registry.pushReleaseImages(release.dir).then(
        (pushed) => (pushed.length ? logger.info({ images: pushed }, "the release's images are in the registry") : undefined),
        (err: unknown) => logger.warn({ err: (err as Error).message }, "pushing the release's images into the registry failed"),
      );
    void renewalPass();
    return {
      app,
      url,
      caFile,
      caPem: ca.certificate,
      adminPassword,
      releaseKubectl: release.bin('kubectl'),
      store,
      creds,
      provider,
      director,
      identity,
      clusters,
      registry,
      health,
      renewal,
      replicas,
      close: async () => {
        stopQueue();
        stopServingRecords();
        records.close();
        clearInterval(takeOverTimer);
        clearInterval(keyTimer);
        clearInterval(reapTimer);
        clearInterval(scheduleTimer);
        clearInterval(renewalTimer);
        await clusters.recorder.close();
        await health.stop();
        await app.close();
        // Tasks still running here (a request's task just begun) end before the store closes: at most 10 s.
        await director.settle(10_000);
        await registry?.close();
        // With no deployment left, nothing needs the VM network: remove the bridge and its rules
        // too, so a stopped platform leaves nothing on the host. Clusters keep it (and run on).
        const left = await store.db
          .selectFrom('instances')
          .select('id')
          .limit(1)
          .execute()
          .catch(() => [{ id: 'unknown' }]);
        // Other replicas of this database on this host still serve on it.
        const others = (await replicas.views().catch(() => ({ replicas: [] }))).replicas.filter(
          (r) => r.id !== replicas.id && r.host === replicas.host,
        );
        if (left.length === 0 && others.length === 0 && (await provider.listVms()).length === 0)
          await provider.cleanup().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'removing the VM network failed'));
        // Last: another replica takes the lead at once (the tasks this one ran have ended or been cut off above).
        await replicas.stop().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'leaving the replicas failed'));
        await store.close();
      },
    };
  } catch (err) {
    await registry?.close();
    await store.close();
    throw err;
  }
}
