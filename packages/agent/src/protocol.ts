// The agent's protocol: what the director sends it (the rendered bundle of one instance) and what it answers.
// The agent itself is a Go program (packages/agent/go, docs/adr/0027); these types are its contract on this side.

/** How the agent decides a process is ready (the director renders ports to strings or numbers). */
export type Probe =
  /** Passes on a status below 400; with `anyStatus`, on any HTTP answer (the server is up, whatever it lets an anonymous caller see). */
  | { http: { port: number | string; path?: string; scheme?: 'http' | 'https'; host?: string; anyStatus?: boolean } }
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
 * running: up and ready; starting: up (or waiting for its start condition), readiness not yet passed;
 * failing: exited and waiting to be restarted; stopped: not supposed to run.
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

export interface Vitals {
  load: [number, number, number];
  cpus: number;
  /** Bytes charged to the VM's memory cgroup (or the agent's RSS when there is none). */
  memoryBytes: number;
  memoryLimitBytes: number | null;
  disk: { path: string; usedPercent: number };
}

/** `GET /state`. */
export interface AgentState {
  agentId: string;
  bundleHash: string | null;
  healthy: boolean;
  processes: ProcessStatus[];
  vitals: Vitals;
}

/** TLS material of the agent: its own certificate and the CA that signed the director's (`PUT /tls`). */
export interface AgentTls {
  cert: string;
  key: string;
  ca: string;
}
