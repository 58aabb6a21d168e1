// The image registry: its address and how to push, the caller's projects (stored bytes and quota), and their images.
import { formatBytes, type Image, type RegistryProject } from '@anodyne/client/api';
import { ErrorNote, Page, Table, useLoad, when, type Ctx } from '../ui.js';

const bytes = formatBytes;

export function ImagesPage({ ctx }: { ctx: Ctx }) {
  const info = useLoad(() => ctx.api.registryInfo(), []);
  const projects = useLoad(() => ctx.api.registryProjects(), []);
  const images = useLoad(() => ctx.api.images(), [], 15_000);
  const address = info.data?.address ?? '…';
  return (
    <Page title="Images">
      <ErrorNote error={info.error ?? projects.error ?? images.error} />
      {info.data ? (
        <p>
          The platform&apos;s registry is <code>{address}</code>. Your clusters pull from it with no pull secret. Push an OCI or{' '}
          <code>docker save</code> archive with{' '}
          <code>anodyne images push app.tar --name app:1{info.data.own_project ? '' : ' --project P'}</code> and run{' '}
          <code>{`${address}/${info.data.own_project ?? 'P'}/app:1`}</code>.
        </p>
      ) : null}
      <h2>Projects</h2>
      <Table<RegistryProject>
        caption="Projects"
        hideCaption
        rows={projects.data}
        empty="No projects."
        columns={[
          { label: 'Project', cell: (p) => p.name },
          { label: 'Owner', cell: (p) => p.owner ?? 'shared' },
          { label: 'Public', cell: (p) => (p.public ? 'yes' : 'no') },
          { label: 'Repositories', cell: (p) => p.repositories },
          { label: 'Stored', cell: (p) => `${bytes(p.used_bytes)} of ${p.quota_bytes === null ? 'no limit' : bytes(p.quota_bytes)}` },
          { label: 'Grants', cell: (p) => (p.grants ?? []).map((g) => `${g.subject} (${g.actions.join(', ')})`).join('; ') || '—' },
        ]}
      />
      <h2>Images</h2>
      <Table<Image>
        caption="Images"
        hideCaption
        rows={images.data}
        empty="No images yet."
        columns={[
          { label: 'Image', cell: (i) => `${address}/${i.repository}` },
          { label: 'Tags', cell: (i) => i.tags.join(', ') || 'untagged' },
          { label: 'Digest', cell: (i) => <code title={i.digest}>{i.digest.slice(0, 19)}…</code> },
          { label: 'Size', cell: (i) => bytes(i.size_bytes) },
          { label: 'Pushed', cell: (i) => `${when(i.pushed_at)} by ${i.pushed_by}` },
        ]}
      />
    </Page>
  );
}
