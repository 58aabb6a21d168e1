// startLxd: a private LXD daemon for a test (its own directory, storage pool and socket), removed with everything it made.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import {
  CGROUP_ROOT,
  deleteRule,
  hostAddresses,
  ip,
  ipQuiet,
  killPids,
  linksWithPrefix,
  mountsUnder,
  netnsPids,
  parseOwnerAlias,
  pidsInCgroupTree,
  processStartTime,
  removeCgroupTree,
  rulesWithComment,
  unmountAll,
} from '../local/host.js';
import { refuseOverlap } from '../local/network.js';
import { parseCidr } from '../internal/validate.js';

export interface TestLxd {
  /** LXD's unix socket. */
  socket: string;
  /** LXD_DIR of the daemon. */
  dir: string;
  /** A `dir` storage pool made for the test. */
  pool: string;
  /** Runs a command in an instance and answers its exit code and output (LXD's exec with recorded output). */
  exec(instance: string, command: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** GET of an API path on the socket: the status and parsed body. */
  get(path: string): Promise<{ status: number; body: { metadata?: unknown } }>;
  /** Any request (JSON), waiting for its operation; an error answer throws. Acts behind the provider's back. */
  call(method: string, path: string, body?: unknown): Promise<void>;
  /**
   * Shuts the daemon down (its instances with it), unmounts and removes its directory and, with the
   * last test daemon, LXC's empty cgroups of our instances. Host rules are the provider's `cleanup`'s.
   */
  stop(): Promise<void>;
}

function raw(socket: string, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request(
      {
        socketPath: socket,
        agent: false,
        host: 'lxd',
        method,
        path,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

async function json(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await raw(socket, method, path, body);
  return { status: r.status, body: JSON.parse(r.text) as Record<string, unknown> };
}

/** What LXC leaves in every cgroup hierarchy once its last container is gone (empty directories). */
function removeLxcCgroups(): void {
  for (const h of readdirSync(CGROUP_ROOT)) {
    let entries: string[];
    try {
      entries = readdirSync(join(CGROUP_ROOT, h));
    } catch {
      continue;
    }
    // Only our instances' (`an-…`), and LXC's pivot once no other container's cgroup is left beside it.
    const ours = entries.filter((e) => e.startsWith('lxc.payload.an-') || e.startsWith('lxc.monitor.an-'));
    for (const e of ours) removeCgroupTree(join(CGROUP_ROOT, h, e));
    const others = entries.filter((e) => (e.startsWith('lxc.payload.') || e.startsWith('lxc.monitor.')) && !ours.includes(e));
    if (others.length === 0 && entries.includes('lxc.pivot')) removeCgroupTree(join(CGROUP_ROOT, h, 'lxc.pivot'));
  }
}

/**
 * The host side that providers made for the daemons of `dirs` (their bridges' aliases name a socket
 * there): bridges, their VXLAN ports and the rules of their tags. A provider whose cleanup failed, or
 * never ran, leaves it; LXD removes only what it made itself.
 */
async function removeHostSideOf(dirs: string[]): Promise<void> {
  for (const a of await hostAddresses()) {
    const owner = parseOwnerAlias(a.alias);
    if (owner?.kind !== 'lxd' || !dirs.some((d) => owner.dataDir.startsWith(`${d}/`))) continue;
    await ipQuiet('link', 'del', `${a.dev}v`);
    await ipQuiet('link', 'del', a.dev);
    for (const r of await rulesWithComment('filter', `anodyne-lxd:${owner.tag}`)) await deleteRule('filter', r).catch(() => undefined);
  }
}

/** Test daemons' directories, and whether the daemon of each still runs (its `daemon.pid`: pid and start time). */
function testDaemons(): { dir: string; runs: boolean }[] {
  return readdirSync(tmpdir())
    .filter((n) => n.startsWith('anodyne-lxd-'))
    .map((n) => {
      const dir = join(tmpdir(), n);
      try {
        const [pid, start] = readFileSync(join(dir, 'daemon.pid'), 'utf8').trim().split(' ');
        return { dir, runs: processStartTime(Number(pid)) === start };
      } catch {
        // No pid file yet: a daemon starting now, unless the directory is old.
        return { dir, runs: Date.now() - statSync(dir).mtimeMs < 600_000 };
      }
    });
}

/**
 * What a killed test run's daemon left (its processes are gone, its bridges, rules and mounts are
 * not): each of our bridges whose maker named a socket under the directory of a test daemon that
 * no longer runs goes, with the rules of its tag; then such directories are unmounted and removed.
 */
async function removeStaleDaemons(): Promise<void> {
  const stale = new Set(
    testDaemons()
      .filter((d) => !d.runs)
      .map((d) => d.dir),
  );
  if (stale.size === 0) return;
  // Its processes (dnsmasq, LXC's monitors name the directory) and its containers' (cgroups `lxc.payload.an-<tag>-…`).
  const tags = new Set<string>();
  for (const a of await hostAddresses()) {
    const owner = parseOwnerAlias(a.alias);
    if (owner?.kind === 'lxd' && [...stale].some((d) => owner.dataDir.startsWith(`${d}/`))) tags.add(owner.tag);
  }
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      if ([...stale].some((d) => cmd.includes(d)) || [...tags].some((t) => cg.includes(`/lxc.payload.an-${t}-`))) pids.push(Number(pid));
    } catch {
      // exited meanwhile
    }
  }
  killPids(pids);
  await removeHostSideOf([...stale]);
  // A cluster member's namespace (its daemon ran in it) and the cluster's host bridge.
  for (const dir of stale) {
    for (const [file, remove] of [
      ['netns', async (n: string) => (killPids(await netnsPids(n)), ipQuiet('netns', 'del', n))],
      [
        'bridge',
        async (n: string) => {
          for (const l of await linksWithPrefix(`${n}-`)) await ipQuiet('link', 'del', l);
          return ipQuiet('link', 'del', n);
        },
      ],
    ] as const) {
      const n = existsSync(join(dir, file)) ? readFileSync(join(dir, file), 'utf8').trim() : '';
      if (/^anlxm[-0-9a-f]+$/.test(n)) await remove(n);
    }
  }
  if (testDaemons().every((d) => stale.has(d.dir))) removeLxcCgroups();
  for (const dir of stale) {
    await unmountAll(dir);
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Why LXD tests cannot run here (root and Debian's `lxd` package are needed), or false when they can:
 * for `skipUnless(!why, why)`.
 */
export async function lxdUnavailable(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root';
  const found = await exec(['sh', '-c', 'command -v lxd']).then(
    () => true,
    () => false,
  );
  return found ? false : 'needs Debian’s lxd package (make deps installs it)';
}

/** One daemon: its directory (LXD_DIR), socket, process, and a stop that leaves nothing of it. */
interface Daemon {
  dir: string;
  socket: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `lxd` with LXD_DIR in a new temporary directory (in network namespace `netns` when given,
 * recorded in the directory so a killed run's leftovers are found) and waits for its socket.
 */
async function startDaemon(name: string, netns?: string): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), `anodyne-lxd-${name}-`));
  if (netns) writeFileSync(join(dir, 'netns'), `${netns}\n`);
  const socket = join(dir, 'unix.socket');
  const log = openSync(join(dir, 'daemon.out'), 'a');
  const argv = ['lxd', '--group', 'root', '--logfile', join(dir, 'lxd.log')];
  // `ip netns exec` gives the daemon a /sys of its namespace, without the cgroup hierarchies mounted
  // below it: they are mounted again there (the same hierarchies) before LXD starts.
  const cgroups = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter(([, point, type]) => (type === 'cgroup' || type === 'cgroup2') && point?.startsWith(`${CGROUP_ROOT}/`))
    .map(([, point, type, options]) => `mkdir -p ${point} && mount -t ${type} -o ${options} ${type} ${point}`);
  const script = [`mount -t tmpfs -o mode=755 cgroup_root ${CGROUP_ROOT}`, ...cgroups, `exec ${argv.join(' ')}`].join(' && ');
  const child: ChildProcess = spawn(netns ? 'ip' : argv[0]!, netns ? ['netns', 'exec', netns, 'sh', '-c', script] : argv.slice(1), {
    env: { ...process.env, LXD_DIR: dir },
    detached: true,
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  child.unref();
  const pid = child.pid ?? 0;
  writeFileSync(join(dir, 'daemon.pid'), `${pid} ${processStartTime(pid) ?? ''}\n`);
  const stop = async (): Promise<void> => {
    await exec(['lxd', 'shutdown', '--timeout', '30'], { env: { ...process.env, LXD_DIR: dir } }).catch(() => undefined);
    if (child.exitCode === null && pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await unmountAll(dir);
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up =
      existsSync(socket) &&
      (await raw(socket, 'GET', '/1.0').then(
        (r) => r.status === 200,
        () => false,
      ));
    if (up) return { dir, socket, pid, stop };
    if (child.exitCode !== null || Date.now() > deadline) {
      const out = readFileSync(join(dir, 'daemon.out'), 'utf8').slice(-800);
      await stop();
      throw new Error(`LXD did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A request that must succeed (its operation waited for); an error answer throws with LXD's message. */
async function must(socket: string, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const r = await json(socket, method, path, body).catch((err: Error) => {
    throw new Error(`LXD ${method} ${path}: ${err.message}`);
  });
  if (r.status >= 300) throw new Error(`LXD ${method} ${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  const operation = r.body.operation as string | undefined;
  if (!operation) return r.body;
  const location = (r.body.metadata as { location?: string } | undefined)?.location;
  const target = location && location !== 'none' ? `&target=${location}` : '';
  const op = await json(socket, 'GET', `${operation.split('?')[0]!}/wait?timeout=120${target}`);
  const meta = op.body.metadata as { status_code: number; err: string };
  if (meta.status_code !== 200) throw new Error(`LXD ${method} ${path}: ${meta.err}`);
  return op.body;
}

/** The test helpers over one daemon's socket (requests act behind the provider's back). */
function helpers(socket: string): Pick<TestLxd, 'get' | 'call' | 'exec'> {
  return {
    get: (path) => json(socket, 'GET', path),
    call: async (method, path, body) => {
      await must(socket, method, path, body);
    },
    exec: async (instance, command) => {
      const started = await json(socket, 'POST', `/1.0/instances/${instance}/exec`, {
        command,
        'wait-for-websocket': false,
        interactive: false,
        'record-output': true,
      });
      if (started.status >= 300) throw new Error(`exec in ${instance}: ${JSON.stringify(started.body)}`);
      const location = (started.body.metadata as { location?: string } | undefined)?.location;
      const target = location && location !== 'none' ? `&target=${location}` : '';
      const op = await json(socket, 'GET', `${(started.body.operation as string).split('?')[0]!}/wait?timeout=60${target}`);
      const meta = (op.body.metadata as { metadata: { return: number; output: Record<string, string> } }).metadata;
      const out = async (fd: string) => (meta.output[fd] ? (await raw(socket, 'GET', meta.output[fd])).text : '');
      return { code: meta.return, stdout: await out('1'), stderr: await out('2') };
    },
  };
}

/**
 * A daemon of Debian's `lxd` package (the `make deps` step installs it) started as root with
 * `LXD_DIR` in a temporary directory: nothing of the host's own LXD (if any) is touched. Its
 * socket answers within seconds; a `dir` pool is made. `stop` leaves the host as it was.
 */
export async function startLxd(name: string): Promise<TestLxd> {
  await removeStaleDaemons();
  const daemon = await startDaemon(name);
  const stop = async (): Promise<void> => {
    await daemon.stop();
    await removeHostSideOf([daemon.dir]);
    // LXC's cgroups are shared by every daemon on the host: removed by the last one.
    if (testDaemons().every((d) => !d.runs)) removeLxcCgroups();
  };
  try {
    const pool = 'anodyne';
    await must(daemon.socket, 'POST', '/1.0/storage-pools', { name: pool, driver: 'dir' });
    return { socket: daemon.socket, dir: daemon.dir, pool, stop, ...helpers(daemon.socket) };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface TestLxdCluster extends TestLxd {
  /** The members, in join order: the first is the one `socket` and `dir` are of (the database's first voter). */
  members: { name: string; dir: string; socket: string; address: string; netns: string }[];
  /** The host's bridge every member's `eth0` is on (the rack's switch): a VXLAN endpoint's interface on this host. */
  hostInterface: string;
  /** The interface name on each member toward that bridge. */
  memberInterface: string;
  /**
   * The member is lost as a machine is: its link to the others is cut and its daemon and the
   * processes of its instances are killed (nothing of it is shut down cleanly).
   */
  loseMember(name: string): Promise<void>;
}

/**
 * An LXD cluster of `count` members on this host, as separate machines would be: each member is a
 * daemon in a network namespace of its own (`anlxm-<id>-<i>`, its `eth0` on the host bridge
 * `anlxm<id>` in `range`, the host the first address), the first one bootstrapping the cluster and
 * the others joining it with a token (`lxd init --preseed`, LXD's own join). A `dir` pool exists on
 * every member. The members' bridges know nothing of each other: a provider joins them with VXLAN
 * over `hostInterface`. `stop` removes the daemons, namespaces and the bridge.
 */
export async function startLxdCluster(name: string, o: { members: number; range: string }): Promise<TestLxdCluster> {
  await removeStaleDaemons();
  const id = randomBytes(2).toString('hex');
  const bridge = `anlxm${id}`;
  const [base] = o.range.split('/') as [string];
  const prefix = base.split('.').slice(0, 3).join('.');
  const daemons: Daemon[] = [];
  const members: TestLxdCluster['members'] = [];
  const stop = async (): Promise<void> => {
    for (const d of [...daemons].reverse()) await d.stop();
    await removeHostSideOf(daemons.map((d) => d.dir));
    for (const [i, m] of members.entries()) {
      killPids(await netnsPids(m.netns));
      // The veth goes at once (the namespace's own teardown in the kernel may take a while and would keep it).
      await ipQuiet('link', 'del', `${bridge}-${i}`);
      await ipQuiet('netns', 'del', m.netns);
    }
    await ipQuiet('link', 'del', bridge);
    if (testDaemons().every((d) => !d.runs)) removeLxcCgroups();
  };
  try {
    // Another cluster (a run still stopping) on the range would take half the members' traffic.
    await refuseOverlap(parseCidr(o.range), bridge);
    await ip('link', 'add', bridge, 'type', 'bridge');
    // The rack's switch floods multicast (no IGMP querier here): VXLAN's group reaches every member.
    await ip('link', 'set', bridge, 'type', 'bridge', 'mcast_snooping', '0');
    await ip('addr', 'add', `${prefix}.1/24`, 'dev', bridge);
    await ip('link', 'set', bridge, 'alias', `anodyne-lxd-test:${name}`, 'up');
    for (let i = 0; i < o.members; i++) {
      const netns = `anlxm-${id}-${i}`;
      const address = `${prefix}.${11 + i}`;
      await ip('netns', 'add', netns);
      members.push({ name: `m${i}`, dir: '', socket: '', address, netns });
      await ip('link', 'add', `${bridge}-${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
      await ip('link', 'set', `${bridge}-${i}`, 'master', bridge, 'up');
      await ip('-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      await ip('-n', netns, 'link', 'set', 'lo', 'up');
      await ip('-n', netns, 'link', 'set', 'eth0', 'up');
      // No default route: nothing a member does leaves this host's bridge (LXD looks for image servers).
      const d = await startDaemon(`${name}-m${i}`, netns);
      if (i === 0) writeFileSync(join(d.dir, 'bridge'), `${bridge}\n`);
      daemons.push(d);
      members[i] = { ...members[i]!, dir: d.dir, socket: d.socket };
    }
    const first = members[0]!;
    await must(first.socket, 'PATCH', '/1.0', { config: { 'core.https_address': `${first.address}:8443` } });
    await must(first.socket, 'PUT', '/1.0/cluster', { server_name: first.name, enabled: true });
    // A lost member is seen sooner than LXD's 20 s (its minimum is 11; set before clustering, LXD drops the request).
    await must(first.socket, 'PATCH', '/1.0', { config: { 'cluster.offline_threshold': '11' } });
    for (const m of members.slice(1)) {
      // A join token is an operation that runs until the token is used: its secret is in the answer.
      const op = await json(first.socket, 'POST', '/1.0/cluster/members', { server_name: m.name });
      if (op.status >= 300) throw new Error(`LXD join token for ${m.name}: ${JSON.stringify(op.body)}`);
      const meta = (op.body.metadata as { metadata: Record<string, unknown> }).metadata;
      const token = Buffer.from(
        JSON.stringify({
          server_name: m.name,
          fingerprint: meta.fingerprint,
          addresses: meta.addresses,
          secret: meta.secret,
          expires_at: meta.expiresAt,
        }),
      ).toString('base64');
      const preseed = `cluster:\n  enabled: true\n  server_name: ${m.name}\n  server_address: ${m.address}:8443\n  cluster_token: ${token}\n`;
      await exec(['lxd', 'init', '--preseed'], { env: { ...process.env, LXD_DIR: m.dir }, input: preseed });
    }
    const pool = 'anodyne';
    for (const m of members) await must(first.socket, 'POST', `/1.0/storage-pools?target=${m.name}`, { name: pool, driver: 'dir' });
    await must(first.socket, 'POST', '/1.0/storage-pools', { name: pool, driver: 'dir' });
    const loseMember = async (member: string): Promise<void> => {
      const i = members.findIndex((m) => m.name === member);
      if (i < 0) throw new Error(`no member ${member}`);
      await ip('link', 'set', `${bridge}-${i}`, 'down');
      const dir = members[i]!.dir;
      const instances = readdirSync(join(dir, 'containers')).filter((n) => n.startsWith('an-'));
      const pids: number[] = [...(await netnsPids(members[i]!.netns))];
      for (const h of readdirSync(CGROUP_ROOT)) {
        for (const n of instances) pids.push(...pidsInCgroupTree(join(CGROUP_ROOT, h, `lxc.payload.${n}`)));
      }
      killPids(pids);
    };
    return {
      socket: first.socket,
      dir: first.dir,
      pool,
      stop,
      members,
      hostInterface: bridge,
      memberInterface: 'eth0',
      loseMember,
      ...helpers(first.socket),
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
