// Creating a cluster: plan, Kubernetes version, workers and network profile; the API checks the input and its words are shown.
import { useState } from 'preact/hooks';
import { ErrorNote, Page, useLoad, type Ctx } from '../ui.js';

export function CreateClusterPage({ ctx }: { ctx: Ctx }) {
  const plans = useLoad(() => ctx.api.plans(), []);
  const profiles = useLoad(() => ctx.api.networkProfiles().catch(() => []), []);
  const [name, setName] = useState('');
  const [planName, setPlanName] = useState('');
  const [version, setVersion] = useState('');
  const [workers, setWorkers] = useState('');
  const [profile, setProfile] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const plan = plans.data?.find((p) => p.name === (planName || plans.data?.[0]?.name));
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const c = await ctx.api.createCluster({
        name,
        plan_name: plan?.name ?? planName,
        ...(version ? { kubernetes_version: version } : {}),
        ...(profile ? { network_profile_name: profile } : {}),
        ...(workers !== '' ? { parameters: { kubernetes_worker_instances: Number(workers) } } : {}),
      });
      ctx.go(c.last_task_id !== null ? `#/tasks/${c.last_task_id}` : `#/clusters/${encodeURIComponent(c.name)}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <Page title="Create a cluster">
      <ErrorNote error={plans.error} />
      {/* noValidate: the API checks the input, and its messages are the ones shown (the same as the CLI's). */}
      <form class="form" noValidate onSubmit={(e) => void submit(e)}>
        <label for="name">Name</label>
        <input id="name" value={name} onInput={(e) => setName(e.currentTarget.value)} aria-describedby="name-help" autoComplete="off" />
        <p id="name-help" class="help">
          Lower-case letters, digits and dashes; it names the cluster's kubectl context.
        </p>
        <label for="plan">Plan</label>
        <select id="plan" value={plan?.name ?? ''} onChange={(e) => setPlanName(e.currentTarget.value)}>
          {(plans.data ?? []).map((p) => (
            <option key={p.name} value={p.name}>
              {p.name}: {p.description}
            </option>
          ))}
        </select>
        <label for="version">Kubernetes version</label>
        <select id="version" value={version} onChange={(e) => setVersion(e.currentTarget.value)}>
          <option value="">newest the plan offers{plan?.kubernetes_versions[0] ? ` (${plan.kubernetes_versions[0]})` : ''}</option>
          {(plan?.kubernetes_versions ?? []).map((v) => (
            <option key={v} value={v}>
              {v}
            </option>
          ))}
        </select>
        <label for="workers">Workers</label>
        <input
          id="workers"
          type="number"
          inputMode="numeric"
          value={workers}
          placeholder={plan ? String(plan.default_workers) : ''}
          onInput={(e) => setWorkers(e.currentTarget.value)}
          aria-describedby="workers-help"
        />
        <p id="workers-help" class="help">
          {plan ? `Default ${plan.default_workers}, at most ${plan.max_workers}.` : ''}
        </p>
        <label for="profile">Network profile</label>
        <select id="profile" value={profile} onChange={(e) => setProfile(e.currentTarget.value)}>
          <option value="">the platform's default</option>
          {(profiles.data ?? []).map((p) => (
            <option key={p.name} value={p.name}>
              {p.name} ({p.pod_cidr})
            </option>
          ))}
        </select>
        <ErrorNote error={error} />
        <div class="actions">
          <a class="button secondary" href="#/clusters">
            Cancel
          </a>
          <button type="submit" disabled={busy}>
            {busy ? 'Creating…' : 'Create cluster'}
          </button>
        </div>
      </form>
    </Page>
  );
}
