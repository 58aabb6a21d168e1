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
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  /** Certificates that expire within this many days are renewed. */
  days: number;
  platform: PlatformCertificate[];
}

export interface RenewalReport {
  /** Certificates in use that expire within the window, as found at the start of the pass. */
  expiring: { name: string; expires_at: string }[];
  /** Rolling tasks started: new leaves (`leaves`) or a CA rotation (`ca`). */
  started: { cluster: string; kind: 'leaves' | 'ca'; task: number }[];
  /** Clusters left for the next pass (a task is changing them), and why. */
  skipped: { cluster: string; reason: string }[];
  /** Platform certificates renewed in place. */
  platform: string[];
  /** Expiring certificates this pass cannot renew (the platform's CAs, agents' certificates): alerted only. */
  unhandled: string[];
}

const CLUSTER_PREFIX = /^\/deployments\/cluster-([^/]+)\//;

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
    const expiring = await this.o.creds.findExpiring(this.o.days);
    const report: RenewalReport = {
      expiring: expiring.map((e) => ({ name: e.name, expires_at: e.expires_at })),
      started: [],
      skipped: [],
      platform: [],
      unhandled: [],
    };
    for (const e of expiring) await this.alert(e);
    const byCluster = new Map<string, ExpiringCertificate[]>();
    for (const e of expiring) {
      const m = CLUSTER_PREFIX.exec(e.name);
      if (m) byCluster.set(m[1]!, [...(byCluster.get(m[1]!) ?? []), e]);
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
