// One cluster: its record, VMs and their health, certificates, tasks and backups; how to connect, the kubeconfig, and resize, upgrade, back up and delete.
import { useState } from 'preact/hooks';
import type { ApiClient, Backup, Certificate, Cluster, Task, Vm } from '@anodyne/client/api';
import { Confirm, ErrorNote, Page, Status, Table, healthSummary, useLoad, when, type Ctx } from '../ui.js';

type Action = 'resize' | 'upgrade' | 'delete' | { restore: Backup } | undefined;

function daysLeft(iso: string | null): string {
  if (!iso) return '—';
  const d = Math.floor((Date.parse(iso) - Date.now()) / 86_400_000);
  return `${when(iso)} (${d} day${d === 1 ? '' : 's'})`;
}

/** The kubeconfig of a binding, offered as a file download. */
async function downloadKubeconfig(api: ApiClient, name: string): Promise<void> {
  const { kubeconfig } = await api.bind(name);
  const url = URL.createObjectURL(new Blob([kubeconfig], { type: 'application/yaml' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `${name}-kubeconfig.yaml`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function ClusterPage({ ctx, name }: { ctx: Ctx; name: string }) {
  const cluster = useLoad(() => ctx.api.cluster(name), [name], 5000);
  const vms = useLoad(() => ctx.api.vms(name), [name], 5000);
  const certs = useLoad(() => ctx.api.certificates(name), [name]);
  const tasks = useLoad(() => ctx.api.tasks({ cluster: name, limit: 20 }), [name], 5000);
  const backups = useLoad(() => ctx.api.backups(name), [name], 10000);
  const plans = useLoad(() => ctx.api.plans(), []);
  const [action, setAction] = useState<Action>(undefined);
  const [workers, setWorkers] = useState('');
  const [version, setVersion] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const c = cluster.data;
  const plan = plans.data?.find((p) => p.name === c?.plan_name);
  const newer = (plan?.kubernetes_versions ?? []).filter((v) => c && v !== c.kubernetes_version);
  const toTask = (t: { last_task_id: number | null } | Cluster) =>
    ctx.go(t.last_task_id !== null ? `#/tasks/${t.last_task_id}` : `#/clusters/${encodeURIComponent(name)}`);
  const origin = location.origin;
  return (
    <Page
      title={`Cluster ${name}`}
      actions={
        c ? (
          <>
            <button type="button" class="secondary" onClick={() => void downloadKubeconfig(ctx.api, name).catch(setError)}>
              Download kubeconfig
            </button>
            <button
              type="button"
              class="secondary"
              onClick={() =>
                void ctx.api.createBackup(name).then(
                  (b) => ctx.go(`#/tasks/${b.task.id}`),
                  (e: unknown) => setError(e),
                )
              }
            >
              Back up now
            </button>
            <button type="button" class="danger" onClick={() => setAction('delete')}>
              Delete
            </button>
          </>
        ) : null
      }
    >
      <ErrorNote error={cluster.error ?? error} />
      {c ? (
        <>
          <dl class="facts">
            <dt>Status</dt>
            <dd>
              <Status text={`${c.last_action.toLowerCase()} ${c.last_action_state}`} />
              {c.last_task_id !== null ? (
                <>
                  {' '}
                  <a href={`#/tasks/${c.last_task_id}`}>task {c.last_task_id}</a>
                </>
              ) : null}
            </dd>
            <dt>Last action</dt>
            <dd>{c.last_action_description}</dd>
            <dt>Plan</dt>
            <dd>{c.plan_name}</dd>
            <dt>Kubernetes</dt>
            <dd>{c.kubernetes_version || '—'}</dd>
            <dt>Owner</dt>
            <dd>{c.owner}</dd>
            <dt>API endpoint</dt>
            <dd>
              <code>
                https://{c.parameters.kubernetes_master_host}:{c.parameters.kubernetes_master_port}
              </code>
            </dd>
            <dt>Masters</dt>
            <dd>{c.kubernetes_master_ips.join(', ') || '—'}</dd>
            <dt>Workers</dt>
            <dd>{c.parameters.kubernetes_worker_instances}</dd>
            <dt>VM health</dt>
            <dd>{healthSummary(c.health)}</dd>
          </dl>

          <h2>Change it</h2>
          <div class="change">
            <form
              class="inline"
              noValidate
              onSubmit={(e) => {
                e.preventDefault();
                setAction('resize');
              }}
            >
              <label for="workers">Workers</label>
              <input
                id="workers"
                type="number"
                inputMode="numeric"
                value={workers}
                placeholder={String(c.parameters.kubernetes_worker_instances)}
                onInput={(e) => setWorkers(e.currentTarget.value)}
              />
              <button type="submit" disabled={workers === ''}>
                Resize
              </button>
            </form>
            <form
              class="inline"
              onSubmit={(e) => {
                e.preventDefault();
                setAction('upgrade');
              }}
            >
              <label for="version">Kubernetes version</label>
              <select id="version" value={version} onChange={(e) => setVersion(e.currentTarget.value)}>
                <option value="">choose…</option>
                {newer.map((v) => (
                  <option key={v} value={v}>
                    {v}
                  </option>
                ))}
              </select>
              <button type="submit" disabled={version === ''}>
                Upgrade
              </button>
            </form>
          </div>

          <h2>How to connect</h2>
          <p>With the CLI (it keeps your token fresh for kubectl):</p>
          <pre class="commands" aria-label="Commands to connect with the CLI and kubectl">
            {`anodyne login -a ${origin} -u ${ctx.username} --ca-cert platform-ca.pem
anodyne get-credentials ${name}
kubectl config use-context ${name}
kubectl get nodes`}
          </pre>
          <p>
            Or download the kubeconfig above and run <code>KUBECONFIG={name}-kubeconfig.yaml kubectl get nodes</code>: its credentials come
            from <code>anodyne get-token</code>, so log in with the CLI first.
          </p>
        </>
      ) : null}

      <h2>VMs</h2>
      <ErrorNote error={vms.error} />
      <Table<Vm>
        caption="VMs and their health"
        hideCaption
        rows={vms.data}
        empty="No VMs."
        columns={[
          { label: 'Instance', cell: (v) => v.instance },
          { label: 'Address', cell: (v) => v.ip ?? '—' },
          { label: 'State', cell: (v) => v.state },
          { label: 'Health', cell: (v) => <Status text={v.health} /> },
          { label: 'Why', cell: (v) => v.health_reason ?? '' },
          { label: 'Since', cell: (v) => when(v.health_since) },
        ]}
      />

      <h2>Tasks</h2>
      <Table<Task>
        caption="Tasks of this cluster"
        hideCaption
        rows={tasks.data}
        empty="No tasks."
        columns={[
          { label: 'Task', cell: (t) => <a href={`#/tasks/${t.id}`}>{t.id}</a> },
          { label: 'Type', cell: (t) => t.type },
          { label: 'State', cell: (t) => <Status text={t.state} /> },
          { label: 'Description', cell: (t) => t.description },
          { label: 'Started', cell: (t) => when(t.started_at) },
          { label: 'Finished', cell: (t) => when(t.finished_at) },
        ]}
      />

      <h2>Certificates</h2>
      <ErrorNote error={certs.error} />
      <Table<Certificate>
        caption="Certificates and when they expire"
        hideCaption
        rows={certs.data}
        empty="No certificates."
        columns={[
          { label: 'Name', cell: (x) => x.name },
          { label: 'Kind', cell: (x) => (x.is_ca ? 'CA' : 'leaf') },
          { label: 'Version', cell: (x) => x.version },
          { label: 'Expires', cell: (x) => daysLeft(x.expires_at) },
        ]}
      />

      <h2>Backups</h2>
      <Table<Backup>
        caption="Backups of this cluster"
        hideCaption
        rows={backups.data}
        empty="No backups."
        columns={[
          { label: 'Backup', cell: (b) => b.id },
          { label: 'State', cell: (b) => <Status text={b.state} /> },
          { label: 'Size', cell: (b) => `${(b.size_bytes / 1024 / 1024).toFixed(1)} MiB` },
          { label: 'Taken', cell: (b) => when(b.created_at) },
          { label: 'By schedule', cell: (b) => (b.scheduled ? 'yes' : 'no') },
          {
            label: 'Restore',
            cell: (b) =>
              b.state === 'done' ? (
                <button type="button" class="secondary" onClick={() => setAction({ restore: b })} aria-label={`Restore backup ${b.id}`}>
                  Restore
                </button>
              ) : (
                ''
              ),
          },
        ]}
      />

      {action === 'resize' && c ? (
        <Confirm
          title={`Resize ${name}?`}
          body={
            <p>
              From {c.parameters.kubernetes_worker_instances} to {workers} workers. Workers that go are drained first; masters are not
              touched.
            </p>
          }
          confirmLabel="Resize"
          onConfirm={async () => toTask(await ctx.api.updateCluster(name, { kubernetes_worker_instances: Number(workers) }))}
          onClose={() => setAction(undefined)}
        />
      ) : null}
      {action === 'upgrade' && c ? (
        <Confirm
          title={`Upgrade ${name}?`}
          body={
            <p>
              From Kubernetes {c.kubernetes_version} to {version}: masters one at a time, then workers with canaries, each drained first.
            </p>
          }
          confirmLabel="Upgrade"
          onConfirm={async () => toTask(await ctx.api.upgradeCluster(name, { kubernetes_version: version }))}
          onClose={() => setAction(undefined)}
        />
      ) : null}
      {typeof action === 'object' && c ? (
        <Confirm
          title={`Restore ${name} from ${action.restore.id}?`}
          body={
            <p>
              The cluster's etcd goes back to the backup of {when(action.restore.created_at)}: its API servers stop while every member is
              restored, and objects written since then are gone.
            </p>
          }
          confirmLabel="Restore"
          danger
          typeToConfirm={name}
          onConfirm={async () => ctx.go(`#/tasks/${(await ctx.api.restoreBackup(action.restore.id)).id}`)}
          onClose={() => setAction(undefined)}
        />
      ) : null}
      {action === 'delete' && c ? (
        <Confirm
          title={`Delete ${name}?`}
          body={<p>Its VMs, disks and data go, and kubeconfigs for it stop working. This cannot be undone.</p>}
          confirmLabel="Delete cluster"
          danger
          typeToConfirm={name}
          onConfirm={async () => toTask(await ctx.api.deleteCluster(name))}
          onClose={() => setAction(undefined)}
        />
      ) : null}
    </Page>
  );
}
