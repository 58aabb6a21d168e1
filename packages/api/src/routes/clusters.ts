// Cluster routes (/v1, PKS field names): plans, clusters and their Day 2 actions, certificates, VMs, binds and kubeconfigs.
import { Type } from '@sinclair/typebox';
import type { AuditLog } from '@anodyne/store';
import { ADMIN_SCOPES, READ_SCOPES, WRITE_SCOPES, type ClusterService } from '@anodyne/clusters';
import { schemas as S } from '@anodyne/client';
import { auth, doc, ok, principal, sendOnce, type Api } from './kit.js';

export interface ClusterRoutesOptions {
  clusters: ClusterService;
  audit: AuditLog;
  /** The API's URL: users' kubeconfigs get their tokens from it. */
  apiUrl: string;
}

export function clusterRoutes(app: Api, o: ClusterRoutesOptions): void {
  const c = o.clusters;
  const tags = ['clusters'];

  app.get(
    '/v1/plans',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc('Plans, with the Kubernetes versions each offers', tags, true), response: ok({ 200: Type.Array(S.Plan) }) },
    },
    async () => c.planViews(),
  );

  app.get(
    '/v1/clusters',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc('Clusters the caller may see', tags, true), response: ok({ 200: Type.Array(S.Cluster) }) },
    },
    async (req, reply) => sendOnce(reply, await c.list(principal(req))),
  );
  app.post(
    '/v1/clusters',
    {
      config: auth(WRITE_SCOPES, 'cluster.create'),
      schema: { ...doc('Create a cluster (asynchronous)', tags, true), body: S.CreateCluster, response: ok({ 202: S.Cluster }) },
    },
    async (req, reply) => reply.status(202).send(await c.create(principal(req), req.body)),
  );
  app.get(
    '/v1/clusters/:name',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc('One cluster', tags, true), params: S.NameParams, response: ok({ 200: S.Cluster }) },
    },
    async (req, reply) => sendOnce(reply, await c.get(principal(req), req.params.name)),
  );
  app.patch(
    '/v1/clusters/:name',
    {
      config: auth(WRITE_SCOPES, 'cluster.update'),
      schema: {
        ...doc('Resize a cluster (asynchronous)', tags, true),
        params: S.NameParams,
        body: S.UpdateCluster,
        response: ok({ 202: S.Cluster }),
      },
    },
    async (req, reply) => reply.status(202).send(await c.resize(principal(req), req.params.name, req.body)),
  );
  app.delete(
    '/v1/clusters/:name',
    {
      config: auth(WRITE_SCOPES, 'cluster.delete'),
      schema: { ...doc('Delete a cluster (asynchronous)', tags, true), params: S.NameParams, response: ok({ 202: S.Cluster }) },
    },
    async (req, reply) => reply.status(202).send(await c.delete(principal(req), req.params.name)),
  );

  app.post(
    '/v1/clusters/:name/binds',
    {
      config: auth(WRITE_SCOPES, 'cluster.bind'),
      schema: {
        ...doc('Bind the caller: RBAC binding and a kubeconfig that gets tokens from Anodyne', tags, true),
        params: S.NameParams,
        response: ok({ 200: S.Kubeconfig }),
      },
    },
    async (req) => ({ kubeconfig: await c.bind(principal(req), req.params.name, o.apiUrl) }),
  );
  app.post(
    '/v1/clusters/:name/upgrade',
    {
      config: auth(ADMIN_SCOPES, 'cluster.upgrade'),
      schema: {
        ...doc(
          'Upgrade a cluster to another Kubernetes release (default: the newest its plan offers) and the current plan, rolling (asynchronous); ' +
            'a minor is never skipped or downgraded',
          tags,
          true,
        ),
        params: S.NameParams,
        body: S.UpgradeCluster,
        response: ok({ 202: S.Cluster }),
      },
      // No body means no version asked for: the newest.
      preValidation: (req, _reply, done) => {
        req.body ??= {};
        done();
      },
    },
    async (req, reply) => reply.status(202).send(await c.upgrade(principal(req), req.params.name, req.body)),
  );
  app.post(
    '/v1/clusters/:name/recreate',
    {
      config: auth(WRITE_SCOPES, 'cluster.recreate'),
      schema: {
        ...doc('Recreate (repave) every VM of a cluster onto a fresh root, rolling like an update (asynchronous)', tags, true),
        params: S.NameParams,
        response: ok({ 202: S.Cluster }),
      },
    },
    async (req, reply) => reply.status(202).send(await c.recreate(principal(req), req.params.name)),
  );
  app.post(
    '/v1/upgrades',
    {
      config: auth(ADMIN_SCOPES, 'clusters.upgrade'),
      schema: {
        ...doc(
          'Upgrade several clusters as one task: canaries one at a time, then batches of max_in_flight; stops at the first failure',
          tags,
          true,
        ),
        body: S.FleetUpgrade,
        response: ok({ 202: S.Task }),
      },
    },
    async (req, reply) => reply.status(202).send(await c.upgradeFleet(principal(req), req.body)),
  );
  app.post(
    '/v1/clusters/:name/rotate-certificates',
    {
      config: auth(WRITE_SCOPES, 'cluster.rotate_certificates'),
      schema: {
        ...doc(
          'New leaf certificates, rolled out (asynchronous); with `ca`, new CAs and service-account key too: ' +
            'trusted everywhere, then signing, then the old ones dropped, as one task',
          tags,
          true,
        ),
        params: S.NameParams,
        body: S.RotateCertificates,
        response: ok({ 202: S.Cluster }),
      },
      // No body: leaves only.
      preValidation: (req, _reply, done) => {
        req.body ??= {};
        done();
      },
    },
    async (req, reply) => reply.status(202).send(await c.rotateCertificates(principal(req), req.params.name, req.body)),
  );
  app.get(
    '/v1/clusters/:name/certificates',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc("A cluster's certificates and their expiry", tags, true),
        params: S.NameParams,
        response: ok({ 200: Type.Array(S.Certificate) }),
      },
    },
    async (req) => c.certificates(principal(req), req.params.name),
  );
  app.get(
    '/v1/clusters/:name/image-policy',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc("Whether the cluster runs only images of the platform registry (and the release's own)", tags, true),
        params: S.NameParams,
        response: ok({ 200: S.ImagePolicy }),
      },
    },
    async (req) => c.imagePolicyOf(principal(req), req.params.name),
  );
  app.put(
    '/v1/clusters/:name/image-policy',
    {
      config: auth(WRITE_SCOPES, 'cluster.image_policy'),
      schema: {
        ...doc(
          'Allow only images of the platform registry (an admission policy in the cluster, at once: a workload naming another image is refused, the image named), or any image again',
          tags,
          true,
        ),
        params: S.NameParams,
        body: S.SetImagePolicy,
        response: ok({ 200: S.ImagePolicy }),
      },
    },
    async (req) => c.setImagePolicy(principal(req), req.params.name, req.body.registry_only),
  );
  app.get(
    '/v1/clusters/:name/vms',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc("A cluster's VMs and their health (pending, running, failing, unresponsive, missing, stopped)", tags, true),
        params: S.NameParams,
        response: ok({ 200: Type.Array(S.Vm) }),
      },
    },
    async (req) => c.vms(principal(req), req.params.name),
  );
  app.get(
    '/v1/clusters/:name/kubeconfig',
    {
      config: auth(ADMIN_SCOPES),
      schema: {
        ...doc('The admin kubeconfig (client certificate, cluster-admin)', tags, true),
        params: S.NameParams,
        response: ok({ 200: S.Kubeconfig }),
      },
    },
    async (req) => {
      const { name } = req.params;
      const kubeconfig = await c.adminKubeconfig(principal(req), name);
      await o.audit.record({
        actor: principal(req).name,
        action: 'credential.read',
        target: `cluster ${name} admin kubeconfig`,
        result: 'ok',
      });
      return { kubeconfig };
    },
  );

  // ---------------------------------------------------------------- releases

  app.get(
    '/v1/releases',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc('Kubernetes releases clusters can run, newest first, with how many clusters run each', ['releases'], true),
        response: ok({ 200: Type.Array(S.Release) }),
      },
    },
    async () => c.listReleases(),
  );
  app.delete(
    '/v1/releases/:key',
    {
      config: auth(ADMIN_SCOPES, 'release.delete'),
      schema: {
        ...doc('Delete a release no cluster runs (not the default); its files go too', ['releases'], true),
        params: S.ReleaseParams,
        response: ok({ 204: Type.Null() }),
      },
    },
    async (req, reply) => {
      await c.deleteRelease(principal(req), req.params.key);
      return reply.status(204).send(null);
    },
  );

  // ---------------------------------------------------------------- network profiles

  app.get(
    '/v1/network-profiles',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc('Network profiles', tags, true), response: ok({ 200: Type.Array(S.NetworkProfile) }) },
    },
    async () => c.networkProfiles(),
  );
  app.post(
    '/v1/network-profiles',
    {
      config: auth(ADMIN_SCOPES, 'network_profile.create'),
      schema: { ...doc('Create a network profile', tags, true), body: S.CreateNetworkProfile, response: ok({ 201: S.NetworkProfile }) },
    },
    async (req, reply) => reply.status(201).send(await c.profiles.create(req.body)),
  );
  app.delete(
    '/v1/network-profiles/:name',
    {
      config: auth(ADMIN_SCOPES, 'network_profile.delete'),
      schema: { ...doc('Delete an unused network profile', tags, true), params: S.NameParams, response: ok({ 204: Type.Null() }) },
    },
    async (req, reply) => {
      await c.profiles.delete(req.params.name);
      return reply.status(204).send(null);
    },
  );

  // ---------------------------------------------------------------- quotas and usages

  app.get(
    '/v1/quotas/:owner',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc("An owner's quota", ['quotas'], true), params: S.OwnerParams, response: ok({ 200: S.Quota }) },
    },
    async (req) => c.quotaOf(principal(req), req.params.owner),
  );
  app.put(
    '/v1/quotas/:owner',
    {
      config: auth(ADMIN_SCOPES, 'quota.set'),
      schema: {
        ...doc("Set an owner's quota", ['quotas'], true),
        params: S.OwnerParams,
        body: S.QuotaBody,
        response: ok({ 200: S.Quota }),
      },
    },
    async (req) => c.quotas.set(req.params.owner, req.body.max_clusters, req.body.max_workers),
  );
  app.get(
    '/v1/usages/:owner',
    {
      config: auth(READ_SCOPES),
      schema: { ...doc("An owner's usage", ['quotas'], true), params: S.OwnerParams, response: ok({ 200: S.Usage }) },
    },
    async (req) => c.usage(principal(req), req.params.owner),
  );
}
