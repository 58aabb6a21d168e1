// The in-memory FakeProvider for unit tests of the director: keeps the contract's rules, creates nothing, can crash VMs.
import { randomUUID } from 'node:crypto';
import { ConflictError, InputError, NotFoundError, type Clock } from '@anodyne/common';
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
import {
  IpPool,
  SegmentPool,
  matches,
  parseCidr,
  resolveVmType,
  validateBackends,
  validateCreate,
  validateHealthCheck,
  validateSegmentName,
} from '../internal/validate.js';

export interface FakeProviderOptions {
  clock: Clock;
  network?: string;
  /** The segment pool (CIDR) and each segment's prefix; absent: no segments. */
  segments?: { pool: string; prefix: number };
  vmTypes?: Record<string, VmType>;
  /** Milliseconds each createVm takes (on the clock), to model slow infrastructure. */
  createDelayMs?: number;
}

/**
 * An in-memory provider. FOR UNIT TESTS OF THE DIRECTOR'S LOGIC ONLY: it creates nothing,
 * runs no agent and no process. It keeps the contract's rules (validation, idempotency, IP
 * allocation) so the director's behaviour against it carries over to real providers.
 * Tests can make VMs fail with `crash` and count calls with `calls`.
 */
export class FakeProvider implements Provider {
  readonly calls: Record<string, number> = {};
  /** The availability zone each VM was asked for (a test hook: the fake has no zones of its own). */
  readonly zones = new Map<string, string | undefined>();
  private readonly vms = new Map<string, VmInfo>();
  private readonly disks = new Map<string, DiskInfo>();
  private readonly lbs = new Map<string, LoadBalancerInfo>();
  private readonly crashed = new Set<string>();
  private readonly boots = new Map<string, number>();
  /** agent id → VM id, for `runningVmOf`. */
  private readonly byAgent = new Map<string, string>();
  private readonly used = new Set<string>();
  private readonly pool: IpPool;
  private readonly segmentPool: SegmentPool | undefined;
  /** Segment name → its index in the pool, record and addresses. */
  private readonly segments = new Map<string, { index: number; info: SegmentInfo; pool: IpPool }>();
  private readonly vmTypes: Record<string, VmType>;
  private failNextCreate: Error | undefined;

  constructor(private readonly options: FakeProviderOptions) {
    this.pool = new IpPool(parseCidr(options.network ?? '10.250.0.0/16'), this.used);
    this.segmentPool = options.segments ? new SegmentPool(options.segments.pool, options.segments.prefix) : undefined;
    this.vmTypes = options.vmTypes ?? {
      small: { cpu: 1, memoryMb: 512, ephemeralDiskMb: 1024 },
      medium: { cpu: 2, memoryMb: 2048, ephemeralDiskMb: 4096 },
    };
  }

  private count(name: string): void {
    this.calls[name] = (this.calls[name] ?? 0) + 1;
  }

  info(): ProviderInfo {
    return {
      name: 'fake',
      version: '1',
      kind: 'memory',
      vmTypes: this.vmTypes,
      networks: [{ name: 'default', range: this.pool.cidr.text, gateway: this.pool.cidr.gateway }],
      images: ['default'],
      capabilities: { persistentDisks: true, loadBalancers: true, reboot: true, segments: this.segmentPool !== undefined },
      ...(this.segmentPool ? { segments: this.segmentPool.info(this.segments.size) } : {}),
    };
  }

  /** The addresses of a network: the default one, or a segment's. */
  private poolOf(network: string): IpPool {
    return network === 'default' ? this.pool : this.segments.get(network)!.pool;
  }

  private networkNames(): string[] {
    return ['default', ...this.segments.keys()];
  }

  async createSegment(spec: SegmentSpec): Promise<SegmentInfo> {
    await Promise.resolve();
    this.count('createSegment');
    validateSegmentName(spec?.name, ['default']);
    const existing = this.segments.get(spec.name);
    if (existing) return structuredClone(existing.info);
    if (!this.segmentPool) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'this provider has no segment pool');
    const index = this.segmentPool.allocate(new Set([...this.segments.values()].map((x) => x.index)), spec.within);
    const range = this.segmentPool.range(index);
    const info: SegmentInfo = { name: spec.name, range: range.text, gateway: range.gateway, metadata: { ...(spec.metadata ?? {}) } };
    this.segments.set(spec.name, { index, info, pool: new IpPool(range, new Set()) });
    return structuredClone(info);
  }

  async deleteSegment(name: string): Promise<void> {
    await Promise.resolve();
    if (!this.segments.has(name)) return;
    const users = [...[...this.vms.values()].map((v) => [v.id, v.network]), ...[...this.lbs.values()].map((l) => [l.id, l.network])]
      .filter(([, n]) => n === name)
      .map(([id]) => id!);
    if (users.length > 0)
      throw new ConflictError('ANODYNE_E_PROVIDER_SEGMENT_IN_USE', `segment ${name} still holds ${users.join(', ')}`, {
        details: { name, users },
      });
    this.segments.delete(name);
  }

  listSegments(filter?: Record<string, string>): Promise<SegmentInfo[]> {
    return Promise.resolve([...this.segments.values()].filter((x) => matches(x.info.metadata, filter)).map((x) => structuredClone(x.info)));
  }

  /** Test hook: the next createVm fails with this error after validation. */
  failNextCreateWith(err: Error): void {
    this.failNextCreate = err;
  }

  /** Test hook (for in-memory agents): the running VM of an agent, if any. */
  runningVmOf(agentId: string): VmInfo | undefined {
    const id = this.byAgent.get(agentId);
    return id !== undefined && !this.crashed.has(id) ? this.vms.get(id) : undefined;
  }

  /** Test hook: the VM's "init" dies; hasVm turns false, the record stays until deleteVm. */
  crash(id: string): void {
    if (this.vms.has(id)) this.crashed.add(id);
  }

  async createVm(req: CreateVmRequest): Promise<VmInfo> {
    this.count('createVm');
    validateCreate(req, this.info().images, this.networkNames());
    const vmType = resolveVmType(req.vmType, this.vmTypes);
    const pool = this.poolOf(req.network.network);
    const ip = pool.allocate(req.network.ip);
    if (this.options.createDelayMs) await this.options.clock.sleep(this.options.createDelayMs);
    if (this.failNextCreate) {
      const err = this.failNextCreate;
      this.failNextCreate = undefined;
      pool.release(ip);
      throw err;
    }
    const vm: VmInfo = {
      id: `fake-${randomUUID().slice(0, 8)}`,
      agentId: req.agentId,
      ip,
      network: req.network.network,
      state: 'running',
      vmType,
      image: req.image,
      metadata: { ...(req.metadata ?? {}) },
      createdAt: this.options.clock.now().toISOString(),
    };
    this.vms.set(vm.id, vm);
    this.zones.set(vm.id, req.az);
    this.byAgent.set(vm.agentId, vm.id);
    return structuredClone(vm);
  }

  deleteVm(id: string): Promise<void> {
    this.count('deleteVm');
    const vm = this.vms.get(id);
    if (vm) {
      for (const d of this.disks.values()) if (d.vmId === id) d.vmId = null;
      this.poolOf(vm.network).release(vm.ip);
      this.vms.delete(id);
      this.crashed.delete(id);
      if (this.byAgent.get(vm.agentId) === id) this.byAgent.delete(vm.agentId);
    }
    return Promise.resolve();
  }

  hasVm(id: string): Promise<boolean> {
    this.count('hasVm');
    return Promise.resolve(this.vms.has(id) && !this.crashed.has(id));
  }

  rebootVm(id: string): Promise<void> {
    this.count('rebootVm');
    if (!this.vms.has(id))
      return Promise.reject(new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } }));
    this.crashed.delete(id);
    this.boots.set(id, this.bootsOf(id) + 1);
    return Promise.resolve();
  }

  /** How many times the VM has been rebooted (its processes, the agent's too, started again). */
  bootsOf(id: string): number {
    return this.boots.get(id) ?? 0;
  }

  setVmMetadata(id: string, metadata: Record<string, string>): Promise<void> {
    const vm = this.vms.get(id);
    if (!vm) return Promise.reject(new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } }));
    vm.metadata = { ...metadata };
    return Promise.resolve();
  }

  listVms(filter?: Record<string, string>): Promise<VmInfo[]> {
    return Promise.resolve(
      [...this.vms.values()]
        .filter((v) => matches(v.metadata, filter))
        .map((v) => ({ ...structuredClone(v), state: this.crashed.has(v.id) ? ('stopped' as const) : ('running' as const) })),
    );
  }

  createDisk(sizeMb: number, metadata: Record<string, string> = {}): Promise<DiskInfo> {
    if (!Number.isInteger(sizeMb) || sizeMb < 1)
      return Promise.reject(new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'disk size must be a whole number of MB ≥ 1'));
    const disk: DiskInfo = { id: `fake-disk-${randomUUID().slice(0, 8)}`, sizeMb, vmId: null, metadata: { ...metadata } };
    this.disks.set(disk.id, disk);
    return Promise.resolve({ ...disk });
  }

  deleteDisk(id: string): Promise<void> {
    const d = this.disks.get(id);
    if (d?.vmId)
      return Promise.reject(
        new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${id} is attached to ${d.vmId}`, { details: { id, vmId: d.vmId } }),
      );
    this.disks.delete(id);
    return Promise.resolve();
  }

  hasDisk(id: string): Promise<boolean> {
    return Promise.resolve(this.disks.has(id));
  }

  listDisks(filter?: Record<string, string>): Promise<DiskInfo[]> {
    return Promise.resolve([...this.disks.values()].filter((d) => matches(d.metadata, filter)).map((d) => structuredClone(d)));
  }

  /** Test hook: the disk's data is gone behind the provider's back. */
  loseDisk(id: string): void {
    this.disks.delete(id);
  }

  /** Test hook: the disk is detached from its VM behind the provider's back. */
  unplugDisk(id: string): void {
    const d = this.disks.get(id);
    if (d) d.vmId = null;
  }

  attachDisk(vmId: string, diskId: string): Promise<DiskAttachment> {
    const d = this.disks.get(diskId);
    if (!this.vms.has(vmId)) return Promise.reject(new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${vmId} not found`));
    if (!d) return Promise.reject(new NotFoundError('ANODYNE_E_PROVIDER_DISK_NOT_FOUND', `disk ${diskId} not found`));
    if (d.vmId && d.vmId !== vmId)
      return Promise.reject(new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${diskId} is attached to ${d.vmId}`));
    d.vmId = vmId;
    return Promise.resolve({ path: `/var/lib/anodyne/disks/${diskId}` });
  }

  detachDisk(vmId: string, diskId: string): Promise<void> {
    const d = this.disks.get(diskId);
    if (d && d.vmId === vmId) d.vmId = null;
    return Promise.resolve();
  }

  async createLoadBalancer(spec: LoadBalancerSpec): Promise<LoadBalancerInfo> {
    await Promise.resolve();
    validateBackends(spec.backends);
    validateHealthCheck(spec.healthCheck);
    if (this.lbs.has(spec.name)) throw new ConflictError('ANODYNE_E_CONFLICT', `load balancer ${spec.name} exists`);
    if (!this.networkNames().includes(spec.network))
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `unknown network ${JSON.stringify(spec.network)}`);
    const ip = this.poolOf(spec.network).allocate(spec.ip);
    const lb: LoadBalancerInfo = {
      id: spec.name,
      ip,
      port: spec.port,
      network: spec.network,
      backends: [...spec.backends],
      ...(spec.healthCheck ? { healthCheck: { ...spec.healthCheck } } : {}),
      metadata: { ...(spec.metadata ?? {}) },
    };
    this.lbs.set(lb.id, lb);
    return structuredClone(lb);
  }

  async getLoadBalancer(id: string): Promise<LoadBalancerInfo> {
    await Promise.resolve();
    const lb = this.lbs.get(id);
    if (!lb) throw new NotFoundError('ANODYNE_E_PROVIDER_LB_NOT_FOUND', `load balancer ${id} not found`);
    return structuredClone(lb);
  }

  async updateLoadBalancer(id: string, backends: LoadBalancerBackend[], healthCheck?: LoadBalancerHealthCheck): Promise<LoadBalancerInfo> {
    await Promise.resolve();
    const lb = this.lbs.get(id);
    if (!lb) throw new NotFoundError('ANODYNE_E_PROVIDER_LB_NOT_FOUND', `load balancer ${id} not found`);
    validateBackends(backends);
    validateHealthCheck(healthCheck);
    lb.backends = [...backends];
    if (healthCheck) lb.healthCheck = { ...healthCheck };
    return structuredClone(lb);
  }

  listLoadBalancers(filter?: Record<string, string>): Promise<LoadBalancerInfo[]> {
    return Promise.resolve([...this.lbs.values()].filter((l) => matches(l.metadata, filter)).map((l) => structuredClone(l)));
  }

  deleteLoadBalancer(id: string): Promise<void> {
    const lb = this.lbs.get(id);
    if (lb) {
      this.poolOf(lb.network).release(lb.ip);
      this.lbs.delete(id);
    }
    return Promise.resolve();
  }

  cleanup(): Promise<CleanupReport> {
    const report: CleanupReport = {
      vms: this.vms.size,
      disks: this.disks.size,
      loadBalancers: this.lbs.size,
      segments: this.segments.size,
      other: {},
    };
    this.segments.clear();
    this.vms.clear();
    this.byAgent.clear();
    this.disks.clear();
    this.lbs.clear();
    this.used.clear();
    this.crashed.clear();
    return Promise.resolve(report);
  }
}
