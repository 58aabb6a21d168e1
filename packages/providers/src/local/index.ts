import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AnodyneError, ConflictError, InputError, NotFoundError, PreconditionError, exec, type Clock, type Logger,
} from '@anodyne/common';
import type {
  CleanupReport, CreateVmRequest, DiskAttachment, DiskInfo, LoadBalancerBackend, LoadBalancerInfo, LoadBalancerSpec,
  Provider, ProviderInfo, VmInfo, VmType,
} from '../contract.js';
import { IpPool, matches, parseCidr, resolveVmType, validateBackends, validateCreate, type Cidr } from '../internal/validate.js';
import {
  CGROUP_ROOT, cgroupHierarchies, childrenOf, deleteRule, ip, ipQuiet, killPids, linkExists, linksWithPrefix, mountsUnder,
  netnsList, netnsPids, pidsInCgroupTree, processStartTime, removeCgroupTree, rulesWithComment, unmountAll,
} from './host.js';
import { Mutex, StateFile, type LbRecord, type LocalState, type VmRecord } from './state.js';

export interface BindMount {
  host: string;
  guest: string;
  readOnly?: boolean;
}

export interface LocalProviderOptions {
  /** Where VM roots, disks, load balancer configs and the state file live. */
  dataDir: string;
  /** 1–6 lowercase letters/digits naming this provider's host objects (bridge, netns, cgroups). */
  tag: string;
  /** The VM network (CIDR); the first address is the host's side of the bridge. */
  network: string;
  /** The agent, started inside every VM as the child of its init. */
  agentCommand: string[];
  vmTypes?: Record<string, VmType>;
  /** Host directories visible in every VM (the release cache, the agent's code). */
  binds?: BindMount[];
  logger: Logger;
  clock: Clock;
  /** Overridable for tests of the privilege check. */
  isRoot?: () => boolean;
  /** How long createVm waits for the VM's init to finish setting up. */
  bootTimeoutMs?: number;
}

/** Inside every VM, attached persistent disks appear under this directory. */
export const GUEST_DISK_DIR = '/var/lib/anodyne/disks';

const DEFAULT_VM_TYPES: Record<string, VmType> = {
  small: { cpu: 1, memoryMb: 1024, ephemeralDiskMb: 2048, pids: 4096 },
  medium: { cpu: 2, memoryMb: 2048, ephemeralDiskMb: 8192, pids: 8192 },
  large: { cpu: 2, memoryMb: 4096, ephemeralDiskMb: 16384, pids: 16384 },
};

const IMAGE = 'host-usr';

/** The environment of processes started in a VM: nothing of the platform's own. */
const GUEST_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' };

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The local provider: each VM is a set of Linux namespaces on this host (bosh-lite / kind
 * without Docker). A VM has its own network namespace with a veth on the provider's bridge
 * and its own IP; its own mount, PID, UTS, IPC and cgroup namespaces; a writable root
 * directory with the host's /usr bound read-only and a copy-on-write /etc; private /run,
 * /tmp and /dev; per-VM cgroups enforcing the VM type; tini as PID 1 reaping orphans; the
 * agent as its child. Needs root. Nothing is routed or NATed to the outside: the bridge's
 * traffic is dropped in FORWARD unless it stays on the bridge.
 */
export class LocalProvider implements Provider {
  private readonly opts: Required<Omit<LocalProviderOptions, 'isRoot' | 'binds' | 'vmTypes' | 'bootTimeoutMs'>> & { binds: BindMount[]; vmTypes: Record<string, VmType>; bootTimeoutMs: number };
  private readonly isRoot: () => boolean;
  private readonly cidr: Cidr;
  private readonly state: StateFile;
  private readonly mutex = new Mutex();
  private readonly bridge: string;
  private readonly comment: string;
  private bridgeReady: Promise<void> | undefined;

  constructor(options: LocalProviderOptions) {
    if (!/^[a-z0-9]{1,6}$/.test(options.tag)) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `provider tag ${JSON.stringify(options.tag)} must be 1 to 6 lowercase letters or digits`);
    }
    if (!Array.isArray(options.agentCommand) || options.agentCommand.length === 0) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'agentCommand must name the program to start in each VM');
    }
    this.opts = { ...options, binds: options.binds ?? [], vmTypes: options.vmTypes ?? DEFAULT_VM_TYPES, bootTimeoutMs: options.bootTimeoutMs ?? 15_000 };
    this.isRoot = options.isRoot ?? (() => process.getuid?.() === 0);
    this.cidr = parseCidr(options.network);
    this.state = new StateFile(join(options.dataDir, 'state.json'));
    this.bridge = `anbr-${options.tag}`;
    this.comment = `anodyne:${options.tag}`;
  }

  info(): ProviderInfo {
    return {
      name: 'local', version: '1', kind: 'namespaces', vmTypes: this.opts.vmTypes,
      networks: [{ name: 'default', range: this.cidr.text, gateway: this.cidr.gateway }],
      images: [IMAGE], capabilities: { persistentDisks: true, loadBalancers: true, reboot: true },
    };
  }

  // ------------------------------------------------------------------ naming

  private netnsName(id: string): string {
    return `anodyne-${this.opts.tag}-${id}`;
  }

  /** Host side of a VM's veth: at most 15 characters, carrying the tag and the id. */
  private vethName(id: string): string {
    return `av${this.opts.tag}${id.replace(/^(vm|lb)-/, '').slice(0, 6)}`;
  }

  private cgroupRel(id: string): string {
    return join('anodyne', this.opts.tag, id);
  }

  private vmDir(id: string): string {
    return join(this.opts.dataDir, 'vms', id);
  }

  private requireRoot(): void {
    if (!this.isRoot()) {
      throw new PreconditionError('ANODYNE_E_PROVIDER_NOT_ROOT', 'the local provider needs root privileges (namespaces, cgroups, bridge, iptables): run the platform as root', {});
    }
  }

  private pool(state: LocalState): IpPool {
    const used = new Set<string>([...Object.values(state.vms).map((v) => v.ip), ...Object.values(state.lbs).map((l) => l.ip)]);
    return new IpPool(this.cidr, used);
  }

  // ------------------------------------------------------------------ host network

  /**
   * Makes the VM network (bridge and firewall rules) exist now and returns the host's address
   * on it: the platform's API listens there so VMs (cluster API servers) can reach it.
   */
  async prepareNetwork(): Promise<{ gateway: string }> {
    this.requireRoot();
    await this.ensureBridge();
    return { gateway: this.cidr.gateway };
  }

  /** Once per provider (again after cleanup); concurrent creates share one setup. */
  private ensureBridge(): Promise<void> {
    this.bridgeReady ??= this.setupBridge().catch((err: unknown) => {
      this.bridgeReady = undefined;
      throw err;
    });
    return this.bridgeReady;
  }

  /** The provider's bridge and its firewall rules: traffic stays on the bridge or goes to the host. */
  private async setupBridge(): Promise<void> {
    if (!(await linkExists(this.bridge))) {
      await ip('link', 'add', this.bridge, 'type', 'bridge');
      await ip('addr', 'add', `${this.cidr.gateway}/${this.cidr.prefix}`, 'dev', this.bridge);
    }
    await ip('link', 'set', this.bridge, 'up');
    const rules: string[][] = [
      // Between VMs on the bridge (seen by iptables when bridge-nf-call-iptables is on).
      ['FORWARD', '-i', this.bridge, '-o', this.bridge, '-j', 'ACCEPT'],
      // Never routed to or from anywhere else: no NAT, no forwarding off this host.
      ['FORWARD', '-i', this.bridge, '!', '-o', this.bridge, '-j', 'DROP'],
      ['FORWARD', '!', '-i', this.bridge, '-o', this.bridge, '-j', 'DROP'],
    ];
    for (const r of rules) {
      const spec = [...r.slice(1), '-m', 'comment', '--comment', this.comment];
      const present = await exec(['iptables', '-w', '-C', r[0]!, ...spec]).then(() => true, () => false);
      if (!present) await exec(['iptables', '-w', '-I', r[0]!, ...spec]);
    }
  }

  /** A netns with a veth on the bridge, its address and a default route via the host. */
  private async createNetns(id: string, addr: string): Promise<void> {
    const ns = this.netnsName(id);
    const veth = this.vethName(id);
    await ip('netns', 'add', ns);
    // The MAC follows from the IP: a VM recreated with the same address is reachable at once,
    // without waiting for the host's and the other VMs' ARP caches to expire.
    const mac = `02:a0:${addr.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`;
    await ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'address', mac, 'netns', ns);
    await ip('link', 'set', veth, 'master', this.bridge, 'up');
    await ip('-n', ns, 'addr', 'add', `${addr}/${this.cidr.prefix}`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', ns, 'route', 'add', 'default', 'via', this.cidr.gateway);
  }

  private async deleteNetns(id: string): Promise<void> {
    const ns = this.netnsName(id);
    killPids(await netnsPids(ns));
    await ipQuiet('netns', 'del', ns);
    await ipQuiet('link', 'del', this.vethName(id));
  }

  // ------------------------------------------------------------------ cgroups

  private createCgroups(id: string, t: VmType): string[] {
    const procsFiles: string[] = [];
    for (const h of cgroupHierarchies()) {
      const parts = this.cgroupRel(id).split('/');
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

  private cgroupDirs(id: string): string[] {
    return cgroupHierarchies().map((h) => join(CGROUP_ROOT, h.dir, this.cgroupRel(id)));
  }

  /** Kills every process in the VM's cgroups until none is left. */
  private async killCgroupProcesses(id: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const pids = this.cgroupDirs(id).flatMap((d) => pidsInCgroupTree(d));
      if (pids.length === 0) return;
      killPids(pids);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new AnodyneError('ANODYNE_E_INTERNAL', `processes of VM ${id} did not die`);
  }

  // ------------------------------------------------------------------ VM boot

  /** The script run as PID 1 in the VM's fresh namespaces: mounts, pivot_root, then tini + agent. */
  private setupScript(id: string, hostname: string): string {
    const v = this.vmDir(id);
    const r = join(v, 'root');
    const lines = [
      'set -eu',
      `R=${shellQuote(r)}`,
      `V=${shellQuote(v)}`,
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
    for (const b of this.opts.binds) {
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
      `exec /usr/bin/tini -g -- ${this.opts.agentCommand.map(shellQuote).join(' ')}`,
    );
    return lines.join('\n') + '\n';
  }

  /** Lays out the VM's root directory (empty mount points, usr symlinks, writable dirs). */
  private prepareRoot(id: string): void {
    const v = this.vmDir(id);
    const r = join(v, 'root');
    for (const d of ['usr', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'var/lib', 'var/log', 'var/tmp', 'root', 'home', 'opt', 'mnt']) mkdirSync(join(r, d), { recursive: true });
    for (const d of ['etc-upper', 'etc-work', 'disks']) mkdirSync(join(v, d), { recursive: true });
    for (const l of ['bin', 'sbin', 'lib', 'lib64', 'lib32', 'libx32']) {
      if (existsSync(`/usr/${l}`) && !existsSync(join(r, l))) {
        // Debian's merged /usr: /bin → usr/bin and so on.
        symlinkSync(`usr/${l}`, join(r, l));
      }
    }
  }

  private async makeDiskDirShared(id: string): Promise<void> {
    const d = join(this.vmDir(id), 'disks');
    if (mountsUnder(d).includes(d)) return;
    await exec(['mount', '--bind', d, d]);
    await exec(['mount', '--make-private', d]);
    await exec(['mount', '--make-shared', d]);
  }

  /** Starts the VM's init; resolves with its host PID once setup has finished. */
  private async boot(vm: VmRecord, procsFiles: string[]): Promise<{ pid: number; start: string }> {
    const v = this.vmDir(vm.id);
    writeFileSync(join(v, 'setup.sh'), this.setupScript(vm.id, vm.agentId), { mode: 0o700 });
    const consolePath = join(v, 'console.log');
    writeFileSync(consolePath, '');
    const out = openSync(consolePath, 'a');
    // The launcher joins the VM's cgroups first, so everything it becomes is charged to the VM.
    const join_ = procsFiles.map((f) => `echo $$ > ${shellQuote(f)}`).join('; ');
    const launcher = `${join_}; exec nsenter --net=/run/netns/${this.netnsName(vm.id)} -- unshare --mount --pid --uts --ipc --cgroup --fork --kill-child --propagation slave -- /bin/sh ${shellQuote(join(v, 'setup.sh'))}`;
    const env: Record<string, string> = { ...GUEST_ENV, ...vm.env, ANODYNE_AGENT_ID: vm.agentId, ANODYNE_VM_ID: vm.id };
    const child = spawn('/bin/sh', ['-c', launcher], { detached: true, stdio: ['ignore', out, out], env });
    closeSync(out);
    child.unref();
    const launcherPid = child.pid;
    if (!launcherPid) throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `VM ${vm.id}: the launcher did not start`);
    const deadline = Date.now() + this.opts.bootTimeoutMs;
    let initPid: number | undefined;
    for (;;) {
      const console_ = readFileSync(consolePath, 'utf8');
      if (initPid === undefined) initPid = childrenOf(launcherPid)[0];
      if (console_.includes('anodyne-vm-ready') && initPid !== undefined) {
        const start = processStartTime(initPid);
        if (start) return { pid: initPid, start };
      }
      if (child.exitCode !== null || (processStartTime(launcherPid) === undefined && !console_.includes('anodyne-vm-ready'))) {
        throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `VM ${vm.id} failed to boot: ${console_.trim().split('\n').slice(-5).join(' | ')}`, { details: { vmId: vm.id } });
      }
      if (Date.now() > deadline) {
        throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `VM ${vm.id} did not boot within ${this.opts.bootTimeoutMs} ms: ${console_.trim().split('\n').slice(-5).join(' | ')}`, { details: { vmId: vm.id } });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  // ------------------------------------------------------------------ VMs

  async createVm(req: CreateVmRequest): Promise<VmInfo> {
    this.requireRoot();
    validateCreate(req, [IMAGE], ['default']);
    const vmType = resolveVmType(req.vmType, this.opts.vmTypes);
    const id = `vm-${randomBytes(4).toString('hex')}`;
    const record = await this.mutex.run(() => {
      const state = this.state.read();
      const addr = this.pool(state).allocate(req.network.ip);
      const rec: VmRecord = {
        id, agentId: req.agentId, ip: addr, network: 'default', state: 'running', vmType, image: req.image,
        metadata: { ...(req.metadata ?? {}) }, createdAt: this.opts.clock.now().toISOString(), initPid: null, initStart: null, env: { ...req.env },
      };
      state.vms[id] = rec;
      this.state.write(state);
      return Promise.resolve(rec);
    });
    try {
      await this.ensureBridge();
      this.prepareRoot(id);
      await this.makeDiskDirShared(id);
      await this.createNetns(id, record.ip);
      const procs = this.createCgroups(id, vmType);
      const { pid, start } = await this.boot(record, procs);
      return await this.mutex.run(() => {
        const state = this.state.read();
        const rec = state.vms[id];
        if (!rec) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} was deleted while it was being created`);
        rec.initPid = pid;
        rec.initStart = start;
        this.state.write(state);
        this.opts.logger.info({ vmId: id, ip: rec.ip, agentId: rec.agentId }, 'local VM created');
        return Promise.resolve(publicVm(rec));
      });
    } catch (err) {
      await this.deleteVm(id).catch((e: unknown) => this.opts.logger.error({ vmId: id, err: String(e) }, 'cleanup after a failed create failed'));
      throw err;
    }
  }

  async deleteVm(id: string): Promise<void> {
    this.requireRoot();
    if (!/^vm-[0-9a-f]{8}$/.test(id)) return; // never ours: nothing to delete
    await this.mutex.run(async () => {
      const state = this.state.read();
      const rec = state.vms[id];
      if (rec?.initPid && rec.initStart && processStartTime(rec.initPid) === rec.initStart) killPids([rec.initPid]);
      await this.killCgroupProcesses(id);
      // Detach disks (their data stays), then everything else the VM had on the host.
      for (const d of Object.values(state.disks)) if (d.vmId === id) d.vmId = null;
      await unmountAll(this.vmDir(id));
      await this.deleteNetns(id);
      for (const d of this.cgroupDirs(id)) removeCgroupTree(d);
      rmSync(this.vmDir(id), { recursive: true, force: true });
      delete state.vms[id];
      this.state.write(state);
    });
  }

  hasVm(id: string): Promise<boolean> {
    const rec = this.state.read().vms[id];
    if (!rec?.initPid || !rec.initStart) return Promise.resolve(false);
    return Promise.resolve(processStartTime(rec.initPid) === rec.initStart);
  }

  async rebootVm(id: string): Promise<void> {
    this.requireRoot();
    const rec = this.state.read().vms[id];
    if (!rec) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } });
    await this.killCgroupProcesses(id);
    const procs = this.createCgroups(id, rec.vmType);
    const { pid, start } = await this.boot(rec, procs);
    await this.mutex.run(() => {
      const state = this.state.read();
      const r = state.vms[id];
      if (r) {
        r.initPid = pid;
        r.initStart = start;
        this.state.write(state);
      }
      return Promise.resolve();
    });
  }

  async setVmMetadata(id: string, metadata: Record<string, string>): Promise<void> {
    await this.mutex.run(() => {
      const state = this.state.read();
      const rec = state.vms[id];
      if (!rec) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } });
      rec.metadata = { ...metadata };
      this.state.write(state);
      return Promise.resolve();
    });
  }

  async listVms(filter?: Record<string, string>): Promise<VmInfo[]> {
    const vms = Object.values(this.state.read().vms).filter((v) => matches(v.metadata, filter));
    return Promise.all(vms.map(async (v) => ({ ...publicVm(v), state: (await this.hasVm(v.id)) ? 'running' as const : 'stopped' as const })));
  }

  /** Host PID of a VM's init (PID 1 inside), for tools that enter the VM. Local provider only. */
  initPid(id: string): number {
    const rec = this.state.read().vms[id];
    if (!rec?.initPid || processStartTime(rec.initPid) !== rec.initStart) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} is not running`, { details: { id } });
    return rec.initPid;
  }

  /**
   * Runs a command inside a running VM (all its namespaces, its root, its cgroups), like
   * `bosh ssh -c`. Local provider only; for operators and tests.
   */
  /** A shell line that joins the VM's cgroups, then enters all its namespaces and root to run argv. */
  private enterVmScript(id: string, argv: string[]): string {
    const pid = this.initPid(id);
    const procs = this.cgroupDirs(id).map((d) => join(d, 'cgroup.procs'));
    return `${procs.map((f) => `echo $$ > ${shellQuote(f)}`).join('; ')}; exec nsenter -t ${pid} -a -r -w -- ${argv.map(shellQuote).join(' ')}`;
  }

  /**
   * Runs a command inside a running VM (all its namespaces, its root, its cgroups), like
   * `bosh ssh -c`. Local provider only; for operators and tests.
   */
  async execInVm(id: string, argv: string[], options: { input?: string | Buffer; timeoutMs?: number; okCodes?: number[] } = {}) {
    return exec(['/bin/sh', '-c', this.enterVmScript(id, argv)], { ...options, env: GUEST_ENV });
  }

  /** Starts a long-running command inside a VM, detached; its output goes to the VM's console log. */
  spawnInVm(id: string, argv: string[]): number {
    const script = this.enterVmScript(id, argv);
    const out = openSync(join(this.vmDir(id), 'console.log'), 'a');
    const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: ['ignore', out, out], env: GUEST_ENV });
    closeSync(out);
    child.unref();
    return child.pid ?? 0;
  }

  // ------------------------------------------------------------------ disks

  async createDisk(sizeMb: number, metadata: Record<string, string> = {}): Promise<DiskInfo> {
    this.requireRoot();
    if (!Number.isInteger(sizeMb) || sizeMb < 1) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'disk size must be a whole number of MB ≥ 1', { details: { sizeMb } });
    const id = `disk-${randomBytes(4).toString('hex')}`;
    mkdirSync(join(this.opts.dataDir, 'disks', id, 'data'), { recursive: true, mode: 0o755 });
    const disk: DiskInfo = { id, sizeMb, vmId: null, metadata: { ...metadata } };
    await this.mutex.run(() => {
      const state = this.state.read();
      state.disks[id] = disk;
      this.state.write(state);
      return Promise.resolve();
    });
    return { ...disk };
  }

  async deleteDisk(id: string): Promise<void> {
    this.requireRoot();
    await this.mutex.run(() => {
      const state = this.state.read();
      const d = state.disks[id];
      if (d?.vmId) throw new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${id} is attached to VM ${d.vmId}; detach it first`, { details: { id, vmId: d.vmId } });
      if (/^disk-[0-9a-f]{8}$/.test(id)) rmSync(join(this.opts.dataDir, 'disks', id), { recursive: true, force: true });
      delete state.disks[id];
      this.state.write(state);
      return Promise.resolve();
    });
  }

  hasDisk(id: string): Promise<boolean> {
    return Promise.resolve(this.state.read().disks[id] !== undefined);
  }

  async attachDisk(vmId: string, diskId: string): Promise<DiskAttachment> {
    this.requireRoot();
    return this.mutex.run(async () => {
      const state = this.state.read();
      const vm = state.vms[vmId];
      const disk = state.disks[diskId];
      if (!vm) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${vmId} not found`, { details: { vmId } });
      if (!disk) throw new NotFoundError('ANODYNE_E_PROVIDER_DISK_NOT_FOUND', `disk ${diskId} not found`, { details: { diskId } });
      if (disk.vmId && disk.vmId !== vmId) throw new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${diskId} is attached to VM ${disk.vmId}`, { details: { diskId, vmId: disk.vmId } });
      const target = join(this.vmDir(vmId), 'disks', diskId);
      mkdirSync(target, { recursive: true });
      if (!mountsUnder(target).includes(target)) await exec(['mount', '--bind', join(this.opts.dataDir, 'disks', diskId, 'data'), target]);
      disk.vmId = vmId;
      this.state.write(state);
      return { path: `${GUEST_DISK_DIR}/${diskId}` };
    });
  }

  async detachDisk(vmId: string, diskId: string): Promise<void> {
    this.requireRoot();
    await this.mutex.run(async () => {
      const state = this.state.read();
      const target = join(this.vmDir(vmId), 'disks', diskId);
      await unmountAll(target);
      rmSync(target, { recursive: true, force: true });
      const disk = state.disks[diskId];
      if (disk && disk.vmId === vmId) disk.vmId = null;
      this.state.write(state);
    });
  }

  // ------------------------------------------------------------------ load balancers

  private lbDir(lbId: string): string {
    return join(this.opts.dataDir, 'lbs', lbId);
  }

  private haproxyConfig(lb: LbRecord): string {
    const dir = this.lbDir(lb.lbId);
    const servers = lb.backends.map((b, i) => `  server b${i} ${b.ip}:${b.port} check`);
    return [
      'global',
      '  maxconn 4096',
      `  pidfile ${join(dir, 'haproxy.pid')}`,
      'defaults',
      '  mode tcp',
      '  timeout connect 2s',
      '  timeout client 1h',
      '  timeout server 1h',
      '  timeout check 1s',
      'frontend fe',
      `  bind 0.0.0.0:${lb.port}`,
      '  default_backend be',
      'backend be',
      '  balance roundrobin',
      '  default-server inter 500ms fall 2 rise 1',
      ...servers,
      '',
    ].join('\n');
  }

  async createLoadBalancer(spec: LoadBalancerSpec): Promise<LoadBalancerInfo> {
    this.requireRoot();
    if (!spec || typeof spec.name !== 'string' || !/^[a-z0-9][a-z0-9-]{0,40}$/.test(spec.name)) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'load balancer name must be lowercase letters, digits and dashes');
    if (spec.network !== 'default') throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `unknown network ${JSON.stringify(spec.network)}`);
    if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'load balancer port must be 1 to 65535');
    validateBackends(spec.backends);
    const lbId = `lb-${randomBytes(4).toString('hex')}`;
    const lb = await this.mutex.run(() => {
      const state = this.state.read();
      if (state.lbs[spec.name]) throw new ConflictError('ANODYNE_E_CONFLICT', `load balancer ${spec.name} exists`, { details: { name: spec.name } });
      const addr = this.pool(state).allocate(spec.ip);
      const rec: LbRecord = { id: spec.name, lbId, ip: addr, port: spec.port, network: 'default', backends: [...spec.backends], metadata: { ...(spec.metadata ?? {}) } };
      state.lbs[spec.name] = rec;
      this.state.write(state);
      return Promise.resolve(rec);
    });
    try {
      await this.ensureBridge();
      mkdirSync(this.lbDir(lbId), { recursive: true });
      writeFileSync(join(this.lbDir(lbId), 'haproxy.cfg'), this.haproxyConfig(lb));
      await this.createNetns(lbId, lb.ip);
      const procs = this.createCgroups(lbId, { cpu: 1, memoryMb: 256, ephemeralDiskMb: 0, pids: 256 });
      const out = openSync(join(this.lbDir(lbId), 'haproxy.log'), 'a');
      // Master-worker mode: SIGUSR2 to the master reloads the configuration.
      const script = `${procs.map((f) => `echo $$ > ${shellQuote(f)}`).join('; ')}; exec nsenter --net=/run/netns/${this.netnsName(lbId)} -- haproxy -W -f ${shellQuote(join(this.lbDir(lbId), 'haproxy.cfg'))}`;
      const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: ['ignore', out, out] });
      closeSync(out);
      child.unref();
      writeFileSync(join(this.lbDir(lbId), 'master.pid'), String(child.pid));
      // Ready when the frontend accepts connections.
      const deadline = Date.now() + 10_000;
      while (!(await exec(['nsenter', `--net=/run/netns/${this.netnsName(lbId)}`, '--', 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${lb.port}`]).then(() => true, () => false))) {
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `haproxy for ${spec.name} did not start: ${readFileSync(join(this.lbDir(lbId), 'haproxy.log'), 'utf8').slice(-500)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      return publicLb(lb);
    } catch (err) {
      await this.deleteLoadBalancer(spec.name).catch(() => undefined);
      throw err;
    }
  }

  getLoadBalancer(id: string): Promise<LoadBalancerInfo> {
    const lb = this.state.read().lbs[id];
    if (!lb) return Promise.reject(new NotFoundError('ANODYNE_E_PROVIDER_LB_NOT_FOUND', `load balancer ${id} not found`, { details: { id } }));
    return Promise.resolve(publicLb(lb));
  }

  async updateLoadBalancer(id: string, backends: LoadBalancerBackend[]): Promise<LoadBalancerInfo> {
    this.requireRoot();
    validateBackends(backends);
    return this.mutex.run(() => {
      const state = this.state.read();
      const lb = state.lbs[id];
      if (!lb) throw new NotFoundError('ANODYNE_E_PROVIDER_LB_NOT_FOUND', `load balancer ${id} not found`, { details: { id } });
      lb.backends = [...backends];
      writeFileSync(join(this.lbDir(lb.lbId), 'haproxy.cfg'), this.haproxyConfig(lb));
      const master = Number(readFileSync(join(this.lbDir(lb.lbId), 'master.pid'), 'utf8'));
      killPids([master], 'SIGUSR2');
      this.state.write(state);
      return Promise.resolve(publicLb(lb));
    });
  }

  async deleteLoadBalancer(id: string): Promise<void> {
    this.requireRoot();
    await this.mutex.run(async () => {
      const state = this.state.read();
      const lb = state.lbs[id];
      if (!lb) return;
      await this.killCgroupProcesses(lb.lbId);
      await this.deleteNetns(lb.lbId);
      for (const d of this.cgroupDirs(lb.lbId)) removeCgroupTree(d);
      rmSync(this.lbDir(lb.lbId), { recursive: true, force: true });
      delete state.lbs[id];
      this.state.write(state);
    });
  }

  // ------------------------------------------------------------------ cleanup

  /**
   * Removes everything carrying this provider's tag, found on the host itself: processes in
   * its cgroups, mounts under its data dir, network namespaces, veths, the bridge, iptables
   * rules, cgroups, and its data dir.
   */
  async cleanup(): Promise<CleanupReport> {
    this.requireRoot();
    return this.mutex.run(async () => {
      const state = this.state.read();
      const report: CleanupReport = { vms: Object.keys(state.vms).length, disks: Object.keys(state.disks).length, loadBalancers: Object.keys(state.lbs).length, other: {} };
      const bump = (k: string, n = 1) => (report.other[k] = (report.other[k] ?? 0) + n);
      const tagRoot = cgroupHierarchies().map((h) => join(CGROUP_ROOT, h.dir, 'anodyne', this.opts.tag));
      for (let i = 0; i < 100; i++) {
        const pids = tagRoot.flatMap((d) => pidsInCgroupTree(d));
        if (pids.length === 0) break;
        killPids(pids);
        bump('processes', pids.length);
        await new Promise((r) => setTimeout(r, 50));
      }
      const prefix = `anodyne-${this.opts.tag}-`;
      for (const ns of (await netnsList()).filter((n) => n.startsWith(prefix))) {
        killPids(await netnsPids(ns));
        await ipQuiet('netns', 'del', ns);
        bump('netns');
      }
      bump('mounts', await unmountAll(this.opts.dataDir));
      for (const l of await linksWithPrefix(`av${this.opts.tag}`)) {
        await ipQuiet('link', 'del', l);
        bump('links');
      }
      if (await linkExists(this.bridge)) {
        await ipQuiet('link', 'del', this.bridge);
        bump('links');
      }
      for (const table of ['filter', 'nat']) {
        for (const rule of await rulesWithComment(table, this.comment)) {
          await deleteRule(table, rule).catch(() => undefined);
          bump('iptables');
        }
      }
      for (const d of tagRoot) bump('cgroups', removeCgroupTree(d));
      // The shared parent goes too once no other provider tag uses it.
      for (const h of cgroupHierarchies()) {
        try {
          rmdirSync(join(CGROUP_ROOT, h.dir, 'anodyne'));
        } catch {
          // another tag's cgroups live there, or it is already gone
        }
      }
      rmSync(this.opts.dataDir, { recursive: true, force: true });
      this.bridgeReady = undefined;
      return report;
    });
  }
}

function publicVm(rec: VmRecord): VmInfo {
  return {
    id: rec.id, agentId: rec.agentId, ip: rec.ip, network: rec.network, state: rec.state, vmType: rec.vmType, image: rec.image,
    metadata: { ...rec.metadata }, createdAt: rec.createdAt,
  };
}

function publicLb(lb: LbRecord): LoadBalancerInfo {
  return { id: lb.id, ip: lb.ip, port: lb.port, network: lb.network, backends: [...lb.backends], metadata: { ...lb.metadata } };
}
