// The typed client of Anodyne's API, shared by the CLI and the web console: one method per
// route, request and response types from the API's own schemas (./schemas.ts); the transport is
// fetch in a browser and node:https with the platform's CA in the CLI (./node.ts).
import type { Static } from '@sinclair/typebox';
import type * as S from './schemas.js';

export type Plan = Static<typeof S.Plan>;
export type Cluster = Static<typeof S.Cluster>;
export type CreateClusterRequest = Static<typeof S.CreateCluster>;
export type UpdateClusterRequest = Static<typeof S.UpdateCluster>;
export type Task = Static<typeof S.Task>;
export type CloudCheckRequest = Static<typeof S.CloudCheckRequest>;
export type CloudCheckReport = Static<typeof S.CloudCheckReport>;
export type CloudFinding = Static<typeof S.CloudFinding>;
export type TaskWithEvents = Static<typeof S.TaskWithEvents>;
export type TaskEvent = Static<typeof S.TaskEvent>;
export type Certificate = Static<typeof S.Certificate>;
export type Vm = Static<typeof S.Vm>;
export type NetworkProfile = Static<typeof S.NetworkProfile>;
export type Quota = Static<typeof S.Quota>;
export type Usage = Static<typeof S.Usage>;
export type User = Static<typeof S.User>;
export type CreateUserRequest = Static<typeof S.CreateUser>;
export type UpdateUserRequest = Static<typeof S.UserGroups>;
export type SigningKey = Static<typeof S.SigningKey>;
export type Kubeconfig = Static<typeof S.Kubeconfig>;
export type ReleaseInfo = Static<typeof S.Release>;
export type Backup = Static<typeof S.Backup>;
export type BackupCreated = Static<typeof S.BackupCreated>;
export type BackupSchedule = Static<typeof S.BackupSchedule>;
export type RegistryInfo = Static<typeof S.RegistryInfo>;
export type RegistryToken = Static<typeof S.RegistryToken>;
export type RegistryProject = Static<typeof S.RegistryProject>;
export type Image = Static<typeof S.Image>;
export type DeletedImage = Static<typeof S.DeletedImage>;
export type ImagePolicy = Static<typeof S.ImagePolicy>;

/** An error the API answered with (`{code, message}`), or a transport failure. */
/** A size as people read it (KiB rounded up, MiB and GiB to one decimal): the CLI's and the console's. */
export function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type TokenSet = Static<typeof S.TokenResponse>;
export type OAuthClient = Static<typeof S.OAuthClient>;
export type AuditEntry = Static<typeof S.AuditEntry>;

/** One HTTP exchange, as the client asks a transport for it. */
export interface HttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
}
export interface HttpAnswer {
  status: number;
  text: string;
}
/**
 * How requests travel: `send` for a whole answer; `stream` (where the transport can) hands the body
 * over piece by piece as it arrives (server-sent events) and resolves with the status at its end.
 */
export interface Transport {
  send(r: HttpRequest): Promise<HttpAnswer>;
  stream?(r: HttpRequest, onText: (text: string) => void, signal?: AbortSignal): Promise<number>;
}

/** The browser's transport: fetch on the page's own origin, cookies only for it, a timeout per request. */
export function fetchTransport(o: { timeoutMs?: number } = {}): Transport {
  const timeout = o.timeoutMs ?? 60_000;
  return {
    async send(r) {
      const res = await fetch(r.url, {
        method: r.method,
        headers: r.headers,
        ...(r.body !== undefined ? { body: r.body } : {}),
        credentials: 'same-origin',
        signal: AbortSignal.timeout(timeout),
      });
      return { status: res.status, text: await res.text() };
    },
    async stream(r, onText, signal) {
      const res = await fetch(r.url, { method: r.method, headers: r.headers, credentials: 'same-origin', ...(signal ? { signal } : {}) });
      if (!res.ok || !res.body) {
        onText(await res.text());
        return res.status;
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return res.status;
        onText(value);
      }
    },
  };
}

/** A server-sent event: its name and data (JSON-decoded). */
export interface ServerEvent {
  event: string;
  data: unknown;
}

/** Splits a server-sent event stream into events as its text arrives. */
export function sseParser(onEvent: (e: ServerEvent) => void): (text: string) => void {
  let buffer = '';
  return (text) => {
    buffer += text;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length === 0) continue;
      let parsed: unknown = data.join('\n');
      try {
        parsed = JSON.parse(parsed as string);
      } catch {
        // not JSON: handed over as text
      }
      onEvent({ event, data: parsed });
    }
  };
}

function apiError(status: number, text: string): ApiError {
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  const e = (parsed && typeof parsed === 'object' ? parsed : {}) as { code?: string; message?: string; details?: Record<string, unknown> };
  return new ApiError(status, e.code ?? `HTTP_${status}`, e.message ?? text.slice(0, 200), e.details ?? {});
}

/** Where a backup schedule is: a cluster's, or the platform's own (`null`). */
function schedulePath(cluster: string | null): string {
  return cluster === null ? '/v1/platform/backup-schedule' : `/v1/clusters/${seg(cluster)}/backup-schedule`;
}

const seg = (s: string | number) => encodeURIComponent(String(s));

/**
 * The typed client of Anodyne's API (shared by the CLI and the console): bearer tokens, JSON in
 * and out, errors as ApiError with the API's code, over the transport it is given.
 */
export class ApiClient {
  constructor(
    readonly url: string,
    private readonly transport: Transport,
    private token?: string,
  ) {}

  withToken(token: string): ApiClient {
    return new ApiClient(this.url, this.transport, token);
  }

  private request(
    method: string,
    path: string,
    body?: unknown,
    options: { form?: boolean; basic?: [string, string]; accept?: string } = {},
  ): HttpRequest {
    const payload =
      body === undefined ? undefined : options.form ? new URLSearchParams(body as Record<string, string>).toString() : JSON.stringify(body);
    const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
    if (payload !== undefined) headers['content-type'] = options.form ? 'application/x-www-form-urlencoded' : 'application/json';
    if (this.token) headers['authorization'] = `Bearer ${this.token}`;
    if (options.basic)
      headers['authorization'] = `Basic ${btoa(`${encodeURIComponent(options.basic[0])}:${encodeURIComponent(options.basic[1])}`)}`;
    return { method, url: new URL(path, this.url).toString(), headers, ...(payload !== undefined ? { body: payload } : {}) };
  }

  async call<T>(
    method: string,
    path: string,
    body?: unknown,
    options: { form?: boolean; basic?: [string, string]; accept?: string } = {},
  ): Promise<T> {
    let answer: HttpAnswer;
    try {
      answer = await this.transport.send(this.request(method, path, body, options));
    } catch (e) {
      throw new ApiError(0, 'ANODYNE_E_UNAVAILABLE', `cannot reach ${this.url}: ${(e as Error).message}`);
    }
    if (answer.status >= 400) throw apiError(answer.status, answer.text);
    try {
      return (answer.text ? JSON.parse(answer.text) : null) as T;
    } catch {
      return answer.text as T; // not JSON (metrics, plain text)
    }
  }

  /**
   * Follows a task's events live (server-sent events) until it ends or `signal` aborts; needs a
   * transport that can stream.
   */
  async followTask(
    id: number | string,
    after: number,
    on: { event: (e: TaskEvent) => void; done: (t: Task) => void },
    signal?: AbortSignal,
  ): Promise<void> {
    if (!this.transport.stream) throw new ApiError(0, 'ANODYNE_E_UNAVAILABLE', 'this transport cannot stream');
    let text = '';
    const parse = sseParser((e) => {
      if (e.event === 'task_event') on.event(e.data as TaskEvent);
      else if (e.event === 'task_done') on.done(e.data as Task);
    });
    const status = await this.transport.stream(
      this.request('GET', `/v1/tasks/${seg(id)}/events?after=${after}`, undefined, { accept: 'text/event-stream' }),
      (t) => {
        text = t;
        parse(t);
      },
      signal,
    );
    if (status >= 400) throw apiError(status, text);
  }

  // ---------------------------------------------------------------- tokens
  passwordToken(username: string, password: string, clientId = 'anodyne_cli', clientSecret?: string): Promise<TokenSet> {
    return this.call(
      'POST',
      '/oauth/token',
      { grant_type: 'password', username, password, client_id: clientId, ...(clientSecret ? { client_secret: clientSecret } : {}) },
      { form: true },
    );
  }

  clientToken(clientId: string, clientSecret: string): Promise<TokenSet> {
    return this.call(
      'POST',
      '/oauth/token',
      { grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret },
      { form: true },
    );
  }

  /** A refresh; without a token, the console's session cookie carries it. */
  refresh(refreshToken: string | undefined, clientId = 'anodyne_cli'): Promise<TokenSet> {
    return this.call(
      'POST',
      '/oauth/token',
      { grant_type: 'refresh_token', client_id: clientId, ...(refreshToken ? { refresh_token: refreshToken } : {}) },
      { form: true },
    );
  }

  /** The authorization_code grant: the one-time code, the redirect URI it came to and the PKCE verifier. */
  codeToken(code: string, redirectUri: string, codeVerifier: string, clientId: string): Promise<TokenSet> {
    return this.call(
      'POST',
      '/oauth/token',
      { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: codeVerifier, client_id: clientId },
      { form: true },
    );
  }

  /** Ends the console's session (its refresh-token cookie). */
  async logout(): Promise<void> {
    await this.call('POST', '/oauth/logout');
  }

  userinfo(): Promise<Record<string, unknown>> {
    return this.call('GET', '/userinfo');
  }

  // ---------------------------------------------------------------- clusters
  plans(): Promise<Plan[]> {
    return this.call('GET', '/v1/plans');
  }
  clusters(): Promise<Cluster[]> {
    return this.call('GET', '/v1/clusters');
  }
  cluster(name: string): Promise<Cluster> {
    return this.call('GET', `/v1/clusters/${seg(name)}`);
  }
  createCluster(body: CreateClusterRequest): Promise<Cluster> {
    return this.call('POST', '/v1/clusters', body);
  }
  updateCluster(name: string, body: UpdateClusterRequest): Promise<Cluster> {
    return this.call('PATCH', `/v1/clusters/${seg(name)}`, body);
  }
  deleteCluster(name: string): Promise<Cluster> {
    return this.call('DELETE', `/v1/clusters/${seg(name)}`);
  }
  bind(name: string): Promise<Kubeconfig> {
    return this.call('POST', `/v1/clusters/${seg(name)}/binds`);
  }
  upgradeCluster(name: string, body: S.UpgradeClusterBody = {}): Promise<Cluster> {
    return this.call('POST', `/v1/clusters/${seg(name)}/upgrade`, body);
  }
  recreateCluster(name: string): Promise<Cluster> {
    return this.call('POST', `/v1/clusters/${seg(name)}/recreate`);
  }
  releases(): Promise<ReleaseInfo[]> {
    return this.call('GET', '/v1/releases');
  }
  deleteRelease(key: string): Promise<void> {
    return this.call('DELETE', `/v1/releases/${seg(key)}`);
  }
  /** Starts a cloud check (admins); the finished task's result is a CloudCheckReport. */
  cloudCheck(body: CloudCheckRequest = {}): Promise<Task> {
    return this.call('POST', '/v1/cloud-check', body);
  }
  createBackup(cluster: string): Promise<BackupCreated> {
    return this.call('POST', '/v1/backups', { cluster });
  }
  backupPlatform(): Promise<BackupCreated> {
    return this.call('POST', '/v1/backups', { platform: true });
  }
  backups(cluster?: string): Promise<Backup[]> {
    return this.call('GET', `/v1/backups${cluster ? `?cluster=${encodeURIComponent(cluster)}` : ''}`);
  }
  backup(id: string): Promise<Backup> {
    return this.call('GET', `/v1/backups/${seg(id)}`);
  }
  deleteBackup(id: string): Promise<void> {
    return this.call('DELETE', `/v1/backups/${seg(id)}`);
  }
  /** A cluster's backup schedule, or with `null` the platform's own. */
  backupSchedule(cluster: string | null): Promise<BackupSchedule> {
    return this.call('GET', schedulePath(cluster));
  }
  setBackupSchedule(cluster: string | null, body: Static<typeof S.SetBackupSchedule>): Promise<BackupSchedule> {
    return this.call('PUT', schedulePath(cluster), body);
  }
  deleteBackupSchedule(cluster: string | null): Promise<void> {
    return this.call('DELETE', schedulePath(cluster));
  }
  restoreBackup(id: string, body: Static<typeof S.RestoreBackup> = {}): Promise<Task> {
    return this.call('POST', `/v1/backups/${seg(id)}/restore`, body);
  }
  certificates(name: string): Promise<Certificate[]> {
    return this.call('GET', `/v1/clusters/${seg(name)}/certificates`);
  }
  vms(name: string): Promise<Vm[]> {
    return this.call('GET', `/v1/clusters/${seg(name)}/vms`);
  }
  rotateCertificates(name: string, body: S.RotateCertificatesBody = {}): Promise<Cluster> {
    return this.call('POST', `/v1/clusters/${seg(name)}/rotate-certificates`, body);
  }
  /** Alerts, newest first; `after`: only those with a greater id. */
  events(after?: number): Promise<S.PlatformEventView[]> {
    return this.call('GET', `/v1/events${after !== undefined ? `?after=${after}` : ''}`);
  }
  adminKubeconfig(name: string): Promise<Kubeconfig> {
    return this.call('GET', `/v1/clusters/${seg(name)}/kubeconfig`);
  }
  networkProfiles(): Promise<NetworkProfile[]> {
    return this.call('GET', '/v1/network-profiles');
  }

  // ---------------------------------------------------------------- tasks
  tasks(query: { cluster?: string; limit?: number } = {}): Promise<Task[]> {
    const q = new URLSearchParams(
      Object.entries(query)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]): [string, string] => [k, String(v)]),
    ).toString();
    return this.call('GET', `/v1/tasks${q ? `?${q}` : ''}`);
  }
  task(id: number | string): Promise<TaskWithEvents> {
    return this.call('GET', `/v1/tasks/${seg(id)}`);
  }
  taskEvents(id: number | string, after = 0): Promise<TaskEvent[]> {
    return this.call('GET', `/v1/tasks/${seg(id)}/events?after=${after}`);
  }
  upgradeClusters(body: S.FleetUpgradeBody): Promise<Task> {
    return this.call('POST', '/v1/upgrades', body);
  }
  cancelTask(id: number | string): Promise<Task> {
    return this.call('PUT', `/v1/tasks/${seg(id)}`, { state: 'cancelled' });
  }

  // ---------------------------------------------------------------- quotas, users, keys
  quota(owner: string): Promise<Quota> {
    return this.call('GET', `/v1/quotas/${seg(owner)}`);
  }
  usage(owner: string): Promise<Usage> {
    return this.call('GET', `/v1/usages/${seg(owner)}`);
  }
  users(): Promise<User[]> {
    return this.call('GET', '/v1/users');
  }
  createUser(body: CreateUserRequest): Promise<User> {
    return this.call('POST', '/v1/users', body);
  }
  updateUser(username: string, body: UpdateUserRequest): Promise<User> {
    return this.call('PUT', `/v1/users/${seg(username)}`, body);
  }
  deleteUser(username: string): Promise<void> {
    return this.call('DELETE', `/v1/users/${seg(username)}`);
  }
  rotateSigningKey(): Promise<SigningKey> {
    return this.call('POST', '/v1/token-keys');
  }
  clients(): Promise<OAuthClient[]> {
    return this.call('GET', '/v1/clients');
  }
  audit(query: { limit?: number } = {}): Promise<AuditEntry[]> {
    return this.call('GET', `/v1/audit${query.limit ? `?limit=${query.limit}` : ''}`);
  }

  // ---------------------------------------------------------------- image registry
  registryInfo(): Promise<RegistryInfo> {
    return this.call('GET', '/v1/registry');
  }
  /** A registry token for the scopes (`repository:<project>/<name>:pull,push`), for this client's caller. */
  registryToken(scopes: string[]): Promise<RegistryToken> {
    const q = new URLSearchParams([['service', 'anodyne-registry'], ...scopes.map((s) => ['scope', s] as [string, string])]);
    return this.call('GET', `/v1/registry/token?${q.toString()}`);
  }
  registryProjects(): Promise<RegistryProject[]> {
    return this.call('GET', '/v1/registry/projects');
  }
  registryProject(name: string): Promise<RegistryProject> {
    return this.call('GET', `/v1/registry/projects/${seg(name)}`);
  }
  createRegistryProject(body: Static<typeof S.CreateRegistryProject>): Promise<RegistryProject> {
    return this.call('POST', '/v1/registry/projects', body);
  }
  updateRegistryProject(name: string, body: Static<typeof S.UpdateRegistryProject>): Promise<RegistryProject> {
    return this.call('PATCH', `/v1/registry/projects/${seg(name)}`, body);
  }
  deleteRegistryProject(name: string): Promise<void> {
    return this.call('DELETE', `/v1/registry/projects/${seg(name)}`);
  }
  grantRegistry(project: string, subject: string, actions: ('pull' | 'push')[]): Promise<RegistryProject> {
    return this.call('PUT', `/v1/registry/projects/${seg(project)}/grants/${seg(subject)}`, { actions });
  }
  revokeRegistry(project: string, subject: string): Promise<RegistryProject> {
    return this.call('DELETE', `/v1/registry/projects/${seg(project)}/grants/${seg(subject)}`);
  }
  images(project?: string): Promise<Image[]> {
    return this.call('GET', `/v1/registry/images${project ? `?project=${encodeURIComponent(project)}` : ''}`);
  }
  deleteImage(image: string): Promise<DeletedImage> {
    return this.call('DELETE', `/v1/registry/images?image=${encodeURIComponent(image)}`);
  }
  imagePolicy(cluster: string): Promise<ImagePolicy> {
    return this.call('GET', `/v1/clusters/${seg(cluster)}/image-policy`);
  }
  setImagePolicy(cluster: string, registryOnly: boolean): Promise<ImagePolicy> {
    return this.call('PUT', `/v1/clusters/${seg(cluster)}/image-policy`, { registry_only: registryOnly });
  }
  collectRegistryGarbage(): Promise<Task> {
    return this.call('POST', '/v1/registry/gc');
  }
}
