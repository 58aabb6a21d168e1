// The local provider: the Provider contract over namespaces on this host, delegating to boot, network, cgroups, disks and LBs.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  ConflictError,
  InputError,
  NotFoundError,
  PreconditionError,
  exec,
  type Clock,
  type ExecResult,
  type Logger,
} from '@anodyne/common';
import type {
  CleanupReport,
  CreateVmRequest,
  DiskAttachment,
  DiskInfo,
  LoadBalancerBackend,
  LoadBalancerHealthCheck,
  LoadBalancerInfo,
  LoadBalancerSpec,
  Provider,
  ProviderInfo,
  SegmentInfo,
  SegmentSpec,
  VmInfo,
  VmType,
} from '../contract.js';
import { SegmentPool, matches, parseCidr, resolveVmType, validateCreate, validateSegmentName } from '../internal/validate.js';
import { GUEST_ENV, VmBooter, enterVmShell, type BindMount, type BootPlace } from './boot.js';
import { VmCgroups } from './cgroups.js';
import { LocalDisks, releaseDisks, shareVmDiskDir } from './disks.js';
import { killPids, processStartTime, raiseHostLimits, unmountAll, type Tally } from './host.js';
import { DataLayout } from './layout.js';
import { LoadBalancers } from './loadbalancers.js';
import { VmNetwork, type Lan } from './network.js';
import { StateFile, type LocalState, type SegmentRecord, type VmRecord } from './state.js';

export interface LocalProviderOptions {
  /** Where VM roots, disks, load balancer configs and the state file live. */
  dataDir: string;
  /** 1–6 lowercase letters/digits naming this provider's host objects (bridge, netns, cgroups). */
  tag: string;
  /** The VM network (CIDR); the first address is the host's side of the bridge. */
  network: string;
  /** Where network segments come from: a pool (CIDR) cut into ranges of `/prefix`. Absent: no segments. */
  segments?: { pool: string; prefix: number };
  /** The agent, started inside every VM as the child of its init. */
  agentCommand: string[];
  vmTypes?: Record<string, VmType>;
  /** Host directories visible in every VM (the release cache, the agent's code). */
  binds?: BindMount[];
  logger: Logger;
  /** Every time the provider measures or waits (boot, readiness, kill loops, creation dates). */
  clock: Clock;
  /** Overridable for tests of the privilege check. */
  isRoot?: () => boolean;
  /** How long createVm waits for the VM's init to finish setting up. */
  bootTimeoutMs?: number;
}

const DEFAULT_VM_TYPES: Record<string, VmType> = {
  small: { cpu: 1, memoryMb: 1024, ephemeralDiskMb: 2048, pids: 4096 },
  medium: { cpu: 2, memoryMb: 2048, ephemeralDiskMb: 8192, pids: 8192 },
  large: { cpu: 2, memoryMb: 4096, ephemeralDiskMb: 16384, pids: 16384 },
};

const IMAGE = 'host-usr';

/**
 * The local provider: each VM is a set of Linux namespaces on this host (bosh-lite / kind
 * without Docker). A VM has its own network namespace with a veth on the provider's bridge
 * and its own IP (network.ts); its own mount, PID, UTS, IPC and cgroup namespaces, root and
 * init (boot.ts); per-VM cgroups enforcing the VM type (cgroups.ts). Persistent disks
 * (disks.ts) and haproxy load balancers (loadbalancers.ts) complete the contract; every
 * record change goes through the state file's `update`. Needs root.
 */
export class LocalProvider implements Provider {
  private readonly vmTypes: Record<string, VmType>;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly isRoot: () => boolean;
  private readonly layout: DataLayout;
  private readonly store: StateFile;
  private readonly network: VmNetwork;
  private readonly cgroups: VmCgroups;
  private readonly booter: VmBooter;
  private readonly disks: LocalDisks;
  private readonly lbs: LoadBalancers;
  private readonly segmentPool: SegmentPool | undefined;

  constructor(options: LocalProviderOptions) {
    if (!/^[a-z0-9]{1,6}$/.test(options.tag)) {
      const why = `provider tag ${JSON.stringify(options.tag)} must be 1 to 6 lowercase letters or digits`;
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', why);
    }
    if (!Array.isArray(options.agentCommand) || options.agentCommand.length === 0) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'agentCommand must name the program to start in each VM');
    }
    this.vmTypes = options.vmTypes ?? DEFAULT_VM_TYPES;
    this.logger = options.logger;
    this.clock = options.clock;
    this.isRoot = options.isRoot ?? (() => process.getuid?.() === 0);
    const cidr = parseCidr(options.network);
    this.segmentPool = options.segments ? new SegmentPool(options.segments.pool, options.segments.prefix) : undefined;
    this.layout = new DataLayout(options.dataDir);
    this.store = new StateFile(this.layout.stateFile);
    this.network = new VmNetwork(options.tag, cidr, options.dataDir);
    this.cgroups = new VmCgroups(options.tag, options.clock);
    this.booter = new VmBooter({
      agentCommand: options.agentCommand,
      binds: options.binds ?? [],
      bootTimeoutMs: options.bootTimeoutMs ?? 15_000,
      clock: options.clock,
    });
    this.disks = new LocalDisks(this.layout, this.store);
    this.lbs = new LoadBalancers({
      layout: this.layout,
      store: this.store,
      network: this.network,
      cgroups: this.cgroups,
      clock: options.clock,
      lanOf: (state, network) => this.lanOf(state, network),
    });
  }

  info(): ProviderInfo {
    const { cidr } = this.network;
    return {
      name: 'local',
      version: '1',
      kind: 'namespaces',
      vmTypes: this.vmTypes,
      networks: [{ name: 'default', range: cidr.text, gateway: cidr.gateway }],
      images: [IMAGE],
      capabilities: { persistentDisks: true, loadBalancers: true, reboot: true, segments: this.segmentPool !== undefined },
      ...(this.segmentPool ? { segments: this.segmentPool.info(Object.keys(this.store.read().segments).length) } : {}),
    };
  }

  /** The network a VM or load balancer is placed on: `default` or a segment. */
  private lanOf(state: LocalState, network: string): Lan {
    if (network === 'default') return this.network.defaultLan;
    const seg = state.segments[network];
    if (!seg) {
      const known = ['default', ...Object.keys(state.segments)].join(', ');
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `unknown network ${JSON.stringify(network)}; known: ${known}`, {
        details: { network },
      });
    }
    return this.network.segmentLan(seg.name, seg.index, parseCidr(seg.range, 8, 29));
  }

  private requireRoot(): void {
    if (!this.isRoot()) {
      throw new PreconditionError(
        'ANODYNE_E_PROVIDER_NOT_ROOT',
        'the local provider needs root privileges (namespaces, cgroups, bridge, iptables): run the platform as root',
        {},
      );
    }
  }

  /**
   * Makes the VM network (bridge and firewall rules) exist now and returns the host's address
   * on it: the platform's API listens there so VMs (cluster API servers) can reach it.
   */
  async prepareNetwork(): Promise<{ gateway: string }> {
    this.requireRoot();
    await this.network.ensureBridge();
    return { gateway: this.network.cidr.gateway };
  }

  // ------------------------------------------------------------------ VMs

  private hostLimitsChecked = false;

  /** Once per provider: the host's inotify limits are raised to what many VMs need (see raiseHostLimits). */
  private ensureHostLimits(): void {
    if (this.hostLimitsChecked) return;
    this.hostLimitsChecked = true;
    const raised = raiseHostLimits();
    if (Object.keys(raised).length > 0) this.logger.info({ raised }, 'host kernel limits raised for VMs');
  }

  async createVm(req: CreateVmRequest): Promise<VmInfo> {
    this.requireRoot();
    validateCreate(req, [IMAGE], ['default', ...Object.keys(this.store.read().segments)]);
    const vmType = resolveVmType(req.vmType, this.vmTypes);
    const id = `vm-${randomBytes(4).toString('hex')}`;
    let lan: Lan = this.network.defaultLan;
    const record = await this.store.update((state) => {
      lan = this.lanOf(state, req.network.network);
      const rec: VmRecord = {
        id,
        agentId: req.agentId,
        ip: this.network.allocate(state, req.network.ip, lan),
        network: lan.name,
        state: 'running',
        vmType,
        image: req.image,
        metadata: { ...(req.metadata ?? {}) },
        createdAt: this.clock.now().toISOString(),
        initPid: null,
        initStart: null,
        env: { ...req.env },
      };
      state.vms[id] = rec;
      return rec;
    });
    try {
      await this.network.ensureBridge();
      this.ensureHostLimits();
      this.booter.prepareRoot(this.layout.vm(id));
      await shareVmDiskDir(this.layout, id);
      await this.network.createNetns(id, record.ip, lan);
      const procsFiles = this.cgroups.create(id, vmType);
      const { pid, start } = await this.booter.start(record, this.bootPlace(id, procsFiles));
      const created = await this.store.update((state) => {
        const rec = state.vms[id];
        if (!rec) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} was deleted while it was being created`);
        rec.initPid = pid;
        rec.initStart = start;
        return publicVm(rec);
      });
      this.logger.info({ vmId: id, ip: created.ip, agentId: created.agentId }, 'local VM created');
      return created;
    } catch (err) {
      await this.deleteVm(id).catch((e: unknown) => {
        this.logger.error({ vmId: id, err: String(e) }, 'cleanup after a failed create failed');
      });
      throw err;
    }
  }

  private bootPlace(id: string, procsFiles: string[]): BootPlace {
    return { vmDir: this.layout.vm(id), netnsPath: this.network.netnsPath(id), procsFiles };
  }

  async deleteVm(id: string): Promise<void> {
    this.requireRoot();
    if (!/^vm-[0-9a-f]{8}$/.test(id)) return; // never ours: nothing to delete
    await this.store.update(async (state) => {
      const rec = state.vms[id];
      if (rec?.initPid && rec.initStart && processStartTime(rec.initPid) === rec.initStart) killPids([rec.initPid]);
      await this.cgroups.killAll(id);
      // Detach disks (their data stays), then everything else the VM had on the host.
      releaseDisks(state, id);
      await unmountAll(this.layout.vm(id));
      await this.network.deleteNetns(id);
      this.cgroups.remove(id);
      rmSync(this.layout.vm(id), { recursive: true, force: true });
      delete state.vms[id];
    });
  }

  hasVm(id: string): Promise<boolean> {
    const rec = this.store.read().vms[id];
    if (!rec?.initPid || !rec.initStart) return Promise.resolve(false);
    return Promise.resolve(processStartTime(rec.initPid) === rec.initStart);
  }

  async rebootVm(id: string): Promise<void> {
    this.requireRoot();
    const rec = this.store.read().vms[id];
    if (!rec) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } });
    await this.cgroups.killAll(id);
    const procsFiles = this.cgroups.create(id, rec.vmType);
    const { pid, start } = await this.booter.start(rec, this.bootPlace(id, procsFiles));
    await this.store.update((state) => {
      const r = state.vms[id];
      if (r) {
        r.initPid = pid;
        r.initStart = start;
      }
    });
  }

  async setVmMetadata(id: string, metadata: Record<string, string>): Promise<void> {
    await this.store.update((state) => {
      const rec = state.vms[id];
      if (!rec) throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } });
      rec.metadata = { ...metadata };
    });
  }

  async listVms(filter?: Record<string, string>): Promise<VmInfo[]> {
    const vms = Object.values(this.store.read().vms).filter((v) => matches(v.metadata, filter));
    const withState = async (v: VmRecord): Promise<VmInfo> => ({ ...publicVm(v), state: (await this.hasVm(v.id)) ? 'running' : 'stopped' });
    return Promise.all(vms.map(withState));
  }

  /** Host PID of a VM's init (PID 1 inside), for tools that enter the VM. Local provider only. */
  initPid(id: string): number {
    const rec = this.store.read().vms[id];
    if (!rec?.initPid || processStartTime(rec.initPid) !== rec.initStart) {
      throw new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} is not running`, { details: { id } });
    }
    return rec.initPid;
  }

  /**
   * Runs a command inside a running VM (all its namespaces, its root, its cgroups), like
   * `bosh ssh -c`. Local provider only; for operators and tests.
   */
  async execInVm(
    id: string,
    argv: string[],
    options: { input?: string | Buffer; timeoutMs?: number; okCodes?: number[] } = {},
  ): Promise<ExecResult> {
    return exec(['/bin/sh', '-c', this.enterVmShell(id, argv)], { ...options, env: GUEST_ENV });
  }

  /** Starts a long-running command inside a VM, detached; its output goes to the VM's console log. */
  spawnInVm(id: string, argv: string[]): number {
    const script = this.enterVmShell(id, argv);
    const out = openSync(join(this.layout.vm(id), 'console.log'), 'a');
    const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: ['ignore', out, out], env: GUEST_ENV });
    closeSync(out);
    child.unref();
    return child.pid ?? 0;
  }

  private enterVmShell(id: string, argv: string[]): string {
    return enterVmShell(this.initPid(id), this.cgroups.procsFiles(id), argv);
  }

  // ------------------------------------------------------------------ disks

  async createDisk(sizeMb: number, metadata: Record<string, string> = {}): Promise<DiskInfo> {
    this.requireRoot();
    return this.disks.create(sizeMb, metadata);
  }

  async deleteDisk(id: string): Promise<void> {
    this.requireRoot();
    await this.disks.delete(id);
  }

  hasDisk(id: string): Promise<boolean> {
    return Promise.resolve(this.disks.has(id));
  }

  listDisks(filter?: Record<string, string>): Promise<DiskInfo[]> {
    return Promise.resolve(this.disks.list().filter((d) => matches(d.metadata, filter)));
  }

  async attachDisk(vmId: string, diskId: string): Promise<DiskAttachment> {
    this.requireRoot();
    return this.disks.attach(vmId, diskId);
  }

  async detachDisk(vmId: string, diskId: string): Promise<void> {
    this.requireRoot();
    await this.disks.detach(vmId, diskId);
  }

  // ------------------------------------------------------------------ load balancers

  async createLoadBalancer(spec: LoadBalancerSpec): Promise<LoadBalancerInfo> {
    this.requireRoot();
    return this.lbs.create(spec);
  }

  getLoadBalancer(id: string): Promise<LoadBalancerInfo> {
    return this.lbs.get(id);
  }

  async updateLoadBalancer(id: string, backends: LoadBalancerBackend[], healthCheck?: LoadBalancerHealthCheck): Promise<LoadBalancerInfo> {
    this.requireRoot();
    return this.lbs.update(id, backends, healthCheck);
  }

  async deleteLoadBalancer(id: string): Promise<void> {
    this.requireRoot();
    await this.lbs.delete(id);
  }

  listLoadBalancers(filter?: Record<string, string>): Promise<LoadBalancerInfo[]> {
    return Promise.resolve(this.lbs.list().filter((l) => matches(l.metadata, filter)));
  }

  // ------------------------------------------------------------------ segments

  async createSegment(spec: SegmentSpec): Promise<SegmentInfo> {
    this.requireRoot();
    const name = validateSegmentName(spec?.name, ['default']);
    const pool = this.segmentPool;
    if (!pool) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'this provider has no segment pool (provider.segments)');
    return this.store.update(async (state) => {
      const existing = state.segments[name];
      if (existing) return publicSegment(existing);
      const index = pool.allocate(new Set(Object.values(state.segments).map((x) => x.index)), spec.within);
      const range = pool.range(index);
      const lan = this.network.segmentLan(name, index, range);
      try {
        await this.network.createSegmentBridge(lan);
      } catch (err) {
        await this.network.deleteSegmentBridge(lan).catch(() => undefined);
        throw err;
      }
      const rec: SegmentRecord = { name, range: range.text, gateway: range.gateway, metadata: { ...(spec.metadata ?? {}) }, index };
      state.segments[name] = rec;
      this.logger.info({ segment: name, range: rec.range, bridge: lan.bridge }, 'network segment created');
      return publicSegment(rec);
    });
  }

  async deleteSegment(name: string): Promise<void> {
    this.requireRoot();
    await this.store.update(async (state) => {
      const rec = state.segments[name];
      if (!rec) return;
      const users = [...Object.values(state.vms), ...Object.values(state.lbs)].filter((x) => x.network === name).map((x) => x.id);
      if (users.length > 0)
        throw new ConflictError('ANODYNE_E_PROVIDER_SEGMENT_IN_USE', `segment ${name} still holds ${users.join(', ')}`, {
          details: { name, users },
        });
      await this.network.deleteSegmentBridge(this.lanOf(state, name));
      delete state.segments[name];
      this.logger.info({ segment: name, range: rec.range }, 'network segment deleted');
    });
  }

  listSegments(filter?: Record<string, string>): Promise<SegmentInfo[]> {
    return Promise.resolve(
      Object.values(this.store.read().segments)
        .filter((x) => matches(x.metadata, filter))
        .map(publicSegment),
    );
  }

  // ------------------------------------------------------------------ cleanup

  /**
   * Removes everything carrying this provider's tag, found on the host itself: processes in
   * its cgroups, mounts under its data dir, network namespaces, veths, the bridge, iptables
   * rules, cgroups, and its data dir. Runs under the state lock; it changes no record, so the
   * state file is not written again (it goes with the data dir).
   */
  async cleanup(): Promise<CleanupReport> {
    this.requireRoot();
    return this.store.update(async (state) => {
      const report: CleanupReport = {
        vms: Object.keys(state.vms).length,
        disks: Object.keys(state.disks).length,
        loadBalancers: Object.keys(state.lbs).length,
        segments: Object.keys(state.segments).length,
        other: {},
      };
      const count: Tally = (kind, n = 1) => {
        report.other[kind] = (report.other[kind] ?? 0) + n;
      };
      await this.cgroups.killTagged(count);
      await this.network.removeNamespaces(count);
      count('mounts', await unmountAll(this.layout.root));
      await this.network.removeHostSide(count);
      this.cgroups.removeTagged(count);
      rmSync(this.layout.root, { recursive: true, force: true });
      this.network.forgetBridge();
      return report;
    });
  }
}

function publicSegment(rec: SegmentRecord): SegmentInfo {
  return { name: rec.name, range: rec.range, gateway: rec.gateway, metadata: { ...rec.metadata } };
}

function publicVm(rec: VmRecord): VmInfo {
  return {
    id: rec.id,
    agentId: rec.agentId,
    ip: rec.ip,
    network: rec.network,
    state: rec.state,
    vmType: rec.vmType,
    image: rec.image,
    metadata: { ...rec.metadata },
    createdAt: rec.createdAt,
  };
}
