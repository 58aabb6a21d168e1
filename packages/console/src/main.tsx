// The console's door: signs in (or resumes the session), keeps the access token fresh, and routes #/… to its pages.
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { ApiClient, fetchTransport, type TokenSet } from '@anodyne/client/api';
import { refresh, resume, signIn, signOut } from './auth.js';
import { ErrorNote, type Ctx } from './ui.js';
import { ClustersPage } from './pages/clusters.js';
import { ClusterPage } from './pages/cluster.js';
import { CreateClusterPage } from './pages/create.js';
import { TaskPage } from './pages/task.js';
import { PlansPage, QuotasPage } from './pages/plans.js';
import { ImagesPage } from './pages/images.js';
import { AuditPage, ClientsPage, EventsPage, NetworkProfilesPage, UsersPage } from './pages/admin.js';

const ADMIN = ['pks.clusters.admin', 'pks.clusters.admin.read'];
const transport = fetchTransport();

function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/clusters');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/clusters');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

interface Signed {
  tokens: TokenSet;
  username: string;
}

function Route({ ctx, hash }: { ctx: Ctx; hash: string }) {
  const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const [head, arg] = parts;
  if (head === 'clusters' && arg === 'new') return <CreateClusterPage ctx={ctx} />;
  if (head === 'clusters' && arg) return <ClusterPage ctx={ctx} name={arg} />;
  if (head === 'tasks' && arg) return <TaskPage ctx={ctx} id={arg} />;
  if (head === 'plans') return <PlansPage ctx={ctx} />;
  if (head === 'quotas') return <QuotasPage ctx={ctx} />;
  if (head === 'images') return <ImagesPage ctx={ctx} />;
  if (ctx.admin && head === 'users') return <UsersPage ctx={ctx} />;
  if (ctx.admin && head === 'clients') return <ClientsPage ctx={ctx} />;
  if (ctx.admin && head === 'network-profiles') return <NetworkProfilesPage ctx={ctx} />;
  if (ctx.admin && head === 'audit') return <AuditPage ctx={ctx} />;
  if (ctx.admin && head === 'alerts') return <EventsPage ctx={ctx} />;
  if (!head || head === 'clusters') return <ClustersPage ctx={ctx} />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page {hash} here. <a href="#/clusters">Back to the clusters</a>
      </p>
    </section>
  );
}

function SignedOut({ error }: { error: unknown }) {
  return (
    <main id="main" class="signed-out">
      <h1>Anodyne</h1>
      <p>Kubernetes clusters as a service. Sign in with your Anodyne account.</p>
      <ErrorNote error={error} />
      <button type="button" onClick={() => void signIn(location.hash || '#/clusters')}>
        Sign in
      </button>
    </main>
  );
}

function App() {
  const [signed, setSigned] = useState<Signed | null | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const hash = useHash();
  const adopt = async (t: TokenSet) => {
    const info = await new ApiClient(location.origin, transport, t.access_token).userinfo();
    setSigned({ tokens: t, username: typeof info['user_name'] === 'string' ? info['user_name'] : '' });
  };
  useEffect(() => {
    resume().then(
      (t) => (t ? adopt(t) : setSigned(null)),
      (e: unknown) => {
        setError(e);
        setSigned(null);
      },
    );
  }, []);
  // A fresh access token a minute before this one expires, through the refresh cookie.
  useEffect(() => {
    if (!signed) return;
    const timer = setTimeout(
      () =>
        void refresh().then(
          (t) => setSigned((s) => (s ? { ...s, tokens: t } : s)),
          () => setSigned(null),
        ),
      Math.max(5_000, (signed.tokens.expires_in - 60) * 1000),
    );
    return () => clearTimeout(timer);
  }, [signed?.tokens.access_token]);
  const ctx = useMemo<Ctx | undefined>(() => {
    if (!signed) return undefined;
    const scopes = signed.tokens.scope.split(' ');
    return {
      api: new ApiClient(location.origin, transport, signed.tokens.access_token),
      username: signed.username,
      admin: scopes.some((s) => ADMIN.includes(s)),
      go: (h: string) => {
        location.hash = h;
      },
    };
  }, [signed]);
  if (signed === undefined) return <p aria-busy="true">Loading…</p>;
  if (!ctx) return <SignedOut error={error} />;
  const link = (h: string, label: string) => (
    <li>
      <a href={h} aria-current={hash === h || hash.startsWith(`${h}/`) ? 'page' : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <>
      <a
        class="skip"
        href="#main"
        onClick={(e) => {
          e.preventDefault();
          document.getElementById('main')?.focus();
        }}
      >
        Skip to content
      </a>
      <header>
        <span class="brand">Anodyne</span>
        <nav aria-label="Main">
          <ul>
            {link('#/clusters', 'Clusters')}
            {link('#/plans', 'Plans')}
            {link('#/images', 'Images')}
            {link('#/quotas', 'Quotas')}
            {ctx.admin ? (
              <>
                {link('#/users', 'Users')}
                {link('#/clients', 'OAuth clients')}
                {link('#/network-profiles', 'Network profiles')}
                {link('#/audit', 'Audit log')}
                {link('#/alerts', 'Alerts')}
              </>
            ) : null}
          </ul>
        </nav>
        <span class="who">
          Signed in as <strong>{ctx.username}</strong>
          <button
            type="button"
            class="secondary"
            onClick={() =>
              void signOut()
                .catch(() => undefined)
                .then(() => setSigned(null))
            }
          >
            Sign out
          </button>
        </span>
      </header>
      <main id="main" tabIndex={-1}>
        <Route ctx={ctx} hash={hash} />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
