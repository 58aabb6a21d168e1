// How the director reaches agents: their mutual-TLS PKI, the agent API client and a state read.
import { request } from 'node:https';
import { AnodyneError } from '@anodyne/common';

export interface TlsMaterial {
  cert: string;
  key: string;
  ca: string;
}

/** Per-VM agent credentials, issued at VM creation, and the director's own client identity. */
export interface AgentTlsIssuer {
  agentTls(agentId: string): Promise<TlsMaterial>;
  directorTls(): Promise<TlsMaterial>;
}

/** Generates (or returns the current) certificate `name` with `options` (the credential store's certificate type). */
export type CertificateSource = (
  name: string,
  options: Record<string, unknown>,
) => Promise<{ certificate: string; private_key: string; ca: string }>;

/**
 * The director's agent PKI over a certificate source: one CA (`/director/agent-ca`), one
 * certificate per agent (CN and SAN = agent id), one client certificate for the director.
 */
export function agentTlsIssuer(generate: CertificateSource): AgentTlsIssuer {
  const ca = () => generate('/director/agent-ca', { is_ca: true, common_name: 'anodyne-agent-ca', key_algorithm: 'ecdsa', duration: 3650 });
  const issue = async (name: string, options: Record<string, unknown>): Promise<TlsMaterial> => {
    await ca();
    const c = await generate(name, { ca: '/director/agent-ca', key_algorithm: 'ecdsa', ...options });
    return { cert: c.certificate, key: c.private_key, ca: c.ca };
  };
  return {
    agentTls: (agentId) =>
      issue(`/director/agents/${agentId}`, {
        common_name: agentId,
        alternative_names: [agentId],
        extended_key_usage: ['server_auth', 'client_auth'],
      }),
    directorTls: () => issue('/director/client', { common_name: 'anodyne-director', extended_key_usage: ['client_auth'] }),
  };
}

/** Where an instance's agent is: its address and the identity its certificate must prove. */
export interface AgentAddress {
  ip: string | null;
  agent_id: string;
}

/**
 * How the director talks to agents. The real one is HTTPS with mutual TLS to the agent in the
 * VM; tests of the director's logic on the fake provider (which runs no agent) pass an
 * in-memory fleet instead. Failures are AnodyneErrors with ANODYNE_E_UNAVAILABLE.
 */
export interface AgentClient {
  call(row: AgentAddress, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown, timeoutMs?: number): Promise<unknown>;
  /** Bytes to or from the agent (artifacts); absent where agents keep no files (the fake agents). */
  transfer?(row: AgentAddress, method: 'GET' | 'PUT' | 'DELETE', path: string, body?: Buffer, timeoutMs?: number): Promise<Buffer>;
}

/** What an agent reports about itself (`GET /state`). */
export interface AgentStateView {
  healthy: boolean;
  bundleHash: string | null;
  processes: {
    job: string;
    name: string;
    state: string;
    pid: number | null;
    restarts: number;
    lastExit?: { code: number | null; signal: string | null } | null;
  }[];
  /** What the agent measures of its VM (older agents may not say). */
  vitals?: AgentVitals;
}

/** An agent's vitals: load averages, memory charged to the VM, the root disk's use. */
export interface AgentVitals {
  load?: [number, number, number];
  memoryBytes?: number;
  memoryLimitBytes?: number | null;
  disk?: { path: string; usedPercent: number };
}

/** Asks an instance's agent for its state. */
export async function readAgentState(
  agents: AgentClient,
  row: AgentAddress,
  timeoutMs = 5000,
  wait?: { waitMs: number; bundle?: string },
): Promise<AgentStateView> {
  // With `wait`, the agent answers once that bundle is healthy, a process is failing, or waitMs passed.
  const query = wait ? `?wait_ms=${wait.waitMs}${wait.bundle ? `&bundle=${encodeURIComponent(wait.bundle)}` : ''}` : '';
  return (await agents.call(row, 'GET', `/state${query}`, undefined, timeoutMs)) as AgentStateView;
}

/** The agent API over mutual TLS; the agent proves it is `agent_id` (certificate CN). */
export class TlsAgentClient implements AgentClient {
  constructor(
    private readonly tls: AgentTlsIssuer,
    private readonly port: number,
  ) {}

  async call(row: AgentAddress, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown, timeoutMs = 30_000): Promise<unknown> {
    const text = (
      await this.raw(row, method, path, body === undefined ? undefined : Buffer.from(JSON.stringify(body)), 'application/json', timeoutMs)
    ).toString('utf8');
    return text ? (JSON.parse(text) as unknown) : null;
  }

  transfer(row: AgentAddress, method: 'GET' | 'PUT' | 'DELETE', path: string, body?: Buffer, timeoutMs = 600_000): Promise<Buffer> {
    return this.raw(row, method, path, body, 'application/octet-stream', timeoutMs);
  }

  private async raw(
    row: AgentAddress,
    method: string,
    path: string,
    body: Buffer | undefined,
    type: string,
    timeoutMs: number,
  ): Promise<Buffer> {
    try {
      return await this.once(row, method, path, body, type, timeoutMs);
    } catch (err) {
      // A kept-alive connection the agent closed as it idled out, just as this request went on it: the agent read
      // nothing of it (Node's documented race; seen as "socket hang up" on a loaded machine). Asked once more.
      if (!(err instanceof AnodyneError) || !(err.cause as { reusedSocketReset?: boolean } | undefined)?.reusedSocketReset) throw err;
      return this.once(row, method, path, body, type, timeoutMs);
    }
  }

  private async once(
    row: AgentAddress,
    method: string,
    path: string,
    body: Buffer | undefined,
    type: string,
    timeoutMs: number,
  ): Promise<Buffer> {
    if (!row.ip) throw new AnodyneError('ANODYNE_E_UNAVAILABLE', `instance ${row.agent_id} has no address`);
    const tls = await this.tls.directorTls();
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: row.ip!,
          port: this.port,
          path,
          method,
          cert: tls.cert,
          key: tls.key,
          ca: tls.ca,
          servername: row.agent_id,
          checkServerIdentity: (_host, cert) =>
            cert.subject.CN === row.agent_id
              ? undefined
              : new Error(`agent certificate is for ${String(cert.subject.CN)}, expected ${row.agent_id}`),
          headers: { 'content-type': type, ...(body ? { 'content-length': body.length } : {}) },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const status = res.statusCode ?? 500;
            const all = Buffer.concat(chunks);
            const failed = `agent ${row.agent_id} ${method} ${path}: ${status} ${all.subarray(0, 300).toString('utf8')}`;
            if (status >= 300) reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', failed));
            else resolve(all);
          });
          res.on('error', reject);
        },
      );
      req.on('error', (e) => {
        const reset = req.reusedSocket && (e as NodeJS.ErrnoException).code === 'ECONNRESET';
        reject(
          new AnodyneError('ANODYNE_E_UNAVAILABLE', `agent ${row.agent_id} unreachable: ${e.message}`, {
            cause: reset ? Object.assign(e, { reusedSocketReset: true }) : e,
          }),
        );
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.end(body);
    });
  }
}

/** Script results as the agent reports them: each job's exit code and the tail of its output. */
export interface ScriptResult {
  job: string;
  code: number;
  output: string;
}

/**
 * One instance's agent, for use cases that take their own steps inside a task of theirs (a backup
 * reads an artifact, a restore stops masters, places a snapshot and runs restore scripts).
 */
export class InstanceAgent {
  constructor(
    private readonly client: AgentClient,
    readonly row: AgentAddress,
  ) {}

  state(timeoutMs = 5000): Promise<AgentStateView> {
    return readAgentState(this.client, this.row, timeoutMs);
  }

  /** Stops every process; `immediate`: all at once with SIGKILL, no graceful shutdown (an etcd restore). */
  async stop(options: { immediate?: boolean } = {}): Promise<void> {
    await this.client.call(this.row, 'POST', '/stop', options.immediate ? { immediate: true } : undefined, 120_000);
  }

  async start(): Promise<void> {
    await this.client.call(this.row, 'POST', '/start', undefined, 600_000);
  }

  /** Restarts the processes of one job (the others keep running). */
  async restartJob(job: string): Promise<void> {
    await this.client.call(this.row, 'POST', '/restart_job', { job }, 120_000);
  }

  /** Runs a lifecycle script of every job that has it; fails when one exits non-zero. */
  async runScript(name: 'backup' | 'restore', timeoutMs = 600_000): Promise<ScriptResult[]> {
    const { results } = (await this.client.call(this.row, 'POST', '/run_script', { name }, timeoutMs)) as { results: ScriptResult[] };
    const bad = results.find((r) => r.code !== 0);
    if (bad) {
      throw new AnodyneError(
        'ANODYNE_E_INTERNAL',
        `the ${name} script of ${bad.job} on ${this.row.agent_id} exited with ${bad.code}: ${bad.output.slice(-400)}`,
        {
          details: { job: bad.job, code: bad.code },
        },
      );
    }
    return results;
  }

  download(job: string, file: string): Promise<Buffer> {
    return this.files().transfer!(this.row, 'GET', `/artifacts/${job}/${file}`);
  }

  async upload(job: string, file: string, data: Buffer): Promise<void> {
    await this.files().transfer!(this.row, 'PUT', `/artifacts/${job}/${file}`, data);
  }

  async clearArtifacts(): Promise<void> {
    await this.files().transfer!(this.row, 'DELETE', '/artifacts', undefined, 30_000);
  }

  private files(): AgentClient {
    if (!this.client.transfer) throw new AnodyneError('ANODYNE_E_INTERNAL', 'these agents keep no artifacts');
    return this.client;
  }
}
