// The local provider's records (VMs, disks, load balancers) in one JSON state file, and its one read-modify-write helper.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { processRuns } from '@anodyne/common';
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
/** One mutex per state file in this process (several providers may open the same file). */
const mutexes = new Map<string, Mutex>();

export class StateFile {
  private readonly mutex: Mutex;

  constructor(private readonly path: string) {
    let m = mutexes.get(path);
    if (!m) mutexes.set(path, (m = new Mutex()));
    this.mutex = m;
  }

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
      const unlock = await this.lockAcrossProcesses();
      try {
        const state = this.read();
        const before = JSON.stringify(state);
        const result = await fn(state);
        if (JSON.stringify(state) !== before) this.write(state);
        return result;
      } finally {
        unlock();
      }
    });
  }

  /**
   * The lock other processes on this file respect too (replicas of the platform on one host share
   * the provider's directory): a lock file made exclusively, holding its owner's pid. A lock whose
   * owner no longer runs (killed mid-update) is taken over; otherwise it is asked for again every 20 ms.
   */
  private async lockAcrossProcesses(): Promise<() => void> {
    const lock = `${this.path}.lock`;
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    for (;;) {
      try {
        const fd = openSync(lock, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        return () => {
          try {
            unlinkSync(lock);
          } catch {
            // already gone
          }
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let owner = NaN;
      try {
        owner = Number(readFileSync(lock, 'utf8'));
      } catch {
        continue; // released meanwhile
      }
      // Ours (this process holds the file's mutex, so it is a leftover of an earlier process with our pid) or a dead one's.
      if (Number.isInteger(owner) && owner > 0 && (owner === process.pid || !processRuns(owner))) {
        try {
          unlinkSync(lock);
        } catch {
          // another waiter took it over first
        }
        continue;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private write(state: LocalState): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(state, null, 2), { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
