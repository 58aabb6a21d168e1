// Test helpers for suites that need a whole platform (`@anodyne/platform/testing`). Not part of the main door.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  exec,
  createLogger,
  silentLogger,
  loadConfig,
  PlatformConfigSchema,
  SecretRegistry,
  systemClock,
  type PlatformConfig,
} from '@anodyne/common';
import { LocalProvider } from '@anodyne/providers';
import { hostLeftovers, removeStaleProviders } from '@anodyne/providers/testing';
import { startPlatform, type Platform } from '../platform.js';

/** The platform's provider where a suite needs the local one's own means (a shell in a VM, its init's pid). */
export function localProvider(platform: Platform): LocalProvider {
  assert.ok(platform.provider instanceof LocalProvider, 'this suite needs the local provider');
  return platform.provider;
}
import { https } from './http.js';
import type { Plan } from '@anodyne/clusters';
import type { Kubectl } from './workloads.js';

export interface TestPlatform {
  platform: Platform;
  dir: string;
  tag: string;
  /** Everything the platform logged (debug level and up), as written: for searching for secrets. */
  logs(): string;
  /**
   * Stops the platform as a restart would (its clusters keep running), runs `between` with its
   * configuration (e.g. to lose and restore its database), and starts it again on the same data.
   */
  restart(between?: (config: PlatformConfig) => Promise<void>): Promise<void>;
  /** Stops the API, removes every VM and host object of the provider, checks the host, removes files. */
  stop(): Promise<void>;
}

/**
 * A suite's segment pool beside its network: `a.b.c.0/24` → `a.(b+1).c.0/24` in /27s (eight clusters of up to
 * 29 VMs and load balancers each), so suites' segments never share addresses either.
 */
export function segmentPoolBeside(network: string): string {
  const [a, b, c] = network.split('/')[0]!.split('.').map(Number) as [number, number, number];
  return `${a}.${b + 1}.${c}.0/24`;
}

/** A whole platform on its own network, port, tag and data directory. */
export async function startTestPlatform(
  name: string,
  network: string,
  port: number,
  env: Record<string, string> = {},
  options: { plans?: Plan[] } = {},
): Promise<TestPlatform> {
  const dir = mkdtempSync(join(tmpdir(), `anodyne-${name}-`));
  const tag = `${name.slice(0, 2)}${(process.pid % 1296).toString(36)}`;
  const config = loadConfig(PlatformConfigSchema, {
    env: {
      ANODYNE_DATA_DIR: dir,
      ANODYNE_PROVIDER_NETWORK: network,
      ANODYNE_PROVIDER_TAG: tag,
      ANODYNE_PROVIDER_SEGMENT_POOL: segmentPoolBeside(network),
      ANODYNE_PROVIDER_SEGMENT_PREFIX: '27',
      ANODYNE_SERVER_PORT: String(port),
      ANODYNE_DIRECTOR_HEALTH_INTERVAL_SECONDS: '2',
      // The registry on a port of the suite's own (kept across restarts: clusters' nodes name it); the
      // release's images are pushed only where a suite asks.
      ANODYNE_REGISTRY_PORT: String(port + 20_000),
      ANODYNE_REGISTRY_PUSH_RELEASE_IMAGES: 'false',
      ...env,
    },
  });
  // The platform logs as `anodyne server` does (secret mask included), into a file beside its data directory (not
  // in memory: this thread runs the platform, and a whole suite's debug lines made its garbage collector pause).
  const logFile = `${dir}.log`;
  let logFd: number | undefined = openSync(logFile, 'a', 0o600);
  const secrets = new SecretRegistry();
  const logger = createLogger({
    level: 'debug',
    secrets,
    destination: { write: (line: string) => void (logFd !== undefined && writeSync(logFd, line)) },
  });
  const dropLog = () => {
    if (logFd !== undefined) closeSync(logFd);
    logFd = undefined; // lines logged after the stop are dropped
    rmSync(logFile, { force: true });
  };
  // A killed earlier run of the suite (same ranges, another tag) would hold its ranges: removed first.
  await removeStaleProviders([network, config.provider.segmentPool]);
  let platform: Platform;
  try {
    platform = await startPlatform({ config, logger, clock: systemClock, secrets, ...(options.plans ? { plans: options.plans } : {}) });
  } catch (err) {
    // A start that failed half-way may have made the bridge and its rules: take them away too.
    const provider = new LocalProvider({
      dataDir: join(dir, 'provider'),
      tag,
      network,
      agentCommand: ['true'],
      binds: [],
      logger,
      clock: systemClock,
    });
    await provider.cleanup().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    dropLog();
    throw err;
  }
  const tp: TestPlatform = {
    platform,
    dir,
    tag,
    logs: () => readFileSync(logFile, 'utf8'),
    restart: async (between) => {
      await tp.platform.close();
      await between?.(config);
      tp.platform = await startPlatform({
        config,
        logger,
        clock: systemClock,
        secrets,
        ...(options.plans ? { plans: options.plans } : {}),
      });
    },
    stop: async () => {
      const platform = tp.platform;
      await platform.close();
      await platform.provider.cleanup();
      const left = await hostLeftovers(tag, join(dir, 'provider'));
      rmSync(dir, { recursive: true, force: true });
      dropLog();
      assert.deepEqual(left, [], 'nothing of the platform remains on the host');
    },
  };
  return tp;
}

/**
 * An admin's access token for a suite that outlives one (they last 10 minutes): issued by the
 * password grant, and again once it is within two minutes of expiring.
 */
export function tokenSource(tp: TestPlatform, username: string, password: string): () => Promise<string> {
  let current: { token: string; until: number } | undefined;
  return async () => {
    if (!current || Date.now() > current.until) {
      const t = await tp.platform.identity.token({ grant_type: 'password', username, password });
      current = { token: t.access_token, until: Date.now() + (t.expires_in - 120) * 1000 };
    }
    return current.token;
  };
}

export { https, type HttpResult } from './http.js';
export { awaitQuietHost, holdQuietHost } from '@anodyne/providers/testing';

/**
 * kubectl on a cluster with the admin kubeconfig the API hands out (`GET /v1/clusters/NAME/kubeconfig` with
 * `token`), written to `<tp.dir>/<cluster>.kubeconfig`: it answers stdout, and throws on a non-zero exit.
 */
export async function kubectlOf(tp: TestPlatform, token: () => Promise<string>, cluster: string): Promise<Kubectl> {
  const r = await https(tp.platform.url, tp.platform.caPem, 'GET', `/v1/clusters/${cluster}/kubeconfig`, { token: await token() });
  assert.equal(r.status, 200, r.text);
  const cfg = join(tp.dir, `${cluster}.kubeconfig`);
  writeFileSync(cfg, (r.body as { kubeconfig: string }).kubeconfig, { mode: 0o600 });
  return async (...args: string[]) => (await exec([tp.platform.releaseKubectl, '--kubeconfig', cfg, ...args])).stdout;
}

/**
 * Removes whatever the platform's local provider left on the host under `dataDir` and `tag` (VMs,
 * namespaces, bridges, rules): after a suite that ran `anodyne server` as its own process, whose
 * VMs keep running when it is killed.
 */
export async function removeProviderLeftovers(dataDir: string, tag: string, network: string): Promise<void> {
  await new LocalProvider({
    dataDir: join(dataDir, 'provider'),
    tag,
    network,
    agentCommand: ['true'],
    logger: silentLogger(),
    clock: systemClock,
  }).cleanup();
}
export { startServer, stopServer, startHaproxy, type ServerProcess, type Balancer } from './replicas.js';
