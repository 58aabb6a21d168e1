// Automatic certificate renewal: a scheduled pass renews every certificate in use that expires soon, clusters' with a rolling update.
import { ConflictError, NotFoundError, type Clock, type Logger } from '@anodyne/common';
import type { CredStore, ExpiringCertificate } from '@anodyne/credstore';
import type { AuditLog } from '@anodyne/store';
import type { ClusterService } from '@anodyne/clusters';

/** A certificate of the platform itself that can be renewed in place. */
export interface PlatformCertificate {
  name: string;
  /** Puts the renewed certificate to use (the API's TLS context); absent: readers fetch it from the store on each use. */
  reload?: (c: { certificate: string; private_key: string }) => void;
}

export interface RenewalOptions {
  creds: CredStore;
  clusters: ClusterService;
  /** Hands an agent its renewed certificate (false: no instance has that agent any more). */
  agents: {
    renewAgentTls(agentId: string, tls: { cert: string; key: string; ca: string }): Promise<boolean>;
    hasAgent(agentId: string): Promise<boolean>;
  };
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  /** Certificates that expire within this many days are renewed. */
  days: number;
  platform: PlatformCertificate[];
}

export interface RenewalReport {
  /** Certificates in use that are due (within the window, or the last third of a shorter life), as found at the start of the pass. */
  expiring: { name: string; expires_at: string }[];
  /** Rolling tasks started: new leaves (`leaves`) or a CA rotation (`ca`). */
  started: { cluster: string; kind: 'leaves' | 'ca'; task: number }[];
  /** Clusters left for the next pass (a task is changing them), and why. */
  skipped: { cluster: string; reason: string }[];
  /** Platform certificates renewed in place. */
  platform: string[];
  /** Agents that were handed a renewed certificate. */
  agents: string[];
  /** Expiring certificates this pass cannot renew (the platform's and the agents' CAs): alerted only. */
  unhandled: string[];
}

/**
 * Whether the pass renews a certificate now: it expires within the window, and, for one that lives
 * less than three windows, it is in the last third of its life (else a certificate issued for less
 * than the window would be renewed by every pass).
 */
export function isDue(e: { expires_at: string; created_at: string }, nowMs: number, days: number): boolean {
  const end = Date.parse(e.expires_at);
  return end - nowMs <= Math.min(days * 86_400_000, (end - Date.parse(e.created_at)) / 3);
}

const CLUSTER_PREFIX = /^\/deployments\/cluster-([^/]+)\//;
const AGENT_PREFIX = /^\/director\/agents\/([^/]+)$/;

/**
 * The renewal pass. Each expiring certificate is alerted (`alert.certificate_expiring`, once per
 * version) and renewed the way its kind allows: a cluster's leaves are issued again and rolled out
 * (the same task as `rotate-certificates`), a cluster CA through a CA rotation (no downtime), the
 * platform's API and director certificates in place. A cluster a task is changing is left for the
 * next pass.
 */
export class CertificateRenewal {
  private readonly alerted = new Set<string>();

  constructor(private readonly o: RenewalOptions) {}

  async pass(): Promise<RenewalReport> {
    await this.forgetGoneAgents();
    const now = this.o.clock.nowMs();
    const expiring = (await this.o.creds.findExpiring(this.o.days)).filter((e) => isDue(e, now, this.o.days));
    const report: RenewalReport = {
      expiring: expiring.map((e) => ({ name: e.name, expires_at: e.expires_at })),
      started: [],
      skipped: [],
      platform: [],
      agents: [],
      unhandled: [],
    };
    for (const e of expiring) await this.alert(e);
    const byCluster = new Map<string, ExpiringCertificate[]>();
    for (const e of expiring) {
      const m = CLUSTER_PREFIX.exec(e.name);
      const agent = AGENT_PREFIX.exec(e.name);
      if (m) byCluster.set(m[1]!, [...(byCluster.get(m[1]!) ?? []), e]);
      else if (agent) await this.renewAgent(agent[1]!, e, report);
      else if (this.o.platform.some((p) => p.name === e.name)) await this.renewPlatform(e, report);
      else report.unhandled.push(e.name);
    }
    for (const [cluster, certs] of byCluster) {
      // A CA in the middle of a rotation has a transitional version: the rotation in progress replaces it.
      const kind = certs.some((c) => c.is_ca && !c.transitional) ? 'ca' : 'leaves';
      try {
        const view =
          kind === 'ca'
            ? await this.o.clusters.lifecycle.rotateCas(cluster, 'certificate-renewal')
            : await this.o.clusters.lifecycle.redeploy(cluster, { kind: 'rotate-certificates' }, 'certificate-renewal');
        report.started.push({ cluster, kind, task: view.last_task_id! });
        await this.o.audit.record({
          actor: 'certificate-renewal',
          action: kind === 'ca' ? 'cluster.rotate_ca' : 'cluster.rotate_certificates',
          target: cluster,
          result: 'ok',
          details: { task: view.last_task_id, expiring: certs.map((c) => c.name) },
        });
      } catch (err) {
        if (!(err instanceof ConflictError) && !(err instanceof NotFoundError)) throw err;
        report.skipped.push({ cluster, reason: err.message });
      }
    }
    if (report.expiring.length > 0) this.o.logger.info(report, 'certificate renewal pass');
    return report;
  }

  private async renewPlatform(e: ExpiringCertificate, report: RenewalReport): Promise<void> {
    const renewed = await this.o.creds.regenerate(e.name, { actor: 'certificate-renewal' });
    const value = renewed.value as { certificate: string; private_key: string };
    this.o.platform.find((p) => p.name === e.name)?.reload?.(value);
    report.platform.push(e.name);
    await this.o.audit.record({
      actor: 'certificate-renewal',
      action: 'credential.renew',
      target: e.name,
      result: 'ok',
      details: { version: renewed.version, expires_at: renewed.expires_at },
    });
  }

  /**
   * Every VM's agent gets a certificate of its own; once no instance has that agent (its VM was
   * deleted or recreated) the certificate is removed, so that it is neither renewed nor shown.
   * Only certificates older than an hour: a VM being created has its certificate before its instance names it.
   */
  private async forgetGoneAgents(): Promise<void> {
    const hourAgo = new Date(this.o.clock.nowMs() - 3_600_000).toISOString();
    for (const c of await this.o.creds.list('/director/agents/')) {
      const id = AGENT_PREFIX.exec(c.name)?.[1];
      if (!id || c.created_at > hourAgo || (await this.o.agents.hasAgent(id))) continue;
      await this.o.creds.delete(c.name, { actor: 'certificate-renewal' });
    }
  }

  /** An agent's serving certificate: issued again and handed to the agent over its (still valid) TLS. */
  private async renewAgent(agentId: string, e: ExpiringCertificate, report: RenewalReport): Promise<void> {
    const renewed = await this.o.creds.regenerate(e.name, { actor: 'certificate-renewal' });
    const v = renewed.value as { certificate: string; private_key: string; ca: string };
    try {
      const handed = await this.o.agents.renewAgentTls(agentId, { cert: v.certificate, key: v.private_key, ca: v.ca });
      if (handed) report.agents.push(agentId);
      await this.o.audit.record({
        actor: 'certificate-renewal',
        action: 'credential.renew',
        target: e.name,
        result: 'ok',
        details: { version: renewed.version, expires_at: renewed.expires_at, agent: handed ? 'renewed' : 'no instance' },
      });
    } catch (err) {
      // The store has the new certificate, the agent still serves the old one: said as an alert; a
      // repave (or the resurrector, once the old one has expired and the agent is unreachable) fixes it.
      this.o.logger.warn({ agent: agentId, err: (err as Error).message }, 'an agent did not take its renewed certificate');
      await this.o.audit.record({
        actor: 'certificate-renewal',
        action: 'alert.agent_certificate_not_renewed',
        target: e.name,
        result: 'error',
        details: { version: renewed.version, error: (err as Error).message.slice(0, 200) },
      });
    }
  }

  private async alert(e: ExpiringCertificate): Promise<void> {
    if (this.alerted.has(e.id)) return;
    this.alerted.add(e.id);
    const days = (Date.parse(e.expires_at) - this.o.clock.nowMs()) / 86_400_000;
    await this.o.audit.record({
      actor: 'certificate-renewal',
      action: 'alert.certificate_expiring',
      target: e.name,
      result: 'ok',
      details: { expires_at: e.expires_at, days_left: Math.round(days * 10) / 10, version: e.version, is_ca: e.is_ca },
    });
  }
}
