// The platform's image registry, composed: the registry process, its front server, tokens and use cases.
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { ConflictError, type Clock, type Logger, type PlatformConfig } from '@anodyne/common';
import type { AuditLog, Store } from '@anodyne/store';
import type { CredStore } from '@anodyne/credstore';
import type { Principal } from '@anodyne/identity';
import { pushImage, readImageArchive } from '@anodyne/client/node';
import { RegistryFront, RegistryProcess, RegistryService, RegistryTokenSigner, socketUpstream, type GcReport } from '@anodyne/registry';

export const REGISTRY_SERVICE = 'anodyne-registry';
const TOKEN_ISSUER = 'anodyne-registry-token';

export interface PlatformRegistry {
  service: RegistryService;
  /** `host:port` images are named by. */
  address: string;
  /** The token endpoint (on the API). */
  realm: string;
  signer: RegistryTokenSigner;
  process: RegistryProcess;
  front: RegistryFront;
  /** Garbage collection as a task body (the front answers 503 meanwhile). */
  collectGarbage(): Promise<GcReport>;
  /** Pushes the release's images into the public `library` project (those not there yet). */
  pushReleaseImages(releaseDir: string): Promise<string[]>;
  close(): Promise<void>;
}

export interface RegistryDeps {
  config: PlatformConfig;
  host: string;
  apiUrl: string;
  caPem: string;
  serving: { certificate: string; private_key: string };
  creds: CredStore;
  store: Store;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  /** Runs garbage collection (`work`) as a task owned by `owner`; answers the task. */
  collector: (owner: string, work: () => Promise<GcReport>) => Promise<unknown>;
  /** How the token endpoint's callers are checked (clusters are made after the registry's address is known: asked lazily). */
  callers: {
    bearer(token: string): Promise<Principal>;
    password(username: string, password: string): Promise<{ username: string; groups: string[] }>;
    client(clientId: string, secret: string): Promise<{ scopes: string[] } | undefined>;
    cluster(name: string, password: string): Promise<string | undefined>;
  };
}

/** Starts the registry (on its socket) and its HTTPS front (on the API's address); the address is known once it listens. */
export async function startRegistry(d: RegistryDeps): Promise<PlatformRegistry> {
  const rc = d.config.registry;
  const tokenCert = (
    await d.creds.generate(
      '/platform/registry-token',
      'certificate',
      { ca: '/platform/ca', common_name: TOKEN_ISSUER, key_algorithm: 'ecdsa', duration: 365 },
      { actor: 'platform' },
    )
  ).value;
  const signer = new RegistryTokenSigner(tokenCert, {
    issuer: TOKEN_ISSUER,
    service: REGISTRY_SERVICE,
    clock: d.clock,
    ttlSeconds: rc.tokenSeconds,
  });
  const realm = `${d.apiUrl}/v1/registry/token`;
  const proc = new RegistryProcess({
    dir: join(d.config.dataDir, 'registry'),
    realm,
    service: REGISTRY_SERVICE,
    issuer: TOKEN_ISSUER,
    tokenRootPem: d.caPem,
    logger: d.logger,
  });
  let collecting = false;
  let queued = false;
  await proc.start();
  const front = new RegistryFront({
    socket: proc.socket,
    tls: { cert: d.serving.certificate, key: d.serving.private_key },
    logger: d.logger,
    available: () => !collecting,
  });
  try {
    await front.listen(d.host, rc.port);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  const address = `${d.host}:${(front.server.address() as AddressInfo).port}`;
  const service = new RegistryService({
    store: d.store,
    audit: d.audit,
    clock: d.clock,
    logger: d.logger,
    signer,
    address,
    defaultQuotaBytes: rc.projectQuotaBytes > 0 ? rc.projectQuotaBytes : null,
    callers: d.callers,
    upstream: socketUpstream(proc.socket, signer),
    // One collection at a time: it stops and starts the registry.
    collector: async (owner) => {
      if (queued) throw new ConflictError('ANODYNE_E_CONFLICT', 'a garbage collection of the registry is already running');
      queued = true;
      try {
        return await d.collector(owner, () => collectGarbage().finally(() => (queued = false)));
      } catch (err) {
        queued = false;
        throw err;
      }
    },
  });
  front.serve(service);
  d.logger.info({ address }, 'image registry listening');
  async function collectGarbage(): Promise<GcReport> {
    collecting = true;
    try {
      return await proc.collectGarbage();
    } finally {
      collecting = false;
    }
  }
  return {
    service,
    address,
    realm,
    signer,
    process: proc,
    front,
    collectGarbage,
    pushReleaseImages: async (releaseDir) => {
      await service.ensureProject('library', null, true);
      const pushed: string[] = [];
      const dir = join(releaseDir, 'images');
      for (const file of readdirSync(dir).filter((f) => f.endsWith('.tar'))) {
        const archive = readImageArchive(readFileSync(join(dir, file)));
        const repository = `library/${basename(file, '.tar')}`;
        const tag = archive.images[0]?.ref ?? 'latest';
        if (await service.hasTag(repository, tag)) continue;
        const { token } = signer.sign('anodyne-platform', [{ type: 'repository', name: repository, actions: ['pull', 'push'] }]);
        await pushImage({ registry: `https://${address}`, caPem: d.caPem, repository, tag, archive, token });
        pushed.push(`${repository}:${tag}`);
      }
      return pushed;
    },
    close: async () => {
      await front.close();
      await proc.close();
    },
  };
}
