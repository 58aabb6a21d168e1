// Plans (what a cluster may be) and the caller's quota and usage; admins may look up anyone's.
import { useState } from 'preact/hooks';
import type { Plan } from '@anodyne/client/api';
import { ErrorNote, ListPage, Page, useLoad, type Ctx } from '../ui.js';

export function PlansPage({ ctx }: { ctx: Ctx }) {
  return (
    <ListPage<Plan>
      title="Plans"
      caption="Plans"
      load={() => ctx.api.plans()}
      empty="No plans."
      columns={[
        { label: 'Name', cell: (p) => p.name },
        { label: 'Description', cell: (p) => p.description },
        { label: 'Masters', cell: (p) => p.masters },
        { label: 'Workers', cell: (p) => `${p.default_workers} (at most ${p.max_workers})` },
        { label: 'VM types', cell: (p) => `${p.master_vm_type} / ${p.worker_vm_type}` },
        { label: 'Kubernetes', cell: (p) => p.kubernetes_versions.join(', ') },
        { label: 'New namespaces', cell: (p) => (p.default_deny_namespaces ? 'default deny' : 'open') },
        {
          label: 'Updates',
          cell: (p) =>
            `${p.update.canaries} canar${p.update.canaries === 1 ? 'y' : 'ies'}, ${p.update.max_in_flight} at a time, drain ≤ ${p.update.drain_timeout_seconds} s`,
        },
      ]}
    />
  );
}

export function QuotasPage({ ctx }: { ctx: Ctx }) {
  const [owner, setOwner] = useState(ctx.username);
  const [asked, setAsked] = useState(ctx.username);
  const quota = useLoad(() => ctx.api.quota(asked), [asked]);
  const usage = useLoad(() => ctx.api.usage(asked), [asked]);
  return (
    <Page title="Quotas and usage">
      {ctx.admin ? (
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            setAsked(owner);
          }}
        >
          <label for="owner">Owner</label>
          <input id="owner" value={owner} onInput={(e) => setOwner(e.currentTarget.value)} />
          <button type="submit">Show</button>
        </form>
      ) : null}
      <ErrorNote error={quota.error ?? usage.error} />
      {quota.data && usage.data ? (
        <dl class="facts">
          <dt>Owner</dt>
          <dd>{asked}</dd>
          <dt>Clusters</dt>
          <dd>
            {usage.data.clusters} of {quota.data.max_clusters}
          </dd>
          <dt>Workers</dt>
          <dd>
            {usage.data.workers} of {quota.data.max_workers}
          </dd>
        </dl>
      ) : null}
    </Page>
  );
}
