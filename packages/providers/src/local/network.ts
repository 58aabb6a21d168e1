// The local provider's VM network: its bridge and iptables rules, per-VM network namespaces with veths, addresses and routes.
import { exec } from '@anodyne/common';
import { IpPool, type Cidr } from '../internal/validate.js';
import { deleteRule, ip, ipQuiet, killPids, linkExists, netnsList, netnsPids, rulesWithComment, vethsOfTag, type Tally } from './host.js';
import type { LocalState } from './state.js';

/**
 * One provider tag's network: bridge `anbr-<tag>` holding the host's address (the CIDR's
 * first), and per VM or load balancer a netns `anodyne-<tag>-<id>` joined to the bridge by a
 * veth `av<tag><6 of the id>`. Nothing is routed or NATed to the outside: the bridge's
 * traffic is dropped in FORWARD unless it stays on the bridge. Every iptables rule carries
 * the comment `anodyne:<tag>`.
 */
export class VmNetwork {
  readonly bridge: string;
  readonly comment: string;
  private bridgeReady: Promise<void> | undefined;

  constructor(
    private readonly tag: string,
    readonly cidr: Cidr,
  ) {
    this.bridge = `anbr-${tag}`;
    this.comment = `anodyne:${tag}`;
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

  /** Reserves an address for a VM or load balancer in `state` (which the caller persists): `requested`, or the lowest free one. */
  allocate(state: LocalState, requested: string | undefined): string {
    const used = new Set<string>([...Object.values(state.vms).map((v) => v.ip), ...Object.values(state.lbs).map((l) => l.ip)]);
    return new IpPool(this.cidr, used).allocate(requested);
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
      const present = await exec(['iptables', '-w', '-C', r[0]!, ...spec]).then(
        () => true,
        () => false,
      );
      if (!present) await exec(['iptables', '-w', '-I', r[0]!, ...spec]);
    }
  }

  /** A netns with a veth on the bridge, its address and a default route via the host. */
  async createNetns(id: string, addr: string): Promise<void> {
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
    await ip('link', 'set', veth, 'master', this.bridge, 'up');
    await ip('-n', ns, 'addr', 'add', `${addr}/${this.cidr.prefix}`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', ns, 'route', 'add', 'default', 'via', this.cidr.gateway);
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

  /** Cleanup: the tag's veths left on the host, its bridge and its iptables rules, counted. */
  async removeHostSide(count: Tally): Promise<void> {
    for (const l of await vethsOfTag(this.tag)) {
      await ipQuiet('link', 'del', l);
      count('links');
    }
    if (await linkExists(this.bridge)) {
      await ipQuiet('link', 'del', this.bridge);
      count('links');
    }
    for (const table of ['filter', 'nat']) {
      for (const rule of await rulesWithComment(table, this.comment)) {
        await deleteRule(table, rule).catch(() => undefined);
        count('iptables');
      }
    }
  }
}
