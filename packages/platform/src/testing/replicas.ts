// `anodyne server` replicas as separate processes, and a real haproxy in front of them: for the HA suite and the replicas benchmark.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { https } from './http.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

/** One `anodyne server` process: its name, port and URL, its process while it runs. */
export interface ServerProcess {
  name: string;
  port: number;
  url: string;
  child: ChildProcess | undefined;
}

/**
 * Starts `anodyne server` (packages/platform/dist/main.js) with `env` and waits until it says it
 * is up (90 s at most). Its output goes to `<logDir>/<name>.log`. Returns what it printed (the
 * first start prints the admin's password).
 */
export async function startServer(r: ServerProcess, env: NodeJS.ProcessEnv, logDir: string): Promise<string> {
  const child = spawn('node', [join(REPO, 'packages/platform/dist/main.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  r.child = child;
  const log = join(logDir, `${r.name}.log`);
  let out = '';
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${r.name} did not start: ${out}`)), 90_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      appendFileSync(log, d);
      if (/Stop with Ctrl-C/.test(out)) {
        clearTimeout(timer);
        res();
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
      appendFileSync(log, d);
    });
    child.once('exit', (code, signal) => {
      appendFileSync(log, `\n[exited: code ${code}, signal ${signal}]\n`);
      clearTimeout(timer);
      rej(new Error(`${r.name} exited ${code}: ${out}`));
    });
  });
  return out;
}

/** Stops a server process with `signal` (SIGKILL: as a crash) and waits until it has exited. */
export async function stopServer(r: ServerProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const child = r.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((res) => child.once('exit', res));
  child.kill(signal);
  await exited;
}

/** A TCP load balancer in front of some servers: haproxy, checking each one's `/healthz` every 500 ms. */
export interface Balancer {
  bind: string;
  servers: ServerProcess[];
  /** Open each connection to a server with a PROXY protocol v2 header naming the client (`send-proxy-v2`). */
  sendProxy?: boolean;
}

/**
 * Runs one haproxy for the given balancers (a frontend each, round robin over its servers) with
 * its configuration in `dir`, and waits until every balancer answers `/healthz` through a live
 * server (10 s at most). Stop it with SIGTERM.
 */
export async function startHaproxy(dir: string, balancers: Balancer[], ca: string): Promise<ChildProcess> {
  const cfg = join(dir, 'haproxy.cfg');
  const lines = [
    'global',
    '  maxconn 2048',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 120s',
    '  timeout server 120s',
  ];
  balancers.forEach((b, i) => {
    lines.push(`frontend f${i}`, `  bind ${b.bind}`, `  default_backend b${i}`);
    lines.push(`backend b${i}`, '  balance roundrobin', '  option httpchk GET /healthz');
    lines.push('  default-server check check-ssl verify none inter 500ms fall 2 rise 1');
    for (const s of b.servers) lines.push(`  server ${s.name} ${new URL(s.url).host}${b.sendProxy ? ' send-proxy-v2' : ''}`);
  });
  writeFileSync(cfg, lines.join('\n') + '\n');
  const haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  haproxy.stderr.resume();
  for (const b of balancers) {
    const url = `https://${b.bind}`;
    let ok = false;
    for (let i = 0; i < 100 && !ok; i++) {
      ok = await https(url, ca, 'GET', '/healthz').then(
        (r) => r.status === 200,
        () => false,
      );
      if (!ok) await new Promise((r) => setTimeout(r, 100));
    }
    if (!ok) {
      haproxy.kill('SIGTERM');
      throw new Error(`haproxy does not answer on ${url}`);
    }
  }
  return haproxy;
}
