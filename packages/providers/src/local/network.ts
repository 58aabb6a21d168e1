// The local provider's VM network: its bridge and iptables rules, per-VM network namespaces with veths, addresses and routes.
import { writeFileSync } from 'node:fs';
import { exec, PreconditionError } from '@anodyne/common';
import { IpPool, ipToInt, type Cidr } from '../internal/validate.js';
import {
  deleteRule,
  hostAddresses,
  ip,
  ipQuiet,
  killPids,
  linkExists,
  linksWithPrefix,
  netnsList,
  netnsPids,
  ownerAlias,
  ownerRuns,
  parseOwnerAlias,
  processStartTime,
  rulesWithComment,
  vethsOfTag,
  type Tally,
} from './host.js';
import type { LocalState } from './state.js';

/** One layer-2 network of the provider: its name (`default` or a segment's), bridge and range. */
export interface Lan {
  name: string;
  bridge: string;
  cidr: Cidr;
  /** A segment's index in its pool (none for the default network). */
  index?: number;
}

/**
 * The host's end of networks whose VMs are on other machines (LXD members): each bridge gets a
 * VXLAN port `<bridge>v` in multicast group `group` over `dev`, network identifier `vniBase` for
 * the default network and `vniBase + 1 + index` for a segment, MTU `mtu` (the members' bridges' own).
 */
export interface VxlanUplink {
  dev: string;
  group: string;
  vniBase: number;
  mtu: number;
}

/**
 * One provider tag's networks. The default one is bridge `anbr-<tag>`; each segment is bridge
 * `ans<tag>-<index>`; each bridge holds the host's address (its range's first). Per VM or load
 * balancer a netns `anodyne-<tag>-<id>` is joined to its network's bridge by a veth
 * `av<tag><6 of the id>`. Every iptables rule carries the comment `anodyne:<tag>`.
 *
 * Nothing is routed or NATed to the outside. The default network's traffic is dropped in FORWARD
 * unless it stays on its bridge. A segment's bridge forwards (the host routes between segments,
 * `net.ipv4.conf.<bridge>.forwarding`, never the host-wide switch), and FORWARD lets through only:
 * traffic that stays on one segment's bridge, new connections from any segment to a load
 * balancer's address and port, and the answers of those connections. Everything else to or from
 * a segment is dropped: a VM of one segment cannot reach another segment's VMs, nor anything
 * beyond this host.
 *
 * A bridge is made only on a range that no other host interface overlaps (else
 * `ANODYNE_E_PROVIDER_NETWORK_IN_USE`, naming the interface), and carries its maker in its alias:
 * tag, platform process (pid and start time) and data directory (`ip -d link show anbr-<tag>`), so
 * a bridge left by a process that no longer runs can be told apart from one in use.
 */
export class VmNetwork {
  readonly bridge: string;
  readonly comment: string;
  /** iptables' wildcard for every segment bridge of the tag (the dash keeps tag `t1` off `t12`'s). */
  private readonly segmentBridges: string;
  private readonly segmentPrefix: string;
  private readonly kind: 'local' | 'lxd';
  private readonly vxlan: VxlanUplink | undefined;
  private bridgeReady: Promise<void> | undefined;

  constructor(
    private readonly tag: string,
    readonly cidr: Cidr,
    /** The provider's data directory, written into its bridges' aliases. */
    private readonly dataDir: string,
    /**
     * Other names for the bridges and the rules' comment, and whose bridges they are: the LXD
     * provider's (LXD makes its bridges and veths; only the host-side rules and aliases are ours).
     */
    names: { bridge: string; segmentPrefix: string; comment: string; kind: 'local' | 'lxd'; vxlan?: VxlanUplink } = {
      bridge: `anbr-${tag}`,
      segmentPrefix: `ans${tag}-`,
      comment: `anodyne:${tag}`,
      kind: 'local',
    },
  ) {
    this.kind = names.kind;
    this.vxlan = names.vxlan;
    this.bridge = names.bridge;
    this.comment = names.comment;
    this.segmentPrefix = names.segmentPrefix;
    this.segmentBridges = `${names.segmentPrefix}+`;
  }

  /** The default network. */
  get defaultLan(): Lan {
    return { name: 'default', bridge: this.bridge, cidr: this.cidr };
  }

  /** A segment's network: its bridge is `ans<tag>-<index>` (at most 15 characters). */
  segmentLan(name: string, index: number, cidr: Cidr): Lan {
    return { name, bridge: `${this.segmentPrefix}${index}`, cidr, index };
  }

  netnsName(id: string): string {
    return `anodyne-${this.tag}-${id}`;
  }

  /** Where `ip netns` keeps the namespace of `id`, for `nsenter --net=`. */
  netnsPath(id: string): string {
    return `/run/netns/${this.netnsName(id)}`;
  }

  /** Host side of a VM's veth: at most 15 characters, carrying the tag and the id. */
  vethName(id: string): string {
    return `av${this.tag}${id.replace(/^(vm|lb)-/, '').slice(0, 6)}`;
  }

  /** Reserves an address on `lan` for a VM or load balancer in `state` (which the caller persists): `requested`, or the lowest free one. */
  allocate(state: LocalState, requested: string | undefined, lan: Lan = this.defaultLan): string {
    const on = (network: string) => network === lan.name;
    const used = new Set<string>([
      ...Object.values(state.vms)
        .filter((v) => on(v.network))
        .map((v) => v.ip),
      ...Object.values(state.lbs)
        .filter((l) => on(l.network))
        .map((l) => l.ip),
    ]);
    return new IpPool(lan.cidr, used).allocate(requested);
  }

  /** Once per provider (again after cleanup); concurrent creates share one setup. */
  ensureBridge(): Promise<void> {
    this.bridgeReady ??= this.setupBridge().catch((err: unknown) => {
      this.bridgeReady = undefined;
      throw err;
    });
    return this.bridgeReady;
  }

  /** After cleanup removed the bridge, the next `ensureBridge` sets it up again. */
  forgetBridge(): void {
    this.bridgeReady = undefined;
  }

  /** The provider's bridge and its firewall rules: traffic stays on the bridge or goes to the host. */
  private async setupBridge(): Promise<void> {
    await this.makeBridge(this.defaultLan);
    const seg = this.segmentBridges;
    // Inserted at the top in reverse, so they end in this order (a segment's or load balancer's own rules go above).
    const rules: string[][] = [
      // Between VMs on the bridge (seen by iptables when bridge-nf-call-iptables is on).
      ['-i', this.bridge, '-o', this.bridge, '-j', 'ACCEPT'],
      // Never routed to or from anywhere else: no NAT, no forwarding off this host.
      ['-i', this.bridge, '!', '-o', this.bridge, '-j', 'DROP'],
      ['!', '-i', this.bridge, '-o', this.bridge, '-j', 'DROP'],
      // Segments: answers of connections that a rule above let through, then nothing else.
      ['-i', seg, '-o', seg, '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'],
      ['-i', seg, '-j', 'DROP'],
      ['-o', seg, '-j', 'DROP'],
    ];
    for (const r of rules.reverse()) await this.insertRule(r);
  }

  /**
   * A bridge holding the host's address on `cidr`, up, its alias naming this process as its maker
   * (an existing one is adopted: a platform restarted on the same data). Refused, before anything is
   * made, when another interface holds an address in the range: the host could not route to both.
   */
  private async makeBridge(lan: Lan): Promise<void> {
    const { bridge, cidr } = lan;
    await refuseOverlap(cidr, bridge);
    if (!(await linkExists(bridge))) {
      await ip('link', 'add', bridge, 'type', 'bridge');
      await ip('addr', 'add', `${cidr.gateway}/${cidr.prefix}`, 'dev', bridge);
    }
    const owner = { kind: this.kind, tag: this.tag, pid: process.pid, start: processStartTime(process.pid) ?? '0', dataDir: this.dataDir };
    await ip('link', 'set', bridge, 'alias', ownerAlias(owner));
    const v = this.vxlan;
    if (v && !(await linkExists(`${bridge}v`))) {
      const vni = v.vniBase + (lan.index === undefined ? 0 : lan.index + 1);
      await ip(
        'link',
        'add',
        `${bridge}v`,
        'type',
        'vxlan',
        'id',
        String(vni),
        'group',
        v.group,
        'dev',
        v.dev,
        'dstport',
        '8472',
        'ttl',
        '1',
      );
      await ip('link', 'set', `${bridge}v`, 'mtu', String(v.mtu), 'master', bridge, 'up');
    }
    await ip('link', 'set', bridge, 'up');
  }

  private spec(rule: string[]): string[] {
    return ['FORWARD', ...rule, '-m', 'comment', '--comment', this.comment];
  }

  /** Inserts a FORWARD rule at the top unless it is there. */
  private async insertRule(rule: string[]): Promise<void> {
    const spec = this.spec(rule);
    const present = await exec(['iptables', '-w', '-C', ...spec]).then(
      () => true,
      () => false,
    );
    if (!present) await exec(['iptables', '-w', '-I', ...spec]);
  }

  /** Deletes a FORWARD rule if it is there. */
  private async removeRule(rule: string[]): Promise<void> {
    await exec(['iptables', '-w', '-D', ...this.spec(rule)]).catch(() => undefined);
  }

  /** A segment's bridge with the host's address, forwarding on, and its traffic allowed to stay on it. */
  async createSegmentBridge(lan: Lan): Promise<void> {
    await this.ensureBridge();
    await this.makeBridge(lan);
    writeFileSync(`/proc/sys/net/ipv4/conf/${lan.bridge}/forwarding`, '1\n');
    await this.insertRule(['-i', lan.bridge, '-o', lan.bridge, '-j', 'ACCEPT']);
  }

  /** Removes a segment's bridge and its rule. Idempotent. */
  async deleteSegmentBridge(lan: Lan): Promise<void> {
    await this.removeRule(['-i', lan.bridge, '-o', lan.bridge, '-j', 'ACCEPT']);
    await ipQuiet('link', 'del', `${lan.bridge}v`);
    await ipQuiet('link', 'del', lan.bridge);
  }

  /** From any segment, new connections to a load balancer on a segment (its address and port only). */
  private lbRule(lan: Lan, addr: string, port: number): string[] {
    return ['-i', this.segmentBridges, '-o', lan.bridge, '-d', `${addr}/32`, '-p', 'tcp', '--dport', String(port), '-j', 'ACCEPT'];
  }

  async openLoadBalancer(lan: Lan, addr: string, port: number): Promise<void> {
    if (lan.name !== 'default') await this.insertRule(this.lbRule(lan, addr, port));
  }

  async closeLoadBalancer(lan: Lan, addr: string, port: number): Promise<void> {
    if (lan.name !== 'default') await this.removeRule(this.lbRule(lan, addr, port));
  }

  /** A netns with a veth on the network's bridge, its address and a default route via the host. */
  async createNetns(id: string, addr: string, lan: Lan = this.defaultLan): Promise<void> {
    const ns = this.netnsName(id);
    const veth = this.vethName(id);
    await ip('netns', 'add', ns);
    // The MAC follows from the IP: a VM recreated with the same address is reachable at once,
    // without waiting for the host's and the other VMs' ARP caches to expire.
    const mac = `02:a0:${addr
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join(':')}`;
    await ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'address', mac, 'netns', ns);
    await ip('link', 'set', veth, 'master', lan.bridge, 'up');
    await ip('-n', ns, 'addr', 'add', `${addr}/${lan.cidr.prefix}`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', ns, 'route', 'add', 'default', 'via', lan.cidr.gateway);
  }

  /** Removes the netns of `id` (killing what still runs in it) and its veth. Idempotent. */
  async deleteNetns(id: string): Promise<void> {
    const ns = this.netnsName(id);
    killPids(await netnsPids(ns));
    await ipQuiet('netns', 'del', ns);
    await ipQuiet('link', 'del', this.vethName(id));
  }

  /** Cleanup: every netns of the tag, killing what runs in it, counted. */
  async removeNamespaces(count: Tally): Promise<void> {
    const prefix = `anodyne-${this.tag}-`;
    for (const ns of (await netnsList()).filter((n) => n.startsWith(prefix))) {
      killPids(await netnsPids(ns));
      await ipQuiet('netns', 'del', ns);
      count('netns');
    }
  }

  /** Cleanup: the tag's veths left on the host, its bridges and its iptables rules, counted. */
  async removeHostSide(count: Tally): Promise<void> {
    // LXD makes (and removes) its instances' veths itself; `av<tag>…` names are the local provider's.
    for (const l of this.kind === 'local' ? await vethsOfTag(this.tag) : []) {
      await ipQuiet('link', 'del', l);
      count('links');
    }
    const bridges = [...(await bridgesWithPrefix(this.segmentPrefix)), ...((await linkExists(this.bridge)) ? [this.bridge] : [])];
    for (const l of bridges) {
      // A bridge's VXLAN port (LXD members elsewhere), then the bridge.
      for (const link of [`${l}v`, l]) if (await ipQuiet('link', 'del', link)) count('links');
    }
    for (const table of ['filter', 'nat']) {
      for (const rule of await rulesWithComment(table, this.comment)) {
        await deleteRule(table, rule).catch(() => undefined);
        count('iptables');
      }
    }
  }
}

/** The segment bridges of a provider's tag on the host: `ans<tag>-<index>`. */
export async function segmentBridgesOfTag(tag: string): Promise<string[]> {
  return bridgesWithPrefix(`ans${tag}-`);
}

/** Links named `<prefix><index>`. */
async function bridgesWithPrefix(prefix: string): Promise<string[]> {
  return (await linksWithPrefix(prefix)).filter((l) => /^\d+$/.test(l.slice(prefix.length)));
}

/** Refuses `cidr` when a host interface other than `bridge` holds an address in it, naming that interface (and its maker, if ours). */
export async function refuseOverlap(cidr: Cidr, bridge: string): Promise<void> {
  for (const a of await hostAddresses()) {
    if (a.dev === bridge) continue;
    const size = 2 ** (32 - a.prefix);
    const base = ipToInt(a.address) - (ipToInt(a.address) % size);
    if (base >= cidr.base + cidr.size || cidr.base >= base + size) continue;
    const owner = parseOwnerAlias(a.alias);
    const maker = !owner
      ? ''
      : owner.kind === 'lxd'
        ? ` (a bridge of Anodyne's LXD provider with tag ${owner.tag}, LXD at ${owner.dataDir}, set up by process ${owner.pid}, ` +
          `which ${ownerRuns(owner) ? 'still runs' : 'no longer runs: the provider’s cleanup, or deleting the LXD network, removes it'})`
        : ` (a bridge of Anodyne's local provider with tag ${owner.tag} and data directory ${owner.dataDir}, made by process ${owner.pid}, ` +
          `which ${ownerRuns(owner) ? 'still runs' : 'no longer runs: a platform started on that data directory and tag removes it when stopped with no clusters'})`;
    throw new PreconditionError(
      'ANODYNE_E_PROVIDER_NETWORK_IN_USE',
      `network ${cidr.text} overlaps ${a.address}/${a.prefix} on host interface ${a.dev}${maker}: choose another range, or remove what holds it`,
      { details: { range: cidr.text, interface: a.dev, address: `${a.address}/${a.prefix}` } },
    );
  }
}
