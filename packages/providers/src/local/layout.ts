// Where the local provider keeps things under its data dir: VM directories, disks, load balancer configs, the state file.
import { join } from 'node:path';

export class DataLayout {
  constructor(readonly root: string) {}

  get stateFile(): string {
    return join(this.root, 'state.json');
  }

  /** A VM's directory: its root (`root/`), /etc overlay dirs, setup script, console log, disk mount points. */
  vm(id: string): string {
    return join(this.root, 'vms', id);
  }

  /** Mount points of the disks attached to a VM (shared into the VM at GUEST_DISK_DIR). */
  vmDisks(id: string): string {
    return join(this.vm(id), 'disks');
  }

  /** A persistent disk's directory; its contents live in `data/`. */
  disk(id: string): string {
    return join(this.root, 'disks', id);
  }

  diskData(id: string): string {
    return join(this.disk(id), 'data');
  }

  /** A load balancer's haproxy config, pid files and log. */
  lb(lbId: string): string {
    return join(this.root, 'lbs', lbId);
  }
}
