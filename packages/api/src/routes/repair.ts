// Repair routes: the cloud check (admins), whose task result lists findings and what was done about them.
import { ADMIN_SCOPES, type ClusterService } from '@anodyne/clusters';
import { schemas as S } from '@anodyne/client';
import { auth, doc, ok, principal, type Api } from './kit.js';

export function repairRoutes(app: Api, o: { clusters: ClusterService }): void {
  app.post(
    '/v1/cloud-check',
    {
      config: auth(ADMIN_SCOPES, 'cloud_check.start'),
      schema: {
        ...doc(
          'Compare the store with the provider and the agents (asynchronous): the task result (CloudCheckReport) lists ' +
            'findings with their resolutions; with auto every finding gets its first resolution, with resolutions the named ones',
          ['repair'],
          true,
        ),
        body: S.CloudCheckRequest,
        response: ok({ 202: S.Task }),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const task = await o.clusters.repair.cloudCheck(principal(req), {
        ...(b.cluster !== undefined ? { cluster: b.cluster } : {}),
        ...(b.auto !== undefined ? { auto: b.auto } : {}),
        ...(b.resolutions ? { resolutions: b.resolutions } : {}),
      });
      return reply.status(202).send(task);
    },
  );
}
