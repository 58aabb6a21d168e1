// Cloud check (BOSH's cck): what the store says against what the provider and the agents hold, each finding with its resolutions.
import { AnodyneError, InputError, type Clock, type Logger } from '@anodyne/common';
import type { DiskInfo, Provider, VmInfo } from '@anodyne/providers';
import { storeQuery, type Store } from '@anodyne/store';
import type { Director } from './director.js';
import { InstanceRepository, type InstanceRow } from './instances.js';
import { loadBalancerId } from './phases.js';
import type { EventSink } from './updater.js';

export const FINDING_TYPES = [
  'unresponsive_agent',
  'missing_vm',
  'missing_disk',
  'detached_disk',
  'bundle_mismatch',
  'orphan_vm',
  'orphan_disk',
  'orphan_load_balancer',
] as const;
export type FindingType = (typeof FINDING_TYPES)[number];

export const RESOLUTIONS = [
  'ignore',
  'reboot_vm',
  'recreate_vm',
  'delete_vm_reference',
  'reattach_disk',
  'delete_disk_reference',
  'delete_vm',
  'delete_disk',
  'delete_load_balancer',
] as const;
export type Resolution = (typeof RESOLUTIONS)[number];

/**
 * What each kind of finding may be resolved with; the first is what `--auto` does. Instances are
 * repaired in place (reboot, reattach) before they are replaced; orphans are deleted.
 */
export const RESOLUTIONS_OF: Record<FindingType, Resolution[]> = {
  unresponsive_agent: ['reboot_vm', 'recreate_vm', 'ignore'],
  missing_vm: ['recreate_vm', 'delete_vm_reference', 'ignore'],
  missing_disk: ['recreate_vm', 'delete_disk_reference', 'ignore'],
  detached_disk: ['reattach_disk', 'recreate_vm', 'ignore'],
  bundle_mismatch: ['recreate_vm', 'ignore'],
  orphan_vm: ['delete_vm', 'ignore'],
  orphan_disk: ['delete_disk', 'ignore'],
  orphan_load_balancer: ['delete_load_balancer', 'ignore'],
};

export interface CloudFinding {
  /** Stable across scans while the problem lasts: `<type>:<subject>`. */
  id: string;
  type: FindingType;
  /** The deployment it concerns; null for an orphan no deployment claims. */
  deployment: string | null;
  /** `group/index` for an instance's finding. */
  instance: string | null;
  /** The provider object concerned (VM, disk or load balancer id). */
  object: string | null;
  description: string;
  resolutions: Resolution[];
}

export interface CloudAction {
  finding: string;
  resolution: Resolution;
  result: 'ok' | 'error' | 'skipped';
  detail: string;
  /** The task that carried it out, when it was a change to a deployment. */
  task?: number;
}

export interface CloudCheckReport {
  scope: string | null;
  findings: CloudFinding[];
  /** Deployments left out because a task is changing them. */
  skipped: string[];
  actions: CloudAction[];
}

export interface CloudCheckOptions {
  store: Store;
  provider: Provider;
  director: Director;
  clock: Clock;
  logger: Logger;
  /** How long an agent has to answer (default 5 s). */
  probeTimeoutMs?: number;
  /** Told of every action taken, ignoring included (the platform writes them to the audit log). */
  onAction?: (e: { actor: string; finding: CloudFinding; action: CloudAction }) => Promise<void> | void;
}

/** How the caller wants findings resolved: each chosen one, or every finding's first resolution. */
export type CloudChoices = { auto: true } | { resolutions: Record<string, Resolution> };

/** Refuses choices that cannot be right before anything is scanned or changed. */
export function checkChoices(choices: Record<string, string>): void {
  for (const [id, res] of Object.entries(choices)) {
    const type = id.split(':')[0] as FindingType;
    if (!(FINDING_TYPES as readonly string[]).includes(type) || id.length <= type.length + 1)
      throw new InputError('ANODYNE_E_INVALID_INPUT', `not a finding id: ${JSON.stringify(id)}`, { details: { finding: id } });
    if (!RESOLUTIONS_OF[type].includes(res as Resolution)) {
      const allowed = RESOLUTIONS_OF[type].join(', ');
      throw new InputError('ANODYNE_E_INVALID_INPUT', `${type} cannot be resolved with ${JSON.stringify(res)}; choose one of ${allowed}`, {
        details: { finding: id, resolution: res, allowed: RESOLUTIONS_OF[type] },
      });
    }
  }
}

/**
 * Compares the store with the provider and the agents: unresponsive agents, missing VMs, missing
 * or detached persistent disks, instances whose applied bundle is not the deployed one, and VMs,
 * disks and load balancers no deployment owns. Deployments a task is changing are left out (the
 * task owns them). Resolutions that change a deployment run as tasks holding its lock.
 */
export class CloudCheck {
  private readonly repo: InstanceRepository;

  constructor(private readonly o: CloudCheckOptions) {
    this.repo = new InstanceRepository(o.store, o.clock);
  }

  /** The findings now, for every deployment or only `deployment` (and the orphans that claim it). */
  async scan(deployment?: string): Promise<{ findings: CloudFinding[]; skipped: string[] }> {
    const { store, provider } = this.o;
    const [rows, locks, deployed, vms, disks, lbs] = await Promise.all([
      storeQuery('reading instances', () => store.db.selectFrom('instances').selectAll().execute()),
      storeQuery('reading locks', () => store.db.selectFrom('locks').select('name').execute()),
      storeQuery('reading deployments', () => store.db.selectFrom('deployments').select(['name', 'manifest']).execute()),
      provider.listVms(),
      provider.listDisks(),
      provider.listLoadBalancers(),
    ]);
    if (deployment !== undefined && !deployed.some((d) => d.name === deployment))
      throw new AnodyneError('ANODYNE_E_NOT_FOUND', `no deployment ${deployment}`, { details: { deployment } });
    const locked = new Set(locks.map((l) => l.name.replace(/^deployment:/, '')));
    const settled = new Set(deployed.map((d) => d.name));
    // Instances of deployments being changed, or never deployed to the end, are a task's business.
    const busy = new Set<string>(rows.map((r) => r.deployment).filter((d) => locked.has(d) || !settled.has(d)));
    for (const d of locked) busy.add(d);
    const inScope = (d: string | null | undefined) => deployment === undefined || d === deployment;
    const findings: CloudFinding[] = [];

    const vmById = new Map<string, VmInfo>(vms.map((v) => [v.id, v]));
    const diskById = new Map<string, DiskInfo>(disks.map((d) => [d.id, d]));
    const checked = rows.filter((r) => inScope(r.deployment) && !busy.has(r.deployment) && r.state !== 'stopped');
    const timeout = this.o.probeTimeoutMs ?? 5000;
    await Promise.all(
      checked.map(async (r) => {
        const instance = `${r.group_name}/${r.idx}`;
        const finding = (type: FindingType, object: string | null, description: string): CloudFinding => ({
          id: `${type}:${r.deployment}/${instance}`,
          type,
          deployment: r.deployment,
          instance,
          object,
          description,
          resolutions: RESOLUTIONS_OF[type],
        });
        if (!r.vm_id) return; // never got its VM: the next deploy gives it one
        const vm = vmById.get(r.vm_id);
        if (!vm || vm.state !== 'running') {
          findings.push(finding('missing_vm', r.vm_id, `VM ${r.vm_id} of ${r.deployment} ${instance} is not there`));
          return;
        }
        if (r.disk_id) {
          const disk = diskById.get(r.disk_id);
          if (!disk)
            findings.push(finding('missing_disk', r.disk_id, `persistent disk ${r.disk_id} of ${r.deployment} ${instance} is gone`));
          else if (disk.vmId !== r.vm_id)
            findings.push(
              finding(
                'detached_disk',
                r.disk_id,
                `persistent disk ${r.disk_id} of ${r.deployment} ${instance} is not attached to its VM ${r.vm_id}`,
              ),
            );
        }
        try {
          const state = await this.o.director.agentState(r, timeout);
          if (r.bundle_hash && state.bundleHash !== r.bundle_hash)
            findings.push(
              finding(
                'bundle_mismatch',
                r.vm_id,
                `${r.deployment} ${instance} runs bundle ${state.bundleHash ?? 'none'}, not the deployed ${r.bundle_hash}`,
              ),
            );
        } catch (err) {
          findings.push(
            finding(
              'unresponsive_agent',
              r.vm_id,
              `the agent of ${r.deployment} ${instance} (VM ${r.vm_id}) does not answer: ${(err as Error).message}`,
            ),
          );
        }
      }),
    );

    // What the provider holds that no instance or deployment owns.
    const ownedVms = new Set(rows.map((r) => r.vm_id).filter(Boolean));
    const ownedDisks = new Set(rows.map((r) => r.disk_id).filter(Boolean));
    const ownedLbs = new Set<string>();
    for (const d of deployed) {
      const m = JSON.parse(d.manifest) as { load_balancers?: { name: string }[] };
      for (const lb of m.load_balancers ?? []) ownedLbs.add(loadBalancerId(d.name, lb.name));
    }
    const claimedBy = (metadata: Record<string, string>) => metadata['deployment'] ?? null;
    const orphan = (type: FindingType, object: string, metadata: Record<string, string>, what: string): void => {
      const claimed = claimedBy(metadata);
      if (claimed !== null && busy.has(claimed)) return;
      if (!inScope(claimed)) return;
      findings.push({
        id: `${type}:${object}`,
        type,
        deployment: claimed,
        instance: null,
        object,
        description: `${what} ${object}${claimed ? ` (labelled ${claimed})` : ''} belongs to no deployment`,
        resolutions: RESOLUTIONS_OF[type],
      });
    };
    for (const v of vms) if (!ownedVms.has(v.id)) orphan('orphan_vm', v.id, v.metadata, 'VM');
    for (const d of disks) if (!ownedDisks.has(d.id)) orphan('orphan_disk', d.id, d.metadata, 'persistent disk');
    for (const l of lbs) if (!ownedLbs.has(l.id)) orphan('orphan_load_balancer', l.id, l.metadata, 'load balancer');

    findings.sort((a, b) => a.id.localeCompare(b.id));
    const skipped = [...busy].filter((d) => inScope(d)).sort();
    return { findings, skipped };
  }

  /**
   * Scans, then resolves: every finding with its first resolution (`auto`), or those named in
   * `resolutions` (a finding no longer there is reported as skipped). Nothing else is touched.
   */
  async run(actor: string, deployment: string | undefined, choices: CloudChoices | null, sink: EventSink): Promise<CloudCheckReport> {
    if (choices && 'resolutions' in choices) checkChoices(choices.resolutions);
    const { findings, skipped } = await this.scan(deployment);
    await sink.event({
      stage: 'Scanning',
      state: 'info',
      message: `${findings.length} finding(s)${skipped.length ? `; left out while a task changes them: ${skipped.join(', ')}` : ''}`,
    });
    const actions: CloudAction[] = [];
    if (choices) {
      const chosen = new Map<string, Resolution>();
      if ('auto' in choices) for (const f of findings) chosen.set(f.id, f.resolutions[0]!);
      else for (const [id, res] of Object.entries(choices.resolutions)) chosen.set(id, res);
      const byId = new Map(findings.map((f) => [f.id, f]));
      let i = 0;
      for (const [id, resolution] of chosen) {
        const f = byId.get(id);
        const step = { stage: 'Resolving', instance: id, index: ++i, total: chosen.size };
        await sink.event({ ...step, state: 'started' });
        const action = f
          ? await this.resolve(f, resolution, actor)
          : ({ finding: id, resolution, result: 'skipped', detail: 'not found by this scan (already resolved?)' } satisfies CloudAction);
        actions.push(action);
        if (f) await this.o.onAction?.({ actor, finding: f, action });
        await sink.event({ ...step, state: action.result === 'error' ? 'failed' : 'finished', message: `${resolution}: ${action.detail}` });
      }
    }
    return { scope: deployment ?? null, findings, skipped, actions };
  }

  private async resolve(f: CloudFinding, resolution: Resolution, actor: string): Promise<CloudAction> {
    const done = (result: CloudAction['result'], detail: string, task?: number): CloudAction => ({
      finding: f.id,
      resolution,
      result,
      detail,
      ...(task !== undefined ? { task } : {}),
    });
    if (!f.resolutions.includes(resolution)) return done('skipped', `${f.type} cannot be resolved with ${resolution}`);
    try {
      switch (resolution) {
        case 'ignore':
          return done('ok', 'left as it is');
        case 'delete_vm':
          await this.o.provider.deleteVm(f.object!);
          return done('ok', `VM ${f.object} deleted`);
        case 'delete_disk': {
          const disk = (await this.o.provider.listDisks()).find((d) => d.id === f.object);
          if (disk?.vmId) await this.o.provider.detachDisk(disk.vmId, disk.id);
          await this.o.provider.deleteDisk(f.object!);
          return done('ok', `persistent disk ${f.object} deleted`);
        }
        case 'delete_load_balancer':
          await this.o.provider.deleteLoadBalancer(f.object!);
          return done('ok', `load balancer ${f.object} deleted`);
        case 'recreate_vm': {
          const [group, index] = f.instance!.split('/') as [string, string];
          const task = await this.o.director.resurrect(f.deployment!, [{ group, index: Number(index) }], actor);
          const ended = await this.o.director.wait(task.id);
          return ended.state === 'done'
            ? done('ok', `${f.instance} recreated`, task.id)
            : done('error', `recreating ${f.instance} ended ${ended.state}: ${ended.error?.message ?? ''}`, task.id);
        }
        default:
          return await this.repairInPlace(f, resolution, actor, done);
      }
    } catch (err) {
      return done('error', (err as Error).message);
    }
  }

  /** Reboot, reattach and forgetting a reference: one task holding the deployment's lock. */
  private async repairInPlace(
    f: CloudFinding,
    resolution: Resolution,
    actor: string,
    done: (result: CloudAction['result'], detail: string, task?: number) => CloudAction,
  ): Promise<CloudAction> {
    const [group, index] = f.instance!.split('/') as [string, string];
    const task = await this.o.director.runDeploymentTask(
      `cloud_check_${resolution}`,
      f.deployment!,
      `${resolution.replace(/_/g, ' ')} of ${f.deployment} ${f.instance}`,
      actor,
      async () => {
        const row = await this.repo.get(f.deployment!, group, Number(index));
        if (!row) throw new AnodyneError('ANODYNE_E_NOT_FOUND', `${f.deployment} has no instance ${f.instance}`);
        switch (resolution) {
          case 'reboot_vm':
            await this.o.provider.rebootVm(row.vm_id!);
            await this.untilAgentAnswers(row);
            return `VM ${row.vm_id} rebooted; its agent answers`;
          case 'reattach_disk':
            await this.o.provider.attachDisk(row.vm_id!, row.disk_id!);
            // Jobs started on the empty mount point: they start again on the disk.
            await this.o.director.agentCall(row, 'POST', '/stop', undefined, 120_000);
            await this.o.director.agentCall(row, 'POST', '/start', undefined, 600_000);
            return `disk ${row.disk_id} attached to ${row.vm_id} again; jobs restarted`;
          case 'delete_vm_reference':
            await this.repo.patch(row.id, { vm_id: null });
            return `${f.instance} no longer refers to VM ${row.vm_id}; the next deploy creates one`;
          case 'delete_disk_reference':
            if (row.vm_id && row.disk_id) await this.o.provider.detachDisk(row.vm_id, row.disk_id);
            if (row.disk_id) await this.o.provider.deleteDisk(row.disk_id);
            await this.repo.patch(row.id, { disk_id: null });
            return `${f.instance} no longer refers to disk ${row.disk_id}; the next deploy creates one`;
          default:
            throw new AnodyneError('ANODYNE_E_INTERNAL', `no in-place repair ${resolution}`);
        }
      },
    );
    const ended = await this.o.director.wait(task.id);
    return ended.state === 'done'
      ? done('ok', typeof ended.result === 'string' ? ended.result : 'done', task.id)
      : done('error', ended.error?.message ?? `task ${task.id} ended ${ended.state}`, task.id);
  }

  private async untilAgentAnswers(row: InstanceRow): Promise<void> {
    const deadline = this.o.clock.nowMs() + 120_000;
    let last: unknown;
    for (let tries = 0; tries < 480 && this.o.clock.nowMs() < deadline; tries++) {
      try {
        await this.o.director.agentState(row, 2000);
        return;
      } catch (err) {
        last = err;
        await this.o.clock.sleep(250);
      }
    }
    throw new AnodyneError(
      'ANODYNE_E_UNAVAILABLE',
      `the agent of ${row.agent_id} did not answer after the reboot: ${(last as Error)?.message}`,
    );
  }
}
