// The clusters page: every cluster the caller may see, with status, plan, version, nodes and health, refreshed every few seconds.
import type { Cluster } from '@anodyne/client/api';
import { ListPage, Status, healthSummary, type Column, type Ctx } from '../ui.js';

export function ClustersPage({ ctx }: { ctx: Ctx }) {
  const columns: Column<Cluster>[] = [
    { label: 'Name', cell: (c) => <a href={`#/clusters/${encodeURIComponent(c.name)}`}>{c.name}</a> },
    { label: 'Status', cell: (c) => <Status text={`${c.last_action.toLowerCase()} ${c.last_action_state}`} /> },
    { label: 'Plan', cell: (c) => c.plan_name },
    { label: 'Kubernetes', cell: (c) => c.kubernetes_version || '—' },
    {
      label: 'Nodes',
      cell: (c) =>
        `${c.kubernetes_master_ips.length} master${c.kubernetes_master_ips.length === 1 ? '' : 's'}, ${c.parameters.kubernetes_worker_instances} worker${c.parameters.kubernetes_worker_instances === 1 ? '' : 's'}`,
    },
    { label: 'Health', cell: (c) => healthSummary(c.health) },
    { label: 'Last action', cell: (c) => c.last_action_description },
    ...(ctx.admin ? [{ label: 'Owner', cell: (c: Cluster) => c.owner }] : []),
  ];
  return (
    <ListPage<Cluster>
      title="Clusters"
      caption="Clusters"
      load={() => ctx.api.clusters()}
      everyMs={5000}
      empty="No clusters yet: create one."
      columns={columns}
      actions={
        <a class="button" href="#/clusters/new">
          Create cluster
        </a>
      }
    />
  );
}
