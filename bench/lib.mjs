// Helpers shared by the benchmarks.
import { randomUUID } from 'node:crypto';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { SCOPES } from '@anodyne/identity';
import { startTestPlatform, https } from '@anodyne/platform/testing';

/** Median (lower middle for an even count), min and max. */
export const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor((s.length - 1) / 2)], min: s[0], max: s[s.length - 1] };
};
export const sec = (ms) => (ms / 1000).toFixed(1);
export const mib = (b) => (b / 2 ** 20).toFixed(0);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls until `probe` returns a value (not undefined), or fails after `ms`. */
export async function until(what, ms, probe, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${ms / 1000} s`);
    await sleep(every);
  }
}

/**
 * performance.now() at the moment `count` Nodes (those `only` accepts, by name) are Ready, seen through a watch of
 * the Nodes that this process holds (the event as it arrives: no kubectl started per look, no polling interval).
 * The API may not answer yet: the watch is asked for again every 50 ms until `timeoutMs` has passed.
 */
export function nodesReadyAt(kubeconfig, count, timeoutMs, only = () => true) {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfig);
  const watch = new Watch(kc);
  const deadline = performance.now() + timeoutMs;
  const ready = new Map();
  return new Promise((resolve, reject) => {
    let settled = false;
    let current = null;
    const finish = (fn) => {
      settled = true;
      current?.abort();
      fn();
    };
    const start = async () => {
      if (settled) return;
      if (performance.now() > deadline) return finish(() => reject(new Error(`${count} Nodes Ready: not after ${timeoutMs / 1000} s`)));
      const again = () => setTimeout(() => void start(), 50);
      try {
        current = await watch.watch(
          '/api/v1/nodes',
          {},
          (type, node) => {
            const name = node?.metadata?.name;
            if (!name || !only(name)) return;
            const cond = (node.status?.conditions ?? []).find((c) => c.type === 'Ready');
            ready.set(name, type !== 'DELETED' && cond?.status === 'True');
            const at = performance.now();
            if (!settled && [...ready.values()].filter(Boolean).length >= count) finish(() => resolve(at));
          },
          () => {
            if (!settled) again();
          },
        );
      } catch {
        again();
      }
    };
    void start();
  });
}

/** Runs `work` over `items`, at most `limit` at a time. */
export async function pool(items, limit, work) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]);
    }),
  );
}

/**
 * A whole platform on its own network and port with an admin user: `call` the API as that admin,
 * `waitTask` until a task ends (`timeoutMs`). `tp.stop()` takes everything away.
 */
export async function benchPlatform(name, network, port, timeoutMs = 600_000, env = {}) {
  const tp = await startTestPlatform(name, network, port, env);
  const p = tp.platform;
  await p.identity.createUser({ username: 'bench', password: 'bench-password', groups: [SCOPES.admin] });
  const login = async () =>
    (await p.identity.token({ grant_type: 'password', username: 'bench', password: 'bench-password' })).access_token;
  let token = await login();
  // A run can outlive an access token (the density run takes half an hour): a 401 logs in again, once per call.
  const call = async (method, path, body) => {
    const ask = () => https(p.url, p.caPem, method, path, { token, ...(body ? { body: JSON.stringify(body) } : {}) });
    const r = await ask();
    if (r.status !== 401) return r;
    token = await login();
    return ask();
  };
  const waitTask = (id) =>
    until(`task ${id}`, timeoutMs, async () => {
      const t = (await call('GET', `/v1/tasks/${id}`)).body;
      return ['done', 'error', 'cancelled'].includes(t.state) ? t : undefined;
    });
  return { tp, call, waitTask };
}

/**
 * Writes `count` cluster records straight into the store (rows only: no VMs, no tasks), named
 * `<prefix>-0000`… and owned by 20 teams in turn, 100 rows per insert.
 */
export async function storeClusterRows(store, count, prefix) {
  const now = new Date().toISOString();
  for (let i = 0; i < count; i += 100) {
    const rows = Array.from({ length: Math.min(100, count - i) }, (_, k) => ({
      name: `${prefix}-${String(i + k).padStart(4, '0')}`,
      uuid: randomUUID(),
      plan: 'small',
      owner: `team-${(i + k) % 20}`,
      parameters: JSON.stringify({ workers: 1 }),
      last_action: 'CREATE',
      last_task_id: null,
      network_profile: null,
      created_at: now,
      updated_at: now,
    }));
    await store.db.insertInto('clusters').values(rows).execute();
  }
}
