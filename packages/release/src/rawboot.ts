// The raw floor: etcd and kube-apiserver from the release started directly on loopback, timed until /readyz answers ok.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Release } from './release.js';

export interface RawBootResult {
  /** From spawning etcd to etcd answering /health. */
  etcdReadyMs: number;
  /** From spawning kube-apiserver to /readyz answering ok. */
  apiserverReadyMs: number;
  /** Whole boot, etcd spawn to apiserver ready. */
  totalMs: number;
  apiserverUrl: string;
  stop(): Promise<void>;
}

export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** GET over http or https (certificates not checked: the raw floor uses self-signed serving certs). */
export function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = get(url, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function waitFor(url: string, child: ChildProcess, name: string, timeoutMs: number, output: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}): ${output().slice(-2000)}`);
    try {
      const r = await httpGet(url);
      if (r.status === 200 && /ok|true/.test(r.body)) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} not ready at ${url} after ${timeoutMs} ms: ${output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The physical floor for a cluster: etcd and kube-apiserver from the release started
 * directly on loopback, no Anodyne involved, timed until /readyz answers ok. Benchmarks
 * compare cluster creation against this.
 */
export async function rawBoot(release: Release, options: { timeoutMs?: number } = {}): Promise<RawBootResult> {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-rawboot-'));
  const timeoutMs = options.timeoutMs ?? 120_000;
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(children.map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
      setTimeout(() => c.kill('SIGKILL'), 5000).unref();
    })));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [clientPort, peerPort, apiPort] = [await freeLoopbackPort(), await freeLoopbackPort(), await freeLoopbackPort()];
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    writeFileSync(join(dir, 'sa.pub'), publicKey);
    writeFileSync(join(dir, 'sa.key'), privateKey, { mode: 0o600 });
    let etcdOut = '';
    let apiOut = '';
    const t0 = performance.now();
    const etcd = spawn(release.bin('etcd'), [
      '--name=raw', `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${clientPort}`, `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`, `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=raw=http://127.0.0.1:${peerPort}`, '--log-level=warn', '--unsafe-no-fsync',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(etcd);
    etcd.stdout?.on('data', (b: Buffer) => (etcdOut += b.toString()));
    etcd.stderr?.on('data', (b: Buffer) => (etcdOut = (etcdOut + b.toString()).slice(-8000)));
    await waitFor(`http://127.0.0.1:${clientPort}/health`, etcd, 'etcd', timeoutMs, () => etcdOut);
    const t1 = performance.now();
    const api = spawn(release.bin('kube-apiserver'), [
      `--etcd-servers=http://127.0.0.1:${clientPort}`, '--bind-address=127.0.0.1', `--secure-port=${apiPort}`,
      `--cert-dir=${join(dir, 'certs')}`, '--service-cluster-ip-range=10.96.0.0/24',
      '--service-account-issuer=https://kubernetes.default.svc', `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`, '--authorization-mode=Node,RBAC', '--v=0',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(api);
    api.stdout?.on('data', (b: Buffer) => (apiOut = (apiOut + b.toString()).slice(-8000)));
    api.stderr?.on('data', (b: Buffer) => (apiOut = (apiOut + b.toString()).slice(-8000)));
    const url = `https://127.0.0.1:${apiPort}`;
    await waitFor(`${url}/readyz`, api, 'kube-apiserver', timeoutMs, () => apiOut);
    const t2 = performance.now();
    return { etcdReadyMs: t1 - t0, apiserverReadyMs: t2 - t1, totalMs: t2 - t0, apiserverUrl: url, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
