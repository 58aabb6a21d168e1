// Persistent disks of the local provider: directories under the data dir, bind-mounted into a VM's shared disk directory.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConflictError, InputError, NotFoundError, exec } from '@anodyne/common';
import type { DiskAttachment, DiskInfo } from '../contract.js';
import { mountsUnder, unmountAll } from './host.js';
import type { DataLayout } from './layout.js';
import type { LocalState, StateFile } from './state.js';

/** Inside every VM, attached persistent disks appear under this directory. */
export const GUEST_DISK_DIR = '/var/lib/anodyne/disks';

/**
 * Makes a VM's disk directory a shared mount on the host: the VM's GUEST_DISK_DIR is a slave
 * of it, so disks mounted there later (attach) appear inside the running VM.
 */
export async function shareVmDiskDir(layout: DataLayout, vmId: string): Promise<void> {
  const d = layout.vmDisks(vmId);
  if (mountsUnder(d).includes(d)) return;
  await exec(['mount', '--bind', d, d]);
  await exec(['mount', '--make-private', d]);
  await exec(['mount', '--make-shared', d]);
}

/** Marks the disks attached to a deleted VM as detached in `state` (their data stays). */
export function releaseDisks(state: LocalState, vmId: string): void {
  for (const d of Object.values(state.disks)) if (d.vmId === vmId) d.vmId = null;
}

/** The disks' records and data; the caller has checked for root. */
export class LocalDisks {
  constructor(
    private readonly layout: DataLayout,
    private readonly store: StateFile,
  ) {}

  async create(sizeMb: number, metadata: Record<string, string>): Promise<DiskInfo> {
    if (!Number.isInteger(sizeMb) || sizeMb < 1) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'disk size must be a whole number of MB ≥ 1', { details: { sizeMb } });
    }
    const id = `disk-${randomBytes(4).toString('hex')}`;
    mkdirSync(this.layout.diskData(id), { recursive: true, mode: 0o755 });
    const disk: DiskInfo = { id, sizeMb, vmId: null, metadata: { ...metadata } };
    await this.store.update((state) => {
      state.disks[id] = disk;
    });
    return { ...disk };
  }

  async delete(id: string): Promise<void> {
    await this.store.update((state) => {
      const d = state.disks[id];
      if (d?.vmId) {
        throw new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${id} is attached to VM ${d.vmId}; detach it first`, {
          details: { id, vmId: d.vmId },
        });
      }
      if (/^disk-[0-9a-f]{8}$/.test(id)) rmSync(this.layout.disk(id), { recursive: true, force: true });
      delete state.disks[id];
    });
  }

  /** A disk exists when its record and its data directory do (the directory may go behind our back). */
  has(id: string): boolean {
    return this.store.read().disks[id] !== undefined && existsSync(this.layout.diskData(id));
  }

  /** Disks whose data exists; attached only where the VM's bind mount of it is really there. */
  list(): DiskInfo[] {
    return Object.values(this.store.read().disks)
      .filter((d) => existsSync(this.layout.diskData(d.id)))
      .map((d) => {
        const target = d.vmId ? join(this.layout.vmDisks(d.vmId), d.id) : '';
        return { ...d, metadata: { ...d.metadata }, vmId: d.vmId && mountsUnder(target).includes(target) ? d.vmId : null };
      });
  }

  async attach(vmId: string, diskId: string): Promise<DiskAttachment> {
    return this.store.update(async (state) => {
      const vm = state.vms[vmId];
      const disk = state.disks[diskId];
      if (!vm) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${vmId} not found`, { details: { vmId } });
      if (!disk) throw new NotFoundError('ANODYNE_E_PROVIDER_DISK_NOT_FOUND', `disk ${diskId} not found`, { details: { diskId } });
      if (disk.vmId && disk.vmId !== vmId) {
        throw new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${diskId} is attached to VM ${disk.vmId}`, {
          details: { diskId, vmId: disk.vmId },
        });
      }
      const target = join(this.layout.vmDisks(vmId), diskId);
      mkdirSync(target, { recursive: true });
      if (!mountsUnder(target).includes(target)) await exec(['mount', '--bind', this.layout.diskData(diskId), target]);
      disk.vmId = vmId;
      return { path: `${GUEST_DISK_DIR}/${diskId}` };
    });
  }

  async detach(vmId: string, diskId: string): Promise<void> {
    // The ids become a path that is removed: nothing but an id's own characters may reach it.
    for (const [what, id] of [
      ['VM', vmId],
      ['disk', diskId],
    ] as const) {
      if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(id))
        throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `not a ${what} id: ${JSON.stringify(id)}`);
    }
    await this.store.update(async (state) => {
      const target = join(this.layout.vmDisks(vmId), diskId);
      await unmountAll(target);
      rmSync(target, { recursive: true, force: true });
      const disk = state.disks[diskId];
      if (disk && disk.vmId === vmId) disk.vmId = null;
    });
  }
}
