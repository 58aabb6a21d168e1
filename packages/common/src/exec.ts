// Running external commands without a shell: exec() and CommandError with argv, exit code and the tail of stderr.
import { spawn } from 'node:child_process';
import { AnodyneError, type ErrorOptions } from './errors.js';

/** A failed external command, carrying its own output (kind's RunError). */
export class CommandError extends AnodyneError {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderrTail: string;
  readonly stdoutTail: string;

  constructor(
    argv: readonly string[],
    exitCode: number | null,
    signal: NodeJS.Signals | null,
    stdout: string,
    stderr: string,
    options: ErrorOptions = {},
  ) {
    const stderrTail = tail(stderr);
    const how = signal ? `killed by ${signal}` : `exit code ${exitCode}`;
    super('ANODYNE_E_COMMAND_FAILED', `${argv.join(' ')}: ${how}${stderrTail ? `: ${stderrTail.split('\n').slice(-3).join(' | ')}` : ''}`, {
      ...options,
      details: { argv: [...argv], exitCode, signal, stderr: stderrTail },
    });
    this.argv = argv;
    this.exitCode = exitCode;
    this.signal = signal;
    this.stderrTail = stderrTail;
    this.stdoutTail = tail(stdout);
  }
}

function tail(text: string, max = 2000): string {
  const t = text.trimEnd();
  return t.length > max ? t.slice(t.length - max) : t;
}

export interface ExecOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** Exit codes that count as success (default [0]). */
  okCodes?: number[];
  /** Run as this user and group (the caller must be root). */
  uid?: number;
  gid?: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/**
 * Runs argv (no shell) and resolves with its output, or rejects with CommandError holding
 * argv, exit code and the tail of stderr. A missing program rejects with
 * ANODYNE_E_COMMAND_NOT_FOUND.
 */
export function exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new TypeError('exec: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        reject(new AnodyneError('ANODYNE_E_COMMAND_NOT_FOUND', `command not found: ${cmd}`, { cause: e, details: { argv: [...argv] } }));
      } else {
        reject(new CommandError(argv, null, null, '', e.message, { cause: e }));
      }
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      const ok = options.okCodes ?? [0];
      if (code !== null && ok.includes(code)) resolve({ stdout, stderr, code });
      else reject(new CommandError(argv, code, signal, stdout, stderr));
    });
    child.stdin.on('error', () => undefined);
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Whether a process with this pid runs on this machine (signal 0; EPERM: it runs, as another user). */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
