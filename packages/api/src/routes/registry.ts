// Image registry routes: the token endpoint of the registry token protocol, projects, grants, images, garbage collection.
import { Type, type Static } from '@sinclair/typebox';
import { SCOPES } from '@anodyne/identity';
import { defaultProjectOf, type RegistryService } from '@anodyne/registry';
import { schemas as S } from '@anodyne/client';
import { auth, doc, ok, principal, type Api } from './kit.js';

export interface RegistryRoutesOptions {
  registry: RegistryService;
  /** The token endpoint's URL and the CA of the registry's certificate. */
  realm: string;
  caPem: string;
}

const ANY = [SCOPES.admin, SCOPES.adminRead, SCOPES.manage];
const WRITE = [SCOPES.admin, SCOPES.manage];

export function registryRoutes(app: Api, o: RegistryRoutesOptions): void {
  const r = o.registry;
  const tags = ['registry'];
  const scopesOf = (s: string | string[] | undefined) => (s === undefined ? [] : Array.isArray(s) ? s : [s]);

  app.get(
    '/v1/registry',
    {
      config: auth(ANY),
      schema: {
        ...doc("The platform's image registry: its address, token endpoint, CA, and the caller's own project", tags, true),
        response: ok({ 200: S.RegistryInfo }),
      },
    },
    (req) => {
      const p = principal(req);
      return {
        address: r.address,
        realm: o.realm,
        service: 'anodyne-registry',
        ca: o.caPem,
        own_project: p.userName && p.scopes.includes(SCOPES.manage) ? defaultProjectOf(p.userName) : null,
      };
    },
  );
  // The registry token protocol: clients (docker-style, containerd, skopeo, the CLI) present a user's
  // password, a robot's secret, a cluster's node credential (HTTP basic) or an access token (bearer).
  app.get(
    '/v1/registry/token',
    {
      config: auth(undefined, 'registry.token'),
      schema: {
        ...doc(
          'A registry token for the scopes asked (repository:<project>/<name>:pull,push), narrowed to what the caller may do; ' +
            'HTTP basic (user, robot client or cluster/<name>), a bearer access token, or none (public projects only)',
          tags,
          false,
        ),
        querystring: S.RegistryTokenQuery,
        response: ok({ 200: S.RegistryToken }),
      },
    },
    async (req) => r.token(await r.caller(req.headers.authorization), req.query.service, scopesOf(req.query.scope)),
  );
  app.post(
    '/v1/registry/token',
    {
      config: auth(undefined, 'registry.token'),
      schema: {
        ...doc('The same, as the OAuth2 password form some registry clients send', tags, false),
        body: S.RegistryTokenForm,
        response: ok({ 200: S.RegistryToken }),
      },
    },
    async (req) =>
      r.token(await r.fromPassword(req.body.username, req.body.password), req.body.service, req.body.scope ? [req.body.scope] : []),
  );
  app.get(
    '/v1/registry/projects',
    {
      config: auth(ANY),
      schema: {
        ...doc('Projects the caller may pull from (their own is made on first sight), with stored bytes and quota', tags, true),
        response: ok({ 200: Type.Array(S.RegistryProject) }),
      },
    },
    async (req) => r.projects(principal(req)),
  );
  app.post(
    '/v1/registry/projects',
    {
      config: auth(WRITE, 'registry.project.create'),
      schema: {
        ...doc('Create a project: admins any (shared, or owned by a user); users only their own', tags, true),
        body: S.CreateRegistryProject,
        response: ok({ 201: S.RegistryProject }),
      },
    },
    async (req, reply) => reply.status(201).send(await r.createProject(principal(req), req.body as Static<typeof S.CreateRegistryProject>)),
  );
  app.get(
    '/v1/registry/projects/:project',
    {
      config: auth(ANY),
      schema: {
        ...doc('One project (grants shown to its owner and admins)', tags, true),
        params: S.ProjectParams,
        response: ok({ 200: S.RegistryProject }),
      },
    },
    async (req) => r.project(principal(req), req.params.project),
  );
  app.patch(
    '/v1/registry/projects/:project',
    {
      config: auth(WRITE, 'registry.project.update'),
      schema: {
        ...doc('Make a project public or private (its owner or admins), or change its quota (admins)', tags, true),
        params: S.ProjectParams,
        body: S.UpdateRegistryProject,
        response: ok({ 200: S.RegistryProject }),
      },
    },
    async (req) => r.updateProject(principal(req), req.params.project, req.body as Static<typeof S.UpdateRegistryProject>),
  );
  app.delete(
    '/v1/registry/projects/:project',
    {
      config: auth(WRITE, 'registry.project.delete'),
      schema: {
        ...doc('Delete an empty project (its owner or admins)', tags, true),
        params: S.ProjectParams,
        response: ok({ 204: Type.Null() }),
      },
    },
    async (req, reply) => {
      await r.deleteProject(principal(req), req.params.project);
      return reply.status(204).send(null);
    },
  );
  app.put(
    '/v1/registry/projects/:project/grants/:subject',
    {
      config: auth(WRITE, 'registry.grant'),
      schema: {
        ...doc('Let a user, group, robot client or cluster pull (or pull and push) the project (its owner or admins)', tags, true),
        params: S.GrantParams,
        body: S.SetGrant,
        response: ok({ 200: S.RegistryProject }),
      },
    },
    async (req) => r.grant(principal(req), req.params.project, req.params.subject, req.body.actions),
  );
  app.delete(
    '/v1/registry/projects/:project/grants/:subject',
    {
      config: auth(WRITE, 'registry.revoke'),
      schema: { ...doc('Take a grant back', tags, true), params: S.GrantParams, response: ok({ 200: S.RegistryProject }) },
    },
    async (req) => r.revoke(principal(req), req.params.project, req.params.subject),
  );
  app.get(
    '/v1/registry/images',
    {
      config: auth(ANY),
      schema: {
        ...doc('Images the caller may pull (in one project, or all), with tags and stored bytes', tags, true),
        querystring: S.ImagesQuery,
        response: ok({ 200: Type.Array(S.Image) }),
      },
    },
    async (req) => r.images(principal(req), req.query.project),
  );
  app.delete(
    '/v1/registry/images',
    {
      config: auth(WRITE, 'registry.image.delete'),
      schema: {
        ...doc('Delete an image and every tag naming it; its blobs are freed by the next garbage collection', tags, true),
        querystring: S.ImageRefQuery,
        response: ok({ 200: S.DeletedImage }),
      },
    },
    async (req) => r.deleteImage(principal(req), req.query.image),
  );
  app.post(
    '/v1/registry/gc',
    {
      config: auth([SCOPES.admin], 'registry.gc'),
      schema: {
        ...doc("Collect the registry's garbage (asynchronous): blobs no image refers to are removed", tags, true),
        response: ok({ 202: S.Task }),
      },
    },
    async (req, reply) => reply.status(202).send((await r.collectGarbage(principal(req))) as Static<typeof S.Task>),
  );
}
