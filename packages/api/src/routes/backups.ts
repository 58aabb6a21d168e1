// Backup routes: back up a cluster, list, show and delete backups, restore one onto its cluster or into a new one.
import { Type, type Static } from '@sinclair/typebox';
import { ADMIN_SCOPES, READ_SCOPES, WRITE_SCOPES, type ClusterService } from '@anodyne/clusters';
import { schemas as S } from '@anodyne/client';
import { auth, doc, ok, principal, type Api } from './kit.js';

export interface BackupRoutesOptions {
  clusters: ClusterService;
}

export function backupRoutes(app: Api, o: BackupRoutesOptions): void {
  const b = o.clusters.backups;
  const tags = ['backups'];

  app.post(
    '/v1/backups',
    {
      config: auth(WRITE_SCOPES, 'backup.create'),
      schema: {
        ...doc(
          "Back up a cluster (asynchronous): a sealed etcd snapshot and the cluster's record (its owner or an admin); " +
            "or, with platform: true, the platform's database (admins)",
          tags,
          true,
        ),
        body: S.CreateBackup,
        response: ok({ 202: S.BackupCreated }),
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send('platform' in req.body ? await b.createPlatform(principal(req)) : await b.create(principal(req), req.body.cluster)),
  );
  app.get(
    '/v1/backups',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc('Backups the caller may see (of their clusters; every one for readers of all), newest first', tags, true),
        querystring: S.BackupQuery,
        response: ok({ 200: Type.Array(S.Backup) }),
      },
    },
    async (req) => b.list(principal(req), req.query.cluster),
  );
  app.get(
    '/v1/backups/:id',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc('One backup, with its manifest (files, sizes, sha256s, etcd revision)', tags, true),
        params: S.BackupParams,
        response: ok({ 200: S.Backup }),
      },
    },
    async (req) => b.get(principal(req), req.params.id),
  );
  app.delete(
    '/v1/backups/:id',
    {
      config: auth(WRITE_SCOPES, 'backup.delete'),
      schema: {
        ...doc("Delete a backup and its artifacts; the cluster's owner or an admin", tags, true),
        params: S.BackupParams,
        response: ok({ 204: Type.Null() }),
      },
    },
    async (req, reply) => {
      await b.delete(principal(req), req.params.id);
      return reply.status(204).send(null);
    },
  );
  app.post(
    '/v1/backups/:id/restore',
    {
      config: auth(WRITE_SCOPES, 'backup.restore'),
      schema: {
        ...doc(
          'Restore a backup (asynchronous) onto the cluster it was taken of, or into a new cluster named in the body; ' +
            'every artifact is checked (size, sha256, seal) before anything is stopped',
          tags,
          true,
        ),
        params: S.BackupParams,
        body: S.RestoreBackup,
        response: ok({ 202: S.Task }),
      },
      preValidation: (req, _reply, done) => {
        req.body ??= {};
        done();
      },
    },
    async (req, reply) => reply.status(202).send(await b.restore(principal(req), req.params.id, req.body)),
  );

  app.get(
    '/v1/platform/backup-schedule',
    {
      config: auth(ADMIN_SCOPES),
      schema: {
        ...doc("The platform's own backup schedule (its database; 404 when it has none)", tags, true),
        response: ok({ 200: S.BackupSchedule }),
      },
    },
    async (req) => b.platformSchedule(principal(req)),
  );
  app.put(
    '/v1/platform/backup-schedule',
    {
      config: auth(ADMIN_SCOPES, 'backup.schedule'),
      schema: {
        ...doc(
          "Set the platform's backup schedule: a backup of its database every every_minutes (the first one interval from now); " +
            'of the backups it takes, the newest keep_last are kept and none older than keep_days (point_in_time is for clusters)',
          tags,
          true,
        ),
        body: S.SetBackupSchedule,
        response: ok({ 200: S.BackupSchedule }),
      },
    },
    async (req) => b.setPlatformSchedule(principal(req), req.body as Static<typeof S.SetBackupSchedule>),
  );
  app.delete(
    '/v1/platform/backup-schedule',
    {
      config: auth(ADMIN_SCOPES, 'backup.unschedule'),
      schema: {
        ...doc("Remove the platform's backup schedule (the backups it took stay)", tags, true),
        response: ok({ 204: Type.Null() }),
      },
    },
    async (req, reply) => {
      await b.deletePlatformSchedule(principal(req));
      return reply.status(204).send(null);
    },
  );
  app.get(
    '/v1/clusters/:name/backup-schedule',
    {
      config: auth(READ_SCOPES),
      schema: {
        ...doc("A cluster's backup schedule and retention (404 when it has none)", tags, true),
        params: S.NameParams,
        response: ok({ 200: S.BackupSchedule }),
      },
    },
    async (req) => b.schedule(principal(req), req.params.name),
  );
  app.put(
    '/v1/clusters/:name/backup-schedule',
    {
      config: auth(WRITE_SCOPES, 'backup.schedule'),
      schema: {
        ...doc(
          "Set a cluster's backup schedule: a backup every every_minutes (the first one interval from now); of the backups it takes, " +
            'the newest keep_last are kept and none older than keep_days',
          tags,
          true,
        ),
        params: S.NameParams,
        body: S.SetBackupSchedule,
        response: ok({ 200: S.BackupSchedule }),
      },
    },
    async (req) => b.setSchedule(principal(req), req.params.name, req.body as Static<typeof S.SetBackupSchedule>),
  );
  app.delete(
    '/v1/clusters/:name/backup-schedule',
    {
      config: auth(WRITE_SCOPES, 'backup.unschedule'),
      schema: {
        ...doc("Remove a cluster's backup schedule (the backups it took stay)", tags, true),
        params: S.NameParams,
        response: ok({ 204: Type.Null() }),
      },
    },
    async (req, reply) => {
      await b.deleteSchedule(principal(req), req.params.name);
      return reply.status(204).send(null);
    },
  );
}
