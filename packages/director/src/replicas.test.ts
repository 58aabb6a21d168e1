// Replicas on one database (SQLite and a real PostgreSQL): one leader by lease and term, takeover when it dies, tasks of dead replicas ended once.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AnodyneError, ManualClock, silentLogger } from '@anodyne/common';
import { openStore, type Store } from '@anodyne/store';
import { startPostgres, type TestPostgres } from '@anodyne/store/testing';
import { Replicas, type ReplicasOptions } from './replicas.js';
import { TaskStore } from './tasks.js';

const LEASE = 15_000;

function suite(name: string, setup: () => Promise<{ open: () => Promise<Store>; teardown: () => Promise<void> }>): void {
  describe(`platform replicas on ${name}`, () => {
    let env: Awaited<ReturnType<typeof setup>>;
    before(async () => (env = await setup()));
    after(() => env.teardown());

    /** Replicas of one database on one clock; `dead` holds the pids that no longer run on this host. */
    const world = async () => {
      const store = await env.open();
      const clock = new ManualClock(new Date('2026-12-04T12:00:00Z'));
      const dead = new Set<number>();
      let pid = 1000;
      const replica = (o: Partial<ReplicasOptions> = {}) =>
        new Replicas({
          store,
          clock,
          logger: silentLogger(),
          url: 'https://127.0.0.1:0',
          leaseMs: LEASE,
          host: 'host-a',
          pid: ++pid,
          pidAlive: (p) => !dead.has(p),
          ...o,
        });
      return { store, clock, dead, replica };
    };

    it('the first replica leads in term 1, the others follow; a clean stop hands the lease on at once, in a new term', async () => {
      const { store, replica } = await world();
      try {
        const [a, b, c] = [replica(), replica(), replica()];
        const changes: string[] = [];
        b.onLeadership((leading, term) => changes.push(`b ${leading ? 'leads' : 'stops leading'} in ${term}`));
        await a.register();
        await b.register();
        await c.register();
        assert.equal(a.isLeader(), true);
        assert.equal(a.term(), 1);
        assert.equal(b.isLeader(), false);
        assert.equal(c.isLeader(), false);
        const v = await b.views();
        assert.deepEqual(
          v.replicas.filter((r) => r.leader).map((r) => r.id),
          [a.id],
        );
        assert.equal(v.replicas.length, 3);

        // Heartbeats keep it where it is.
        await Promise.all([a.heartbeat(), b.heartbeat(), c.heartbeat()]);
        assert.equal(a.term(), 1);
        assert.equal(b.isLeader() || c.isLeader(), false);

        await a.stop();
        await b.heartbeat();
        await c.heartbeat();
        assert.equal(b.term(), 2, 'the next to ask takes it, in a new term');
        assert.equal(c.isLeader(), false);
        assert.deepEqual(changes, ['b leads in 2']);
        assert.deepEqual((await b.alive()).sort(), [b.id, c.id].sort(), 'a replica that stopped is gone from the list');
      } finally {
        await store.close();
      }
    });

    it('a leader killed on this host is replaced at once; on another host, once its lease ends; a paused leader stops leading by its own clock', async () => {
      const { store, clock, dead, replica } = await world();
      try {
        const a = replica();
        const b = replica();
        await a.register();
        await b.register();
        assert.equal(a.term(), 1);

        // kill -9 of a (same host): its process is gone, so b need not wait for the lease.
        dead.add(a.pid);
        await b.heartbeat();
        assert.equal(b.term(), 2);

        // A replica on another machine that stops answering: its lease runs out first.
        const far = replica({ host: 'host-b' });
        await far.register();
        await b.stop();
        await far.heartbeat();
        assert.equal(far.term(), 3);
        const c = replica();
        await c.register();
        await clock.advance(LEASE - 1000);
        await c.heartbeat();
        assert.equal(c.isLeader(), false, 'not before the lease ends');
        // far is paused (no heartbeat) past its lease: by its own clock it no longer leads, and c takes over.
        await clock.advance(2000);
        assert.equal(far.isLeader(), false);
        await c.heartbeat();
        assert.equal(c.term(), 4);
        // far wakes up: whatever it would start as leader is fenced off by the store.
        await assert.rejects(far.fence(3), (err: AnodyneError) => err.code === 'ANODYNE_E_NOT_LEADER');
        await c.fence(4);
        await far.heartbeat();
        assert.equal(far.isLeader(), false, 'it does not take back a lease that is held');
        assert.equal(c.term(), 4);
      } finally {
        await store.close();
      }
    });

    it('replicas racing for a free lease: exactly one wins', async () => {
      const { store, clock, replica } = await world();
      try {
        const all = Array.from({ length: 8 }, () => replica());
        await Promise.all(all.map((r) => r.register()));
        assert.equal(all.filter((r) => r.isLeader()).length, 1);
        // Everyone's lease ends (a pause of the whole machine); all ask again at once.
        await clock.advance(LEASE + 1);
        await Promise.all(all.map((r) => r.heartbeat()));
        const leaders = all.filter((r) => r.isLeader());
        assert.equal(leaders.length, 1, `leaders: ${leaders.map((r) => r.id).join(', ')}`);
        assert.equal((await all[0]!.leader())?.holder, leaders[0]!.id);
      } finally {
        await store.close();
      }
    });

    it("the tasks of a replica that died end once, with a code; a live replica's tasks run on", async () => {
      const { store, dead, replica, clock } = await world();
      try {
        const a = replica();
        const b = replica();
        await a.register();
        await b.register();
        const tasksA = new TaskStore(store, clock, silentLogger(), a.id);
        const tasksB = new TaskStore(store, clock, silentLogger(), b.id);
        const ta = await tasksA.create('deploy', 'cluster-x', 'deploy cluster-x', 'alice');
        await tasksA.start(ta.id);
        const tb = await tasksB.create('deploy', 'cluster-y', 'deploy cluster-y', 'bob');
        await tasksB.start(tb.id);

        // While both live, nothing ends.
        assert.deepEqual(await tasksB.takeOver(await b.alive()), { ended: [], queued: [] });
        dead.add(a.pid);
        // Two replicas ending a's tasks at once: each task ends once.
        const [x, y] = await Promise.all([tasksB.takeOver(await b.alive()), tasksB.takeOver(await b.alive())]);
        assert.deepEqual(
          [...x.ended, ...y.ended].map((t) => t.id),
          [ta.id],
        );
        assert.deepEqual([...x.queued, ...y.queued], [], 'a task without its input cannot run elsewhere');
        const ended = await tasksB.get(ta.id);
        assert.equal(ended.state, 'error');
        assert.equal(ended.error?.code, 'ANODYNE_E_REPLICA_LOST');
        assert.equal((await tasksB.events(ta.id)).filter((e) => e.stage === 'Recovering').length, 1);
        assert.equal((await tasksB.get(tb.id)).state, 'processing');
        // Then the gone replica's row goes too.
        assert.equal(await b.forgetGone(await b.alive()), 1);
        assert.deepEqual(
          (await store.db.selectFrom('platform_replicas').select('id').execute()).map((r) => r.id),
          [b.id],
        );
        // Its deployment's lock went with it: a new change to cluster-x may start.
        await tasksB.create('deploy', 'cluster-x', 'deploy cluster-x again', 'alice');
        await assert.rejects(
          tasksB.create('deploy', 'cluster-y', 'deploy cluster-y again', 'bob'),
          (err: AnodyneError) => err.code === 'ANODYNE_E_DEPLOYMENT_LOCKED',
        );
      } finally {
        await store.close();
      }
    });

    it("a dead replica's resumable tasks are queued once, each claimed by one replica, its lock kept; the old runner is fenced off", async () => {
      const { store, dead, replica, clock } = await world();
      try {
        const [a, b, c] = [replica(), replica(), replica()];
        for (const r of [a, b, c]) await r.register();
        const [tasksA, tasksB, tasksC] = [a, b, c].map((r) => new TaskStore(store, clock, silentLogger(), r.id));
        const made = [];
        for (let i = 0; i < 6; i++) {
          const t = await tasksA!.create('deploy', `cluster-${i}`, `deploy cluster-${i}`, 'alice', { kind: 'deploy', n: i });
          await tasksA!.start(t.id);
          made.push(t);
        }
        const cancelled = await tasksA!.create('deploy', 'cluster-c', 'deploy cluster-c', 'alice', { kind: 'deploy' });
        await tasksA!.start(cancelled.id);
        await tasksA!.requestCancel(cancelled.id);
        const woken: string[] = [];
        const stopB = tasksB!.onQueued(() => woken.push('b'));
        dead.add(a.pid);
        const [x, y] = await Promise.all([tasksB!.takeOver(await b.alive()), tasksC!.takeOver(await c.alive())]);
        assert.deepEqual(
          [...x.queued, ...y.queued].map((t) => t.id).sort((p, q) => p - q),
          made.map((t) => t.id),
          'each queued once',
        );
        assert.deepEqual(
          [...x.ended, ...y.ended].map((t) => t.id),
          [cancelled.id],
          'a task being cancelled is ended, not resumed',
        );
        assert.equal((await tasksB!.get(cancelled.id)).state, 'cancelled', 'and ends cancelled');
        for (const t of made) {
          assert.equal((await tasksB!.get(t.id)).state, 'queued');
          // Its deployment stays locked while it waits.
          await assert.rejects(
            tasksB!.create('deploy', t.deployment, 'another change', 'bob'),
            (err: AnodyneError) => err.code === 'ANODYNE_E_DEPLOYMENT_LOCKED',
          );
        }
        // Two replicas claiming at once: every task is taken by exactly one of them, with its input.
        const claims = async (ts: TaskStore) => {
          const got: { id: number; runner: string | null; n: unknown }[] = [];
          for (;;) {
            const claimed = await ts.claim();
            if (!claimed) return got;
            got.push({ id: claimed.task.id, runner: ts.runnerId, n: (claimed.input as { n: number }).n });
          }
        };
        const [byB, byC] = await Promise.all([claims(tasksB!), claims(tasksC!)]);
        const all = [...byB, ...byC].sort((p, q) => p.id - q.id);
        assert.deepEqual(
          all.map((t) => t.id),
          made.map((t) => t.id),
        );
        assert.deepEqual(
          all.map((t) => t.n),
          [0, 1, 2, 3, 4, 5],
        );
        for (const t of all) {
          const row = await store.db.selectFrom('tasks').select(['state', 'runner']).where('id', '=', t.id).executeTakeFirstOrThrow();
          assert.deepEqual(row, { state: 'processing', runner: t.runner });
        }
        assert.equal(await tasksB!.claim(), undefined, 'nothing is left to claim');
        // The replica thought dead comes back: it learns that its task runs elsewhere, and cannot end it.
        const first = made[0]!.id;
        assert.equal(await tasksA!.control(first), 'lost');
        assert.equal(await tasksA!.finish(first, 'error', { error: new Error('late') }), false);
        const owner = all.find((t) => t.id === first)!.runner === b.id ? tasksB! : tasksC!;
        assert.equal(await owner.control(first), 'run');
        assert.equal(await owner.finish(first, 'done', { result: {} }), true);
        assert.equal((await owner.get(first)).state, 'done');
        await tasksB!.create('deploy', made[0]!.deployment, 'a new change after it', 'bob');
        await new Promise((r) => setTimeout(r, 200));
        assert.ok(woken.length >= 1, 'replicas were told that tasks wait');
        stopB();
      } finally {
        await store.close();
      }
    });
  });
}

suite('SQLite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-replicas-'));
  let n = 0;
  return Promise.resolve({
    open: () => openStore({ driver: 'sqlite', path: join(dir, `r${++n}.db`) }),
    teardown: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })),
  });
});

suite('PostgreSQL', async () => {
  const server: TestPostgres = await startPostgres();
  return {
    open: async () => openStore({ driver: 'postgres', url: await server.createDatabase() }),
    teardown: () => server.stop(),
  };
});
