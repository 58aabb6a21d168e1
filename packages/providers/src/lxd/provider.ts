// The LXD provider: the contract over LXD's REST API — VMs are system containers, disks custom volumes, load balancers haproxy instances.
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { AnodyneError, ConflictError, InputError, NotFoundError, PreconditionError, type Clock, type Logger } from '@anodyne/common';
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
import { haproxyConfig } from '../internal/haproxy.js';
import {
  IpPool,
  matches,
  parseCidr,
  resolveVmType,
  validateBackends,
  validateCreate,
  validateHealthCheck,
  validateSegmentName,
  SegmentPool,
  type Cidr,
} from '../internal/validate.js';
import type { BindMount } from '../local/boot.js';
import { GUEST_DISK_DIR } from '../local/disks.js';
import { shellQuote } from '../local/host.js';
import { VmNetwork, refuseOverlap, type Lan, type VxlanUplink } from '../local/network.js';
import { LxdClient, LxdStatusError, type LxdEndpoint } from './client.js';
import { HOST_ETC, IMAGE_DIR, buildImage } from './image.js';

export interface LxdProviderOptions {
  endpoint: LxdEndpoint;
  /** The LXD project every instance, volume and network is made in. */
  project?: string;
  /** The storage pool of instances' roots and of persistent disks (custom volumes). */
  storagePool: string;
  /** The VM network (CIDR): an LXD managed bridge the provider makes, the first address the host's. */
  network: string;
  /** 1–6 lowercase letters/digits naming this provider's objects in LXD (instances, volumes, network, image). */
  tag: string;
  /**
   * Where network segments come from: a pool (CIDR) cut into ranges of `/prefix`, each an LXD managed
   * bridge. Only with the host side here (a unix-socket endpoint, or `vxlan`): the isolation between
   * segments is this host's firewall.
   */
  segments?: { pool: string; prefix: number };
  /**
   * LXD members that are not this host's network (an LXD cluster, a daemon on another machine): each
   * network is an LXD bridge without an address on the members, tunnelled (VXLAN, multicast `group`
   * over each member's `memberInterface`) to a bridge of this host on `hostInterface`, which holds
   * the gateway. Required for a cluster: members' own bridges do not reach each other.
   */
  vxlan?: { hostInterface: string; memberInterface: string; group?: string };
  /** The agent, started inside every VM as the child of its init. */
  agentCommand: string[];
  /** Host directories visible in every VM, read-only (disk devices: the LXD daemon runs on this host). */
  binds?: BindMount[];
  vmTypes?: Record<string, VmType>;
  logger: Logger;
  clock: Clock;
}

const DEFAULT_VM_TYPES: Record<string, VmType> = {
  small: { cpu: 1, memoryMb: 1024, ephemeralDiskMb: 2048, pids: 4096 },
  medium: { cpu: 2, memoryMb: 2048, ephemeralDiskMb: 8192, pids: 8192 },
  large: { cpu: 2, memoryMb: 4096, ephemeralDiskMb: 16384, pids: 16384 },
};
const IMAGE = 'host-usr';
const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The MTU of tunnelled networks: a VXLAN frame's 50 bytes under the members' 1500, with room. */
const VXLAN_MTU = 1400;
const DEFAULT_VXLAN_GROUP = '239.0.76.76';
/** A load balancer's instance size. */
const LB_LIMITS = { 'limits.cpu.allowance': '100ms/100ms', 'limits.memory': '256MiB', 'limits.processes': '256' };
const LB_READY_TIMEOUT_MS = 10_000;

/**
 * What kubelet and containerd need of a system container: every capability, every device, /proc
 * and /sys writable, the cgroup hierarchies mounted read-write, and our init as PID 1.
 */
const RAW_LXC = [
  `lxc.init.cmd = ${IMAGE_DIR}/init`,
  'lxc.cap.drop =',
  'lxc.cgroup.devices.allow = a',
  'lxc.mount.auto = proc:rw sys:rw cgroup:rw',
].join('\n');

/** The instance config keys that carry the provider's records: `listVms` rebuilds everything from them. */
const K = {
  tag: 'user.anodyne.tag',
  kind: 'user.anodyne.kind',
  id: 'user.anodyne.id',
  agentId: 'user.anodyne.agent-id',
  ip: 'user.anodyne.ip',
  network: 'user.anodyne.network',
  vmType: 'user.anodyne.vm-type',
  image: 'user.anodyne.image',
  metadata: 'user.anodyne.metadata',
  createdAt: 'user.anodyne.created-at',
  lb: 'user.anodyne.lb',
  sizeMb: 'user.anodyne.size-mb',
  index: 'user.anodyne.index',
  range: 'user.anodyne.range',
} as const;

interface LxdNetwork {
  name: string;
  config: Record<string, string>;
}

/** Where a VM or load balancer is placed: the LXD network, its range, and the host's view of it. */
interface Placement {
  name: string;
  lxdNetwork: string;
  cidr: Cidr;
  lan: Lan;
}

interface Instance {
  name: string;
  status: string;
  /** The cluster member it is on (`none` outside a cluster). */
  location?: string;
  /** Null for an instance on a member that is not online (LXD knows its name and member only). */
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  architecture: string;
  ephemeral: boolean;
  profiles: string[];
  description: string;
}

interface Volume {
  name: string;
  config: Record<string, string>;
  used_by: string[] | null;
  location?: string;
}

interface Member {
  server_name: string;
  url: string;
  status: string;
  groups?: string[];
}

/**
 * The provider contract over an LXD daemon or cluster (docs/adr/0026). A VM is a privileged
 * system container with nesting, started from an image made here, with this host's /usr and the
 * release bound read-only; its address is the provider's (LXD's DHCP and DNS are off on our
 * network) and everything the contract returns lives in the instance's `user.anodyne.*` config,
 * so a new provider object (a restarted platform) sees what exists. Persistent disks are custom
 * storage volumes attached live as disk devices; load balancers are haproxy in an instance of
 * their own, reloaded in place. Segments are LXD bridges with this host's firewall rules (socket only).
 */
export class LxdProvider implements Provider {
  private readonly lxd: LxdClient;
  private readonly cidr: Cidr;
  private readonly vmTypes: Record<string, VmType>;
  private readonly networkName: string;
  private readonly prefix: string;
  /** The host side of our bridges (alias, forwarding, firewall rules): the daemon runs on this host. */
  private readonly hostNet: VmNetwork | undefined;
  private readonly segmentPool: SegmentPool | undefined;
  /** Segment names as last seen in LXD (info() is synchronous). */
  private segmentNames = new Set<string>();
  private readyOnce: Promise<string> | undefined;
  /** createVm/createLoadBalancer pick addresses one at a time (in this process). */
  private allocation: Promise<unknown> = Promise.resolve();
  private poolDriver = 'dir';
  /** Whether the daemon is a member of an LXD cluster (found at check()). */
  private clustered = false;
  private readonly vxlan: (VxlanUplink & { memberInterface: string }) | undefined;
  /**
   * Instances deleted while their member was unreachable: LXD cannot remove them then. They are out
   * of every answer (and their addresses free) and removed once their member is back.
   */
  private readonly abandoned = new Set<string>();

  constructor(private readonly o: LxdProviderOptions) {
    if (!/^[a-z0-9]{1,6}$/.test(o.tag)) {
      throw new InputError(
        'ANODYNE_E_PROVIDER_INPUT_INVALID',
        `provider tag ${JSON.stringify(o.tag)} must be 1 to 6 lowercase letters or digits`,
      );
    }
    if (!Array.isArray(o.agentCommand) || o.agentCommand.length === 0) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'agentCommand must name the program to start in each VM');
    }
    this.cidr = parseCidr(o.network);
    this.vmTypes = o.vmTypes ?? DEFAULT_VM_TYPES;
    this.lxd = new LxdClient(o.endpoint, o.project ?? 'default');
    this.networkName = `anlxd${o.tag}`;
    this.prefix = `an-${o.tag}-`;
    if (o.vxlan) {
      const { hostInterface, memberInterface, group = DEFAULT_VXLAN_GROUP } = o.vxlan;
      const iface = /^[a-zA-Z0-9_.-]{1,15}$/;
      if (!iface.test(hostInterface ?? '') || !iface.test(memberInterface ?? '') || !/^239\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(group)) {
        throw new InputError(
          'ANODYNE_E_PROVIDER_INPUT_INVALID',
          'vxlan needs hostInterface and memberInterface (interface names) and a group in 239.0.0.0/8',
          { details: { vxlan: o.vxlan } },
        );
      }
      // Each tag its own identifiers: 4096 per tag (the default network, then the segments).
      const vniBase = (parseInt(createHash('sha256').update(o.tag).digest('hex').slice(0, 6), 16) % 4000) * 4096 + 4096;
      this.vxlan = { dev: hostInterface, group, vniBase, mtu: VXLAN_MTU, memberInterface };
    }
    if ('socket' in o.endpoint || this.vxlan) {
      this.hostNet = new VmNetwork(o.tag, this.cidr, 'socket' in o.endpoint ? o.endpoint.socket : o.endpoint.url, {
        bridge: this.networkName,
        segmentPrefix: `anx${o.tag}-`,
        comment: `anodyne-lxd:${o.tag}`,
        kind: 'lxd',
        ...(this.vxlan ? { vxlan: this.vxlan } : {}),
      });
    } else if (o.segments) {
      throw new InputError(
        'ANODYNE_E_PROVIDER_INPUT_INVALID',
        'network segments of the LXD provider need its unix socket or vxlan (the isolation is this host’s firewall)',
      );
    }
    this.segmentPool = o.segments ? new SegmentPool(o.segments.pool, o.segments.prefix) : undefined;
  }

  info(): ProviderInfo {
    return {
      name: 'lxd',
      version: '1',
      kind: 'namespaces',
      vmTypes: this.vmTypes,
      networks: [{ name: 'default', range: this.cidr.text, gateway: this.cidr.gateway }],
      images: [IMAGE],
      capabilities: { persistentDisks: true, loadBalancers: true, reboot: true, segments: this.segmentPool !== undefined },
      ...(this.segmentPool ? { segments: this.segmentPool.info(this.segmentNames.size) } : {}),
    };
  }

  /**
   * The daemon reachable and trusting us, the project and storage pool there: what is wrong is
   * named (`anodyne server` calls this at its start through prepareNetwork).
   */
  async check(): Promise<void> {
    const server = await this.lxd.call<{ auth: string; environment?: { server_version?: string; server_clustered?: boolean } }>(
      'GET',
      '/1.0',
    );
    if (server.auth !== 'trusted') {
      throw new PreconditionError(
        'ANODYNE_E_PROVIDER_MISCONFIGURED',
        `LXD at ${this.lxd.where} does not trust this client (auth: ${server.auth}): add its certificate to LXD's trust store`,
        { details: { endpoint: this.lxd.where } },
      );
    }
    if (this.lxd.project !== 'default' && !(await this.lxd.find(`/1.0/projects/${encodeURIComponent(this.lxd.project)}`))) {
      throw new PreconditionError('ANODYNE_E_PROVIDER_MISCONFIGURED', `LXD at ${this.lxd.where} has no project ${this.lxd.project}`, {
        details: { project: this.lxd.project },
      });
    }
    const pool = await this.lxd.find<{ driver: string }>(`/1.0/storage-pools/${encodeURIComponent(this.o.storagePool)}`);
    if (!pool) {
      throw new PreconditionError(
        'ANODYNE_E_PROVIDER_MISCONFIGURED',
        `LXD at ${this.lxd.where} has no storage pool ${this.o.storagePool}`,
        {
          details: { storagePool: this.o.storagePool },
        },
      );
    }
    this.poolDriver = pool.driver;
    this.clustered = server.environment?.server_clustered === true;
    if (this.clustered && !this.vxlan) {
      throw new PreconditionError(
        'ANODYNE_E_PROVIDER_MISCONFIGURED',
        `LXD at ${this.lxd.where} is a cluster: each member's bridges are its own, so VMs on different members would not reach ` +
          'each other — set provider.lxd.vxlan (the host interface toward the members and theirs)',
        { details: { endpoint: this.lxd.where } },
      );
    }
  }

  /** The cluster's members (none outside a cluster). */
  private async members(): Promise<Member[]> {
    if (!this.clustered) return [];
    return this.lxd.call<Member[]>('GET', '/1.0/cluster/members?recursion=1');
  }

  /**
   * A managed bridge of ours: in a cluster, made pending on every member first (LXD's two steps for a
   * cluster-wide network), then created; what a failed step left is removed.
   */
  private async createNetwork(name: string, description: string, config: Record<string, string>): Promise<void> {
    const members = await this.members();
    // LXD makes a network on every member or on none ("peer node … is down"): refused before a pending record is left.
    const away = members.filter((m) => m.status !== 'Online').map((m) => m.server_name);
    if (away.length > 0) {
      throw new AnodyneError(
        'ANODYNE_E_PROVIDER_UNREACHABLE',
        `LXD makes network ${name} only with every cluster member online; not online: ${away.join(', ')} ` +
          '(back, or removed from the cluster by its operator: lxc cluster remove --force)',
        { details: { network: name, members: away }, retryable: true },
      );
    }
    try {
      for (const m of members) {
        await this.lxd.call('POST', `/1.0/networks?target=${encodeURIComponent(m.server_name)}`, {
          body: { name, type: 'bridge', config: {} },
        });
      }
      await this.lxd.call('POST', '/1.0/networks', { body: { name, type: 'bridge', description, config } });
    } catch (err) {
      await this.lxd.ignoringMissing('DELETE', `/1.0/networks/${name}`).catch(() => undefined);
      throw err;
    }
  }

  /**
   * A network's LXD config: closed (no DHCP, DNS, NAT, routing or LXD firewall rules) and, with members
   * elsewhere, without an address on them and tunnelled to this host's bridge of the same network.
   */
  private networkConfig(cidr: Cidr, index: number | undefined): Record<string, string> {
    const v = this.vxlan;
    if (!v) return closedBridge(`${cidr.gateway}/${cidr.prefix}`);
    return {
      'ipv4.address': 'none',
      'ipv6.address': 'none',
      'dns.mode': 'none',
      'bridge.mtu': String(VXLAN_MTU),
      'tunnel.an.protocol': 'vxlan',
      'tunnel.an.id': String(v.vniBase + (index === undefined ? 0 : index + 1)),
      'tunnel.an.group': v.group,
      'tunnel.an.interface': v.memberInterface,
      'tunnel.an.ttl': '1',
      [K.range]: cidr.text,
    };
  }

  /**
   * The host side of what exists in LXD, again (idempotent): each segment bridge's forwarding and rule,
   * each segment load balancer's rule — lost with a host's reboot, or never made by a process killed
   * between LXD's create and ours.
   */
  private async restoreHostSide(): Promise<void> {
    const segments = await this.segments();
    if (!this.hostNet || segments.length === 0) return;
    for (const seg of segments) {
      const on = await this.placement(seg.config[K.id] ?? '');
      await this.hostNet.createSegmentBridge(on.lan);
    }
    for (const lb of (await this.instances()).filter((i) => i.config[K.kind] === 'lb').map(lbInfo)) {
      if (lb.network === 'default') continue;
      const on = await this.placement(lb.network).catch(() => undefined);
      if (on) await this.hostNet.openLoadBalancer(on.lan, lb.ip, lb.port);
    }
  }

  /** Makes the VM network exist now and returns the host's address on it. */
  async prepareNetwork(): Promise<{ gateway: string }> {
    await this.ready();
    return { gateway: this.cidr.gateway };
  }

  /** Once per provider: the check, the network and the image. Answers the image's fingerprint. */
  private ready(): Promise<string> {
    this.readyOnce ??= (async () => {
      await this.check();
      await this.ensureNetwork();
      await this.hostNet?.ensureBridge();
      await this.restoreHostSide();
      return this.ensureImage();
    })().catch((err: unknown) => {
      this.readyOnce = undefined;
      throw err;
    });
    return this.readyOnce;
  }

  /**
   * The provider's managed bridge: the host's address, no DHCP, no DNS (dnsmasq's port 0), no NAT,
   * no routing (LXD leaves `net.ipv4.ip_forward` alone) and no LXD firewall rules: nothing leaves it.
   */
  private async ensureNetwork(): Promise<void> {
    const path = `/1.0/networks/${this.networkName}`;
    const existing = await this.lxd.find<{ config: Record<string, string> }>(path);
    const config: Record<string, string> = { ...this.networkConfig(this.cidr, undefined), [K.tag]: this.o.tag, [K.kind]: 'default' };
    if (existing) {
      const same = (k: string) => existing.config[k] === config[k];
      if (!same(K.tag) || !same('ipv4.address') || !same(K.range) || !same('tunnel.an.id')) {
        throw new PreconditionError(
          'ANODYNE_E_PROVIDER_NETWORK_IN_USE',
          `LXD network ${this.networkName} exists with ${existing.config[K.range] ?? existing.config['ipv4.address'] ?? 'no address'} ` +
            `and is not this provider's (${this.cidr.text}${this.vxlan ? ', tunnelled' : ''})`,
          { details: { network: this.networkName } },
        );
      }
      return;
    }
    // Refused before LXD puts the address on this host (the daemon is here when we have its socket).
    if (this.hostNet) await refuseOverlap(this.cidr, this.networkName);
    await this.createNetwork(this.networkName, `Anodyne VM network (tag ${this.o.tag})`, config);
    this.o.logger.info({ network: this.networkName, range: this.cidr.text }, 'LXD network created');
  }

  /** The image built here, imported unless LXD has it (same inputs, same fingerprint); older ones of the tag removed. */
  private async ensureImage(): Promise<string> {
    const image = await buildImage(this.o.agentCommand, this.o.tag);
    if (!(await this.lxd.find(`/1.0/images/${image.fingerprint}`))) {
      await this.lxd.call('POST', '/1.0/images', { raw: image.tarball, waitMs: 300_000 });
      this.o.logger.info({ fingerprint: image.fingerprint.slice(0, 12), bytes: image.tarball.length }, 'LXD image imported');
    }
    for (const old of await this.ourImages()) if (old !== image.fingerprint) await this.lxd.ignoringMissing('DELETE', `/1.0/images/${old}`);
    return image.fingerprint;
  }

  private async ourImages(): Promise<string[]> {
    const images = await this.lxd.call<{ fingerprint: string; properties: Record<string, string> }[]>('GET', '/1.0/images?recursion=1');
    return images.filter((i) => i.properties?.anodyne_tag === this.o.tag).map((i) => i.fingerprint);
  }

  // ------------------------------------------------------------------ VMs

  private instanceName(id: string): string {
    return `${this.prefix}${id}`;
  }

  /**
   * Our instances, without those deleted while their member was unreachable; such an instance whose
   * member is back is removed now.
   */
  private async instances(): Promise<Instance[]> {
    const all = await this.lxd.call<Instance[]>('GET', '/1.0/instances?recursion=1');
    if (this.abandoned.size > 0) {
      const online = new Set((await this.members()).filter((m) => m.status === 'Online').map((m) => m.server_name));
      for (const i of all.filter((x) => this.abandoned.has(x.name) && online.has(x.location ?? ''))) {
        await this.removeInstance(i.name).then(
          () => {
            this.abandoned.delete(i.name);
            this.o.logger.info({ instance: i.name, member: i.location }, 'LXD instance removed now that its member is back');
          },
          (err: unknown) => this.o.logger.warn({ instance: i.name, err: String(err) }, 'LXD instance of a returned member not removed yet'),
        );
      }
    }
    // An instance on a member that is not online comes with its name and member only (no config): not listed, so
    // the director sees its VM missing.
    return all.filter((i) => i.config?.[K.tag] === this.o.tag && !this.abandoned.has(i.name));
  }

  /**
   * The member a new instance goes on (none outside a cluster): an online one holding the fewest of
   * its kind — the same deployment's instance group for a VM, load balancers for one — then the fewest
   * of ours, then by name. An unattached disk of the same instance (its `instance_id`) draws its VM to
   * its member (a resurrected VM finds its data there rather than copying it).
   */
  private async memberFor(kind: 'vm' | 'lb', metadata: Record<string, string>, az?: string): Promise<string | undefined> {
    if (!this.clustered) return undefined;
    const members = await this.members();
    // An availability zone is the cluster group of its name, when the cluster has one.
    const zoned = az !== undefined && members.some((m) => m.groups?.includes(az));
    const online = members.filter((m) => m.status === 'Online' && (!zoned || m.groups?.includes(az))).map((m) => m.server_name);
    if (online.length === 0) {
      const where = zoned ? `of cluster group ${az} (availability zone ${az})` : 'of the LXD cluster';
      throw new AnodyneError('ANODYNE_E_PROVIDER_UNREACHABLE', `no member ${where} at ${this.lxd.where} is online`, {
        details: { endpoint: this.lxd.where, ...(zoned ? { az } : {}) },
        retryable: true,
      });
    }
    if (kind === 'vm' && metadata.instance_id) {
      const disk = (await this.volumes()).find(
        (v) => parseJson(v.config[K.metadata]).instance_id === metadata.instance_id && !this.attachedTo(v),
      );
      if (disk?.location && online.includes(disk.location)) return disk.location;
    }
    const ours = await this.instances();
    const alike = (i: Instance): boolean => {
      if (i.config[K.kind] !== kind) return false;
      if (kind === 'lb') return true;
      const m = parseJson(i.config[K.metadata]);
      return m.deployment === metadata.deployment && m.group === metadata.group;
    };
    const score = (member: string): [number, number] => {
      const here = ours.filter((i) => i.location === member);
      return [here.filter(alike).length, here.length];
    };
    return [...online].sort((a, b) => {
      const [x, y] = [score(a), score(b)];
      return x[0] - y[0] || x[1] - y[1] || a.localeCompare(b);
    })[0];
  }

  /** The MAC of an instance's interface, from its address: a VM recreated with it is reached at once (ARP caches hold). */
  private static macFor(ip: string): string {
    return `02:a1:${ip
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join(':')}`;
  }

  /** Addresses taken on one network (VMs and load balancers). */
  private async usedIps(network: string): Promise<Set<string>> {
    return new Set(
      (await this.instances())
        .filter((i) => (i.config[K.network] ?? 'default') === network)
        .map((i) => i.config[K.ip])
        .filter((ip): ip is string => !!ip),
    );
  }

  /** The provider's segments as LXD has them (and the names info() counts). */
  private async segments(): Promise<LxdNetwork[]> {
    const all = await this.lxd.call<LxdNetwork[]>('GET', '/1.0/networks?recursion=1');
    const ours = all.filter((n) => n.config[K.tag] === this.o.tag && n.config[K.kind] === 'segment');
    this.segmentNames = new Set(ours.map((n) => n.config[K.id] ?? ''));
    return ours;
  }

  /** The network a VM or load balancer goes on: `default` or a segment; unknown names are refused. */
  private async placement(network: string): Promise<Placement> {
    if (network === 'default') {
      return {
        name: 'default',
        lxdNetwork: this.networkName,
        cidr: this.cidr,
        lan: { name: 'default', bridge: this.networkName, cidr: this.cidr },
      };
    }
    const seg = (await this.segments()).find((n) => n.config[K.id] === network);
    if (!seg || !this.hostNet) {
      const known = ['default', ...this.segmentNames].join(', ');
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `unknown network ${JSON.stringify(network)}; known: ${known}`, {
        details: { network },
      });
    }
    const info = segmentInfo(seg);
    const cidr = parseCidr(info.range, 8, 29);
    return { name: network, lxdNetwork: seg.name, cidr, lan: this.hostNet.segmentLan(network, Number(seg.config[K.index]), cidr) };
  }

  /** One allocation at a time: the address is chosen and the instance recorded before the next looks. */
  private allocating<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.allocation.then(fn, fn);
    this.allocation = run.catch(() => undefined);
    return run;
  }

  private rootDevice(sizeMb: number): Record<string, string> {
    // A dir pool has no quotas (unless the filesystem has project quotas): its roots are not sized.
    return { type: 'disk', path: '/', pool: this.o.storagePool, ...(this.poolDriver === 'dir' ? {} : { size: `${sizeMb}MiB` }) };
  }

  private baseDevices(on: Placement): Record<string, Record<string, string>> {
    const devices: Record<string, Record<string, string>> = {
      eth0: { type: 'nic', network: on.lxdNetwork, name: 'eth0' },
      usr: { type: 'disk', source: '/usr', path: '/usr', readonly: 'true' },
      etc: { type: 'disk', source: '/etc', path: HOST_ETC, readonly: 'true' },
    };
    (this.o.binds ?? []).forEach((b, i) => {
      devices[`bind${i}`] = { type: 'disk', source: b.host, path: b.guest, readonly: b.readOnly === false ? 'false' : 'true' };
    });
    return devices;
  }

  async createVm(req: CreateVmRequest): Promise<VmInfo> {
    validateCreate(req, [IMAGE], [typeof req?.network?.network === 'string' ? req.network.network : 'default']);
    const vmType = resolveVmType(req.vmType, this.vmTypes);
    const fingerprint = await this.ready();
    const on = await this.placement(req.network.network);
    const id = `vm-${randomBytes(4).toString('hex')}`;
    const name = this.instanceName(id);
    const createdAt = this.o.clock.now().toISOString();
    const metadata = { ...(req.metadata ?? {}) };
    const { chosen: ip, env } = await this.allocating(async () => {
      const chosen = new IpPool(on.cidr, await this.usedIps(on.name)).allocate(req.network.ip);
      const member = await this.memberFor('vm', metadata, req.az);
      const env: Record<string, string> = {
        PATH: GUEST_PATH,
        HOME: '/root',
        ...req.env,
        ANODYNE_AGENT_ID: req.agentId,
        ANODYNE_VM_ID: id,
        ANODYNE_ROLE: 'agent',
        ANODYNE_VM_ADDRESS: `${chosen}/${on.cidr.prefix}`,
        ANODYNE_VM_GATEWAY: on.cidr.gateway,
      };
      await this.createInstance(
        name,
        {
          name,
          type: 'container',
          source: { type: 'image', fingerprint },
          profiles: [],
          config: {
            'security.privileged': 'true',
            'security.nesting': 'true',
            'limits.cpu.allowance': `${Math.round(vmType.cpu * 100)}ms/100ms`,
            'limits.memory': `${vmType.memoryMb}MiB`,
            ...(vmType.pids ? { 'limits.processes': String(vmType.pids) } : {}),
            'raw.lxc': RAW_LXC,
            // A member back after its VMs were replaced elsewhere starts none of them again.
            'boot.autostart': 'false',
            [K.tag]: this.o.tag,
            [K.kind]: 'vm',
            [K.id]: id,
            [K.agentId]: req.agentId,
            [K.ip]: chosen,
            [K.network]: on.name,
            [K.vmType]: JSON.stringify(vmType),
            [K.image]: req.image,
            [K.metadata]: JSON.stringify(metadata),
            [K.createdAt]: createdAt,
          },
          devices: {
            root: this.rootDevice(vmType.ephemeralDiskMb),
            ...this.baseDevices(on),
            eth0: { type: 'nic', network: on.lxdNetwork, name: 'eth0', hwaddr: LxdProvider.macFor(chosen) },
            kmsg: { type: 'unix-char', source: '/dev/kmsg', path: '/dev/kmsg' },
          },
        },
        member,
      );
      return { chosen, env };
    });
    try {
      await this.pushFile(name, `${IMAGE_DIR}/env`, envFile(env), '0600');
      await this.lxd.call('PUT', `/1.0/instances/${name}/state`, { body: { action: 'start', timeout: 30 } });
    } catch (err) {
      await this.deleteVm(id).catch((e: unknown) =>
        this.o.logger.error({ vmId: id, err: String(e) }, 'cleanup after a failed create failed'),
      );
      throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `VM ${id} did not start: ${(err as Error).message}`, { cause: err });
    }
    this.o.logger.info({ vmId: id, ip, agentId: req.agentId }, 'LXD VM created');
    return { id, agentId: req.agentId, ip, network: on.name, state: 'running', vmType, image: req.image, metadata, createdAt };
  }

  /**
   * POSTs an instance; a create that fails or whose answer is lost (a timed-out wait, a reset
   * connection: LXD may go on and make it) is removed before the error is passed on, so no half-made
   * instance keeps its address or agent id.
   */
  private async createInstance(name: string, body: Record<string, unknown>, member?: string): Promise<void> {
    try {
      await this.lxd.call('POST', `/1.0/instances${member ? `?target=${encodeURIComponent(member)}` : ''}`, { body: { name, ...body } });
    } catch (err) {
      await this.removeInstance(name).catch((e: unknown) =>
        this.o.logger.error({ instance: name, err: String(e) }, 'removing a failed create failed'),
      );
      throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `LXD did not make ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async instance(id: string): Promise<Instance | undefined> {
    if (!/^(vm|lb)-[0-9a-f]{8}$/.test(id)) return undefined;
    const name = this.instanceName(id);
    if (this.abandoned.has(name)) return undefined;
    let i: Instance | undefined;
    try {
      i = await this.lxd.find<Instance>(`/1.0/instances/${name}`);
    } catch (err) {
      // LXD asks the instance's member, which may be gone: then it is not there for the contract.
      if (this.clustered && (await this.onLostMember(name))) return undefined;
      throw err;
    }
    return i && i.config?.[K.tag] === this.o.tag ? i : undefined;
  }

  /** Whether an instance is on a cluster member that is not online. */
  private async onLostMember(name: string): Promise<boolean> {
    const all = await this.lxd.call<Instance[]>('GET', '/1.0/instances?recursion=1');
    const location = all.find((i) => i.name === name)?.location;
    const member = (await this.members()).find((m) => m.server_name === location);
    return !!member && member.status !== 'Online';
  }

  /**
   * Stops (forced) and deletes an instance; persistent disks on it stay (custom volumes). Idempotent.
   * An instance whose cluster member is not online cannot be removed by LXD: it is abandoned (out of
   * every answer, its address free) and removed once the member is back (it does not start again there).
   */
  private async removeInstance(name: string): Promise<void> {
    if (this.clustered && (await this.onLostMember(name))) {
      this.abandoned.add(name);
      this.o.logger.warn({ instance: name }, 'LXD member not online: instance left to remove on its return');
      return;
    }
    // An instance whose init just died is busy with LXD's own stop for a moment: asked again.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.lxd
          .ignoringMissing('PUT', `/1.0/instances/${name}/state`, { body: { action: 'stop', force: true, timeout: 30 } })
          .catch((err: unknown) => {
            // Already stopped is fine.
            if (!(err instanceof LxdStatusError && /already stopped|not running/i.test(err.message))) throw err;
          });
        await this.lxd.ignoringMissing('DELETE', `/1.0/instances/${name}`);
        return;
      } catch (err) {
        if (!(err instanceof LxdStatusError && /busy/i.test(err.message)) || attempt >= 100) throw err;
        await this.o.clock.sleep(100);
      }
    }
  }

  async deleteVm(id: string): Promise<void> {
    if (!/^vm-[0-9a-f]{8}$/.test(id)) return;
    await this.removeInstance(this.instanceName(id));
  }

  async hasVm(id: string): Promise<boolean> {
    return (await this.instance(id))?.status === 'Running';
  }

  async rebootVm(id: string): Promise<void> {
    const i = await this.instance(id);
    if (!i || i.config[K.kind] !== 'vm') throw vmNotFound(id);
    const action = i.status === 'Running' ? 'restart' : 'start';
    await this.lxd.call('PUT', `/1.0/instances/${i.name}/state`, { body: { action, force: true, timeout: 30 } });
  }

  async setVmMetadata(id: string, metadata: Record<string, string>): Promise<void> {
    const i = await this.instance(id);
    if (!i || i.config[K.kind] !== 'vm') throw vmNotFound(id);
    await this.lxd.call('PATCH', `/1.0/instances/${i.name}`, { body: { config: { [K.metadata]: JSON.stringify({ ...metadata }) } } });
  }

  async listVms(filter?: Record<string, string>): Promise<VmInfo[]> {
    return (await this.instances())
      .filter((i) => i.config[K.kind] === 'vm')
      .map((i) => vmInfo(i))
      .filter((v) => matches(v.metadata, filter));
  }

  // ------------------------------------------------------------------ disks

  private volumePath(diskId: string): string {
    return `/1.0/storage-pools/${encodeURIComponent(this.o.storagePool)}/volumes/custom/${this.prefix}${diskId}`;
  }

  private async volume(diskId: string): Promise<Volume | undefined> {
    if (!/^disk-[0-9a-f]{8}$/.test(diskId)) return undefined;
    const v = await this.lxd.find<Volume>(this.volumePath(diskId));
    return v && v.config[K.tag] === this.o.tag ? v : undefined;
  }

  /** The VM a volume is attached to, from LXD's own `used_by`. */
  private attachedTo(v: Volume): string | null {
    for (const u of v.used_by ?? []) {
      const name = decodeURIComponent(new URL(u, 'http://lxd').pathname.split('/').pop() ?? '');
      if (name.startsWith(this.prefix)) return name.slice(this.prefix.length);
    }
    return null;
  }

  /** Our custom volumes (each with its member in a cluster). */
  private async volumes(): Promise<Volume[]> {
    const all = await this.lxd.call<Volume[]>(
      'GET',
      `/1.0/storage-pools/${encodeURIComponent(this.o.storagePool)}/volumes/custom?recursion=1`,
    );
    return all.filter((v) => v.config?.[K.tag] === this.o.tag && v.name.startsWith(this.prefix));
  }

  /**
   * Moves a volume between cluster members (a pool of one member's disks holds it): the source
   * member offers it for migration, the target pulls it from there, then the source's copy goes —
   * LXD's own cluster move, which `lxc storage volume move --target` makes of the same three calls.
   */
  private async moveVolume(v: Volume, to: string): Promise<void> {
    const from = v.location ?? '';
    const pool = encodeURIComponent(this.o.storagePool);
    const source = (await this.members()).find((m) => m.server_name === from);
    if (!source || source.status !== 'Online') {
      throw new AnodyneError(
        'ANODYNE_E_PROVIDER_UNREACHABLE',
        `disk ${v.name.slice(this.prefix.length)} is on LXD member ${from}, which is not online: it cannot be moved to ${to}`,
        { details: { member: from }, retryable: true },
      );
    }
    const server = await this.lxd.call<{ environment: { certificate: string } }>('GET', `/1.0?target=${encodeURIComponent(from)}`);
    const offer = await this.lxd.start('POST', `/1.0/storage-pools/${pool}/volumes/custom/${v.name}?target=${encodeURIComponent(from)}`, {
      body: { name: v.name, pool: this.o.storagePool, migration: true },
    });
    const config = Object.fromEntries(Object.entries(v.config).filter(([k]) => !k.startsWith('volatile.')));
    await this.lxd.call('POST', `/1.0/storage-pools/${pool}/volumes/custom?target=${encodeURIComponent(to)}`, {
      body: {
        name: v.name,
        type: 'custom',
        config,
        source: {
          type: 'migration',
          mode: 'pull',
          name: v.name,
          pool: this.o.storagePool,
          certificate: server.environment.certificate,
          operation: `${source.url}/1.0/operations/${offer.id}`,
          secrets: offer.metadata,
        },
      },
      waitMs: 300_000,
    });
    await this.lxd.call('DELETE', `/1.0/storage-pools/${pool}/volumes/custom/${v.name}?target=${encodeURIComponent(from)}`);
    this.o.logger.info({ disk: v.name, from, to }, 'LXD volume moved to its VM’s member');
  }

  async createDisk(sizeMb: number, metadata: Record<string, string> = {}): Promise<DiskInfo> {
    if (!Number.isInteger(sizeMb) || sizeMb < 1) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'disk size must be a whole number of MiB, at least 1', {
        details: { sizeMb },
      });
    }
    await this.ready();
    const id = `disk-${randomBytes(4).toString('hex')}`;
    // In a cluster, on the member of the VM of the same instance (where it will be attached), if there is one.
    const vm =
      this.clustered && metadata.instance_id
        ? (await this.instances()).find(
            (i) => i.config[K.kind] === 'vm' && parseJson(i.config[K.metadata]).instance_id === metadata.instance_id,
          )
        : undefined;
    const target = this.clustered && vm?.location ? `?target=${encodeURIComponent(vm.location)}` : '';
    await this.lxd.call('POST', `/1.0/storage-pools/${encodeURIComponent(this.o.storagePool)}/volumes/custom${target}`, {
      body: {
        name: `${this.prefix}${id}`,
        config: { size: `${sizeMb}MiB`, [K.tag]: this.o.tag, [K.sizeMb]: String(sizeMb), [K.metadata]: JSON.stringify({ ...metadata }) },
      },
    });
    return { id, sizeMb, vmId: null, metadata: { ...metadata } };
  }

  async deleteDisk(id: string): Promise<void> {
    const v = await this.volume(id);
    if (!v) return;
    const vmId = this.attachedTo(v);
    if (vmId) throw new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${id} is attached to ${vmId}`, { details: { id, vmId } });
    await this.lxd.ignoringMissing('DELETE', this.volumePath(id));
  }

  async hasDisk(id: string): Promise<boolean> {
    return (await this.volume(id)) !== undefined;
  }

  async listDisks(filter?: Record<string, string>): Promise<DiskInfo[]> {
    return (await this.volumes())
      .map((v) => ({
        id: v.name.slice(this.prefix.length),
        sizeMb: Number(v.config[K.sizeMb] ?? 0),
        vmId: this.attachedTo(v),
        metadata: parseJson(v.config[K.metadata]),
      }))
      .filter((d) => matches(d.metadata, filter));
  }

  private checkIds(vmId: string, diskId: string): void {
    if (!/^vm-[0-9a-f]{8}$/.test(vmId) || !/^disk-[0-9a-f]{8}$/.test(diskId)) {
      throw new InputError(
        'ANODYNE_E_PROVIDER_INPUT_INVALID',
        `${JSON.stringify(vmId)} / ${JSON.stringify(diskId)} are not a VM and a disk id`,
        {
          details: { vmId, diskId },
        },
      );
    }
  }

  async attachDisk(vmId: string, diskId: string): Promise<DiskAttachment> {
    this.checkIds(vmId, diskId);
    const path = `${GUEST_DISK_DIR}/${diskId}`;
    const i = await this.instance(vmId);
    if (!i) throw vmNotFound(vmId);
    const v = await this.volume(diskId);
    if (!v) throw new NotFoundError('ANODYNE_E_PROVIDER_DISK_NOT_FOUND', `disk ${diskId} not found`, { details: { id: diskId } });
    const on = this.attachedTo(v);
    if (on === vmId && i.devices[diskId]) return { path };
    if (on && on !== vmId)
      throw new ConflictError('ANODYNE_E_PROVIDER_DISK_ATTACHED', `disk ${diskId} is attached to ${on}`, {
        details: { id: diskId, vmId: on },
      });
    if (this.clustered && i.location && v.location && v.location !== i.location) {
      // The pool's volumes are each on one member: the disk goes where its VM is.
      const listed = (await this.volumes()).find((x) => x.name === v.name);
      await this.moveVolume({ ...v, ...(listed?.location ? { location: listed.location } : {}) }, i.location);
    }
    await this.lxd.call('PATCH', `/1.0/instances/${i.name}`, {
      body: { devices: { [diskId]: { type: 'disk', pool: this.o.storagePool, source: `${this.prefix}${diskId}`, path } } },
    });
    return { path };
  }

  async detachDisk(vmId: string, diskId: string): Promise<void> {
    this.checkIds(vmId, diskId);
    const i = await this.instance(vmId);
    if (!i?.devices[diskId]) return;
    const devices = { ...i.devices };
    delete devices[diskId];
    await this.lxd.call('PUT', `/1.0/instances/${i.name}`, {
      body: {
        architecture: i.architecture,
        config: i.config,
        devices,
        ephemeral: i.ephemeral,
        profiles: i.profiles,
        description: i.description,
      },
    });
  }

  // ------------------------------------------------------------------ load balancers

  /** A load balancer's instance: named by a digest of its name (the contract's id), so it is found without a list. */
  private lbName(id: string): string {
    return `${this.prefix}lb-${createHash('sha256').update(id).digest('hex').slice(0, 8)}`;
  }

  private async lbInstance(id: string): Promise<Instance | undefined> {
    if (typeof id !== 'string' || !/^[a-z0-9][a-z0-9-]{0,40}$/.test(id)) return undefined;
    const i = await this.lxd.find<Instance>(`/1.0/instances/${this.lbName(id)}`);
    return i && i.config[K.tag] === this.o.tag && i.config[K.id] === id ? i : undefined;
  }

  /** Writes a file into an instance (running or not) through LXD's files API. */
  private async pushFile(name: string, path: string, content: string, mode: string): Promise<void> {
    await this.lxd.call('POST', `/1.0/instances/${name}/files?path=${encodeURIComponent(path)}`, {
      raw: Buffer.from(content),
      headers: { 'x-lxd-uid': '0', 'x-lxd-gid': '0', 'x-lxd-mode': mode, 'x-lxd-type': 'file', 'x-lxd-write': 'overwrite' },
    });
  }

  private async pushConfig(
    name: string,
    lb: { port: number; backends: LoadBalancerBackend[]; healthCheck?: LoadBalancerHealthCheck | undefined },
  ): Promise<void> {
    await this.pushFile(name, `${IMAGE_DIR}/haproxy.cfg`, haproxyConfig(lb, '/run/haproxy.pid'), '0644');
  }

  async createLoadBalancer(spec: LoadBalancerSpec): Promise<LoadBalancerInfo> {
    if (!spec || typeof spec.name !== 'string' || !/^[a-z0-9][a-z0-9-]{0,40}$/.test(spec.name)) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'load balancer name must be lowercase letters, digits and dashes');
    }
    if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'load balancer port must be 1 to 65535');
    }
    validateBackends(spec.backends);
    validateHealthCheck(spec.healthCheck);
    const fingerprint = await this.ready();
    const on = await this.placement(spec.network);
    const name = this.lbName(spec.name);
    const lb = { port: spec.port, backends: [...spec.backends], ...(spec.healthCheck ? { healthCheck: { ...spec.healthCheck } } : {}) };
    const metadata = { ...(spec.metadata ?? {}) };
    const { chosen: ip, env } = await this.allocating(async () => {
      if (await this.lbInstance(spec.name))
        throw new ConflictError('ANODYNE_E_CONFLICT', `load balancer ${spec.name} exists`, { details: { name: spec.name } });
      const chosen = new IpPool(on.cidr, await this.usedIps(on.name)).allocate(spec.ip);
      const member = await this.memberFor('lb', metadata);
      const env = {
        PATH: GUEST_PATH,
        HOME: '/root',
        ANODYNE_ROLE: 'lb',
        ANODYNE_VM_ADDRESS: `${chosen}/${on.cidr.prefix}`,
        ANODYNE_VM_GATEWAY: on.cidr.gateway,
      };
      await this.createInstance(
        name,
        {
          name,
          type: 'container',
          source: { type: 'image', fingerprint },
          profiles: [],
          config: {
            ...LB_LIMITS,
            'raw.lxc': `lxc.init.cmd = ${IMAGE_DIR}/init`,
            [K.tag]: this.o.tag,
            [K.kind]: 'lb',
            [K.id]: spec.name,
            [K.ip]: chosen,
            [K.network]: on.name,
            [K.lb]: JSON.stringify(lb),
            [K.metadata]: JSON.stringify(metadata),
          },
          devices: {
            root: this.rootDevice(256),
            eth0: { type: 'nic', network: on.lxdNetwork, name: 'eth0' },
            usr: { type: 'disk', source: '/usr', path: '/usr', readonly: 'true' },
            etc: { type: 'disk', source: '/etc', path: HOST_ETC, readonly: 'true' },
          },
        },
        member,
      );
      return { chosen, env };
    });
    try {
      await this.pushFile(name, `${IMAGE_DIR}/env`, envFile(env), '0600');
      await this.pushConfig(name, lb);
      await this.lxd.call('PUT', `/1.0/instances/${name}/state`, { body: { action: 'start', timeout: 30 } });
      await this.waitForPort(ip, spec.port, spec.name);
      await this.hostNet?.openLoadBalancer(on.lan, ip, spec.port);
    } catch (err) {
      await this.removeInstance(name).catch(() => undefined);
      throw err;
    }
    return { id: spec.name, ip, network: on.name, ...lb, metadata };
  }

  /** Ready when haproxy's frontend accepts a connection (from this host, on the bridge). */
  private async waitForPort(ip: string, port: number, id: string): Promise<void> {
    const deadline = this.o.clock.nowMs() + LB_READY_TIMEOUT_MS;
    for (;;) {
      const open = await new Promise<boolean>((resolve) => {
        const s = connect({ host: ip, port, timeout: 500 });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
        s.once('timeout', () => {
          s.destroy();
          resolve(false);
        });
      });
      if (open) return;
      if (this.o.clock.nowMs() > deadline) throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `haproxy for ${id} did not start`);
      await this.o.clock.sleep(50);
    }
  }

  async updateLoadBalancer(id: string, backends: LoadBalancerBackend[], healthCheck?: LoadBalancerHealthCheck): Promise<LoadBalancerInfo> {
    validateBackends(backends);
    validateHealthCheck(healthCheck);
    const i = await this.lbInstance(id);
    if (!i) throw lbNotFound(id);
    const before = parseJson(i.config[K.lb]) as unknown as { port: number; healthCheck?: LoadBalancerHealthCheck };
    const hc = healthCheck ?? before.healthCheck;
    const lb = { port: before.port, backends: [...backends], ...(hc ? { healthCheck: { ...hc } } : {}) };
    await this.pushConfig(i.name, lb);
    // haproxy's master reloads its configuration on SIGUSR2, keeping its listening socket; recorded once it has been told.
    const reload = await this.lxd.call<{ return?: number } | null>('POST', `/1.0/instances/${i.name}/exec`, {
      body: {
        command: ['/bin/sh', '-c', 'kill -USR2 "$(cat /run/haproxy.pid)"'],
        'wait-for-websocket': false,
        interactive: false,
        'record-output': false,
      },
    });
    if (reload?.return !== 0) {
      throw new AnodyneError(
        'ANODYNE_E_PROVIDER_REFUSED',
        `haproxy of ${id} could not be told to reload (exit ${reload?.return ?? 'unknown'})`,
        {
          details: { id },
        },
      );
    }
    await this.lxd.call('PATCH', `/1.0/instances/${i.name}`, { body: { config: { [K.lb]: JSON.stringify(lb) } } });
    return lbInfo({ ...i, config: { ...i.config, [K.lb]: JSON.stringify(lb) } });
  }

  async getLoadBalancer(id: string): Promise<LoadBalancerInfo> {
    const i = await this.lbInstance(id);
    if (!i) throw lbNotFound(id);
    return lbInfo(i);
  }

  async deleteLoadBalancer(id: string): Promise<void> {
    const i = await this.lbInstance(id);
    if (!i) return;
    const lb = lbInfo(i);
    const on = await this.placement(lb.network).catch(() => undefined);
    if (on) await this.hostNet?.closeLoadBalancer(on.lan, lb.ip, lb.port);
    await this.removeInstance(this.lbName(id));
  }

  async listLoadBalancers(filter?: Record<string, string>): Promise<LoadBalancerInfo[]> {
    return (await this.instances())
      .filter((i) => i.config[K.kind] === 'lb')
      .map(lbInfo)
      .filter((l) => matches(l.metadata, filter));
  }

  // ------------------------------------------------------------------ segments

  /**
   * A segment is an LXD managed bridge `anx<tag>-<index>` on a range of the pool (closed like the
   * default one: no DHCP, DNS, NAT or LXD rules), with the local provider's host-side isolation
   * (ADR 0022): forwarding on that bridge only, and FORWARD rules letting through its own traffic,
   * new connections to load balancers' ports and their answers.
   */
  async createSegment(spec: SegmentSpec): Promise<SegmentInfo> {
    const name = validateSegmentName(spec?.name, ['default']);
    const pool = this.segmentPool;
    const hostNet = this.hostNet;
    if (!pool || !hostNet) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'this provider has no segment pool (segments)');
    await this.ready();
    return this.allocating(async () => {
      const existing = await this.segments();
      const same = existing.find((n) => n.config[K.id] === name);
      if (same) {
        // Its host side, again (idempotent): a create cut off between LXD's network and our rules.
        await hostNet.createSegmentBridge((await this.placement(name)).lan);
        return segmentInfo(same);
      }
      const index = pool.allocate(new Set(existing.map((n) => Number(n.config[K.index]))), spec.within);
      const range = pool.range(index);
      const lan = hostNet.segmentLan(name, index, range);
      const config = {
        ...this.networkConfig(range, index),
        [K.tag]: this.o.tag,
        [K.kind]: 'segment',
        [K.id]: name,
        [K.index]: String(index),
        [K.metadata]: JSON.stringify({ ...(spec.metadata ?? {}) }),
      };
      await refuseOverlap(range, lan.bridge);
      await this.createNetwork(lan.bridge, `Anodyne segment ${name}`, config);
      try {
        await hostNet.createSegmentBridge(lan);
      } catch (err) {
        await hostNet.deleteSegmentBridge(lan).catch(() => undefined);
        await this.lxd.ignoringMissing('DELETE', `/1.0/networks/${lan.bridge}`).catch(() => undefined);
        throw err;
      }
      this.segmentNames.add(name);
      this.o.logger.info({ segment: name, range: range.text, bridge: lan.bridge }, 'LXD network segment created');
      return segmentInfo({ name: lan.bridge, config });
    });
  }

  async deleteSegment(name: string): Promise<void> {
    if (!this.hostNet || !this.segmentPool) return;
    const seg = (await this.segments()).find((n) => n.config[K.id] === name);
    if (!seg) return;
    const users = (await this.instances()).filter((i) => i.config[K.network] === name).map((i) => i.config[K.id] ?? i.name);
    if (users.length > 0) {
      throw new ConflictError('ANODYNE_E_PROVIDER_SEGMENT_IN_USE', `segment ${name} still holds ${users.join(', ')}`, {
        details: { name, users },
      });
    }
    const on = await this.placement(name);
    await this.lxd.ignoringMissing('DELETE', `/1.0/networks/${seg.name}`);
    await this.hostNet.deleteSegmentBridge(on.lan);
    this.segmentNames.delete(name);
  }

  async listSegments(filter?: Record<string, string>): Promise<SegmentInfo[]> {
    if (!this.segmentPool) return [];
    return (await this.segments()).map(segmentInfo).filter((x) => matches(x.metadata, filter));
  }

  // ------------------------------------------------------------------ cleanup

  /** Every instance, volume, image and the network of the tag, found in LXD itself. */
  async cleanup(): Promise<CleanupReport> {
    const report: CleanupReport = { vms: 0, disks: 0, loadBalancers: 0, segments: 0, other: {} };
    for (const i of await this.instances()) {
      await this.removeInstance(i.name);
      if (i.config[K.kind] === 'lb') report.loadBalancers++;
      else report.vms++;
    }
    for (const d of await this.listDisks()) {
      await this.lxd.ignoringMissing('DELETE', this.volumePath(d.id));
      report.disks++;
    }
    if (this.segmentPool) {
      for (const seg of await this.segments()) {
        await this.lxd.ignoringMissing('DELETE', `/1.0/networks/${seg.name}`);
        report.segments++;
      }
      this.segmentNames.clear();
    }
    for (const fp of await this.ourImages()) {
      await this.lxd.ignoringMissing('DELETE', `/1.0/images/${fp}`);
      report.other.images = (report.other.images ?? 0) + 1;
    }
    const net = await this.lxd.find<{ config: Record<string, string> }>(`/1.0/networks/${this.networkName}`);
    if (net?.config[K.tag] === this.o.tag) {
      await this.lxd.ignoringMissing('DELETE', `/1.0/networks/${this.networkName}`);
      report.other.networks = 1;
    }
    await this.hostNet?.removeHostSide((kind, n = 1) => {
      report.other[kind] = (report.other[kind] ?? 0) + n;
    });
    this.hostNet?.forgetBridge();
    this.readyOnce = undefined;
    return report;
  }

  /** Closes the connections to LXD. */
  close(): void {
    this.lxd.close();
  }
}

/**
 * An LXD bridge's config that leaves it closed: the host's address, no DHCP, no DNS (dnsmasq's port
 * 0), no NAT, no routing (LXD leaves `net.ipv4.ip_forward` alone) and no LXD firewall rules.
 */
function closedBridge(address: string): Record<string, string> {
  return {
    'ipv4.address': address,
    'ipv4.nat': 'false',
    'ipv4.dhcp': 'false',
    'ipv4.routing': 'false',
    'ipv4.firewall': 'false',
    'ipv6.address': 'none',
    'dns.mode': 'none',
    'raw.dnsmasq': 'port=0',
  };
}

function segmentInfo(n: LxdNetwork): SegmentInfo {
  // Its range: recorded (a tunnelled bridge has no address on the members), or the bridge's own address.
  const [gateway, prefix] = (n.config['ipv4.address'] ?? '').split('/') as [string, string];
  const range = parseCidr(n.config[K.range] ?? `${gateway}/${prefix}`, 8, 29);
  return { name: n.config[K.id] ?? n.name, range: range.text, gateway: range.gateway, metadata: parseJson(n.config[K.metadata]) };
}

/**
 * The environment of an instance's init, as a file it sources (root's only): values may hold line
 * breaks (certificates), which LXD's `environment.*` keys refuse, and the agent's credentials stay
 * out of the instance's config.
 */
function envFile(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `export ${k}=${shellQuote(v)}\n`)
    .join('');
}

function parseJson(text: string | undefined): Record<string, string> {
  try {
    const v = JSON.parse(text ?? '{}') as unknown;
    return v && typeof v === 'object' ? (v as Record<string, string>) : {};
  } catch {
    return {};
  }
}

function vmInfo(i: Instance): VmInfo {
  return {
    id: i.config[K.id] ?? '',
    agentId: i.config[K.agentId] ?? '',
    ip: i.config[K.ip] ?? '',
    network: i.config[K.network] ?? 'default',
    state: i.status === 'Running' ? 'running' : 'stopped',
    vmType: parseJson(i.config[K.vmType]) as unknown as VmType,
    image: i.config[K.image] ?? IMAGE,
    metadata: parseJson(i.config[K.metadata]),
    createdAt: i.config[K.createdAt] ?? '',
  };
}

function lbInfo(i: Instance): LoadBalancerInfo {
  const lb = parseJson(i.config[K.lb]) as unknown as {
    port: number;
    backends: LoadBalancerBackend[];
    healthCheck?: LoadBalancerHealthCheck;
  };
  return {
    id: i.config[K.id] ?? '',
    ip: i.config[K.ip] ?? '',
    port: lb.port,
    network: i.config[K.network] ?? 'default',
    backends: [...lb.backends],
    ...(lb.healthCheck ? { healthCheck: { ...lb.healthCheck } } : {}),
    metadata: parseJson(i.config[K.metadata]),
  };
}

function vmNotFound(id: string): NotFoundError {
  return new NotFoundError('ANODYNE_E_PROVIDER_VM_NOT_FOUND', `VM ${id} not found`, { details: { id } });
}

function lbNotFound(id: string): NotFoundError {
  return new NotFoundError('ANODYNE_E_PROVIDER_LB_NOT_FOUND', `load balancer ${id} not found`, { details: { id } });
}
