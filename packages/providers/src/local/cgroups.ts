// Per-VM cgroups of the local provider (cgroup v1): creation with the VM type's limits, killing what runs in them, removal.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AnodyneError, type Clock } from '@anodyne/common';
import type { VmType } from '../contract.js';
import { CGROUP_ROOT, cgroupHierarchies, killPids, pidsInCgroupTree, removeCgroupTree, shellQuote, type Tally } from './host.js';

/** How often, and how many times, killing loops look again for processes left in a cgroup tree. */
const KILL_POLL_MS = 50;
const KILL_ROUNDS = 100;

/** A shell fragment that moves the shell itself into the given cgroups (its `cgroup.procs` files). */
export function joinCgroupsShell(procsFiles: string[]): string {
  return procsFiles.map((f) => `echo $$ > ${shellQuote(f)}`).join('; ');
}

/**
 * The cgroups of one provider tag: `<hierarchy>/anodyne/<tag>/<id>` in every mounted v1
 * hierarchy, one per VM or load balancer.
 */
export class VmCgroups {
  constructor(
    private readonly tag: string,
    private readonly clock: Clock,
  ) {}

  private rel(id: string): string {
    return join('anodyne', this.tag, id);
  }

  /** Creates the cgroups of `id` (where missing) and sets the VM type's limits; returns their `cgroup.procs` files. */
  create(id: string, t: VmType): string[] {
    const procsFiles: string[] = [];
    for (const h of cgroupHierarchies()) {
      const parts = this.rel(id).split('/');
      let dir = join(CGROUP_ROOT, h.dir);
      for (const p of parts) {
        const parent = dir;
        dir = join(dir, p);
        if (!existsSync(dir)) {
          mkdirSync(dir);
          if (h.options.split(',').includes('cpuset')) {
            // A new cpuset starts empty; it must inherit before any task can join.
            writeFileSync(join(dir, 'cpuset.cpus'), readFileSync(join(parent, 'cpuset.cpus'), 'utf8').trim() || '0');
            writeFileSync(join(dir, 'cpuset.mems'), readFileSync(join(parent, 'cpuset.mems'), 'utf8').trim() || '0');
          }
        }
      }
      const ctrls = h.options.split(',');
      if (ctrls.includes('memory')) {
        writeFileSync(join(dir, 'memory.limit_in_bytes'), String(t.memoryMb * 1024 * 1024));
      }
      if (ctrls.includes('cpu')) {
        writeFileSync(join(dir, 'cpu.cfs_period_us'), '100000');
        writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(Math.round(t.cpu * 100000)));
      }
      if (ctrls.includes('pids')) writeFileSync(join(dir, 'pids.max'), String(t.pids ?? 8192));
      procsFiles.push(join(dir, 'cgroup.procs'));
    }
    return procsFiles;
  }

  /** The cgroup directories of `id`, one per hierarchy. */
  dirs(id: string): string[] {
    return cgroupHierarchies().map((h) => join(CGROUP_ROOT, h.dir, this.rel(id)));
  }

  /** The `cgroup.procs` files of `id`, in the order `create` returns them. */
  procsFiles(id: string): string[] {
    return this.dirs(id).map((d) => join(d, 'cgroup.procs'));
  }

  /** Kills every process in the cgroups of `id` until none is left. */
  async killAll(id: string): Promise<void> {
    for (let i = 0; i < KILL_ROUNDS; i++) {
      const pids = this.dirs(id).flatMap((d) => pidsInCgroupTree(d));
      if (pids.length === 0) return;
      killPids(pids);
      await this.clock.sleep(KILL_POLL_MS);
    }
    throw new AnodyneError('ANODYNE_E_INTERNAL', `processes of VM ${id} did not die`);
  }

  /** Removes the cgroup directories of `id` (its processes must be gone). */
  remove(id: string): void {
    for (const d of this.dirs(id)) removeCgroupTree(d);
  }

  /** The tag's own cgroup roots (`<hierarchy>/anodyne/<tag>`), holding every VM's cgroups. */
  private tagRoots(): string[] {
    return cgroupHierarchies().map((h) => join(CGROUP_ROOT, h.dir, 'anodyne', this.tag));
  }

  /** Cleanup: kills every process in the tag's cgroups (best effort: gives up after a while), counting them. */
  async killTagged(count: Tally): Promise<void> {
    const roots = this.tagRoots();
    for (let i = 0; i < KILL_ROUNDS; i++) {
      const pids = roots.flatMap((d) => pidsInCgroupTree(d));
      if (pids.length === 0) break;
      killPids(pids);
      count('processes', pids.length);
      await this.clock.sleep(KILL_POLL_MS);
    }
  }

  /** Cleanup: removes the tag's cgroups, counting them, and the shared `anodyne` parent once no other tag uses it. */
  removeTagged(count: Tally): void {
    for (const d of this.tagRoots()) count('cgroups', removeCgroupTree(d));
    for (const h of cgroupHierarchies()) {
      try {
        rmdirSync(join(CGROUP_ROOT, h.dir, 'anodyne'));
      } catch {
        // another tag's cgroups live there, or it is already gone
      }
    }
  }
}
