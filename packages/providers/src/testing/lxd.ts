// startLxd: a private LXD daemon for a test (its own directory, storage pool and socket), removed with everything it made.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import {
  CGROUP_ROOT,
  deleteRule,
  hostAddresses,
  ipQuiet,
  killPids,
  mountsUnder,
  parseOwnerAlias,
  processStartTime,
  removeCgroupTree,
  rulesWithComment,
  unmountAll,
} from '../local/host.js';

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
  for (const a of await hostAddresses()) {
    const owner = parseOwnerAlias(a.alias);
    if (owner?.kind !== 'lxd' || !tags.has(owner.tag) || ![...stale].some((d) => owner.dataDir.startsWith(`${d}/`))) continue;
    await ipQuiet('link', 'del', a.dev);
    for (const r of await rulesWithComment('filter', `anodyne-lxd:${owner.tag}`)) await deleteRule('filter', r).catch(() => undefined);
  }
  if (testDaemons().every((d) => stale.has(d.dir))) removeLxcCgroups();
  for (const dir of stale) {
    await unmountAll(dir);
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A daemon of Debian's `lxd` package (the `make deps` step installs it) started as root with
 * `LXD_DIR` in a temporary directory: nothing of the host's own LXD (if any) is touched. Its
 * socket answers within seconds; a `dir` pool is made. `stop` leaves the host as it was.
 */
export async function startLxd(name: string): Promise<TestLxd> {
  await removeStaleDaemons();
  const dir = mkdtempSync(join(tmpdir(), `anodyne-lxd-${name}-`));
  const socket = join(dir, 'unix.socket');
  const log = openSync(join(dir, 'daemon.out'), 'a');
  const child: ChildProcess = spawn('lxd', ['--group', 'root', '--logfile', join(dir, 'lxd.log')], {
    env: { ...process.env, LXD_DIR: dir },
    detached: true,
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  child.unref();
  writeFileSync(join(dir, 'daemon.pid'), `${child.pid} ${processStartTime(child.pid ?? 0) ?? ''}\n`);
  const stop = async (): Promise<void> => {
    await exec(['lxd', 'shutdown', '--timeout', '30'], { env: { ...process.env, LXD_DIR: dir } }).catch(() => undefined);
    if (child.exitCode === null && child.pid) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await unmountAll(dir);
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
    // LXC's cgroups are shared by every daemon on the host: removed by the last one.
    if (testDaemons().every((d) => !d.runs)) removeLxcCgroups();
  };
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const up =
        existsSync(socket) &&
        (await raw(socket, 'GET', '/1.0').then(
          (r) => r.status === 200,
          () => false,
        ));
      if (up) break;
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`LXD did not start: ${readFileSync(join(dir, 'daemon.out'), 'utf8').slice(-800)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const pool = 'anodyne';
    const made = await json(socket, 'POST', '/1.0/storage-pools', { name: pool, driver: 'dir' });
    if (made.status >= 300) throw new Error(`LXD storage pool: ${JSON.stringify(made.body)}`);
    return {
      socket,
      dir,
      pool,
      stop,
      get: (path) => json(socket, 'GET', path),
      call: async (method, path, body) => {
        const r = await json(socket, method, path, body);
        if (r.status >= 300) throw new Error(`LXD ${method} ${path}: ${r.body.error as string}`);
        const operation = r.body.operation as string | undefined;
        if (operation) {
          const op = await json(socket, 'GET', `${operation}/wait?timeout=60`);
          const meta = op.body.metadata as { status_code: number; err: string };
          if (meta.status_code !== 200) throw new Error(`LXD ${method} ${path}: ${meta.err}`);
        }
      },
      exec: async (instance, command) => {
        const started = await json(socket, 'POST', `/1.0/instances/${instance}/exec`, {
          command,
          'wait-for-websocket': false,
          interactive: false,
          'record-output': true,
        });
        if (started.status >= 300) throw new Error(`exec in ${instance}: ${JSON.stringify(started.body)}`);
        const op = await json(socket, 'GET', `${started.body.operation as string}/wait?timeout=60`);
        const meta = (op.body.metadata as { metadata: { return: number; output: Record<string, string> } }).metadata;
        const out = async (fd: string) => (meta.output[fd] ? (await raw(socket, 'GET', meta.output[fd])).text : '');
        return { code: meta.return, stdout: await out('1'), stderr: await out('2') };
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
