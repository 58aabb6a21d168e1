// The Provider interface (BOSH's CPI role): VMs, disks, load balancers and networks, and the rules every provider keeps.
/**
 * The infrastructure contract (BOSH's CPI role). The director places instances on VMs through
 * it and never learns how a provider makes them. Every provider — local namespaces, fake,
 * and later bare metal over SSH, QEMU/KVM, public clouds and vSphere — implements this
 * interface and passes the contract suite in `@anodyne/providers/testing`.
 *
 * Rules common to every method:
 * - Ids are opaque strings chosen by the provider, stable for the life of the resource.
 * - Input is validated before anything is created; a failed create leaves nothing behind.
 * - Errors are AnodyneErrors with stable codes (ANODYNE_E_PROVIDER_*); a transient failure
 *   is `retryable`.
 * - A provider keeps no state the director cannot rebuild: `listVms` with metadata and
 *   `hasVm` tell the truth about what exists, also after a platform restart.
 */

/** Size of a VM. A provider may offer named types (`info().vmTypes`) or accept explicit sizes. */
export interface VmType {
  /** Cores (fractions allowed where the provider can enforce them). */
  cpu: number;
  memoryMb: number;
  /** Size of the VM's own (non-persistent) disk. */
  ephemeralDiskMb: number;
  /** Maximum number of processes, where the provider can enforce it. */
  pids?: number;
}

export interface NetworkPlacement {
  /** Network name from `info().networks`. */
  network: string;
  /** A static IP inside the network's range, or absent for an allocated one. */
  ip?: string;
}

export interface CreateVmRequest {
  /** The agent's identity; the agent inside the VM learns it from its environment. */
  agentId: string;
  /** Image (stemcell) name from `info().images`. */
  image: string;
  /** A named type from `info().vmTypes`, or an explicit size. */
  vmType: string | VmType;
  network: NetworkPlacement;
  /**
   * The availability zone of the instance. A provider with zones places the VM in it (LXD: on the
   * members of the cluster group of that name, when there is one); one without zones ignores it.
   */
  az?: string;
  /** Environment given to the agent: director address, credentials, agent id. */
  env: Record<string, string>;
  metadata?: Record<string, string>;
}

export type VmState = 'running' | 'stopped';

export interface VmInfo {
  id: string;
  agentId: string;
  ip: string;
  network: string;
  state: VmState;
  vmType: VmType;
  image: string;
  metadata: Record<string, string>;
  createdAt: string;
}

export interface DiskInfo {
  id: string;
  sizeMb: number;
  /** VM the disk is attached to, if any. */
  vmId: string | null;
  metadata: Record<string, string>;
}

export interface DiskAttachment {
  /** Where the agent finds the disk inside the VM (a mount point or a device). */
  path: string;
}

export interface LoadBalancerBackend {
  ip: string;
  port: number;
}

/**
 * How a load balancer decides that a backend may take new connections. Absent: it accepts a TCP
 * connection. With a path: an HTTP GET of it answers 200 (a server that is shutting down or not
 * ready yet says so there and is taken out before it stops accepting).
 */
export interface LoadBalancerHealthCheck {
  /** The path of the HTTP GET, e.g. /readyz. */
  httpPath: string;
  /** Over TLS (the backend's certificate is not verified: the check asks only whether it is ready). */
  tls?: boolean;
}

export interface LoadBalancerSpec {
  /** Unique name; also the load balancer's id. */
  name: string;
  network: string;
  /** Port the load balancer listens on. */
  port: number;
  backends: LoadBalancerBackend[];
  healthCheck?: LoadBalancerHealthCheck;
  /** A static IP for the load balancer, or absent for an allocated one. */
  ip?: string;
  metadata?: Record<string, string>;
}

export interface LoadBalancerInfo {
  id: string;
  ip: string;
  port: number;
  network: string;
  backends: LoadBalancerBackend[];
  healthCheck?: LoadBalancerHealthCheck;
  metadata: Record<string, string>;
}

export interface NetworkInfo {
  name: string;
  /** CIDR of the network. */
  range: string;
  gateway: string;
}

/**
 * A network of one deployment's own (a tenant segment): its VMs and load balancers reach each
 * other; from anywhere else (another segment, the default network) only its load balancers'
 * ports answer; the platform's host reaches everything. Placed on by name: a segment's name is
 * a network name in `CreateVmRequest.network` and `LoadBalancerSpec.network`.
 */
export interface SegmentSpec {
  /** Unique among the provider's segments and networks: `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`. */
  name: string;
  metadata?: Record<string, string>;
  /**
   * Cut the segment's range from this part of the pool only (a CIDR inside the pool, at least one
   * segment wide): a share of the pool kept for some tenants (a network profile's). A share with no
   * free segment is refused with ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED though the pool has others;
   * a share outside the pool, or narrower than a segment, with ANODYNE_E_PROVIDER_INPUT_INVALID.
   */
  within?: string;
}

export interface SegmentInfo extends NetworkInfo {
  metadata: Record<string, string>;
}

/** Where segments come from: a pool cut into equal ranges. */
export interface SegmentPoolInfo {
  /** CIDR of the pool. */
  pool: string;
  /** Addresses one segment offers to VMs and load balancers. */
  addresses: number;
  /** Prefix length of one segment's range. */
  prefix: number;
  /** Segments the pool holds, and how many of them are free now. */
  total: number;
  free: number;
}

export interface ProviderInfo {
  name: string;
  version: string;
  /** Whether VMs are real machines, namespaces on one host, or records in memory. */
  kind: 'namespaces' | 'memory' | 'machines';
  vmTypes: Record<string, VmType>;
  networks: NetworkInfo[];
  images: string[];
  capabilities: { persistentDisks: boolean; loadBalancers: boolean; reboot: boolean; segments: boolean };
  /** The segment pool, where the provider has one (`capabilities.segments`). */
  segments?: SegmentPoolInfo;
}

export interface CleanupReport {
  vms: number;
  disks: number;
  loadBalancers: number;
  segments: number;
  /** Other host objects removed (mounts, links, rules, cgroups), by kind. */
  other: Record<string, number>;
}

export interface Provider {
  /** What the provider offers. Cheap; makes no changes. */
  info(): ProviderInfo;

  /**
   * Creates a VM and starts the agent in it with `env`. Resolves once the VM exists and the
   * agent process has been started (not when the agent is ready: the director polls the
   * agent's state). Validates vm type, image, network and IP first: an unknown type, an IP
   * outside the range or already taken is refused with a coded error and nothing is created.
   * If creation fails half way, everything made so far is removed before rejecting.
   */
  createVm(request: CreateVmRequest): Promise<VmInfo>;

  /**
   * Deletes a VM and everything the provider made for it, except persistent disks (which are
   * detached). Idempotent: deleting a VM that does not exist, or half exists, succeeds.
   */
  deleteVm(id: string): Promise<void>;

  /** Whether the VM exists and is running (its init is alive). Never throws for an unknown id. */
  hasVm(id: string): Promise<boolean>;

  /** Restarts the VM's processes; its disk contents and IP are kept. */
  rebootVm(id: string): Promise<void>;

  /** Replaces the VM's metadata (the director records deployment, instance, index). */
  setVmMetadata(id: string, metadata: Record<string, string>): Promise<void>;

  /** VMs the provider knows, optionally only those whose metadata contains `filter`. */
  listVms(filter?: Record<string, string>): Promise<VmInfo[]>;

  /** Creates a persistent disk. Its contents survive the deletion of any VM it is attached to. */
  createDisk(sizeMb: number, metadata?: Record<string, string>): Promise<DiskInfo>;

  /** Deletes a disk and its data. Refused while attached. Idempotent for unknown ids. */
  deleteDisk(id: string): Promise<void>;

  /** Whether the disk exists with its data (not only in the provider's records). Never throws for an unknown id. */
  hasDisk(id: string): Promise<boolean>;

  /**
   * Disks that exist, optionally only those whose metadata contains `filter`; `vmId` is the VM a
   * disk is attached to as the infrastructure sees it (a disk detached behind the provider's back
   * shows null).
   */
  listDisks(filter?: Record<string, string>): Promise<DiskInfo[]>;

  /** Attaches a disk to a running VM; the agent finds it at the returned path. Idempotent. */
  attachDisk(vmId: string, diskId: string): Promise<DiskAttachment>;

  /** Detaches a disk from a VM. Idempotent. */
  detachDisk(vmId: string, diskId: string): Promise<void>;

  /**
   * Creates a TCP load balancer that forwards to the backends that pass health checks and
   * stops sending to a backend that fails them.
   */
  createLoadBalancer(spec: LoadBalancerSpec): Promise<LoadBalancerInfo>;

  /**
   * Replaces the backends of a load balancer without changing its address; a health check given
   * replaces the one it had.
   */
  updateLoadBalancer(id: string, backends: LoadBalancerBackend[], healthCheck?: LoadBalancerHealthCheck): Promise<LoadBalancerInfo>;

  /** A load balancer's address and backends; ANODYNE_E_PROVIDER_LB_NOT_FOUND if unknown. */
  getLoadBalancer(id: string): Promise<LoadBalancerInfo>;

  /** Deletes a load balancer. Idempotent. */
  deleteLoadBalancer(id: string): Promise<void>;

  /** Load balancers the provider has, optionally only those whose metadata contains `filter`. */
  listLoadBalancers(filter?: Record<string, string>): Promise<LoadBalancerInfo[]>;

  /**
   * Makes a network segment from the pool (its own range, isolated from every other segment: see
   * SegmentSpec). Idempotent by name: an existing segment is returned unchanged. A pool with no
   * free segment is refused with ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED before anything is made.
   */
  createSegment(spec: SegmentSpec): Promise<SegmentInfo>;

  /**
   * Deletes a segment and frees its range. Refused with ANODYNE_E_PROVIDER_SEGMENT_IN_USE while a
   * VM or load balancer is on it. Idempotent for unknown names.
   */
  deleteSegment(name: string): Promise<void>;

  /** Segments that exist, optionally only those whose metadata contains `filter`. */
  listSegments(filter?: Record<string, string>): Promise<SegmentInfo[]>;

  /**
   * Removes everything this provider instance has created on the infrastructure, found by
   * looking at the infrastructure itself (not only at the provider's records). For tests and
   * the operator's `cleanup` command.
   */
  cleanup(): Promise<CleanupReport>;
}
