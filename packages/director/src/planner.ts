// The deploy planner: desired vs actual instances to create, update, recreate, delete or keep, with reasons. Pure, no I/O.
import type { VmType } from '@anodyne/providers';
import type { InstanceBundle } from './jobs.js';

/** What the manifest asks for, per instance. */
export interface DesiredInstance {
  group: string;
  index: number;
  vmType: string | VmType;
  image: string;
  diskMb: number;
  network: string;
  staticIp?: string;
  bundle: InstanceBundle;
}

/** What exists, per instance, as the director recorded it and the provider confirmed. */
export interface ActualInstance {
  group: string;
  index: number;
  vmId: string | null;
  /** False when the provider says the VM is gone (hasVm). */
  vmAlive: boolean;
  vmType: string | VmType;
  image: string;
  diskMb: number;
  network: string;
  ip: string | null;
  bundleHash: string | null;
}

export type PlanAction = 'create' | 'update' | 'recreate' | 'delete' | 'keep';

export interface PlannedChange {
  group: string;
  index: number;
  action: PlanAction;
  /** Why, for the event log: `vm_type changed`, `jobs changed`, `vm missing`, … */
  reasons: string[];
  desired?: DesiredInstance;
  actual?: ActualInstance;
  /** The bundle the instance runs now (rendered from the stored manifest, its hash the recorded one): a failed canary goes back to it. */
  previous?: InstanceBundle;
}

function sameType(a: string | VmType, b: string | VmType): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Desired vs actual, per instance (group + index). Recreate when the VM itself must change
 * (type, image, network, static IP, persistent disk size, or the VM is gone); update when
 * only the rendered jobs changed; delete what the manifest no longer has. Pure: no I/O.
 */
export function plan(desired: DesiredInstance[], actual: ActualInstance[]): PlannedChange[] {
  const key = (g: string, i: number) => `${g}/${i}`;
  const actualByKey = new Map(actual.map((a) => [key(a.group, a.index), a]));
  const changes: PlannedChange[] = [];
  for (const d of desired) {
    const a = actualByKey.get(key(d.group, d.index));
    actualByKey.delete(key(d.group, d.index));
    if (!a || a.vmId === null) {
      changes.push({
        group: d.group,
        index: d.index,
        action: 'create',
        reasons: ['new instance'],
        desired: d,
        ...(a ? { actual: a } : {}),
      });
      continue;
    }
    const reasons: string[] = [];
    if (!a.vmAlive) reasons.push('vm missing');
    if (!sameType(a.vmType, d.vmType)) reasons.push('vm_type changed');
    if (a.image !== d.image) reasons.push('image changed');
    if (a.network !== d.network) reasons.push('network changed');
    if (d.staticIp !== undefined && a.ip !== d.staticIp) reasons.push('static ip changed');
    if (a.diskMb !== d.diskMb) reasons.push('persistent disk changed');
    if (reasons.length > 0) {
      changes.push({ group: d.group, index: d.index, action: 'recreate', reasons, desired: d, actual: a });
    } else if (a.bundleHash !== d.bundle.hash) {
      changes.push({ group: d.group, index: d.index, action: 'update', reasons: ['jobs changed'], desired: d, actual: a });
    } else {
      changes.push({ group: d.group, index: d.index, action: 'keep', reasons: [], desired: d, actual: a });
    }
  }
  for (const a of actualByKey.values())
    changes.push({ group: a.group, index: a.index, action: 'delete', reasons: ['not in manifest'], actual: a });
  return changes.sort((x, y) => (x.group === y.group ? x.index - y.index : 0));
}
