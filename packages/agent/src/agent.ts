// The agent inside each VM: its mutual-TLS HTTPS API for the director (apply, start, stop, restart a job, drain, state, logs, artifacts) and its vitals.
import { createServer, type Server } from 'node:https';
import { loadavg, cpus } from 'node:os';
import {
  createReadStream,
  createWriteStream,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { createSecureContext } from 'node:tls';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { InputError, toAnodyneError, type Clock, type Logger } from '@anodyne/common';
import { Supervisor, type AgentBundle, type ProcessStatus, type ScriptName } from './supervisor.js';

export interface Vitals {
  load: [number, number, number];
  cpus: number;
  /** Bytes charged to the VM's memory cgroup (or process RSS when there is none). */
  memoryBytes: number;
  memoryLimitBytes: number | null;
  disk: { path: string; usedPercent: number };
}

export interface AgentState {
  agentId: string;
  bundleHash: string | null;
  healthy: boolean;
  processes: ProcessStatus[];
  vitals: Vitals;
}

/** TLS material of the agent: its own certificate and the CA that signed the director's. */
export interface AgentTls {
  cert: string;
  key: string;
  ca: string;
}

export interface AgentOptions {
  agentId: string;
  root: string;
  /** host:port the agent listens on (the VM's IP). */
  listen: { host: string; port: number };
  tls: AgentTls;
  logger: Logger;
  clock: Clock;
}

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

export function vitals(diskPath = '/'): Vitals {
  const usage = readNumber('/sys/fs/cgroup/memory/memory.usage_in_bytes');
  const limit = readNumber('/sys/fs/cgroup/memory/memory.limit_in_bytes');
  let usedPercent = 0;
  try {
    const s = statfsSync(diskPath);
    usedPercent = Math.round((1 - s.bavail / s.blocks) * 1000) / 10;
  } catch {
    // no statfs: report 0
  }
  return {
    load: loadavg() as [number, number, number],
    cpus: cpus().length,
    memoryBytes: usage ?? process.memoryUsage().rss,
    memoryLimitBytes: limit !== null && limit < 2 ** 60 ? limit : null,
    disk: { path: diskPath, usedPercent },
  };
}

async function readBody(req: IncomingMessage, limit = 8 * 1024 * 1024): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new InputError('ANODYNE_E_INVALID_INPUT', 'request body too large');
    chunks.push(c as Buffer);
  }
  if (size === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new InputError('ANODYNE_E_INVALID_INPUT', 'request body is not JSON');
  }
}

/**
 * The agent inside each VM: serves the director over mutually authenticated TLS (apply,
 * start, stop, drain, run_script, state, logs). It pushes nothing: the director's health monitor
 * asks `GET /state` (process states and vitals) each pass (ADR 0008). It keeps no state the
 * director needs beyond the last applied bundle, so a director restart needs nothing from it.
 */
export class Agent {
  readonly supervisor: Supervisor;
  private server: Server | null = null;

  constructor(private readonly o: AgentOptions) {
    this.supervisor = new Supervisor({ root: o.root, logger: o.logger, clock: o.clock });
  }

  state(): AgentState {
    return {
      agentId: this.o.agentId,
      bundleHash: this.supervisor.currentBundle?.hash ?? null,
      healthy: this.supervisor.healthy(),
      processes: this.supervisor.status(),
      vitals: vitals(),
    };
  }

  /**
   * The state, at once or, with `wait_ms` (≤ 60,000), once it is worth a look: the bundle `bundle` (when
   * given) applied and every process ready, or a process exited and waiting to be restarted, or the time
   * is up. A director watching an update asks this way instead of polling (no probe-interval lag).
   */
  private async stateWhenSettled(query: URLSearchParams): Promise<AgentState> {
    const raw = query.get('wait_ms');
    if (raw === null) return this.state();
    const waitMs = Number(raw);
    if (!Number.isInteger(waitMs) || waitMs < 0 || waitMs > 60_000)
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'wait_ms is a whole number of milliseconds from 0 to 60000');
    const bundle = query.get('bundle');
    const deadline = this.o.clock.nowMs() + waitMs;
    for (;;) {
      const s = this.state();
      const settled = (s.healthy && (bundle === null || s.bundleHash === bundle)) || s.processes.some((p) => p.state === 'failing');
      const left = deadline - this.o.clock.nowMs();
      if (settled || left <= 0) return s;
      await this.supervisor.nextChange(left);
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    try {
      const path = req.url?.split('?')[0] ?? '';
      const route = `${req.method} ${path}`;
      if (path.startsWith('/artifacts')) return await this.artifacts(req, res, path);
      switch (route) {
        case 'GET /state':
          return send(200, await this.stateWhenSettled(new URLSearchParams(req.url?.split('?')[1] ?? '')));
        case 'POST /apply': {
          const bundle = (await readBody(req)) as AgentBundle;
          if (!bundle || !Array.isArray(bundle.jobs) || typeof bundle.hash !== 'string')
            throw new InputError('ANODYNE_E_INVALID_INPUT', 'apply needs a bundle with jobs and hash');
          this.supervisor.apply(bundle);
          return send(200, this.state());
        }
        case 'POST /start':
          await this.supervisor.runScript('pre_start');
          await this.supervisor.start();
          this.postStartWhenHealthy();
          return send(200, this.state());
        case 'POST /run_errand':
          return send(200, { results: await this.supervisor.runOnce() });
        case 'POST /stop': {
          const body = (await readBody(req)) as { immediate?: unknown };
          if (body.immediate !== undefined && typeof body.immediate !== 'boolean')
            throw new InputError('ANODYNE_E_INVALID_INPUT', 'immediate is true or false');
          await this.supervisor.stop({ immediate: body.immediate === true });
          return send(200, this.state());
        }
        case 'POST /drain':
          return send(200, { results: await this.supervisor.runScript('drain') });
        case 'POST /run_script': {
          const { name } = (await readBody(req)) as { name?: string };
          if (!name || !['drain', 'pre_start', 'post_start', 'backup', 'restore'].includes(name))
            throw new InputError('ANODYNE_E_INVALID_INPUT', 'unknown script');
          return send(200, { results: await this.supervisor.runScript(name as ScriptName) });
        }
        case 'POST /restart_job': {
          const { job } = (await readBody(req)) as { job?: string };
          if (typeof job !== 'string' || !(await this.supervisor.restartJob(job)))
            throw new InputError('ANODYNE_E_INVALID_INPUT', 'restart_job needs a job this instance runs');
          return send(200, this.state());
        }
        case 'PUT /tls': {
          this.renewTls((await readBody(req)) as AgentTls);
          return send(200, { renewed: true });
        }
        case 'GET /logs':
          return send(200, { logs: this.supervisor.logs() });
        default:
          return send(404, { code: 'ANODYNE_E_NOT_FOUND', message: `no route ${route}` });
      }
    } catch (err) {
      const e = toAnodyneError(err);
      send(e.kind === 'invalid_input' ? 400 : 500, e.toJSON());
    }
  }

  /**
   * Backup artifacts, streamed: `GET /artifacts/<job>/<file>` reads what a backup script wrote,
   * `PUT` places what a restore script reads, `DELETE /artifacts` removes them all.
   */
  private async artifacts(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (path === '/artifacts' && req.method === 'DELETE') {
      rmSync(join(this.o.root, 'artifacts'), { recursive: true, force: true });
      res.writeHead(204).end();
      return;
    }
    const m = /^\/artifacts\/([a-z0-9][a-z0-9_-]{0,62})\/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$/.exec(path);
    if (!m) throw new InputError('ANODYNE_E_INVALID_INPUT', 'an artifact is /artifacts/<job>/<file>');
    const dir = this.supervisor.artifactDir(m[1]!);
    const file = join(dir, m[2]!);
    if (req.method === 'GET') {
      let size: number;
      try {
        size = statSync(file).size;
      } catch {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'ANODYNE_E_NOT_FOUND', message: `no artifact ${m[1]}/${m[2]}` }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
      await pipeline(createReadStream(file), res);
      return;
    }
    if (req.method === 'PUT') {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.partial`;
      await pipeline(req, createWriteStream(tmp, { mode: 0o600 }));
      renameSync(tmp, file);
      res.writeHead(204).end();
      return;
    }
    throw new InputError('ANODYNE_E_INVALID_INPUT', `${req.method} is not a method of artifacts`);
  }

  /** Runs the jobs' post-start scripts once every process is running (BOSH's post-start). */
  private postStartWhenHealthy(): void {
    const bundle = this.supervisor.currentBundle;
    if (!bundle?.jobs.some((j) => j.scripts.post_start !== undefined)) return;
    const deadline = this.o.clock.nowMs() + 600_000;
    const check = (): void => {
      if (this.supervisor.currentBundle !== bundle || this.o.clock.nowMs() > deadline) return;
      if (!this.supervisor.healthy()) {
        setTimeout(check, 200).unref();
        return;
      }
      void this.supervisor.runScript('post_start').then(
        (r) => this.o.logger.info({ results: r.map((x) => ({ job: x.job, code: x.code })) }, 'post-start ran'),
        (err: unknown) => this.o.logger.warn({ err: (err as Error).message }, 'post-start failed'),
      );
    };
    check();
  }

  private get tlsFile(): string {
    return join(this.o.root, 'tls.json');
  }

  /**
   * Renewed TLS material from the director (its certificate about to expire): checked, used for
   * every new connection at once, and kept under the agent's root so that a restart uses it too.
   */
  private renewTls(t: AgentTls): void {
    if (!t || typeof t.cert !== 'string' || typeof t.key !== 'string' || typeof t.ca !== 'string')
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'renewing TLS needs cert, key and ca (PEM)');
    try {
      createSecureContext({ cert: t.cert, key: t.key, ca: t.ca });
    } catch (err) {
      throw new InputError('ANODYNE_E_INVALID_INPUT', `the TLS material is not usable: ${(err as Error).message}`);
    }
    mkdirSync(this.o.root, { recursive: true });
    writeFileSync(`${this.tlsFile}.tmp`, JSON.stringify({ cert: t.cert, key: t.key, ca: t.ca }), { mode: 0o600 });
    renameSync(`${this.tlsFile}.tmp`, this.tlsFile);
    this.server?.setSecureContext({ cert: t.cert, key: t.key, ca: t.ca });
    this.o.logger.info({}, 'TLS certificate renewed');
  }

  /** The TLS material to serve with: what the director last renewed, else what the VM was created with. */
  private currentTls(): AgentTls {
    try {
      const saved = JSON.parse(readFileSync(this.tlsFile, 'utf8')) as AgentTls;
      createSecureContext(saved);
      return saved;
    } catch {
      return this.o.tls;
    }
  }

  /** Starts serving and resumes the last applied bundle. */
  async listen(): Promise<{ port: number }> {
    if (this.supervisor.loadSavedBundle()) await this.supervisor.start();
    const tls = this.currentTls();
    this.server = createServer(
      { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true },
      (req, res) => void this.handle(req, res),
    );
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.o.listen.port, this.o.listen.host, () => resolve());
    });
    const addr = this.server.address();
    return { port: typeof addr === 'object' && addr ? addr.port : this.o.listen.port };
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    await this.supervisor.stop();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
