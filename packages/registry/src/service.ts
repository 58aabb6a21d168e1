// The registry's use cases: who may pull and push what (projects, grants, clusters, robots), tokens, quotas, images.
import { timingSafeEqual, createHash } from 'node:crypto';
import {
  ConflictError,
  InputError,
  NotAllowedError,
  NotFoundError,
  QuotaError,
  UnauthenticatedError,
  type Clock,
  type Logger,
} from '@anodyne/common';
import { storeQuery, type AuditLog, type Store } from '@anodyne/store';
import { SCOPES, type Principal } from '@anodyne/identity';
import { parseImageReference, referencesOf, REPOSITORY, type Descriptor } from '@anodyne/client/node';
import { parseScopes, type RegistryTokenSigner, type TokenAccess } from './tokens.js';

/** Who asks the registry for something, once authenticated. */
export type RegistryCaller =
  | { kind: 'user'; name: string; scopes: readonly string[] }
  | { kind: 'robot'; name: string; scopes: readonly string[] }
  /** A cluster's nodes: they pull what the cluster's owner may pull. */
  | { kind: 'cluster'; name: string; owner: string }
  | { kind: 'anonymous' };

/** The caller of the API's registry routes (an identity principal). */
export interface RegistryActor {
  name: string;
  userName?: string;
  scopes: readonly string[];
}

export type Action = 'pull' | 'push' | 'delete';

export interface ProjectView {
  name: string;
  owner: string | null;
  public: boolean;
  quota_bytes: number | null;
  used_bytes: number;
  repositories: number;
  created_at: string;
  /** Shown to the project's owner and admins. */
  grants?: { subject: string; actions: string[] }[];
}

export interface ImageView {
  repository: string;
  digest: string;
  media_type: string;
  tags: string[];
  size_bytes: number;
  pushed_by: string;
  pushed_at: string;
}

/** How the service reaches the registry itself (through its socket, with a token it signs). */
export interface RegistryUpstream {
  deleteManifest(repository: string, digest: string): Promise<number>;
}

export interface RegistryServiceOptions {
  store: Store;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  signer: RegistryTokenSigner;
  /** `host:port` clients name images by. */
  address: string;
  /** Quota of a new project (null: none). */
  defaultQuotaBytes: number | null;
  /** Callers of the token endpoint, from their credentials. */
  callers: {
    /** An access token of the platform's identity (users and robots). */
    bearer(token: string): Promise<Principal>;
    /** A user's password (lockout applies). */
    password(username: string, password: string): Promise<{ username: string; groups: string[] }>;
    /** A robot's (OAuth client's) secret; undefined when no client has that id. */
    client(clientId: string, secret: string): Promise<{ scopes: string[] } | undefined>;
    /** A cluster's node credential: its owner when the password is the cluster's. */
    cluster(name: string, password: string): Promise<string | undefined>;
  };
  upstream?: RegistryUpstream;
  /** Starts a garbage collection task (the platform runs it as a director task); answers the task. */
  collector?: (owner: string) => Promise<unknown>;
}

const PROJECT = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
export const CLUSTER_USER_PREFIX = 'cluster/';
const isAdmin = (scopes: readonly string[]) => scopes.includes(SCOPES.admin);
const readsAll = (scopes: readonly string[]) => isAdmin(scopes) || scopes.includes(SCOPES.adminRead);

/** The default project name of a user: their name, lower-cased, with what a repository path may not hold replaced. */
export function defaultProjectOf(user: string): string {
  const name = user
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+|[._-]+$/g, '')
    .replace(/[._-]{2,}/g, '-');
  return name || 'user';
}

export const projectOf = (repository: string): string => repository.split('/')[0]!;

export class RegistryService {
  constructor(private readonly o: RegistryServiceOptions) {}

  get address(): string {
    return this.o.address;
  }

  /** Sets how the service reaches the registry (the platform starts it after the service). */
  useUpstream(u: RegistryUpstream): void {
    this.o.upstream = u;
  }

  // ------------------------------------------------------------------ authentication and tokens

  /** The caller behind an Authorization header of the token endpoint (none: anonymous). */
  async caller(authorization: string | undefined): Promise<RegistryCaller> {
    if (!authorization) return { kind: 'anonymous' };
    const bearer = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (bearer) return this.fromPrincipal(await this.o.callers.bearer(bearer[1]!));
    const basic = /^Basic\s+(\S+)$/i.exec(authorization);
    if (!basic) throw new UnauthenticatedError('ANODYNE_E_BAD_CREDENTIALS', 'the Authorization header is neither Basic nor Bearer');
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new UnauthenticatedError('ANODYNE_E_BAD_CREDENTIALS', 'Basic credentials lack a password');
    return this.fromPassword(decoded.slice(0, colon), decoded.slice(colon + 1));
  }

  /** A user name (or robot id, or `cluster/<name>`) and its password; an access token works as the password too. */
  async fromPassword(username: string, password: string): Promise<RegistryCaller> {
    const bad = () => new UnauthenticatedError('ANODYNE_E_BAD_CREDENTIALS', 'bad user name, password or client credentials');
    if (username.startsWith(CLUSTER_USER_PREFIX)) {
      const cluster = username.slice(CLUSTER_USER_PREFIX.length);
      const owner = await this.o.callers.cluster(cluster, password);
      if (!owner) throw bad();
      return { kind: 'cluster', name: cluster, owner };
    }
    if (/^[\w-]+\.[\w-]+\.[\w-]+$/.test(password) && password.length > 64) return this.fromPrincipal(await this.o.callers.bearer(password));
    const robot = await this.o.callers.client(username, password);
    if (robot) return { kind: 'robot', name: username, scopes: robot.scopes };
    const user = await this.o.callers.password(username, password);
    return { kind: 'user', name: user.username, scopes: user.groups };
  }

  private fromPrincipal(p: Principal): RegistryCaller {
    return p.userName ? { kind: 'user', name: p.userName, scopes: p.scopes } : { kind: 'robot', name: p.clientId, scopes: p.scopes };
  }

  /**
   * The token endpoint: each requested scope narrowed to what the caller may do (nothing is an
   * answer too: the registry then refuses). Every decision is audited.
   */
  async token(
    caller: RegistryCaller,
    service: string | undefined,
    scopes: string[],
  ): Promise<{ token: string; access_token: string; expires_in: number; issued_at: string }> {
    if (service !== undefined && service !== this.o.signer.service)
      throw new InputError('ANODYNE_E_INVALID_INPUT', `this endpoint issues tokens for service ${this.o.signer.service}, not ${service}`, {
        details: { key: 'service' },
      });
    const requested = parseScopes(scopes);
    const granted: TokenAccess[] = [];
    for (const r of requested) {
      if (r.type !== 'repository' || !REPOSITORY.test(r.name)) {
        // The catalog (registry:catalog:*) is for admins; the API lists images for everyone else.
        if (
          r.type === 'registry' &&
          r.name === 'catalog' &&
          caller.kind !== 'anonymous' &&
          caller.kind !== 'cluster' &&
          readsAll(caller.scopes)
        )
          granted.push({ ...r, actions: r.actions.filter((a) => a === '*') });
        continue;
      }
      const allowed = await this.allowed(caller, projectOf(r.name), true);
      const actions = r.actions.filter((a) => allowed.has(a as Action) || (a === '*' && allowed.has('delete')));
      if (actions.length > 0) granted.push({ type: r.type, name: r.name, actions });
    }
    const subject = callerName(caller);
    const denied = requested.some((r) => {
      const g = granted.find((x) => x.type === r.type && x.name === r.name);
      return r.actions.some((a) => !g?.actions.includes(a));
    });
    if (requested.length > 0)
      await this.o.audit.record({
        actor: subject,
        action: 'registry.token',
        target: requested.map((r) => r.name).join(' '),
        result: denied ? 'denied' : 'ok',
        details: { requested: requested.map(fmt), granted: granted.map(fmt) },
      });
    const t = this.o.signer.sign(subject, granted);
    return { token: t.token, access_token: t.token, expires_in: t.expires_in, issued_at: t.issued_at };
  }

  /**
   * What a caller may do in a project: admins everything; the owner pull, push and delete; grants
   * to the user, one of their groups or the robot; a public project pull; a cluster what its owner may pull.
   * `create`: a manage user's own default project is made on first use.
   */
  async allowed(caller: RegistryCaller, project: string, create = false): Promise<Set<Action>> {
    if (caller.kind === 'anonymous') return new Set();
    let row = await this.projectRow(project);
    if (!row && create && caller.kind === 'user' && defaultProjectOf(caller.name) === project && caller.scopes.includes(SCOPES.manage))
      row = await this.ensureProject(project, caller.name);
    if (!row) return new Set();
    const subjects = subjectsOf(caller);
    const grants =
      subjects.length === 0
        ? []
        : await storeQuery('reading registry grants', () =>
            this.o.store.db
              .selectFrom('registry_grants')
              .selectAll()
              .where('project', '=', project)
              .where('subject', 'in', subjects)
              .execute(),
          );
    return rights(caller, row, grants);
  }

  // ------------------------------------------------------------------ projects

  private projectRow(name: string) {
    return storeQuery('reading a registry project', () =>
      this.o.store.db.selectFrom('registry_projects').selectAll().where('name', '=', name).executeTakeFirst(),
    );
  }

  /** Makes a project if it does not exist (an owner's default project, the release's `library`). */
  async ensureProject(name: string, owner: string | null, isPublic = false) {
    const existing = await this.projectRow(name);
    if (existing) return existing;
    const row = {
      name,
      owner,
      public: isPublic ? 1 : 0,
      quota_bytes: this.o.defaultQuotaBytes,
      created_at: new Date(this.o.clock.nowMs()).toISOString(),
    };
    await storeQuery('creating a registry project', () =>
      this.o.store.db
        .insertInto('registry_projects')
        .values(row)
        .onConflict((c) => c.column('name').doNothing())
        .execute(),
    );
    return (await this.projectRow(name))!;
  }

  /** The project and what the caller may do in it; a project the caller may not even pull from is not found. */
  private async mustSee(a: RegistryActor, name: string) {
    const row = await this.projectRow(name);
    const may = row ? await this.allowed(actorCaller(a), name) : new Set<Action>();
    if (!row || may.size === 0)
      throw new NotFoundError('ANODYNE_E_REGISTRY_PROJECT_NOT_FOUND', `registry project ${name} not found`, { details: { name } });
    return Object.assign(row, { may });
  }

  private assertManages(a: RegistryActor, row: { name: string; owner: string | null }): void {
    if (isAdmin(a.scopes)) return;
    if (row.owner !== null && row.owner === a.userName && a.scopes.includes(SCOPES.manage)) return;
    throw new NotAllowedError(
      'ANODYNE_E_SCOPE_REQUIRED',
      `managing project ${row.name} needs ${SCOPES.admin}, or ${SCOPES.manage} as its owner`,
    );
  }

  async createProject(
    a: RegistryActor,
    input: { name: string; owner?: string; public?: boolean; quota_bytes?: number | null },
  ): Promise<ProjectView> {
    if (!PROJECT.test(input.name) || input.name.length > 64)
      throw new InputError(
        'ANODYNE_E_INVALID_INPUT',
        `project name ${input.name} must be lower-case letters, digits and . _ - (at most 64)`,
        {
          details: { key: 'name' },
        },
      );
    // Users have their own project (their name); shared ones are made by admins.
    const own = a.userName !== undefined && defaultProjectOf(a.userName) === input.name && a.scopes.includes(SCOPES.manage);
    if (!isAdmin(a.scopes) && !own)
      throw new NotAllowedError(
        'ANODYNE_E_SCOPE_REQUIRED',
        `creating project ${input.name} needs ${SCOPES.admin} (users have their own: ${a.userName ? defaultProjectOf(a.userName) : 'none'})`,
      );
    if (!isAdmin(a.scopes) && (input.quota_bytes !== undefined || (input.owner !== undefined && input.owner !== a.userName)))
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `setting a project's owner or quota needs ${SCOPES.admin}`);
    if (await this.projectRow(input.name))
      throw new ConflictError('ANODYNE_E_REGISTRY_PROJECT_EXISTS', `registry project ${input.name} exists`, {
        details: { name: input.name },
      });
    await storeQuery('creating a registry project', () =>
      this.o.store.db
        .insertInto('registry_projects')
        .values({
          name: input.name,
          owner: own ? a.userName! : (input.owner ?? null),
          public: input.public ? 1 : 0,
          quota_bytes: input.quota_bytes === undefined ? this.o.defaultQuotaBytes : input.quota_bytes,
          created_at: new Date(this.o.clock.nowMs()).toISOString(),
        })
        .execute(),
    );
    await this.o.audit.record({ actor: a.name, action: 'registry.project.create', target: input.name, result: 'ok' });
    return this.project(a, input.name);
  }

  /** Projects the caller may pull from (their own is made on first sight), with usage. */
  async projects(a: RegistryActor): Promise<ProjectView[]> {
    if (a.userName && a.scopes.includes(SCOPES.manage)) await this.ensureProject(defaultProjectOf(a.userName), a.userName);
    // Three reads for the whole listing (projects, grants, manifests' sizes), grouped here.
    const [rows, grants, manifests] = await storeQuery('listing registry projects', () =>
      Promise.all([
        this.o.store.db.selectFrom('registry_projects').selectAll().orderBy('name').execute(),
        this.o.store.db.selectFrom('registry_grants').selectAll().orderBy('subject').execute(),
        this.o.store.db.selectFrom('registry_manifests').select(['project', 'repository', 'size', 'blobs']).execute(),
      ]),
    );
    const grantsOf = groupBy(grants, (g) => g.project);
    const manifestsOf = groupBy(manifests, (m) => m.project);
    const caller = actorCaller(a);
    const subjects = new Set(subjectsOf(caller));
    return rows
      .filter(
        (r) =>
          rights(
            caller,
            r,
            (grantsOf.get(r.name) ?? []).filter((g) => subjects.has(g.subject)),
          ).size > 0,
      )
      .map((r) => this.view(a, r, manifestsOf.get(r.name) ?? [], grantsOf.get(r.name) ?? []));
  }

  async project(a: RegistryActor, name: string): Promise<ProjectView> {
    const row = await this.mustSee(a, name);
    const [manifests, grants] = await storeQuery('reading a registry project', () =>
      Promise.all([
        this.manifestRows(name),
        this.o.store.db.selectFrom('registry_grants').selectAll().where('project', '=', name).orderBy('subject').execute(),
      ]),
    );
    return this.view(a, row, manifests, grants);
  }

  /** A project as the API shows it: its usage from its manifests; its grants to those who manage it. */
  private view(
    a: RegistryActor,
    r: { name: string; owner: string | null; public: number; quota_bytes: number | null; created_at: string },
    manifests: { repository: string; size: number | string; blobs: string }[],
    grants: { subject: string; actions: string }[],
  ): ProjectView {
    const managed = isAdmin(a.scopes) || (r.owner !== null && r.owner === a.userName);
    return {
      name: r.name,
      owner: r.owner,
      public: Boolean(r.public),
      quota_bytes: r.quota_bytes === null ? null : Number(r.quota_bytes),
      used_bytes: usageOf(manifests),
      repositories: new Set(manifests.map((m) => m.repository)).size,
      created_at: r.created_at,
      ...(managed ? { grants: grants.map((g) => ({ subject: g.subject, actions: JSON.parse(g.actions) as string[] })) } : {}),
    };
  }

  async updateProject(a: RegistryActor, name: string, patch: { public?: boolean; quota_bytes?: number | null }): Promise<ProjectView> {
    const row = await this.mustSee(a, name);
    this.assertManages(a, row);
    if (patch.quota_bytes !== undefined && !isAdmin(a.scopes))
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `changing a project's quota needs ${SCOPES.admin}`);
    await storeQuery('changing a registry project', () =>
      this.o.store.db
        .updateTable('registry_projects')
        .set({
          ...(patch.public !== undefined ? { public: patch.public ? 1 : 0 } : {}),
          ...(patch.quota_bytes !== undefined ? { quota_bytes: patch.quota_bytes } : {}),
        })
        .where('name', '=', name)
        .execute(),
    );
    await this.o.audit.record({ actor: a.name, action: 'registry.project.update', target: name, result: 'ok', details: patch });
    return this.project(a, name);
  }

  async deleteProject(a: RegistryActor, name: string): Promise<void> {
    const row = await this.mustSee(a, name);
    this.assertManages(a, row);
    if ((await this.manifestRows(name)).length > 0)
      throw new ConflictError('ANODYNE_E_REGISTRY_PROJECT_NOT_EMPTY', `registry project ${name} still holds images; delete them first`, {
        details: { name },
      });
    await storeQuery('deleting a registry project', async () => {
      await this.o.store.db.deleteFrom('registry_grants').where('project', '=', name).execute();
      await this.o.store.db.deleteFrom('registry_projects').where('name', '=', name).execute();
    });
    await this.o.audit.record({ actor: a.name, action: 'registry.project.delete', target: name, result: 'ok' });
  }

  /** Grants `pull` (or `pull` and `push`) on a project to `user:<name>`, `group:<scope>`, `client:<id>` or `cluster:<name>`. */
  async grant(a: RegistryActor, project: string, subject: string, actions: string[]): Promise<ProjectView> {
    const row = await this.mustSee(a, project);
    this.assertManages(a, row);
    if (!/^(user|group|client|cluster):[^\s:]{1,128}$/.test(subject))
      throw new InputError(
        'ANODYNE_E_INVALID_INPUT',
        `subject ${subject} must be user:<name>, group:<scope>, client:<id> or cluster:<name>`,
        {
          details: { key: 'subject' },
        },
      );
    const bad = actions.filter((x) => x !== 'pull' && x !== 'push');
    if (actions.length === 0 || bad.length > 0 || (actions.includes('push') && !actions.includes('pull')))
      throw new InputError('ANODYNE_E_INVALID_INPUT', 'actions must be ["pull"] or ["pull", "push"]', { details: { key: 'actions' } });
    const now = new Date(this.o.clock.nowMs()).toISOString();
    const value = JSON.stringify([...new Set(actions)].sort());
    await storeQuery('granting registry access', () =>
      this.o.store.db
        .insertInto('registry_grants')
        .values({ project, subject, actions: value, created_at: now })
        .onConflict((c) => c.columns(['project', 'subject']).doUpdateSet({ actions: value }))
        .execute(),
    );
    await this.o.audit.record({ actor: a.name, action: 'registry.grant', target: project, result: 'ok', details: { subject, actions } });
    return this.project(a, project);
  }

  async revoke(a: RegistryActor, project: string, subject: string): Promise<ProjectView> {
    const row = await this.mustSee(a, project);
    this.assertManages(a, row);
    await storeQuery('revoking registry access', () =>
      this.o.store.db.deleteFrom('registry_grants').where('project', '=', project).where('subject', '=', subject).execute(),
    );
    await this.o.audit.record({ actor: a.name, action: 'registry.revoke', target: project, result: 'ok', details: { subject } });
    return this.project(a, project);
  }

  // ------------------------------------------------------------------ images, quotas

  private manifestRows(project: string) {
    return storeQuery('reading registry manifests', () =>
      this.o.store.db.selectFrom('registry_manifests').selectAll().where('project', '=', project).execute(),
    );
  }

  /** Bytes a project may still take (undefined: no quota), counting what it stores now. */
  async headroom(project: string): Promise<{ quota: number; used: number } | undefined> {
    const row = await this.projectRow(project);
    if (!row || row.quota_bytes === null) return undefined;
    return { quota: Number(row.quota_bytes), used: usageOf(await this.manifestRows(project)) };
  }

  /** The quota check of a manifest push: what the project stores with this manifest's blobs. */
  async checkManifestQuota(repository: string, manifest: { mediaType: string; bytes: Buffer }): Promise<void> {
    const project = projectOf(repository);
    const room = await this.headroom(project);
    if (!room) return;
    const blobs = referencesOf(manifest).blobs;
    const rows = await this.manifestRows(project);
    const after = usageOf([...rows, { size: manifest.bytes.length, blobs: JSON.stringify(blobs.map(pick)) }]);
    if (after > room.quota) throw quotaError(project, room.quota, after);
  }

  /** Records a pushed manifest (after the registry took it) and its tag; audited. */
  async recordManifest(
    repository: string,
    reference: string,
    manifest: { digest: string; mediaType: string; bytes: Buffer },
    pushedBy: string,
  ): Promise<void> {
    const now = new Date(this.o.clock.nowMs()).toISOString();
    const blobs = JSON.stringify(referencesOf(manifest).blobs.map(pick));
    await storeQuery('recording a pushed image', async () => {
      await this.o.store.db
        .insertInto('registry_manifests')
        .values({
          project: projectOf(repository),
          repository,
          digest: manifest.digest,
          media_type: manifest.mediaType,
          size: manifest.bytes.length,
          blobs,
          pushed_by: pushedBy,
          pushed_at: now,
        })
        .onConflict((c) => c.columns(['repository', 'digest']).doUpdateSet({ pushed_by: pushedBy, pushed_at: now }))
        .execute();
      if (!reference.startsWith('sha256:'))
        await this.o.store.db
          .insertInto('registry_tags')
          .values({ repository, tag: reference, digest: manifest.digest, updated_at: now })
          .onConflict((c) => c.columns(['repository', 'tag']).doUpdateSet({ digest: manifest.digest, updated_at: now }))
          .execute();
    });
    await this.o.audit.record({
      actor: pushedBy,
      action: 'registry.push',
      target: `${repository}:${reference}`,
      result: 'ok',
      details: { digest: manifest.digest, size: manifest.bytes.length },
    });
  }

  /** Forgets a manifest the registry deleted, and the tags that named it. */
  async forgetManifest(repository: string, digest: string, by: string): Promise<void> {
    await storeQuery('forgetting a deleted image', async () => {
      await this.o.store.db.deleteFrom('registry_tags').where('repository', '=', repository).where('digest', '=', digest).execute();
      await this.o.store.db.deleteFrom('registry_manifests').where('repository', '=', repository).where('digest', '=', digest).execute();
    });
    await this.o.audit.record({ actor: by, action: 'registry.delete', target: `${repository}@${digest}`, result: 'ok' });
  }

  /** Whether a repository holds a tag (the platform's start skips release images already pushed). */
  async hasTag(repository: string, tag: string): Promise<boolean> {
    const row = await storeQuery('reading a tag', () =>
      this.o.store.db
        .selectFrom('registry_tags')
        .select('digest')
        .where('repository', '=', repository)
        .where('tag', '=', tag)
        .executeTakeFirst(),
    );
    return row !== undefined;
  }

  /** Images the caller may pull, in one project or all. */
  async images(a: RegistryActor, project?: string): Promise<ImageView[]> {
    const projects = project ? [await this.project(a, project)] : await this.projects(a);
    const names = projects.map((p) => p.name);
    if (names.length === 0) return [];
    const [rows, tags] = await storeQuery('listing images', () =>
      Promise.all([
        this.o.store.db
          .selectFrom('registry_manifests')
          .selectAll()
          .where('project', 'in', names)
          .orderBy('repository')
          .orderBy('pushed_at', 'desc')
          .execute(),
        // The tags of those projects' repositories only.
        this.o.store.db
          .selectFrom('registry_tags')
          .innerJoin('registry_manifests', (j) =>
            j
              .onRef('registry_manifests.repository', '=', 'registry_tags.repository')
              .onRef('registry_manifests.digest', '=', 'registry_tags.digest'),
          )
          .select(['registry_tags.repository', 'registry_tags.digest', 'registry_tags.tag'])
          .where('registry_manifests.project', 'in', names)
          .orderBy('registry_tags.tag')
          .execute(),
      ]),
    );
    const tagsOf = groupBy(tags, (t) => `${t.repository}@${t.digest}`);
    return rows.map((r) => ({
      repository: r.repository,
      digest: r.digest,
      media_type: r.media_type,
      tags: (tagsOf.get(`${r.repository}@${r.digest}`) ?? []).map((t) => t.tag),
      size_bytes: usageOf([r]),
      pushed_by: r.pushed_by,
      pushed_at: r.pushed_at,
    }));
  }

  /** Garbage collection (admins): blobs no manifest refers to are removed, as a task. */
  async collectGarbage(a: RegistryActor): Promise<unknown> {
    if (!isAdmin(a.scopes))
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `collecting the registry's garbage needs ${SCOPES.admin}`);
    if (!this.o.collector) throw new ConflictError('ANODYNE_E_REGISTRY_UNAVAILABLE', 'this platform runs no registry');
    return this.o.collector(a.name);
  }

  /** Deletes an image (`project/name:tag` or `@digest`): its manifest and every tag naming it; blobs go at the next garbage collection. */
  async deleteImage(a: RegistryActor, reference: string): Promise<{ repository: string; digest: string; tags: string[] }> {
    const ref = (() => {
      try {
        return parseImageReference(reference);
      } catch {
        throw new InputError(
          'ANODYNE_E_IMAGE_REFERENCE_INVALID',
          `${reference} is not an image reference (project/name:tag or project/name@sha256:…)`,
          {
            details: { key: 'image' },
          },
        );
      }
    })();
    const project = projectOf(ref.repository);
    if (!(await this.mustSee(a, project)).may.has('delete'))
      throw new NotAllowedError(
        'ANODYNE_E_SCOPE_REQUIRED',
        `deleting images of ${project} needs its owner (with ${SCOPES.manage}) or ${SCOPES.admin}`,
      );
    let digest = ref.digest;
    if (!digest) {
      const tag = await storeQuery('reading a tag', () =>
        this.o.store.db
          .selectFrom('registry_tags')
          .selectAll()
          .where('repository', '=', ref.repository)
          .where('tag', '=', ref.tag ?? 'latest')
          .executeTakeFirst(),
      );
      digest = tag?.digest;
    }
    const row = digest
      ? await storeQuery('reading a manifest', () =>
          this.o.store.db
            .selectFrom('registry_manifests')
            .selectAll()
            .where('repository', '=', ref.repository)
            .where('digest', '=', digest)
            .executeTakeFirst(),
        )
      : undefined;
    if (!row || !digest)
      throw new NotFoundError('ANODYNE_E_IMAGE_NOT_FOUND', `image ${reference} not found`, { details: { image: reference } });
    const tags = (
      await storeQuery('reading tags', () =>
        this.o.store.db
          .selectFrom('registry_tags')
          .select('tag')
          .where('repository', '=', ref.repository)
          .where('digest', '=', digest)
          .execute(),
      )
    ).map((t) => t.tag);
    const status = await this.o.upstream!.deleteManifest(ref.repository, digest);
    if (status !== 202 && status !== 404)
      throw new ConflictError('ANODYNE_E_REGISTRY_UNAVAILABLE', `the registry refused to delete ${reference} (status ${status})`);
    await this.forgetManifest(ref.repository, digest, a.name);
    return { repository: ref.repository, digest, tags };
  }
}

const pick = (d: Descriptor) => ({ digest: d.digest, size: d.size });
const fmt = (a: TokenAccess) => `${a.type}:${a.name}:${a.actions.join(',')}`;

/** Stored bytes of manifests: their own bytes and each distinct blob once. */
export function usageOf(rows: { size: number | string; blobs: string }[]): number {
  const blobs = new Map<string, number>();
  let total = 0;
  for (const r of rows) {
    total += Number(r.size);
    for (const b of JSON.parse(r.blobs) as { digest: string; size: number }[]) blobs.set(b.digest, b.size);
  }
  for (const s of blobs.values()) total += s;
  return total;
}

export function quotaError(project: string, quota: number, wouldBe: number): QuotaError {
  return new QuotaError(
    'ANODYNE_E_REGISTRY_QUOTA_EXCEEDED',
    `project ${project} may store ${quota} bytes; this push would make it ${wouldBe}`,
    { details: { project, quota_bytes: quota, would_be_bytes: wouldBe } },
  );
}

function callerName(c: RegistryCaller): string {
  switch (c.kind) {
    case 'anonymous':
      return 'anonymous';
    case 'cluster':
      return `${CLUSTER_USER_PREFIX}${c.name}`;
    default:
      return c.name;
  }
}

/** The grant subjects that name a caller: the user (or a cluster's owner), their groups, the robot, the cluster. */
function subjectsOf(caller: RegistryCaller): string[] {
  if (caller.kind === 'anonymous') return [];
  const userName = caller.kind === 'cluster' ? caller.owner : caller.kind === 'user' ? caller.name : undefined;
  return [
    ...(userName !== undefined ? [`user:${userName}`] : []),
    ...(caller.kind === 'robot' ? [`client:${caller.name}`] : []),
    ...(caller.kind === 'cluster' ? [`cluster:${caller.name}`] : []),
    ...(caller.kind === 'user' ? caller.scopes.map((s) => `group:${s}`) : []),
  ];
}

/**
 * What a caller may do in a project, given the grants naming it there: admins everything; the
 * owner pull, push and delete (pull only without the manage scope); a public project pull; a
 * cluster what its owner may pull, and pull only.
 */
function rights(
  caller: RegistryCaller,
  row: { owner: string | null; public: number },
  grants: readonly { actions: string }[],
): Set<Action> {
  const out = new Set<Action>();
  if (caller.kind === 'anonymous') return out;
  if (caller.kind !== 'cluster') {
    if (isAdmin(caller.scopes)) return new Set(['pull', 'push', 'delete']);
    if (readsAll(caller.scopes)) out.add('pull');
  }
  const userName = caller.kind === 'cluster' ? caller.owner : caller.kind === 'user' ? caller.name : undefined;
  if (row.public) out.add('pull');
  if (userName !== undefined && row.owner === userName) {
    if (caller.kind === 'cluster') out.add('pull');
    else if (caller.scopes.includes(SCOPES.manage)) ['pull', 'push', 'delete'].forEach((a) => out.add(a as Action));
    else out.add('pull');
  }
  for (const g of grants) for (const a of JSON.parse(g.actions) as Action[]) if (caller.kind !== 'cluster' || a === 'pull') out.add(a);
  return out;
}

function groupBy<T>(rows: readonly T[], key: (r: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const r of rows) {
    const k = key(r);
    const list = out.get(k);
    if (list) list.push(r);
    else out.set(k, [r]);
  }
  return out;
}

function actorCaller(a: RegistryActor): RegistryCaller {
  return a.userName ? { kind: 'user', name: a.userName, scopes: a.scopes } : { kind: 'robot', name: a.name, scopes: a.scopes };
}

/** Compares a presented password with the stored one in constant time. */
export function samePassword(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
