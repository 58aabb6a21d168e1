// The agent's Supervisor: an instance's job files, its processes kept running (backoff, readiness probes), its lifecycle scripts.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { connect } from 'node:net';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname, isAbsolute, join } from 'node:path';
import { exec, type Clock, type Logger } from '@anodyne/common';

/** How the agent decides a process is ready (the director renders ports to strings or numbers). */
export type Probe =
  | { http: { port: number | string; path?: string; scheme?: 'http' | 'https'; host?: string } }
  | { tcp: { port: number | string; host?: string } }
  | { exec: { command: string[] } }
  /** Ready once the file exists: checked by the agent itself, no process spawned per probe. */
  | { file: { path: string } };

export interface BundleProcess {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  readiness?: Probe;
  /**
   * Started only once this probe passes (checked by the agent every probe interval, no process
   * spawned per check): a controller that needs the local API server, a kubelet that needs the
   * cluster's. Checked again before every restart. Meanwhile the process is `starting`, no pid.
   */
  startWhen?: Probe;
}

export interface BundleJob {
  name: string;
  release: string;
  processes: BundleProcess[];
  files: { path: string; content: string; mode: number }[];
  scripts: Partial<Record<ScriptName, string>>;
}

export type ScriptName = 'drain' | 'pre_start' | 'post_start' | 'backup' | 'restore';

/** What the director asks the agent to run: the rendered jobs of one instance. */
export interface AgentBundle {
  deployment: string;
  group: string;
  index: number;
  jobs: BundleJob[];
  hash: string;
}

/**
 * running: up and ready; starting: up, readiness not yet passed; failing: exited and waiting
 * to be restarted; stopped: not supposed to run.
 */
export type ProcessState = 'running' | 'starting' | 'failing' | 'stopped';

export interface ProcessStatus {
  job: string;
  name: string;
  state: ProcessState;
  pid: number | null;
  restarts: number;
  lastExit: { code: number | null; signal: string | null } | null;
  /** When the running process was started and when its readiness first passed (epoch ms; null: not yet). */
  startedAt: number | null;
  readyAt: number | null;
}

interface Supervised {
  job: string;
  spec: BundleProcess;
  cwd: string;
  logFile: string;
  child: ChildProcess | null;
  state: ProcessState;
  restarts: number;
  backoffMs: number;
  lastExit: ProcessStatus['lastExit'];
  timer: NodeJS.Timeout | null;
  probeTimer: NodeJS.Timeout | null;
  wanted: boolean;
  /** Bumped at every launch and stop: a start-condition check from before then does nothing. */
  generation: number;
  startedAt: number | null;
  readyAt: number | null;
}

export interface SupervisorOptions {
  /** Jobs' files and logs live under here: <root>/jobs/<job>/…, <root>/logs/<job>/<process>.log. */
  root: string;
  logger: Logger;
  clock: Clock;
  /** First restart delay; doubles per consecutive failure up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A process that stayed up this long resets its backoff. */
  stableAfterMs?: number;
  /** How often a process that is not ready yet is probed, and a start condition checked (200 ms). */
  probeIntervalMs?: number;
  /**
   * How often a ready process is probed again (10 s): often enough for the
   * health monitor's passes (30 s), and each probe costs the process a request (an API server's
   * /readyz reads etcd; every probe is a TLS handshake).
   */
  readyProbeIntervalMs?: number;
  stopGraceMs?: number;
}

function probeOnce(p: Probe, timeoutMs: number): Promise<boolean> {
  if ('file' in p) return Promise.resolve(existsSync(p.file.path));
  if ('exec' in p) {
    const [cmd, ...args] = p.exec.command;
    return exec([cmd!, ...args], { timeoutMs }).then(
      () => true,
      () => false,
    );
  }
  if ('tcp' in p) {
    return new Promise((resolve) => {
      const s = connect({ host: p.tcp.host ?? '127.0.0.1', port: Number(p.tcp.port), timeout: timeoutMs });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
      s.once('timeout', () => {
        s.destroy();
        resolve(false);
      });
    });
  }
  return new Promise((resolve) => {
    const scheme = p.http.scheme ?? 'http';
    const req = (scheme === 'https' ? httpsRequest : httpRequest)(
      {
        host: p.http.host ?? '127.0.0.1',
        port: Number(p.http.port),
        path: p.http.path ?? '/',
        method: 'GET',
        timeout: timeoutMs,
        rejectUnauthorized: false,
      },
      (res) => {
        res.resume();
        resolve((res.statusCode ?? 500) < 400);
      },
    );
    req.once('error', () => resolve(false));
    req.once('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

/**
 * Runs the processes of an instance's jobs and keeps them running: a process that exits is
 * restarted with exponential backoff, and its state and restart count are reported. A
 * process with a readiness probe is `starting` until the probe passes.
 */
export class Supervisor {
  private procs: Supervised[] = [];
  private bundle: AgentBundle | null = null;
  /**
   * Starts, stops and job restarts run one after another: a start that arrives while another is still stopping
   * the old processes (a director that died mid-start and came back) must not launch a second set beside the
   * first, whose processes nothing would stop again (they kept ports: an etcd "address already in use").
   */
  private lifecycle: Promise<unknown> = Promise.resolve();

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lifecycle.then(fn, fn);
    this.lifecycle = run.catch(() => undefined);
    return run;
  }
  private readonly o: Required<Omit<SupervisorOptions, 'logger' | 'clock'>> & Pick<SupervisorOptions, 'logger' | 'clock'>;

  constructor(options: SupervisorOptions) {
    this.o = {
      minBackoffMs: 200,
      maxBackoffMs: 10_000,
      stableAfterMs: 10_000,
      probeIntervalMs: 200,
      readyProbeIntervalMs: 10_000,
      stopGraceMs: 10_000,
      ...options,
    };
  }

  private waiters = new Set<() => void>();

  private changed(): void {
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const wake of waiting) wake();
  }

  /** Resolves at the next change of any process's state, or after `timeoutMs`. */
  nextChange(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.max(0, timeoutMs));
      this.waiters.add(wake);
    });
  }

  get currentBundle(): AgentBundle | null {
    return this.bundle;
  }

  jobDir(job: string): string {
    return join(this.o.root, 'jobs', job);
  }

  /** Writes the bundle's files; the processes of the new bundle start on `start()`. */
  apply(bundle: AgentBundle): void {
    for (const job of bundle.jobs) {
      const dir = this.jobDir(job.name);
      mkdirSync(dir, { recursive: true });
      for (const f of job.files) {
        const path = isAbsolute(f.path) ? f.path : join(dir, f.path);
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, f.content, { mode: f.mode });
        chmodSync(path, f.mode);
      }
      for (const [name, body] of Object.entries(job.scripts)) {
        const path = join(dir, 'scripts', name);
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, `#!/bin/sh\nset -e\n${body}\n`, { mode: 0o755 });
      }
      mkdirSync(join(this.o.root, 'logs', job.name), { recursive: true });
    }
    this.bundle = bundle;
    writeFileSync(join(this.o.root, 'bundle.json'), JSON.stringify(bundle), { mode: 0o600 });
  }

  /** The bundle applied before a restart of the agent, if any. */
  loadSavedBundle(): AgentBundle | null {
    try {
      this.bundle = JSON.parse(readFileSync(join(this.o.root, 'bundle.json'), 'utf8')) as AgentBundle;
    } catch {
      this.bundle = null;
    }
    return this.bundle;
  }

  /** Starts every process of the applied bundle (stopping any left from an older one). */
  start(): Promise<void> {
    return this.serial(async () => {
      if (!this.bundle) return;
      await this.stopAll({});
      this.launchBundle(this.bundle);
    });
  }

  private launchBundle(bundle: AgentBundle): void {
    this.procs = bundle.jobs.flatMap((job) =>
      job.processes.map((spec) => ({
        job: job.name,
        spec,
        cwd: this.jobDir(job.name),
        logFile: join(this.o.root, 'logs', job.name, `${spec.name}.log`),
        child: null,
        state: 'stopped',
        restarts: 0,
        backoffMs: this.o.minBackoffMs,
        lastExit: null,
        timer: null,
        probeTimer: null,
        wanted: true,
        generation: 0,
        startedAt: null,
        readyAt: null,
      })),
    );
    for (const p of this.procs) this.launch(p);
  }

  private launch(p: Supervised): void {
    if (!p.wanted) return;
    const generation = ++p.generation;
    const gate = p.spec.startWhen;
    if (!gate) return this.spawn(p);
    p.state = 'starting';
    this.changed();
    const check = async (): Promise<void> => {
      p.timer = null;
      if (!p.wanted || p.generation !== generation) return;
      const ok = await probeOnce(gate, 2000);
      if (!p.wanted || p.generation !== generation) return;
      if (ok) this.spawn(p);
      else p.timer = setTimeout(() => void check(), this.o.probeIntervalMs);
    };
    void check();
  }

  private spawn(p: Supervised): void {
    mkdirSync(dirname(p.logFile), { recursive: true });
    const out = openSync(p.logFile, 'a');
    const startedAt = this.o.clock.nowMs();
    const child = spawn(p.spec.command, p.spec.args, {
      cwd: p.cwd,
      env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...p.spec.env },
      stdio: ['ignore', out, out],
      detached: true,
    });
    closeSync(out);
    p.child = child;
    p.state = p.spec.readiness ? 'starting' : 'running';
    p.startedAt = startedAt;
    p.readyAt = p.spec.readiness ? null : startedAt;
    this.changed();
    child.once('error', (err) => {
      this.o.logger.warn({ job: p.job, process: p.spec.name, err: err.message }, 'process failed to start');
    });
    child.once('exit', (code, signal) => {
      p.child = null;
      p.startedAt = null;
      p.readyAt = null;
      p.lastExit = { code, signal };
      if (p.probeTimer) clearTimeout(p.probeTimer);
      p.probeTimer = null;
      if (!p.wanted) {
        p.state = 'stopped';
        this.changed();
        return;
      }
      if (this.o.clock.nowMs() - startedAt >= this.o.stableAfterMs) p.backoffMs = this.o.minBackoffMs;
      p.state = 'failing';
      p.restarts++;
      this.changed();
      this.o.logger.warn(
        { job: p.job, process: p.spec.name, code, signal, restarts: p.restarts, backoffMs: p.backoffMs },
        'process exited; restarting',
      );
      const delay = p.backoffMs;
      p.backoffMs = Math.min(p.backoffMs * 2, this.o.maxBackoffMs);
      p.timer = setTimeout(() => {
        p.timer = null;
        this.launch(p);
      }, delay);
    });
    if (p.spec.readiness) this.probe(p, child);
  }

  private probe(p: Supervised, child: ChildProcess): void {
    const tick = async (): Promise<void> => {
      if (p.child !== child || !p.wanted) return;
      const ok = await probeOnce(p.spec.readiness!, 2000);
      if (p.child !== child || !p.wanted) return;
      const before = p.state;
      if (ok) {
        p.state = 'running';
        p.readyAt ??= this.o.clock.nowMs();
      } else if (p.state === 'running') p.state = 'starting';
      if (p.state !== before) this.changed();
      p.probeTimer = setTimeout(() => void tick(), p.state === 'running' ? this.o.readyProbeIntervalMs : this.o.probeIntervalMs);
    };
    void tick();
  }

  /**
   * Stops every process: SIGTERM to its process group, SIGKILL after the grace period. Jobs stop
   * one after another, the last started first (the API server before the etcd it writes to; the
   * processes of one job together), so that each can finish its requests on what it depends on.
   * `immediate`: every process group gets SIGKILL at once (an etcd restore, whose data replaces
   * whatever they would have finished).
   */
  stop(options: { immediate?: boolean } = {}): Promise<void> {
    return this.serial(() => this.stopAll(options));
  }

  private async stopAll(options: { immediate?: boolean }): Promise<void> {
    const running = this.procs;
    for (const p of running) {
      p.wanted = false;
      p.generation++;
      if (p.timer) clearTimeout(p.timer);
      if (p.probeTimer) clearTimeout(p.probeTimer);
      p.timer = null;
      p.probeTimer = null;
    }
    if (options.immediate) {
      await Promise.all(running.map((p) => this.stopOne(p, 'SIGKILL')));
      return;
    }
    const jobs = [...new Set(running.map((p) => p.job))].reverse();
    for (const job of jobs) await Promise.all(running.filter((p) => p.job === job).map((p) => this.stopOne(p)));
  }

  /**
   * Restarts the processes of one job (stopped as `stop` does, then started again): what a
   * component needs to drop state it cached from the API (after an etcd restore, a kubelet).
   */
  restartJob(job: string): Promise<boolean> {
    return this.serial(() => this.restartJobNow(job));
  }

  private async restartJobNow(job: string): Promise<boolean> {
    const procs = this.procs.filter((p) => p.job === job);
    if (procs.length === 0) return false;
    for (const p of procs) {
      p.wanted = false;
      p.generation++;
      if (p.timer) clearTimeout(p.timer);
      if (p.probeTimer) clearTimeout(p.probeTimer);
      p.timer = null;
      p.probeTimer = null;
    }
    await Promise.all(procs.map((p) => this.stopOne(p)));
    for (const p of procs) {
      p.wanted = true;
      p.backoffMs = this.o.minBackoffMs;
      this.launch(p);
    }
    return true;
  }

  private stopOne(p: Supervised, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return new Promise<void>((resolve) => {
      const child = p.child;
      if (!child || child.exitCode !== null || child.pid === undefined) {
        p.state = 'stopped';
        return resolve();
      }
      const kill = (sig: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, sig);
        } catch {
          // already gone
        }
      };
      const timer = setTimeout(() => kill('SIGKILL'), this.o.stopGraceMs);
      child.once('exit', () => {
        clearTimeout(timer);
        p.state = 'stopped';
        this.changed();
        resolve();
      });
      kill(signal);
    });
  }

  /** Where a job's backup artifacts are written and its restore artifacts read. */
  artifactDir(job: string): string {
    return join(this.o.root, 'artifacts', job);
  }

  /** Runs a lifecycle script of every job that has it (drain, backup, …), in job order. */
  async runScript(name: ScriptName, timeoutMs = 600_000): Promise<{ job: string; code: number; output: string }[]> {
    const results: { job: string; code: number; output: string }[] = [];
    for (const job of this.bundle?.jobs ?? []) {
      if (job.scripts[name] === undefined) continue;
      // Backup scripts write their artifacts here, restore scripts read them from here (BBR's artifact directory).
      const artifacts = this.artifactDir(job.name);
      mkdirSync(artifacts, { recursive: true, mode: 0o700 });
      const r = await exec([join(this.jobDir(job.name), 'scripts', name)], {
        cwd: this.jobDir(job.name),
        env: { ...process.env, ANODYNE_ARTIFACT_DIR: artifacts },
        timeoutMs,
        okCodes: Array.from({ length: 256 }, (_, i) => i),
      });
      results.push({ job: job.name, code: r.code, output: (r.stdout + r.stderr).slice(-65536) });
    }
    return results;
  }

  /**
   * Runs every process of the bundle once, to completion, one after another (an errand).
   * Returns each exit code and the tail of its output.
   */
  async runOnce(timeoutMs = 3_600_000): Promise<{ job: string; process: string; code: number; output: string }[]> {
    const results: { job: string; process: string; code: number; output: string }[] = [];
    for (const job of this.bundle?.jobs ?? []) {
      for (const proc of job.processes) {
        const r = await exec([proc.command, ...proc.args], {
          cwd: this.jobDir(job.name),
          timeoutMs,
          okCodes: Array.from({ length: 256 }, (_, i) => i),
          env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...proc.env },
        });
        results.push({ job: job.name, process: proc.name, code: r.code, output: (r.stdout + r.stderr).slice(-65536) });
        if (r.code !== 0) return results;
      }
    }
    return results;
  }

  status(): ProcessStatus[] {
    return this.procs.map((p) => ({
      job: p.job,
      name: p.spec.name,
      state: p.state,
      pid: p.child?.pid ?? null,
      restarts: p.restarts,
      lastExit: p.lastExit,
      startedAt: p.startedAt,
      readyAt: p.readyAt,
    }));
  }

  /** Every process running and ready. */
  healthy(): boolean {
    return this.procs.length > 0 && this.procs.every((p) => p.state === 'running');
  }

  /** The last `bytes` of each process's log. */
  logs(bytes = 16384): Record<string, string> {
    const out: Record<string, string> = {};
    for (const p of this.procs) {
      try {
        const size = statSync(p.logFile).size;
        const text = readFileSync(p.logFile);
        out[`${p.job}/${p.spec.name}`] = text.subarray(Math.max(0, size - bytes)).toString('utf8');
      } catch {
        out[`${p.job}/${p.spec.name}`] = '';
      }
    }
    return out;
  }
}
