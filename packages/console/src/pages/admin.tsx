// Pages for admins only: users and groups, OAuth clients, network profiles and the audit log.
import { useState } from 'preact/hooks';
import type { AuditEntry, CreateUserRequest, NetworkProfile, OAuthClient, User } from '@anodyne/client/api';

type PlatformEvent = Awaited<ReturnType<Ctx['api']['events']>>[number];
import { Confirm, ErrorNote, ListPage, Page, Status, Table, useLoad, when, type Ctx } from '../ui.js';

type Group = NonNullable<CreateUserRequest['groups']>[number];
const GROUPS: Group[] = ['pks.clusters.admin', 'pks.clusters.admin.read', 'pks.clusters.manage'];

/** The groups (scopes) a user is in, as checkboxes. */
function GroupChecks({ groups, set }: { groups: Group[]; set: (g: Group[]) => void }) {
  return (
    <fieldset>
      <legend>Groups</legend>
      {GROUPS.map((g) => (
        <label class="check" key={g}>
          <input
            type="checkbox"
            checked={groups.includes(g)}
            onChange={(e) => set(e.currentTarget.checked ? [...groups, g] : groups.filter((x) => x !== g))}
          />
          {g}
        </label>
      ))}
    </fieldset>
  );
}

export function UsersPage({ ctx }: { ctx: Ctx }) {
  const users = useLoad(() => ctx.api.users(), []);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [groups, setGroups] = useState<Group[]>(['pks.clusters.manage']);
  const [error, setError] = useState<unknown>(undefined);
  const [created, setCreated] = useState('');
  const [editing, setEditing] = useState<User | undefined>(undefined);
  const [editGroups, setEditGroups] = useState<Group[]>([]);
  const [newPassword, setNewPassword] = useState('');
  const edit = (u: User) => {
    setEditing(u);
    setEditGroups(u.groups.filter((g): g is Group => (GROUPS as string[]).includes(g)));
    setNewPassword('');
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    setCreated('');
    try {
      const u = await ctx.api.createUser({ username, password, groups });
      setCreated(`User ${u.username} created.`);
      setUsername('');
      setPassword('');
      users.reload();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <Page title="Users">
      <ErrorNote error={users.error} />
      <Table<User>
        caption="Users"
        hideCaption
        rows={users.data}
        empty="No users."
        columns={[
          { label: 'User', cell: (u) => u.username },
          { label: 'From', cell: (u) => u.origin },
          { label: 'Groups', cell: (u) => u.groups.join(', ') || '—' },
          { label: 'Email', cell: (u) => u.email ?? '—' },
          { label: 'Locked', cell: (u) => (u.locked ? <Status text="locked (failed logins)" /> : 'no') },
          {
            label: 'Change',
            cell: (u) => (
              <button type="button" class="secondary" onClick={() => edit(u)} aria-label={`Change ${u.username}`}>
                Change
              </button>
            ),
          },
        ]}
      />
      {editing ? (
        <Confirm
          title={`Change ${editing.username}`}
          body={
            <>
              <GroupChecks groups={editGroups} set={setEditGroups} />
              {editing.origin === 'local' ? (
                <label>
                  New password (leave empty to keep it; a reset also clears a lockout)
                  <input
                    type="password"
                    value={newPassword}
                    onInput={(e) => setNewPassword(e.currentTarget.value)}
                    autoComplete="new-password"
                  />
                </label>
              ) : null}
            </>
          }
          confirmLabel="Save"
          onConfirm={async () => {
            await ctx.api.updateUser(editing.username, { groups: editGroups, ...(newPassword ? { password: newPassword } : {}) });
            users.reload();
          }}
          onClose={() => setEditing(undefined)}
        />
      ) : null}
      <h2>Add a user</h2>
      <form class="form" noValidate onSubmit={(e) => void submit(e)}>
        <label for="new-username">User name</label>
        <input id="new-username" value={username} onInput={(e) => setUsername(e.currentTarget.value)} autoComplete="off" />
        <label for="new-password">Password</label>
        <input
          id="new-password"
          type="password"
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
          autoComplete="new-password"
        />
        <GroupChecks groups={groups} set={setGroups} />
        <ErrorNote error={error} />
        {created ? <p role="status">{created}</p> : null}
        <div class="actions">
          <button type="submit">Add user</button>
        </div>
      </form>
    </Page>
  );
}

export function ClientsPage({ ctx }: { ctx: Ctx }) {
  return (
    <ListPage<OAuthClient>
      title="OAuth clients"
      caption="OAuth clients"
      load={() => ctx.api.clients()}
      empty="No clients."
      columns={[
        { label: 'Client', cell: (c) => c.client_id },
        { label: 'Grants', cell: (c) => c.grant_types.join(', ') },
        { label: 'Scopes', cell: (c) => c.scopes.join(', ') },
        { label: 'Redirect URIs', cell: (c) => c.redirect_uris.join(', ') || '—' },
        { label: 'Secret', cell: (c) => (c.confidential ? 'yes' : 'public client') },
      ]}
    />
  );
}

export function NetworkProfilesPage({ ctx }: { ctx: Ctx }) {
  return (
    <ListPage<NetworkProfile>
      title="Network profiles"
      caption="Network profiles"
      load={() => ctx.api.networkProfiles()}
      empty="No network profiles: clusters use the platform's default ranges."
      columns={[
        { label: 'Name', cell: (p) => p.name },
        { label: 'Description', cell: (p) => p.description },
        { label: 'Pod range', cell: (p) => p.pod_cidr },
        { label: 'Service range', cell: (p) => p.service_cidr },
        {
          label: 'New namespaces',
          cell: (p) => (p.default_deny_namespaces === null ? 'as the plan says' : p.default_deny_namespaces ? 'default deny' : 'open'),
        },
        { label: 'Segment pool', cell: (p) => p.segment_pool ?? 'the whole pool' },
        { label: 'Created', cell: (p) => when(p.created_at) },
      ]}
    />
  );
}

/** Alerts: expiring certificates, lost or unhealthy instances, meltdowns, failed tasks (the `/v1/events` feed), newest first. */
export function EventsPage({ ctx }: { ctx: Ctx }) {
  return (
    <ListPage<PlatformEvent>
      title="Alerts"
      caption="Alerts and platform events, newest first"
      showCaption
      load={async () => (await ctx.api.events()).reverse()}
      everyMs={10000}
      empty="Nothing to report."
      columns={[
        { label: 'When', cell: (e) => when(e.at) },
        { label: 'Kind', cell: (e) => e.kind.replace(/_/g, ' ') },
        { label: 'Target', cell: (e) => e.target },
        {
          label: 'Details',
          cell: (e) =>
            Object.entries(e.details)
              .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
              .join(', '),
        },
      ]}
    />
  );
}

export function AuditPage({ ctx }: { ctx: Ctx }) {
  return (
    <ListPage<AuditEntry>
      title="Audit log"
      caption="The newest 200 audit entries"
      showCaption
      load={() => ctx.api.audit({ limit: 200 })}
      everyMs={10000}
      empty="Nothing audited yet."
      columns={[
        { label: 'When', cell: (a) => when(a.at) },
        { label: 'Who', cell: (a) => a.actor },
        { label: 'Action', cell: (a) => a.action },
        { label: 'Target', cell: (a) => a.target },
        { label: 'Result', cell: (a) => <Status text={a.result} /> },
      ]}
    />
  );
}
