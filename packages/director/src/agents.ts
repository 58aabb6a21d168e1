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
  call(row: AgentAddress, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs?: number): Promise<unknown>;
}

/** What an agent reports about itself (`GET /state`). */
export interface AgentStateView {
  healthy: boolean;
  bundleHash: string | null;
  processes: { job: string; name: string; state: string; pid: number | null; restarts: number }[];
}

/** Asks an instance's agent for its state. */
export async function readAgentState(agents: AgentClient, row: AgentAddress, timeoutMs = 5000): Promise<AgentStateView> {
  return (await agents.call(row, 'GET', '/state', undefined, timeoutMs)) as AgentStateView;
}

/** The agent API over mutual TLS; the agent proves it is `agent_id` (certificate CN). */
export class TlsAgentClient implements AgentClient {
  constructor(
    private readonly tls: AgentTlsIssuer,
    private readonly port: number,
  ) {}

  async call(row: AgentAddress, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 30_000): Promise<unknown> {
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
          headers: { 'content-type': 'application/json' },
          timeout: timeoutMs,
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => {
            const status = res.statusCode ?? 500;
            const failed = `agent ${row.agent_id} ${method} ${path}: ${status} ${text.slice(0, 300)}`;
            if (status >= 300) reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', failed));
            else resolve(text ? (JSON.parse(text) as unknown) : null);
          });
        },
      );
      req.on('error', (e) => {
        reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', `agent ${row.agent_id} unreachable: ${e.message}`, { cause: e }));
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }
}
