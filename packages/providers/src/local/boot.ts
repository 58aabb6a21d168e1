// Booting a local VM: its root directory, the setup script run as PID 1 in fresh namespaces, the start of tini + agent.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AnodyneError, type Clock } from '@anodyne/common';
import { joinCgroupsShell } from './cgroups.js';
import { GUEST_DISK_DIR } from './disks.js';
import { cgroupHierarchies, childrenOf, processStartTime, shellQuote } from './host.js';
import type { VmRecord } from './state.js';

export interface BindMount {
  host: string;
  guest: string;
  readOnly?: boolean;
}

/** The environment of processes started in a VM: nothing of the platform's own. */
export const GUEST_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' };

/** How often boot looks at the console and the processes while waiting for the VM's init. */
const BOOT_POLL_MS = 10;

export interface BootOptions {
  /** The agent, started inside every VM as the child of its init. */
  agentCommand: string[];
  /** Host directories visible in every VM. */
  binds: BindMount[];
  /** How long `start` waits for the VM's init to finish setting up. */
  bootTimeoutMs: number;
  clock: Clock;
}

/** Where a VM boots: its directory on the host, its network namespace and the `cgroup.procs` files it joins first. */
export interface BootPlace {
  vmDir: string;
  netnsPath: string;
  procsFiles: string[];
}

/**
 * Boots VMs: the VM gets its own mount, PID, UTS, IPC and cgroup namespaces (its network
 * namespace exists already); a writable root directory with the host's /usr bound read-only
 * and a copy-on-write /etc; private /run, /tmp and /dev; tini as PID 1 reaping orphans; the
 * agent as its child.
 */
export class VmBooter {
  constructor(private readonly o: BootOptions) {}

  /** Lays out the VM's root directory (empty mount points, usr symlinks, writable dirs). */
  prepareRoot(vmDir: string): void {
    const r = join(vmDir, 'root');
    const dirs = ['usr', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'var/lib', 'var/log', 'var/tmp', 'root', 'home', 'opt', 'mnt'];
    for (const d of dirs) mkdirSync(join(r, d), { recursive: true });
    for (const d of ['etc-upper', 'etc-work', 'disks']) mkdirSync(join(vmDir, d), { recursive: true });
    for (const l of ['bin', 'sbin', 'lib', 'lib64', 'lib32', 'libx32']) {
      if (existsSync(`/usr/${l}`) && !existsSync(join(r, l))) {
        // Debian's merged /usr: /bin → usr/bin and so on.
        symlinkSync(`usr/${l}`, join(r, l));
      }
    }
  }

  /** The script run as PID 1 in the VM's fresh namespaces: mounts, pivot_root, then tini + agent. */
  private setupScript(vmDir: string, hostname: string): string {
    const lines = [
      'set -eu',
      `R=${shellQuote(join(vmDir, 'root'))}`,
      `V=${shellQuote(vmDir)}`,
      `hostname ${shellQuote(hostname)}`,
      'mount --bind "$R" "$R"',
      'mount --bind /usr "$R/usr"',
      'mount -o remount,bind,ro "$R/usr"',
      'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$V/etc-upper,workdir=$V/etc-work" "$R/etc"',
      'mount -t proc proc "$R/proc"',
      'mount -t sysfs sysfs "$R/sys"',
      'mount -t tmpfs -o mode=755 cgroup "$R/sys/fs/cgroup"',
    ];
    for (const h of cgroupHierarchies()) {
      lines.push(`mkdir -p "$R/sys/fs/cgroup/${h.dir}"`, `mount -t cgroup -o ${h.options} cgroup "$R/sys/fs/cgroup/${h.dir}"`);
    }
    lines.push(
      'mount -t tmpfs -o mode=755,size=65536k dev "$R/dev"',
      'for n in null zero full random urandom tty kmsg; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done',
      'mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"',
      'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"',
      'ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"',
      'ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"',
      'mount -t tmpfs -o mode=1777 shm "$R/dev/shm"',
      'mount -t mqueue mqueue "$R/dev/mqueue"',
      'mount -t tmpfs -o mode=755 run "$R/run"',
      'mount -t tmpfs -o mode=1777 tmp "$R/tmp"',
    );
    for (const b of this.o.binds) {
      lines.push(`mkdir -p "$R"${shellQuote(b.guest)}`, `mount --bind ${shellQuote(b.host)} "$R"${shellQuote(b.guest)}`);
      if (b.readOnly !== false) lines.push(`mount -o remount,bind,ro "$R"${shellQuote(b.guest)}`);
    }
    lines.push(
      // A slave of the host's shared disk directory: disks attached later appear inside.
      `mkdir -p "$R${GUEST_DISK_DIR}"`,
      `mount --bind "$V/disks" "$R${GUEST_DISK_DIR}"`,
      'cd "$R"',
      'mkdir -p .oldroot',
      'pivot_root . .oldroot',
      'cd /',
      'umount -l /.oldroot',
      'rmdir /.oldroot',
      // Kubernetes expects / to be shared inside a node (kind does the same).
      'mount --make-rshared /',
      'echo anodyne-vm-ready',
      `exec /usr/bin/tini -g -- ${this.o.agentCommand.map(shellQuote).join(' ')}`,
    );
    return lines.join('\n') + '\n';
  }

  /** Starts the VM's init; resolves with its host PID (and start time) once setup has finished. */
  async start(vm: VmRecord, at: BootPlace): Promise<{ pid: number; start: string }> {
    const v = at.vmDir;
    writeFileSync(join(v, 'setup.sh'), this.setupScript(v, vm.agentId), { mode: 0o700 });
    const consolePath = join(v, 'console.log');
    writeFileSync(consolePath, '');
    const out = openSync(consolePath, 'a');
    // The launcher joins the VM's cgroups first, so everything it becomes is charged to the VM.
    const unshare = 'unshare --mount --pid --uts --ipc --cgroup --fork --kill-child --propagation slave';
    const setup = shellQuote(join(v, 'setup.sh'));
    const launcher = `${joinCgroupsShell(at.procsFiles)}; exec nsenter --net=${at.netnsPath} -- ${unshare} -- /bin/sh ${setup}`;
    const env: Record<string, string> = { ...GUEST_ENV, ...vm.env, ANODYNE_AGENT_ID: vm.agentId, ANODYNE_VM_ID: vm.id };
    const child = spawn('/bin/sh', ['-c', launcher], { detached: true, stdio: ['ignore', out, out], env });
    closeSync(out);
    child.unref();
    const launcherPid = child.pid;
    if (!launcherPid) throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `VM ${vm.id}: the launcher did not start`);
    const deadline = this.o.clock.nowMs() + this.o.bootTimeoutMs;
    let initPid: number | undefined;
    for (;;) {
      const console_ = readFileSync(consolePath, 'utf8');
      const lastLines = (): string => console_.trim().split('\n').slice(-5).join(' | ');
      if (initPid === undefined) initPid = childrenOf(launcherPid)[0];
      if (console_.includes('anodyne-vm-ready') && initPid !== undefined) {
        const start = processStartTime(initPid);
        if (start) return { pid: initPid, start };
      }
      if (child.exitCode !== null || (processStartTime(launcherPid) === undefined && !console_.includes('anodyne-vm-ready'))) {
        throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `VM ${vm.id} failed to boot: ${lastLines()}`, {
          details: { vmId: vm.id },
        });
      }
      if (this.o.clock.nowMs() > deadline) {
        const why = `VM ${vm.id} did not boot within ${this.o.bootTimeoutMs} ms: ${lastLines()}`;
        throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', why, { details: { vmId: vm.id } });
      }
      await this.o.clock.sleep(BOOT_POLL_MS);
    }
  }
}

/** A shell line that joins a running VM's cgroups, then enters all its namespaces and root (via its init) to run argv. */
export function enterVmShell(initPid: number, procsFiles: string[], argv: string[]): string {
  return `${joinCgroupsShell(procsFiles)}; exec nsenter -t ${initPid} -a -r -w -- ${argv.map(shellQuote).join(' ')}`;
}
