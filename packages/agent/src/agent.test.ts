// Tests of the agent, the Go program every VM runs (built by `make build` into dist/anodyne-agent): its
// supervisor (job files, processes, restarts, scripts, stops) and its API over mutual TLS, driven the way the
// director drives it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { caWithLeaves } from '@anodyne/common/testing';
import type { AgentBundle, AgentState, AgentTls, ProcessStatus } from './index.js';

const AGENT_PROGRAM = fileURLToPath(new URL('./anodyne-agent', import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function bundle(port: number, hash = 'h1'): AgentBundle {
  return {
    deployment: 'd',
    group: 'web',
    index: 0,
    hash,
    jobs: [
      {
        name: 'web',
        release: 'test',
        processes: [
          { name: 'sleeper', command: 'sh', args: ['-c', 'echo sleeper-started; exec sleep 300'], env: {} },
          {
            name: 'httpd',
            command: 'busybox',
            args: ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', 'www'],
            env: {},
            readiness: { http: { port, path: '/' } },
          },
        ],
        files: [
          { path: 'www/index.html', content: 'hello-agent', mode: 0o644 },
          { path: 'bin/tool.sh', content: 'echo tool', mode: 0o755 },
        ],
        scripts: { drain: 'echo drained; echo "$0" > drain-ran', backup: 'echo backup-output' },
      },
    ],
  };
}

/** The agent's and the director's certificates, and one more for the agent (a renewal), all from one CA. */
async function makeTls(dir: string): Promise<{ agent: AgentTls; director: AgentTls; renewedAgent: AgentTls }> {
  const sans = ['IP:127.0.0.1'];
  const { leaves } = await caWithLeaves(dir, [
    { name: 'agent', sans },
    { name: 'director', sans },
    { name: 'renewed', sans },
  ]);
  return { agent: leaves['agent']!, director: leaves['director']!, renewedAgent: leaves['renewed']! };
}

interface Answer {
  status: number;
  json: unknown;
}

/** A running agent program and the director's side of its API. */
interface RunningAgent {
  port: number;
  root: string;
  child: ChildProcess;
  call(method: string, path: string, body?: unknown, creds?: AgentTls | null): Promise<Answer>;
  state(): Promise<AgentState>;
  processes(): Promise<ProcessStatus[]>;
  /** SIGTERM, as a VM's init sends it: the agent stops its processes and exits. */
  stop(): Promise<void>;
}

type Tls = Awaited<ReturnType<typeof makeTls>>;

/** Starts the agent program on loopback with its root under `root` (timings shortened through its environment). */
async function startAgent(tls: Tls, root: string, env: Record<string, string> = {}, port = 0): Promise<RunningAgent> {
  const child = spawn(AGENT_PROGRAM, [], {
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      ANODYNE_AGENT_ID: 'agent-1',
      ANODYNE_AGENT_LISTEN: `127.0.0.1:${port}`,
      ANODYNE_AGENT_ROOT: root,
      ANODYNE_AGENT_CERT: tls.agent.cert,
      ANODYNE_AGENT_KEY: tls.agent.key,
      ANODYNE_AGENT_CA: tls.agent.ca,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const bound = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      for (const line of out.split('\n')) {
        try {
          const rec = JSON.parse(line) as { msg?: string; port?: number };
          if (rec.msg === 'agent listening' && rec.port) resolve(rec.port);
        } catch {
          // not a whole line yet
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`the agent exited with ${code} before it listened: ${out}`)));
  });
  child.stdout.resume();
  const call = (method: string, path: string, body?: unknown, creds: AgentTls | null = tls.director): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: bound,
          path,
          method,
          ca: tls.director.ca,
          agent: false,
          ...(creds ? { cert: creds.cert, key: creds.key } : {}),
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
        },
      );
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  const state = async () => {
    const r = await call('GET', '/state');
    assert.equal(r.status, 200);
    return r.json as AgentState;
  };
  return {
    port: bound,
    root,
    child,
    call,
    state,
    processes: async () => (await state()).processes,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Asks for something the director asks and expects it answered 200. */
async function ok(a: RunningAgent, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await a.call(method, path, body);
  assert.equal(r.status, 200, `${method} ${path}: ${JSON.stringify(r.json)}`);
  return r.json;
}

const FAST = {
  ANODYNE_AGENT_MIN_BACKOFF_MS: '50',
  ANODYNE_AGENT_PROBE_INTERVAL_MS: '50',
  ANODYNE_AGENT_STOP_GRACE_MS: '2000',
};

let tls: Tls;
let tlsDir: string;
before(async () => {
  tlsDir = mkdtempSync(join(tmpdir(), 'anodyne-agent-pki-'));
  tls = await makeTls(tlsDir);
});
after(() => rmSync(tlsDir, { recursive: true, force: true }));

describe('supervisor', () => {
  let root: string;
  let a: RunningAgent;
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'anodyne-agent-'));
    a = await startAgent(tls, root, FAST);
  });
  after(async () => {
    await a.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('writes job files with their modes and starts processes; readiness gates running', async () => {
    const port = await freePort();
    await ok(a, 'POST', '/apply', bundle(port));
    assert.equal(readFileSync(join(root, 'jobs/web/www/index.html'), 'utf8'), 'hello-agent');
    assert.equal(statSync(join(root, 'jobs/web/bin/tool.sh')).mode & 0o777, 0o755);
    await ok(a, 'POST', '/start');
    await until('healthy', async () => (await a.state()).healthy);
    assert.deepEqual(
      (await a.processes()).map((s) => [s.name, s.state]),
      [
        ['sleeper', 'running'],
        ['httpd', 'running'],
      ],
    );
    await until('log', async () =>
      (((await ok(a, 'GET', '/logs')) as { logs: Record<string, string> }).logs['web/sleeper'] ?? '').includes('sleeper-started'),
    );
  });

  it("a process's environment is PATH and its own variables, never the agent's TLS material", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-env-'));
    const b = await startAgent(tls, dir, FAST);
    try {
      await ok(b, 'POST', '/apply', {
        deployment: 'd',
        group: 'g',
        index: 0,
        hash: 'env',
        jobs: [
          {
            name: 'envjob',
            release: 'test',
            processes: [{ name: 'p', command: 'sh', args: ['-c', 'env > env.txt; exec sleep 300'], env: { GREETING: 'hello' } }],
            files: [],
            scripts: { backup: 'env > script-env.txt' },
          },
        ],
      });
      await ok(b, 'POST', '/start');
      await until(
        'env written',
        () => existsSync(join(dir, 'jobs/envjob/env.txt')) && readFileSync(join(dir, 'jobs/envjob/env.txt'), 'utf8').includes('GREETING'),
      );
      const names = readFileSync(join(dir, 'jobs/envjob/env.txt'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split('=')[0])
        .filter((n) => n !== 'PWD' && n !== 'SHLVL' && n !== '_');
      assert.deepEqual(names.sort(), ['GREETING', 'PATH']);
      await ok(b, 'POST', '/run_script', { name: 'backup' });
      const scriptEnv = readFileSync(join(dir, 'jobs/envjob/script-env.txt'), 'utf8');
      assert.match(scriptEnv, /^ANODYNE_ARTIFACT_DIR=.*artifacts\/envjob$/m);
      assert.doesNotMatch(scriptEnv, /ANODYNE_AGENT_(KEY|CERT|CA)=|PRIVATE KEY/);
    } finally {
      await b.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a file readiness probe: starting until the file exists, then running', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-file-'));
    const flag = join(dir, 'ready');
    const b = await startAgent(tls, dir, { ...FAST, ANODYNE_AGENT_READY_PROBE_INTERVAL_MS: '30' });
    try {
      await ok(b, 'POST', '/apply', {
        deployment: 'd',
        group: 'g',
        index: 0,
        hash: 'f1',
        jobs: [
          {
            name: 'flagged',
            release: 'test',
            processes: [{ name: 'waiter', command: 'sh', args: ['-c', 'exec sleep 300'], env: {}, readiness: { file: { path: flag } } }],
            files: [],
            scripts: {},
          },
        ],
      });
      await ok(b, 'POST', '/start');
      await sleep(300);
      assert.equal((await b.processes())[0]?.state, 'starting');
      writeFileSync(flag, '');
      await until('running', async () => (await b.processes())[0]?.state === 'running');
      const readyAt = (await b.processes())[0]?.readyAt;
      // Probed again while ready (every 30 ms here): it stays running, ready since the first pass.
      await sleep(300);
      assert.equal((await b.processes())[0]?.state, 'running');
      assert.equal((await b.processes())[0]?.readyAt, readyAt);
      // The file gone: probed again, it is starting (not ready) again.
      rmSync(flag);
      await until('not ready again', async () => (await b.processes())[0]?.state === 'starting');
    } finally {
      await b.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an http probe passes on a status below 400, or on any answer with anyStatus; a port that is not a number never passes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-status-'));
    const b = await startAgent(tls, dir, FAST);
    const port = await freePort();
    try {
      // busybox httpd answers 404 for a page it does not have.
      const waiter = (name: string, readiness: unknown) => ({ name, command: 'sh', args: ['-c', 'exec sleep 300'], env: {}, readiness });
      await ok(b, 'POST', '/apply', {
        deployment: 'd',
        group: 'g',
        index: 0,
        hash: 'status',
        jobs: [
          {
            name: 'web',
            release: 'test',
            processes: [
              { name: 'httpd', command: 'busybox', args: ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', '.'], env: {} },
              waiter('strict', { http: { port, path: '/missing' } }),
              waiter('any', { http: { port: String(port), path: '/missing', anyStatus: true } }),
              waiter('no-port', { http: { port: 'no-such-port', anyStatus: true } }),
            ],
            files: [],
            scripts: {},
          },
        ],
      });
      await ok(b, 'POST', '/start');
      await until('any answer passes', async () => (await b.processes()).find((p) => p.name === 'any')?.state === 'running');
      await sleep(300);
      const states = Object.fromEntries((await b.processes()).map((p) => [p.name, p.state]));
      assert.deepEqual(states, { httpd: 'running', strict: 'starting', any: 'running', 'no-port': 'starting' });
    } finally {
      await b.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('startWhen: nothing runs until its probe passes, a stop while waiting starts nothing, a restart waits again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-gate-'));
    const gate = join(dir, 'api-up');
    const ran = join(dir, 'ran');
    const b = await startAgent(tls, dir, FAST);
    const gated = (hash: string): AgentBundle => ({
      deployment: 'd',
      group: 'g',
      index: 0,
      hash,
      jobs: [
        {
          name: 'ctl',
          release: 'test',
          processes: [
            {
              name: 'controller',
              command: 'sh',
              args: ['-c', `echo x >> ${ran}; exec sleep 300`],
              env: {},
              startWhen: { file: { path: gate } },
              readiness: { file: { path: gate } },
            },
          ],
          files: [],
          scripts: {},
        },
      ],
    });
    try {
      await ok(b, 'POST', '/apply', gated('g1'));
      await ok(b, 'POST', '/start');
      await sleep(300);
      let st = (await b.processes())[0]!;
      assert.deepEqual([st.state, st.pid, st.startedAt], ['starting', null, null], 'waiting: no process, no start time');
      assert.throws(() => readFileSync(ran), 'the command did not run');
      // Stopped while waiting: the gate passing afterwards starts nothing.
      await ok(b, 'POST', '/stop');
      writeFileSync(gate, '');
      await sleep(300);
      assert.equal((await b.processes())[0]?.state, 'stopped');
      assert.throws(() => readFileSync(ran), 'nothing started after the stop');
      // Started with the gate open: runs at once, ready, with its times.
      const t0 = Date.now();
      await ok(b, 'POST', '/start');
      await until('running', async () => (await b.processes())[0]?.state === 'running');
      st = (await b.processes())[0]!;
      assert.ok(st.pid && st.startedAt! >= t0 && st.readyAt! >= st.startedAt!, JSON.stringify(st));
      await until('the command ran', () => existsSync(ran));
      assert.equal(readFileSync(ran, 'utf8'), 'x\n');
      // Killed with the gate closed again: the restart waits for it.
      rmSync(gate);
      process.kill(st.pid, 'SIGKILL');
      await until('waiting again', async () => {
        const p = (await b.processes())[0];
        return p?.restarts === 1 && p.state === 'starting';
      });
      await sleep(300);
      assert.equal((await b.processes())[0]?.pid, null, 'not started while its gate is closed');
      writeFileSync(gate, '');
      await until('restarted', async () => (await b.processes())[0]?.state === 'running');
      await until('ran again', () => readFileSync(ran, 'utf8') === 'x\nx\n');
    } finally {
      await b.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('restarts a killed process and shows the restart in its state', async () => {
    const before = (await a.processes()).find((s) => s.name === 'sleeper')!;
    assert.ok(before.pid);
    process.kill(before.pid, 'SIGKILL');
    await until('restart', async () => {
      const s = (await a.processes()).find((x) => x.name === 'sleeper')!;
      return s.restarts === 1 && s.state === 'running' && s.pid !== before.pid;
    });
    const after = (await a.processes()).find((s) => s.name === 'sleeper')!;
    assert.deepEqual(after.lastExit, { code: null, signal: 'SIGKILL' });
  });

  it('a process that exits on its own is restarted with a growing delay, its exit code shown', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-crash-'));
    const b = await startAgent(tls, dir, { ...FAST, ANODYNE_AGENT_MIN_BACKOFF_MS: '100' });
    try {
      await ok(b, 'POST', '/apply', {
        deployment: 'd',
        group: 'g',
        index: 0,
        hash: 'crash',
        jobs: [
          {
            name: 'crasher',
            release: 'test',
            processes: [{ name: 'p', command: 'sh', args: ['-c', 'date +%s%N >> ../starts; exit 3'], env: {} }],
            files: [],
            scripts: {},
          },
        ],
      });
      await ok(b, 'POST', '/start');
      await until('four starts', async () => (await b.processes())[0]!.restarts >= 4);
      const p = (await b.processes())[0]!;
      assert.deepEqual(p.lastExit, { code: 3, signal: null });
      const starts = readFileSync(join(dir, 'jobs/starts'), 'utf8').trim().split('\n').map(Number);
      const gaps = starts.slice(1, 4).map((t, i) => (t - starts[i]!) / 1e6);
      // 100, 200, 400 ms: each delay at least the last one doubled (less a margin for the clock).
      assert.ok(gaps[0]! >= 90 && gaps[1]! >= 190 && gaps[2]! >= 390, `gaps ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
      // A missing program fails the same way, not the agent.
      const missing = await b.call('POST', '/apply', {
        deployment: 'd',
        group: 'g',
        index: 0,
        hash: 'missing',
        jobs: [
          {
            name: 'm',
            release: 'test',
            processes: [{ name: 'p', command: 'no-such-program-here', args: [], env: {} }],
            files: [],
            scripts: {},
          },
        ],
      });
      assert.equal(missing.status, 200);
      await ok(b, 'POST', '/start');
      await until('failing', async () => (await b.processes())[0]!.restarts >= 1);
      assert.equal((await b.processes())[0]!.pid, null);
    } finally {
      await b.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs lifecycle scripts and reports their output', async () => {
    const { results: d } = (await ok(a, 'POST', '/drain')) as { results: { job: string; code: number; output: string }[] };
    assert.equal(d[0]?.code, 0);
    assert.match(d[0]?.output ?? '', /drained/);
    const { results: b } = (await ok(a, 'POST', '/run_script', { name: 'backup' })) as { results: { output: string }[] };
    assert.match(b[0]?.output ?? '', /backup-output/);
    const bad = await a.call('POST', '/run_script', { name: 'rm -rf' });
    assert.equal(bad.status, 400);
    assert.equal((bad.json as { code: string }).code, 'ANODYNE_E_INVALID_INPUT');
  });

  it('stops every process, and they stay stopped', async () => {
    const pids = (await a.processes()).map((s) => s.pid!);
    const stopped = (await ok(a, 'POST', '/stop')) as AgentState;
    assert.ok(stopped.processes.every((s) => s.state === 'stopped'));
    await sleep(200);
    for (const pid of pids) assert.equal(alive(pid), false, 'process is gone');
    assert.ok((await a.processes()).every((s) => s.state === 'stopped' && s.restarts <= 1));
  });

  it('restarts the processes of one job and leaves the others running', async () => {
    const job = (name: string) => ({
      name,
      release: 'test',
      processes: [{ name: 'p', command: 'sh', args: ['-c', 'exec sleep 300'], env: {} }],
      files: [],
      scripts: {},
    });
    await ok(a, 'POST', '/apply', { deployment: 'd', group: 'web', index: 0, hash: 'restart', jobs: [job('containerd'), job('kubelet')] });
    await ok(a, 'POST', '/start');
    await until('running', async () => (await a.processes()).every((s) => s.state === 'running' && s.pid !== null));
    const pid = async (j: string) => (await a.processes()).find((s) => s.job === j)!.pid;
    const [containerd, kubelet] = [await pid('containerd'), await pid('kubelet')];
    await ok(a, 'POST', '/restart_job', { job: 'kubelet' });
    await until('kubelet again', async () => (await a.processes()).every((s) => s.state === 'running' && s.pid !== null));
    assert.equal(await pid('containerd'), containerd, 'the other job kept its process');
    assert.notEqual(await pid('kubelet'), kubelet, 'the job has a new process');
    assert.equal(alive(kubelet!), false, 'the old process is gone');
    assert.equal((await a.call('POST', '/restart_job', { job: 'no-such-job' })).status, 400);
    await ok(a, 'POST', '/stop');
  });

  it('stops jobs one after another, the last started first, each after the one above it has exited', async () => {
    // Each process takes 300 ms to go on SIGTERM and notes when it began and ended.
    const slow = (name: string) => ({
      name,
      release: 'test',
      processes: [
        {
          name: 'p',
          command: 'sh',
          args: [
            '-c',
            `trap 'echo "${name} term $(date +%s%N)" >> ../order; sleep 0.3; echo "${name} gone $(date +%s%N)" >> ../order; exit 0' TERM; : > ../trapped-${name}; while :; do sleep 0.05; done`,
          ],
          env: {},
        },
      ],
      files: [],
      scripts: {},
    });
    await ok(a, 'POST', '/apply', { deployment: 'd', group: 'web', index: 0, hash: 'order', jobs: [slow('etcd'), slow('apiserver')] });
    await ok(a, 'POST', '/start');
    await until('the traps set', () => existsSync(join(root, 'jobs/trapped-etcd')) && existsSync(join(root, 'jobs/trapped-apiserver')));
    await ok(a, 'POST', '/stop');
    const lines = readFileSync(join(root, 'jobs', 'order'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    assert.deepEqual(
      lines.map(([job, what]) => `${job} ${what}`),
      ['apiserver term', 'apiserver gone', 'etcd term', 'etcd gone'],
    );
  });

  it('two starts at once (a director back mid-start) leave one set of processes, nothing running beside it', async () => {
    // Each process notes its pid and takes 300 ms to go on SIGTERM, so the second start arrives while the first is stopping.
    const job = {
      name: 'overlap',
      release: 'test',
      processes: [
        {
          name: 'p',
          command: 'sh',
          args: ['-c', `echo $$ >> ../pids; trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done`],
          env: {},
        },
      ],
      files: [],
      scripts: {},
    };
    await ok(a, 'POST', '/apply', { deployment: 'd', group: 'web', index: 0, hash: 'overlap-1', jobs: [job] });
    await ok(a, 'POST', '/start');
    await until('running', async () => (await a.processes()).every((s) => s.state === 'running'));
    await sleep(200); // the trap is set
    await ok(a, 'POST', '/apply', { deployment: 'd', group: 'web', index: 0, hash: 'overlap-2', jobs: [job] });
    await Promise.all([ok(a, 'POST', '/start'), ok(a, 'POST', '/start')]);
    // A process the second start stops at once may go before it notes its pid; one left running beside it would not.
    const started = () =>
      readFileSync(join(root, 'jobs', 'pids'), 'utf8')
        .trim()
        .split('\n')
        .map(Number);
    const supervised = async () => (await a.processes())[0]!.pid!;
    await until('the supervised process noted', async () => started().includes(await supervised()));
    await sleep(300);
    const pids = started();
    const living = pids.filter(alive);
    const current = await supervised();
    for (const pid of living) if (pid !== current) process.kill(pid, 'SIGKILL');
    assert.ok(pids.length >= 2, `${pids.length} processes noted`);
    assert.deepEqual(living, [current], 'only the supervised process lives');
    await ok(a, 'POST', '/stop');
  });

  it('an immediate stop kills every process at once, those that would take their time on SIGTERM too', async () => {
    const stubborn = (name: string) => ({
      name,
      release: 'test',
      processes: [{ name: 'p', command: 'sh', args: ['-c', "trap '' TERM; while :; do sleep 0.05; done"], env: {} }],
      files: [],
      scripts: {},
    });
    await ok(a, 'POST', '/apply', {
      deployment: 'd',
      group: 'web',
      index: 0,
      hash: 'immediate',
      jobs: [stubborn('etcd'), stubborn('apiserver')],
    });
    await ok(a, 'POST', '/start');
    await until('running', async () => (await a.processes()).every((s) => s.state === 'running' && s.pid !== null));
    const pids = (await a.processes()).map((s) => s.pid!);
    assert.equal((await a.call('POST', '/stop', { immediate: 'yes' })).status, 400, 'immediate is a boolean');
    const t0 = Date.now();
    await ok(a, 'POST', '/stop', { immediate: true });
    const took = Date.now() - t0;
    assert.ok(took < 1000, `stopped in ${took} ms, not after the 2 s grace of each`);
    for (const pid of pids) assert.equal(alive(pid), false, 'process is gone');
    assert.deepEqual(
      (await a.processes()).map((x) => [x.job, x.state, x.lastExit?.signal]),
      [
        ['etcd', 'stopped', 'SIGKILL'],
        ['apiserver', 'stopped', 'SIGKILL'],
      ],
    );
  });

  it('a process that ignores SIGTERM is killed after the grace period', async () => {
    await ok(a, 'POST', '/apply', {
      deployment: 'd',
      group: 'web',
      index: 0,
      hash: 'grace',
      jobs: [
        {
          name: 'stubborn',
          release: 'test',
          // It notes when its trap is set: a SIGTERM before then would end it at once.
          processes: [{ name: 'p', command: 'sh', args: ['-c', "trap '' TERM; : > trapped; while :; do sleep 0.05; done"], env: {} }],
          files: [],
          scripts: {},
        },
      ],
    });
    await ok(a, 'POST', '/start');
    await until('the trap set', () => existsSync(join(root, 'jobs/stubborn/trapped')));
    const pid = (await a.processes())[0]!.pid!;
    const t0 = Date.now();
    await ok(a, 'POST', '/stop');
    const took = Date.now() - t0;
    assert.ok(took >= 1900 && took < 5000, `stopped after ${took} ms (grace 2 s)`);
    assert.equal(alive(pid), false);
    assert.equal((await a.processes())[0]?.lastExit?.signal, 'SIGKILL');
  });

  it('runs an errand: each process once, in order, up to the first that fails', async () => {
    const proc = (name: string, script: string) => ({ name, command: 'sh', args: ['-c', script], env: { WHO: name } });
    await ok(a, 'POST', '/apply', {
      deployment: 'd',
      group: 'web',
      index: 0,
      hash: 'errand',
      jobs: [
        {
          name: 'smoke',
          release: 'test',
          processes: [proc('one', 'echo "$WHO ran"'), proc('two', 'echo "$WHO failed" >&2; exit 4'), proc('three', 'echo never')],
          files: [],
          scripts: {},
        },
      ],
    });
    const { results } = (await ok(a, 'POST', '/run_errand')) as { results: { process: string; code: number; output: string }[] };
    assert.deepEqual(
      results.map((r) => [r.process, r.code, r.output.trim()]),
      [
        ['one', 0, 'one ran'],
        ['two', 4, 'two failed'],
      ],
    );
  });
});

describe('agent over mutual TLS', () => {
  let dir: string;
  let a: RunningAgent;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-tls-'));
    a = await startAgent(tls, join(dir, 'root'), FAST);
  });

  after(async () => {
    await a.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a client without a certificate signed by its CA', async () => {
    await assert.rejects(a.call('GET', '/state', undefined, null));
  });

  it('applies, starts, reports state, drains and stops for the director', async () => {
    const httpPort = await freePort();
    assert.equal((await a.call('POST', '/apply', bundle(httpPort, 'hash-1'))).status, 200);
    assert.equal((await a.call('POST', '/start')).status, 200);
    await until('healthy over the API', async () => (await a.state()).healthy);
    const state = await a.state();
    assert.equal(state.agentId, 'agent-1');
    assert.equal(state.bundleHash, 'hash-1');
    assert.ok(state.vitals.cpus > 0);
    assert.ok(state.vitals.memoryBytes > 0);
    assert.equal(state.vitals.load.length, 3);
    assert.ok(state.vitals.disk.usedPercent > 0 && state.vitals.disk.usedPercent <= 100, JSON.stringify(state.vitals));
    const drain = (await a.call('POST', '/drain')).json as { results: { output: string }[] };
    assert.match(drain.results[0]?.output ?? '', /drained/);
    const logs = (await a.call('GET', '/logs')).json as { logs: Record<string, string> };
    assert.match(logs.logs['web/sleeper'] ?? '', /sleeper-started/);
    for (const bad of [{ nope: true }, { jobs: 'x', hash: 'h' }, { jobs: [], hash: 3 }, 'text']) {
      const r = await a.call('POST', '/apply', bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal((r.json as { code: string }).code, 'ANODYNE_E_INVALID_INPUT');
    }
    assert.equal((await a.state()).bundleHash, 'hash-1', 'a refused bundle changes nothing');
    const notFound = await a.call('GET', '/nothing');
    assert.deepEqual([notFound.status, (notFound.json as { code: string }).code], [404, 'ANODYNE_E_NOT_FOUND']);
    const stopped = (await a.call('POST', '/stop')).json as AgentState;
    assert.ok(stopped.processes.every((p) => p.state === 'stopped'));
  });

  it('GET /state?wait_ms holds the answer until the bundle is healthy (or the time is up); a bad wait_ms is refused', async () => {
    for (const bad of ['-1', '60001', '1.5', 'soon']) {
      const r = await a.call('GET', `/state?wait_ms=${bad}`);
      assert.equal(r.status, 400, bad);
      assert.equal((r.json as { code: string }).code, 'ANODYNE_E_INVALID_INPUT');
    }
    const httpPort = await freePort();
    assert.equal((await a.call('POST', '/apply', bundle(httpPort, 'hash-2'))).status, 200);
    // Not started: the wait runs out and the answer says not healthy.
    let t = Date.now();
    let s = (await a.call('GET', '/state?wait_ms=400&bundle=hash-2')).json as AgentState;
    assert.ok(Date.now() - t >= 380, 'held for its wait_ms');
    assert.equal(s.healthy, false);
    // Started while a question is held: answered once healthy, long before its 20 s.
    t = Date.now();
    const held = a.call('GET', '/state?wait_ms=20000&bundle=hash-2');
    await sleep(100);
    assert.equal((await a.call('POST', '/start')).status, 200);
    s = (await held).json as AgentState;
    assert.equal(s.healthy, true);
    assert.equal(s.bundleHash, 'hash-2');
    assert.ok(Date.now() - t < 5000, `answered ${Date.now() - t} ms after it was asked`);
    for (const p of s.processes) assert.ok(p.startedAt !== null && p.readyAt !== null && p.readyAt >= p.startedAt, JSON.stringify(p));
    // Healthy but another bundle asked for: held until the time is up.
    t = Date.now();
    s = (await a.call('GET', '/state?wait_ms=300&bundle=other')).json as AgentState;
    assert.ok(Date.now() - t >= 280);
    await a.call('POST', '/stop');
  });

  it('keeps backup artifacts: a backup script writes, GET streams it, PUT places one, DELETE removes them all', async () => {
    await ok(a, 'POST', '/apply', {
      deployment: 'd',
      group: 'g',
      index: 0,
      hash: 'artifacts',
      jobs: [
        {
          name: 'etcd',
          release: 'test',
          processes: [],
          files: [],
          scripts: {
            backup: 'head -c 300000 /dev/urandom > "$ANODYNE_ARTIFACT_DIR/snapshot.db"',
            restore: 'cat "$ANODYNE_ARTIFACT_DIR/placed.db"',
          },
        },
      ],
    });
    await ok(a, 'POST', '/run_script', { name: 'backup' });
    const raw = (path: string, method = 'GET', body?: Buffer) =>
      new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: a.port,
            path,
            method,
            ca: tls.director.ca,
            cert: tls.director.cert,
            key: tls.director.key,
            agent: false,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const got = await raw('/artifacts/etcd/snapshot.db');
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, readFileSync(join(a.root, 'artifacts/etcd/snapshot.db')));
    assert.equal((await raw('/artifacts/etcd/none.db')).status, 404);
    assert.equal((await raw('/artifacts/../../etc/passwd')).status, 400);
    assert.equal((await raw('/artifacts/etcd/placed.db', 'PUT', Buffer.from('placed-bytes'))).status, 204);
    const { results } = (await ok(a, 'POST', '/run_script', { name: 'restore' })) as { results: { output: string }[] };
    assert.equal(results[0]?.output, 'placed-bytes');
    assert.equal(statSync(join(a.root, 'artifacts/etcd/placed.db')).mode & 0o777, 0o600);
    assert.equal((await raw('/artifacts', 'DELETE')).status, 204);
    assert.equal(existsSync(join(a.root, 'artifacts')), false);
  });

  it('takes a renewed certificate from the director: new connections get it at once, a restart keeps it and resumes the bundle', async () => {
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const c = tlsConnect(
          {
            host: '127.0.0.1',
            port: a.port,
            ca: tls.director.ca,
            cert: tls.director.cert,
            key: tls.director.key,
            rejectUnauthorized: false,
          },
          () => {
            const serial = c.getPeerCertificate().serialNumber;
            c.destroy();
            resolve(serial);
          },
        );
        c.on('error', reject);
      });
    const renewed = tls.renewedAgent;
    const serialOf = (pem: string) => new X509Certificate(pem).serialNumber;
    assert.equal(await served(), serialOf(tls.agent.cert));
    // Material that cannot serve is refused, and the old certificate stays.
    assert.equal((await a.call('PUT', '/tls', { cert: renewed.cert, key: tls.agent.key, ca: renewed.ca })).status, 400);
    assert.equal((await a.call('PUT', '/tls', { cert: 'x' })).status, 400);
    assert.equal(await served(), serialOf(tls.agent.cert));
    assert.equal((await a.call('PUT', '/tls', renewed)).status, 200);
    assert.equal(await served(), serialOf(renewed.cert));
    assert.equal((await a.state()).agentId, 'agent-1', 'the director still reaches it');
    assert.equal(statSync(join(a.root, 'tls.json')).mode & 0o777, 0o600);
    // A bundle running when the agent is stopped (SIGTERM) runs again when it starts.
    const httpPort = await freePort();
    await ok(a, 'POST', '/apply', bundle(httpPort, 'hash-3'));
    await ok(a, 'POST', '/start');
    await until('healthy', async () => (await a.state()).healthy);
    const before = (await a.processes()).map((p) => p.pid!);
    await a.stop();
    for (const pid of before) assert.equal(alive(pid), false, 'the agent stopped its processes as it went');
    // A restart (the VM's environment still has the old certificate) serves the renewed one.
    a = await startAgent(tls, join(dir, 'root'), FAST, a.port);
    assert.equal(await served(), serialOf(renewed.cert));
    const resumed = await a.call('GET', '/state?wait_ms=10000&bundle=hash-3');
    assert.equal((resumed.json as AgentState).healthy, true, JSON.stringify(resumed.json));
    await ok(a, 'POST', '/stop');
  });
});
