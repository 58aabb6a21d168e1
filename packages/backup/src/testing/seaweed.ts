// A real SeaweedFS S3 gateway for tests (`@anodyne/backup/testing`): master, volume, filer and S3 in one `weed server` on loopback.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { S3ArtifactStore } from '../s3.js';

/** A running SeaweedFS whose S3 gateway needs requests signed with the one identity it knows. */
export interface TestSeaweed {
  /** `http://127.0.0.1:<port>` of the S3 gateway. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** A bucket that exists, created at start. */
  bucket: string;
  /** The server's log (for a failing test's message). */
  logFile: string;
  /** Process id of `weed server`, the leader of its own process group. */
  pid: number;
  /** Stops the whole process group and waits for it to exit. */
  stop(): Promise<void>;
}

export interface SeaweedOptions {
  /** Name of the bucket created at start (`anodyne-test` by default). */
  bucket?: string;
  /** How long to wait for the S3 gateway to store an object (60 s by default). */
  startTimeoutMs?: number;
}

/** The weed binary: $ANODYNE_SEAWEEDFS, or the newest one that release/tools.sh built into $ANODYNE_CACHE. */
export function findWeed(env: NodeJS.ProcessEnv = process.env): string {
  const given = env['ANODYNE_SEAWEEDFS'];
  if (given) {
    if (!existsSync(given))
      throw new Error(`ANODYNE_SEAWEEDFS=${given} does not exist (run release/tools.sh seaweedfs, which prints the path of weed)`);
    return given;
  }
  const tools = join(env['ANODYNE_CACHE'] ?? '/var/cache/anodyne', 'tools');
  const found = (existsSync(tools) ? readdirSync(tools) : [])
    .filter((d) => d.startsWith('seaweedfs-') && existsSync(join(tools, d, 'weed')))
    .map((d) => join(tools, d, 'weed'))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!found[0])
    throw new Error(`SeaweedFS is not built: no ${tools}/seaweedfs-*/weed (run release/tools.sh seaweedfs, or make test, which builds it)`);
  return found[0];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `weed server` with master, volume, filer and S3 gateway on free loopback ports, data under
 * `dir`, and returns when the gateway has stored and deleted an object in a fresh bucket. Always call
 * `stop()`, in an `after` hook; the process group is also killed when this process exits.
 */
export async function startSeaweed(dir: string, opts: SeaweedOptions = {}): Promise<TestSeaweed> {
  const weed = findWeed();
  const bucket = opts.bucket ?? 'anodyne-test';
  mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 });
  const accessKeyId = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  const config = join(dir, 's3.json');
  const identity = {
    name: 'anodyne',
    credentials: [{ accessKey: accessKeyId, secretKey: secretAccessKey }],
    actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'],
  };
  writeFileSync(config, JSON.stringify({ identities: [identity] }), { mode: 0o600 });

  const ports: number[] = [];
  while (ports.length < 8) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc] = ports as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const args = [
    'server',
    `-dir=${join(dir, 'data')}`,
    '-ip=127.0.0.1',
    '-ip.bind=127.0.0.1',
    `-master.port=${master}`,
    `-master.port.grpc=${masterGrpc}`,
    '-master.telemetry=false',
    '-master.volumeSizeLimitMB=64',
    `-volume.port=${volume}`,
    `-volume.port.grpc=${volumeGrpc}`,
    '-volume.max=8',
    '-volume.preStopSeconds=0',
    '-filer',
    `-filer.port=${filer}`,
    `-filer.port.grpc=${filerGrpc}`,
    `-filer.localSocket=${join(dir, 'filer.sock')}`,
    '-s3',
    `-s3.port=${s3}`,
    `-s3.port.grpc=${s3Grpc}`,
    `-s3.localSocket=${join(dir, 's3.sock')}`,
    `-s3.config=${config}`,
    '-s3.iam=false',
    '-s3.autoCreateBucket=false',
    '-s3.port.iceberg=0',
    '-s3.port.lance=0',
  ];
  const logFile = join(dir, 'weed.log');
  const log = openSync(logFile, 'a');
  const child = spawn(weed, args, { cwd: dir, detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      spawnError = err;
      resolve();
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    await exited;
    throw new Error(`cannot start ${weed}: ${spawnError?.message ?? 'no process'}`);
  }
  const killGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-pid, signal);
    } catch {
      // already gone
    }
  };
  // weed puts its in-process gRPC sockets in /tmp whatever -dir says.
  const removeSockets = (): void => {
    for (const [name, port] of [
      ['master', masterGrpc],
      ['volume', volumeGrpc],
      ['filer', filerGrpc],
      ['s3', s3Grpc],
    ] as const)
      rmSync(`/tmp/seaweedfs-${name}-grpc-${port}.sock`, { force: true });
  };
  const onExit = (): void => {
    killGroup('SIGKILL');
    removeSockets();
  };
  process.once('exit', onExit);
  // A test runner that ends this process with a signal skips 'exit': take weed down first, then die of the signal.
  const onSignal = (signal: NodeJS.Signals): void => {
    onExit();
    process.kill(process.pid, signal);
  };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, onSignal);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', onExit);
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.removeListener(sig, onSignal);
    if (child.exitCode === null && child.signalCode === null && !spawnError) {
      // SIGKILL at once: weed's graceful shutdown (SIGTERM) takes about 15 s of retries, and the data is throwaway.
      killGroup('SIGKILL');
      await exited;
    }
    removeSockets();
  };

  const endpoint = `http://127.0.0.1:${s3}`;
  const store = new S3ArtifactStore({ endpoint, bucket, accessKeyId, secretAccessKey, timeoutMs: 5000 });
  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  let last: unknown;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || spawnError) {
      await stop();
      const how = spawnError?.message ?? `exited (${child.exitCode ?? child.signalCode})`;
      throw new Error(`weed server ${how} at start; its log ends:\n${tail(logFile)}`);
    }
    try {
      await store.ensureBucket();
      await store.put('.anodyne-probe', Buffer.from('probe'));
      await store.delete('.anodyne-probe');
      break;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `SeaweedFS S3 gateway ${endpoint} did not store an object within ${opts.startTimeoutMs ?? 60_000} ms: ${String(last)}\n${tail(logFile)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { endpoint, accessKeyId, secretAccessKey, bucket, logFile, pid, stop };
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}
