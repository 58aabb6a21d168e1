// Repair use cases: the cloud check of every cluster or one, as an admin's task, findings named by cluster.
import {
  checkChoices,
  type CloudCheck,
  type CloudCheckReport,
  type CloudFinding,
  type Director,
  type Resolution,
  type Task,
} from '@anodyne/director';
import { InputError, UnavailableError } from '@anodyne/common';
import { access, type Actor } from './access.js';
import { deploymentName } from './cluster.js';
import type { ClusterRecords } from './records.js';

export interface CloudCheckRequest {
  /** Only this cluster (and orphans labelled with it); every deployment when absent. */
  cluster?: string;
  /** Resolve every finding with its first resolution. */
  auto?: boolean;
  /** Resolve these findings (by id) with these resolutions; the rest are only reported. */
  resolutions?: Record<string, Resolution>;
}

/** A finding as users see it: the cluster its deployment is, when it is one. */
export type ClusterFinding = CloudFinding & { cluster: string | null };

export type ClusterCloudCheckReport = Omit<CloudCheckReport, 'findings' | 'scope'> & {
  cluster: string | null;
  findings: ClusterFinding[];
};

const clusterOf = (deployment: string | null): string | null =>
  deployment?.startsWith('cluster-') ? deployment.slice('cluster-'.length) : null;

export class ClusterRepair {
  constructor(
    private readonly o: {
      director: Director;
      records: ClusterRecords;
      check: CloudCheck | undefined;
    },
  ) {}

  /**
   * Starts a cloud check (admins): a task whose result lists the findings, each with its
   * resolutions, and what was done about those chosen (or all, with `auto`). Bad choices and an
   * unknown cluster are refused before the task exists.
   */
  async cloudCheck(a: Actor, req: CloudCheckRequest): Promise<Task> {
    access.assertAdmin(a, 'the cloud check');
    const check = this.o.check;
    if (!check) throw new UnavailableError('ANODYNE_E_UNAVAILABLE', 'this platform has no cloud check (no provider to compare with)');
    if (req.auto && req.resolutions) throw new InputError('ANODYNE_E_INVALID_INPUT', 'choose auto or resolutions, not both');
    if (req.resolutions) checkChoices(req.resolutions);
    if (req.cluster !== undefined) await this.o.records.row(req.cluster);
    const deployment = req.cluster !== undefined ? deploymentName(req.cluster) : undefined;
    const choices = req.auto ? ({ auto: true } as const) : req.resolutions ? { resolutions: req.resolutions } : null;
    const what = req.cluster ?? 'every cluster';
    const mode = req.auto ? ', resolving automatically' : req.resolutions ? `, resolving ${Object.keys(req.resolutions).length}` : '';
    return this.o.director.runTask('cloud_check', `cloud check of ${what}${mode}`, a.name, async (_signal, sink) => {
      const report = await check.run(a.name, deployment, choices, sink);
      const out: ClusterCloudCheckReport = {
        cluster: req.cluster ?? null,
        findings: report.findings.map((f) => ({ ...f, cluster: clusterOf(f.deployment) })),
        skipped: report.skipped,
        actions: report.actions,
      };
      return out;
    });
  }
}
