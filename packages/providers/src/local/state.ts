// The local provider's records (VMs, disks, load balancers) in one JSON state file, and its one read-modify-write helper.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DiskInfo, LoadBalancerInfo, SegmentInfo, VmInfo } from '../contract.js';

export interface VmRecord extends VmInfo {
  /** Host PID of the VM's init (PID 1 inside) and its start time, to survive PID reuse. */
  initPid: number | null;
  initStart: string | null;
  env: Record<string, string>;
}

export interface LbRecord extends LoadBalancerInfo {
  lbId: string;
}

export interface SegmentRecord extends SegmentInfo {
  /** Its place in the segment pool (which range, which bridge). */
  index: number;
}

export interface LocalState {
  vms: Record<string, VmRecord>;
  disks: Record<string, DiskInfo>;
  lbs: Record<string, LbRecord>;
  segments: Record<string, SegmentRecord>;
}

/** Serialises async critical sections in this process. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/**
 * The local provider's own records: one JSON file written atomically. Every host object
 * it describes also carries the VM's id in its name, so `cleanup` finds them without it.
 *
 * `read` is a snapshot without the lock (for questions); every change goes through `update`,
 * the only place that writes the file.
 */
export class StateFile {
  private readonly mutex = new Mutex();

  constructor(private readonly path: string) {}

  read(): LocalState {
    if (!existsSync(this.path)) return { vms: {}, disks: {}, lbs: {}, segments: {} };
    const state = JSON.parse(readFileSync(this.path, 'utf8')) as Partial<LocalState>;
    // Files written before segments existed have none.
    return { vms: {}, disks: {}, lbs: {}, segments: {}, ...state };
  }

  /**
   * Read-modify-write under the provider's lock: `fn` gets the current state to change in
   * place (it may do host work meanwhile; the lock is held until it settles). When `fn`
   * resolves and changed the state, the state is written back; when it throws, nothing is
   * written. Sections that only read (cleanup) change nothing and so write nothing.
   */
  update<T>(fn: (state: LocalState) => T | Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      const state = this.read();
      const before = JSON.stringify(state);
      const result = await fn(state);
      if (JSON.stringify(state) !== before) this.write(state);
      return result;
    });
  }

  private write(state: LocalState): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(state, null, 2), { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
