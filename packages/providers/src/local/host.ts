// Host-level helpers of the local provider: cgroups, mounts, processes, links, iptables, shell quoting.
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exec, type ExecResult } from '@anodyne/common';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** Counts host objects removed by cleanup, by kind (the `other` of a CleanupReport). */
export type Tally = (kind: string, n?: number) => void;

export interface CgroupHierarchy {
  /** Directory under /sys/fs/cgroup. */
  dir: string;
  /** Mount options naming the controllers, e.g. `cpu` or `name=systemd`. */
  options: string;
}

/** The cgroup v1 hierarchies mounted on the host, read from /proc/self/mountinfo. */
export function cgroupHierarchies(): CgroupHierarchy[] {
  const out: CgroupHierarchy[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fstype, , superOpts] = right.split(' ');
    const mountPoint = fields[4] ?? '';
    if (fstype !== 'cgroup' || !mountPoint.startsWith(CGROUP_ROOT + '/')) continue;
    const controllers = (superOpts ?? '')
      .split(',')
      .filter(
        (o) => o !== 'rw' && o !== 'ro' && !o.startsWith('release_agent') && o !== 'clone_children' && o !== 'noprefix' && o !== 'xattr',
      );
    out.push({ dir: mountPoint.slice(CGROUP_ROOT.length + 1), options: controllers.join(',') });
  }
  return out;
}

/** Mount points at or below `prefix`, deepest first (for unmounting). */
export function mountsUnder(prefix: string): string[] {
  const decode = (s: string) => s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => decode(l.split(' ')[4] ?? ''))
    .filter((p) => p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : prefix + '/'));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

export async function unmountAll(prefix: string): Promise<number> {
  let n = 0;
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(prefix);
    if (points.length === 0) break;
    for (const p of points) {
      await exec(['umount', '-l', p]).then(
        () => n++,
        () => undefined,
      );
    }
  }
  return n;
}

/** PIDs in a cgroup directory and all its descendants. */
export function pidsInCgroupTree(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    try {
      for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) pids.push(Number(l));
    } catch {
      // gone meanwhile
    }
    for (const e of entries) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(dir);
  return [...new Set(pids)];
}

/** Removes a cgroup directory tree, deepest first. Returns how many directories were removed. */
export function removeCgroupTree(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(join(d, e.name));
    try {
      rmdirSync(d);
      n++;
    } catch {
      // still busy: the caller retries after killing
    }
  };
  walk(dir);
  return n;
}

/** The start time of a process (field 22 of /proc/PID/stat), or undefined when it does not exist. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const afterComm = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // afterComm[0] is field 3 (state); field 22 is index 19.
    if (afterComm[0] === 'Z') return undefined;
    return afterComm[19];
  } catch {
    return undefined;
  }
}

export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export function killPids(pids: number[], signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const p of pids) {
    try {
      process.kill(p, signal);
    } catch {
      // already gone
    }
  }
}

/** Quotes a string for /bin/sh (single quotes; embedded ones closed, escaped and reopened). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export async function ip(...args: string[]): Promise<ExecResult> {
  return exec(['ip', ...args]);
}

export async function ipQuiet(...args: string[]): Promise<boolean> {
  return exec(['ip', ...args]).then(
    () => true,
    () => false,
  );
}

export async function linkExists(name: string): Promise<boolean> {
  return ipQuiet('link', 'show', 'dev', name);
}

export async function netnsList(): Promise<string[]> {
  const { stdout } = await exec(['ip', 'netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

export async function netnsPids(ns: string): Promise<number[]> {
  const r = await exec(['ip', 'netns', 'pids', ns]).catch(() => ({ stdout: '' }));
  return r.stdout
    .split('\n')
    .filter((l) => l.trim())
    .map(Number);
}

export async function linksWithPrefix(prefix: string): Promise<string[]> {
  const { stdout } = await exec(['ip', '-o', 'link', 'show']);
  return stdout
    .split('\n')
    .map((l) => (l.split(': ')[1] ?? '').split('@')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

/** iptables rules (as `-A ...` lines) of a table that carry the comment. */
export async function rulesWithComment(table: string, comment: string): Promise<string[]> {
  const { stdout } = await exec(['iptables', '-w', '-t', table, '-S']);
  // The whole comment, not a part of it: tag `t1` must not take the rules of tag `t12`.
  const exact = new RegExp(`--comment "?${comment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"?(\\s|$)`);
  return stdout.split('\n').filter((l) => l.startsWith('-A ') && exact.test(l));
}

/** The host-side veths of a provider's tag: `av<tag>` and six characters of the VM or load balancer id. */
export async function vethsOfTag(tag: string): Promise<string[]> {
  return (await linksWithPrefix(`av${tag}`)).filter((l) => l.length === 2 + tag.length + 6);
}

export async function deleteRule(table: string, rule: string): Promise<void> {
  // `-A CHAIN spec` → `-D CHAIN spec`; split respecting the quoted comment.
  const parts = rule.match(/"[^"]*"|\S+/g)?.map((p) => p.replace(/^"|"$/g, '')) ?? [];
  parts[0] = '-D';
  await exec(['iptables', '-w', '-t', table, ...parts]);
}

/**
 * Kernel limits that every VM draws on from one host-wide pool: inotify instances and watches
 * are counted per user, and every VM's processes run as the host's root. Debian's defaults
 * (128 instances) run out at about eight small clusters (kubelets and containerd exit with
 * "too many open files"). Raised to at least these floors, never lowered; returns what changed.
 */
export const HOST_LIMIT_FLOORS: Record<string, number> = {
  'fs/inotify/max_user_instances': 8192,
  'fs/inotify/max_user_watches': 524288,
};

export function raiseHostLimits(
  floors: Record<string, number> = HOST_LIMIT_FLOORS,
  root = '/proc/sys',
): Record<string, { from: number; to: number }> {
  const raised: Record<string, { from: number; to: number }> = {};
  for (const [key, floor] of Object.entries(floors)) {
    const file = join(root, key);
    const now = Number(readFileSync(file, 'utf8').trim());
    if (Number.isFinite(now) && now >= floor) continue;
    writeFileSync(file, `${floor}\n`);
    raised[key.replace(/\//g, '.')] = { from: now, to: floor };
  }
  return raised;
}

/** An IPv4 address held by a host interface, with the interface's alias (`ip link set … alias`). */
export interface HostAddress {
  dev: string;
  address: string;
  prefix: number;
  alias: string | undefined;
}

/** Every IPv4 address on the host's interfaces (`ip -j -4 addr`). */
export async function hostAddresses(): Promise<HostAddress[]> {
  const { stdout } = await exec(['ip', '-j', '-4', 'addr', 'show']);
  const links = JSON.parse(stdout || '[]') as { ifname: string; addr_info?: { local?: string; prefixlen?: number }[] }[];
  return links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.local !== undefined && a.prefixlen !== undefined)
      .map((a) => ({ dev: l.ifname, address: a.local!, prefix: a.prefixlen!, alias: linkAlias(l.ifname) })),
  );
}

/** An interface's alias (`ip addr` does not show it). */
function linkAlias(dev: string): string | undefined {
  try {
    return readFileSync(`/sys/class/net/${dev}/ifalias`, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Who made one of our bridges, written into its alias: `anodyne[-lxd]:<tag> pid=<pid>/<start> <dataDir>`
 * (the platform process that set it up, with its start time so a reused pid is not mistaken for it).
 */
export interface BridgeOwner {
  /** Whose bridge: the local provider's (`local`) or the LXD provider's (`lxd`, made by LXD, data directory = its socket). */
  kind: 'local' | 'lxd';
  tag: string;
  pid: number;
  start: string;
  dataDir: string;
}

export function ownerAlias(owner: BridgeOwner): string {
  return `anodyne${owner.kind === 'lxd' ? '-lxd' : ''}:${owner.tag} pid=${owner.pid}/${owner.start} ${owner.dataDir}`;
}

export function parseOwnerAlias(alias: string | undefined): BridgeOwner | undefined {
  const m = /^anodyne(-lxd)?:([a-z0-9]{1,6}) pid=(\d+)\/(\d+) (.+)$/.exec(alias ?? '');
  return m ? { kind: m[1] ? 'lxd' : 'local', tag: m[2]!, pid: Number(m[3]), start: m[4]!, dataDir: m[5]! } : undefined;
}

/** Whether the process that made a bridge still runs (same pid, same start time). */
export function ownerRuns(owner: BridgeOwner): boolean {
  return processStartTime(owner.pid) === owner.start;
}
