// Tests of the agent: the Supervisor (job files, processes, restarts, scripts, stop) and the Agent's API over mutual TLS.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, silentLogger, systemClock } from '@anodyne/common';
import { Agent, Supervisor, type AgentBundle, type AgentState, type AgentTls } from './index.js';

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

describe('supervisor', () => {
  let root: string;
  let sup: Supervisor;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'anodyne-agent-'));
    sup = new Supervisor({ root, logger: silentLogger(), clock: systemClock, minBackoffMs: 50, probeIntervalMs: 50, stopGraceMs: 2000 });
  });
  after(async () => {
    await sup.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('writes job files with their modes and starts processes; readiness gates running', async () => {
    const port = await freePort();
    sup.apply(bundle(port));
    assert.equal(readFileSync(join(root, 'jobs/web/www/index.html'), 'utf8'), 'hello-agent');
    assert.equal(statSync(join(root, 'jobs/web/bin/tool.sh')).mode & 0o777, 0o755);
    await sup.start();
    await until('healthy', () => sup.healthy());
    assert.deepEqual(
      sup.status().map((s) => [s.name, s.state]),
      [
        ['sleeper', 'running'],
        ['httpd', 'running'],
      ],
    );
    await until('log', () => (sup.logs()['web/sleeper'] ?? '').includes('sleeper-started'));
  });

  it('a file readiness probe: starting until the file exists, then running', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-file-'));
    const flag = join(dir, 'ready');
    const s = new Supervisor({
      root: dir,
      logger: silentLogger(),
      clock: systemClock,
      probeIntervalMs: 50,
      readyProbeIntervalMs: 30,
      stopGraceMs: 2000,
    });
    try {
      s.apply({
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
      await s.start();
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(s.status()[0]?.state, 'starting');
      writeFileSync(flag, '');
      await until('running', () => s.status()[0]?.state === 'running');
      const readyAt = s.status()[0]?.readyAt;
      // Probed again while ready (every 30 ms here): it stays running, ready since the first pass.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(s.status()[0]?.state, 'running');
      assert.equal(s.status()[0]?.readyAt, readyAt);
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('startWhen: nothing runs until its probe passes, a stop while waiting starts nothing, a restart waits again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-gate-'));
    const gate = join(dir, 'api-up');
    const ran = join(dir, 'ran');
    const s = new Supervisor({
      root: dir,
      logger: silentLogger(),
      clock: systemClock,
      minBackoffMs: 50,
      probeIntervalMs: 50,
      stopGraceMs: 2000,
    });
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
      s.apply(gated('g1'));
      await s.start();
      await new Promise((r) => setTimeout(r, 300));
      let st = s.status()[0]!;
      assert.deepEqual([st.state, st.pid, st.startedAt], ['starting', null, null], 'waiting: no process, no start time');
      assert.throws(() => readFileSync(ran), 'the command did not run');
      // Stopped while waiting: the gate passing afterwards starts nothing.
      await s.stop();
      writeFileSync(gate, '');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(s.status()[0]?.state, 'stopped');
      assert.throws(() => readFileSync(ran), 'nothing started after the stop');
      // Started with the gate open: runs at once, ready, with its times.
      const t0 = Date.now();
      await s.start();
      await until('running', () => s.status()[0]?.state === 'running');
      st = s.status()[0]!;
      assert.ok(st.pid && st.startedAt! >= t0 && st.readyAt! >= st.startedAt!, JSON.stringify(st));
      await until('the command ran', () => existsSync(ran));
      assert.equal(readFileSync(ran, 'utf8'), 'x\n');
      // Killed with the gate closed again: the restart waits for it.
      rmSync(gate);
      process.kill(st.pid, 'SIGKILL');
      await until('waiting again', () => s.status()[0]?.restarts === 1 && s.status()[0]?.state === 'starting');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(s.status()[0]?.pid, null, 'not started while its gate is closed');
      writeFileSync(gate, '');
      await until('restarted', () => s.status()[0]?.state === 'running');
      await until('ran again', () => readFileSync(ran, 'utf8') === 'x\nx\n');
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('restarts a killed process and shows the restart in its state', async () => {
    const before = sup.status().find((s) => s.name === 'sleeper')!;
    assert.ok(before.pid);
    process.kill(before.pid, 'SIGKILL');
    await until('restart', () => {
      const s = sup.status().find((x) => x.name === 'sleeper')!;
      return s.restarts === 1 && s.state === 'running' && s.pid !== before.pid;
    });
    const after = sup.status().find((s) => s.name === 'sleeper')!;
    assert.deepEqual(after.lastExit, { code: null, signal: 'SIGKILL' });
  });

  it('runs lifecycle scripts and reports their output', async () => {
    const [r] = await sup.runScript('drain');
    assert.equal(r?.code, 0);
    assert.match(r?.output ?? '', /drained/);
    const [b] = await sup.runScript('backup');
    assert.match(b?.output ?? '', /backup-output/);
  });

  it('stops every process, and they stay stopped', async () => {
    const pids = sup.status().map((s) => s.pid!);
    await sup.stop();
    assert.ok(sup.status().every((s) => s.state === 'stopped'));
    await new Promise((r) => setTimeout(r, 200));
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), 'process is gone');
    assert.ok(sup.status().every((s) => s.state === 'stopped' && s.restarts <= 1));
  });

  it('restarts the processes of one job and leaves the others running', async () => {
    const job = (name: string) => ({
      name,
      release: 'test',
      processes: [{ name: 'p', command: 'sh', args: ['-c', 'exec sleep 300'], env: {} }],
      files: [],
      scripts: {},
    });
    sup.apply({ deployment: 'd', group: 'web', index: 0, hash: 'restart', jobs: [job('containerd'), job('kubelet')] });
    await sup.start();
    await until('running', () => sup.status().every((s) => s.state === 'running' && s.pid !== null));
    const pid = (j: string) => sup.status().find((s) => s.job === j)!.pid;
    const [containerd, kubelet] = [pid('containerd'), pid('kubelet')];
    assert.equal(await sup.restartJob('kubelet'), true);
    await until('kubelet again', () => sup.status().every((s) => s.state === 'running' && s.pid !== null));
    assert.equal(pid('containerd'), containerd, 'the other job kept its process');
    assert.notEqual(pid('kubelet'), kubelet, 'the job has a new process');
    assert.throws(() => process.kill(kubelet!, 0), 'the old process is gone');
    assert.equal(await sup.restartJob('no-such-job'), false);
    await sup.stop();
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
            `trap 'echo "${name} term $(date +%s%N)" >> ../order; sleep 0.3; echo "${name} gone $(date +%s%N)" >> ../order; exit 0' TERM; while :; do sleep 0.05; done`,
          ],
          env: {},
        },
      ],
      files: [],
      scripts: {},
    });
    sup.apply({ deployment: 'd', group: 'web', index: 0, hash: 'order', jobs: [slow('etcd'), slow('apiserver')] });
    await sup.start();
    await until('running', () => sup.status().every((s) => s.state === 'running'));
    await new Promise((r) => setTimeout(r, 200)); // the traps are set
    await sup.stop();
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
    sup.apply({ deployment: 'd', group: 'web', index: 0, hash: 'overlap-1', jobs: [job] });
    await sup.start();
    await until('running', () => sup.status().every((s) => s.state === 'running'));
    await new Promise((r) => setTimeout(r, 200)); // the trap is set
    sup.apply({ deployment: 'd', group: 'web', index: 0, hash: 'overlap-2', jobs: [job] });
    await Promise.all([sup.start(), sup.start()]);
    // A process the second start stops at once may go before it notes its pid; one left running beside it would not.
    const started = () =>
      readFileSync(join(root, 'jobs', 'pids'), 'utf8')
        .trim()
        .split('\n')
        .map(Number);
    await until('the supervised process noted', () => started().includes(sup.status()[0]!.pid!));
    await new Promise((r) => setTimeout(r, 300));
    const pids = started();
    const alive = pids.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    for (const pid of alive) if (pid !== sup.status()[0]!.pid) process.kill(pid, 'SIGKILL');
    assert.ok(pids.length >= 2, `${pids.length} processes noted`);
    assert.deepEqual(alive, [sup.status()[0]!.pid], 'only the supervised process lives');
    await sup.stop();
  });

  it('an immediate stop kills every process at once, those that would take their time on SIGTERM too', async () => {
    const stubborn = (name: string) => ({
      name,
      release: 'test',
      processes: [{ name: 'p', command: 'sh', args: ['-c', "trap '' TERM; while :; do sleep 0.05; done"], env: {} }],
      files: [],
      scripts: {},
    });
    sup.apply({ deployment: 'd', group: 'web', index: 0, hash: 'immediate', jobs: [stubborn('etcd'), stubborn('apiserver')] });
    await sup.start();
    await until('running', () => sup.status().every((s) => s.state === 'running' && s.pid !== null));
    const pids = sup.status().map((s) => s.pid!);
    const t0 = Date.now();
    await sup.stop({ immediate: true });
    const took = Date.now() - t0;
    assert.ok(took < 1000, `stopped in ${took} ms, not after the 2 s grace of each`);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), 'process is gone');
    assert.deepEqual(
      sup.status().map((x) => [x.job, x.state, x.lastExit?.signal]),
      [
        ['etcd', 'stopped', 'SIGKILL'],
        ['apiserver', 'stopped', 'SIGKILL'],
      ],
    );
  });
});

async function makeTls(dir: string): Promise<{ agent: AgentTls; director: AgentTls; caPath: string }> {
  const o = (...a: string[]) => exec(['openssl', ...a], { cwd: dir });
  await o('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1');
  for (const name of ['agent', 'director']) {
    writeFileSync(join(dir, `${name}.ext`), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
    await o('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    await o(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  }
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return {
    agent: { cert: read('agent.pem'), key: read('agent.key'), ca: read('ca.pem') },
    director: { cert: read('director.pem'), key: read('director.key'), ca: read('ca.pem') },
    caPath: join(dir, 'ca.pem'),
  };
}

describe('agent over mutual TLS', () => {
  let dir: string;
  let agent: Agent;
  let port: number;
  let tls: Awaited<ReturnType<typeof makeTls>>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-tls-'));
    tls = await makeTls(dir);
    agent = new Agent({
      agentId: 'agent-1',
      root: join(dir, 'root'),
      listen: { host: '127.0.0.1', port: 0 },
      tls: tls.agent,
      logger: silentLogger(),
      clock: systemClock,
    });
    ({ port } = await agent.listen());
  });

  after(async () => {
    await agent.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (
    method: string,
    path: string,
    body?: unknown,
    creds: AgentTls | null = tls.director,
  ): Promise<{ status: number; json: unknown }> =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path,
          method,
          ca: tls.director.ca,
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

  it('refuses a client without a certificate signed by its CA', async () => {
    await assert.rejects(call('GET', '/state', undefined, null));
  });

  it('applies, starts, reports state, drains and stops for the director', async () => {
    const httpPort = await freePort();
    assert.equal((await call('POST', '/apply', bundle(httpPort, 'hash-1'))).status, 200);
    assert.equal((await call('POST', '/start')).status, 200);
    await until('healthy over the API', async () => ((await call('GET', '/state')).json as AgentState).healthy);
    const state = (await call('GET', '/state')).json as AgentState;
    assert.equal(state.bundleHash, 'hash-1');
    assert.ok(state.vitals.cpus > 0);
    assert.ok(state.vitals.memoryBytes > 0);
    const drain = (await call('POST', '/drain')).json as { results: { output: string }[] };
    assert.match(drain.results[0]?.output ?? '', /drained/);
    const logs = (await call('GET', '/logs')).json as { logs: Record<string, string> };
    assert.match(logs.logs['web/sleeper'] ?? '', /sleeper-started/);
    assert.equal((await call('POST', '/apply', { nope: true })).status, 400);
    assert.equal((await call('GET', '/nothing')).status, 404);
    const stopped = (await call('POST', '/stop')).json as AgentState;
    assert.ok(stopped.processes.every((p) => p.state === 'stopped'));
  });

  it('GET /state?wait_ms holds the answer until the bundle is healthy (or the time is up); a bad wait_ms is refused', async () => {
    for (const bad of ['-1', '60001', '1.5', 'soon']) {
      const r = await call('GET', `/state?wait_ms=${bad}`);
      assert.equal(r.status, 400, bad);
      assert.equal((r.json as { code: string }).code, 'ANODYNE_E_INVALID_INPUT');
    }
    const httpPort = await freePort();
    assert.equal((await call('POST', '/apply', bundle(httpPort, 'hash-2'))).status, 200);
    // Not started: the wait runs out and the answer says not healthy.
    let t = Date.now();
    let s = (await call('GET', '/state?wait_ms=400&bundle=hash-2')).json as AgentState;
    assert.ok(Date.now() - t >= 380, 'held for its wait_ms');
    assert.equal(s.healthy, false);
    // Started while a question is held: answered once healthy, long before its 20 s.
    t = Date.now();
    const held = call('GET', '/state?wait_ms=20000&bundle=hash-2');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await call('POST', '/start')).status, 200);
    s = (await held).json as AgentState;
    assert.equal(s.healthy, true);
    assert.equal(s.bundleHash, 'hash-2');
    assert.ok(Date.now() - t < 5000, `answered ${Date.now() - t} ms after it was asked`);
    for (const p of s.processes) assert.ok(p.startedAt !== null && p.readyAt !== null && p.readyAt >= p.startedAt, JSON.stringify(p));
    // Healthy but another bundle asked for: held until the time is up.
    t = Date.now();
    s = (await call('GET', '/state?wait_ms=300&bundle=other')).json as AgentState;
    assert.ok(Date.now() - t >= 280);
    await call('POST', '/stop');
  });

  it('takes a renewed certificate from the director: new connections get it at once, a restart keeps it', async () => {
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const c = tlsConnect(
          { host: '127.0.0.1', port, ca: tls.director.ca, cert: tls.director.cert, key: tls.director.key, rejectUnauthorized: false },
          () => {
            const serial = c.getPeerCertificate().serialNumber;
            c.destroy();
            resolve(serial);
          },
        );
        c.on('error', reject);
      });
    const o = (...a: string[]) => exec(['openssl', ...a], { cwd: dir });
    await o('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=agent', '-keyout', 'renewed.key', '-out', 'renewed.csr');
    await o(
      'x509',
      '-req',
      '-in',
      'renewed.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'renewed.pem',
      '-days',
      '30',
      '-extfile',
      'agent.ext',
    );
    const renewed = {
      cert: readFileSync(join(dir, 'renewed.pem'), 'utf8'),
      key: readFileSync(join(dir, 'renewed.key'), 'utf8'),
      ca: tls.agent.ca,
    };
    const serialOf = (pem: string) => new X509Certificate(pem).serialNumber;
    assert.equal(await served(), serialOf(tls.agent.cert));
    // Material that cannot serve is refused, and the old certificate stays.
    assert.equal((await call('PUT', '/tls', { cert: renewed.cert, key: tls.agent.key, ca: renewed.ca })).status, 400);
    assert.equal((await call('PUT', '/tls', { cert: 'x' })).status, 400);
    assert.equal(await served(), serialOf(tls.agent.cert));
    assert.equal((await call('PUT', '/tls', renewed)).status, 200);
    assert.equal(await served(), serialOf(renewed.cert));
    assert.equal(((await call('GET', '/state')).json as AgentState).agentId, 'agent-1', 'the director still reaches it');
    // A restart (the VM's environment still has the old certificate) serves the renewed one.
    await agent.close();
    agent = new Agent({
      agentId: 'agent-1',
      root: join(dir, 'root'),
      listen: { host: '127.0.0.1', port },
      tls: tls.agent,
      logger: silentLogger(),
      clock: systemClock,
    });
    await agent.listen();
    assert.equal(await served(), serialOf(renewed.cert));
  });
});
