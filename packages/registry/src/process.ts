// The registry server (CNCF Distribution, Debian's docker-registry) as a supervised child of the platform.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PreconditionError, UnavailableError, exec, type Logger } from '@anodyne/common';

export interface RegistryProcessOptions {
  /** Where the registry keeps its data, configuration and socket. */
  dir: string;
  /** The token realm (the platform's token endpoint), service and issuer the registry checks tokens against. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM of the CA that signs the token certificates (the platform CA). */
  tokenRootPem: string;
  logger: Logger;
  /** The program (default: docker-registry on PATH). */
  program?: string;
}

/** What `garbage-collect` freed. */
export interface GcReport {
  bytesBefore: number;
  bytesAfter: number;
  blobsDeleted: number;
}

/**
 * Runs the registry on a unix socket (only the platform's front server reaches it), with its
 * storage under `dir/data`, token authentication and deletes enabled; restarts it when it exits.
 */
export class RegistryProcess {
  private child: ChildProcess | undefined;
  private stopping = false;
  /** Set by close(): nothing starts the registry again. */
  private closed = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  /** The last lines the registry wrote to stderr (its errors). */
  private tail = '';
  readonly socket: string;
  readonly configFile: string;
  readonly dataDir: string;

  constructor(private readonly o: RegistryProcessOptions) {
    this.socket = join(o.dir, 'registry.sock');
    this.configFile = join(o.dir, 'config.yml');
    this.dataDir = join(o.dir, 'data');
    if (Buffer.byteLength(this.socket) > 100)
      throw new PreconditionError('ANODYNE_E_CONFIG_INVALID', `the registry's socket path is too long for a unix socket: ${this.socket}`);
  }

  private writeConfig(): void {
    mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(this.o.dir, 'token-root.pem'), this.o.tokenRootPem, { mode: 0o644 });
    // JSON is YAML: no quoting rules to get wrong.
    const config = {
      version: 0.1,
      log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: this.dataDir },
        delete: { enabled: true },
        cache: { blobdescriptor: 'inmemory' },
        maintenance: { uploadpurging: { enabled: true, age: '24h', interval: '1h', dryrun: false } },
      },
      http: {
        net: 'unix',
        addr: this.socket,
        // Signs upload state between requests; a new one at each start only ends uploads in flight.
        secret: randomBytes(24).toString('hex'),
        relativeurls: true,
        headers: { 'X-Content-Type-Options': ['nosniff'] },
      },
      auth: {
        token: {
          realm: this.o.realm,
          service: this.o.service,
          issuer: this.o.issuer,
          rootcertbundle: join(this.o.dir, 'token-root.pem'),
        },
      },
    };
    writeFileSync(this.configFile, JSON.stringify(config, null, 2), { mode: 0o600 });
  }

  /** Starts the registry and waits until it answers on its socket (not after `close`). */
  async start(): Promise<void> {
    if (this.closed) return;
    const program = this.o.program ?? 'docker-registry';
    this.stopping = false;
    this.tail = '';
    this.writeConfig();
    rmSync(this.socket, { force: true });
    const exits = this.restarts;
    this.spawnChild(program);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (await this.answers()) return;
      if (this.restarts > exits) break; // it exited: say why now
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.stop();
    const lines = this.tail.trim().split('\n');
    const said = (lines.find((l) => /panic:|fatal|level=error/i.test(l)) ?? lines[lines.length - 1] ?? '').trim().slice(0, 300);
    throw new UnavailableError(
      'ANODYNE_E_REGISTRY_UNAVAILABLE',
      `the image registry (${program}) did not start${said ? `: ${said}` : ' within 15 s'}`,
    );
  }

  private spawnChild(program: string): void {
    // It dies with the platform (a kill -9 of the server included): no registry outlives its front.
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', program, 'serve', this.configFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    child.stderr?.on('data', (c: Buffer) => (this.tail = (this.tail + c.toString()).slice(-2000)));
    child.on('error', (err) => this.o.logger.error({ err: err.message }, 'the image registry could not be started'));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (this.stopping) return;
      this.restarts++;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(this.restarts, 6));
      this.o.logger.warn(
        { code, signal, restarts: this.restarts, delayMs: delay, stderr: this.tail.slice(-500) },
        'the image registry exited; restarting',
      );
      this.restartTimer = setTimeout(() => {
        if (!this.stopping) this.spawnChild(program);
      }, delay);
      this.restartTimer.unref();
    });
  }

  /** Whether the registry answers its base endpoint (401 without a token is an answer). */
  answers(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = request({ socketPath: this.socket, path: '/v2/', method: 'GET', timeout: 2000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 401 || res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /**
   * Stops the registry for good: a garbage collection still running does not start it again
   * afterwards (it did once, leaving a registry whose platform had stopped).
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
    this.child = undefined;
  }

  /** Removes blobs no manifest refers to: the registry is stopped meanwhile (its own tool requires it), then started again. */
  async collectGarbage(): Promise<GcReport> {
    const bytesBefore = treeBytes(this.dataDir);
    const program = this.o.program ?? 'docker-registry';
    await this.stop();
    let out: string;
    try {
      out = (await exec([program, 'garbage-collect', this.configFile], { timeoutMs: 600_000 })).stdout;
    } finally {
      // Not when the platform closed meanwhile (start() is a no-op then).
      await this.start();
    }
    return { bytesBefore, bytesAfter: treeBytes(this.dataDir), blobsDeleted: (out.match(/blob eligible for deletion/g) ?? []).length };
  }

  /** Bytes on disk under the registry's storage. */
  storedBytes(): number {
    return treeBytes(this.dataDir);
  }
}

function treeBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += treeBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}
