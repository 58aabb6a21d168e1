// Change-record orders of a non-leader replica reach the leader through the store's notices (SQLite and a real PostgreSQL).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger, ManualClock } from '@anodyne/common';
import { ChangeRecorder, type RecorderOrder } from '@anodyne/clusters';
import { openStore, type Store } from '@anodyne/store';
import { startPostgres } from '@anodyne/store/testing';
import { recorderRoute } from './recorder-route.js';

async function orders(leaderStore: Store, followerStore: Store): Promise<void> {
  const applied: RecorderOrder[] = [];
  const leader = recorderRoute({ signals: leaderStore.signals, leads: () => true, logger: silentLogger() });
  const follower = recorderRoute({ signals: followerStore.signals, leads: () => false, logger: silentLogger(), waitMs: 20_000 });
  const stop = leader.serve(async (o) => {
    await new Promise((r) => setTimeout(r, 50));
    applied.push(o);
  });
  // A follower's own serve ignores orders (it does not lead).
  const ignored: RecorderOrder[] = [];
  const stopIgnored = follower.serve((o) => Promise.resolve(void ignored.push(o)));
  try {
    // The listening connections open at their first follower (PostgreSQL): give them a moment.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(leader.route.here(), true);
    assert.equal(follower.route.here(), false);
    await follower.route.send({ op: 'start', cluster: 'c1', from: 42 });
    assert.deepEqual(applied, [{ op: 'start', cluster: 'c1', from: 42 }], 'carried out before send resolved');
    await follower.route.send({ op: 'flush', cluster: 'c1' });
    await follower.route.send({ op: 'stop', cluster: 'c1' });
    assert.deepEqual(
      applied.map((o) => o.op),
      ['start', 'flush', 'stop'],
    );
    assert.deepEqual(ignored, []);
  } finally {
    stop();
    stopIgnored();
    leader.close();
    follower.close();
  }
  // No leader serves: the order is not confirmed, and the sender goes on after its wait.
  const alone = recorderRoute({ signals: followerStore.signals, leads: () => false, logger: silentLogger(), waitMs: 300 });
  const t0 = Date.now();
  await alone.route.send({ op: 'flush', cluster: 'c1' });
  assert.ok(Date.now() - t0 >= 290);
  alone.close();
}

describe('change-record orders go to the leader', () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-route-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('on SQLite (one process)', async () => {
    const store = await openStore({ driver: 'sqlite', path: join(dir, 'a.db') });
    try {
      await orders(store, store);
    } finally {
      await store.close();
    }
  });

  it('on PostgreSQL, from one replica to another', async () => {
    const pg = await startPostgres();
    const url = await pg.createDatabase();
    const [a, b] = [await openStore({ driver: 'postgres', url }), await openStore({ driver: 'postgres', url })];
    try {
      await orders(a, b);
    } finally {
      await a.close();
      await b.close();
      await pg.stop();
    }
  });

  it('a recorder that does not lead records nothing itself: it sends its orders', async () => {
    const sent: RecorderOrder[] = [];
    const recorder = new ChangeRecorder({
      artifacts: undefined as never,
      keys: undefined as never,
      access: () => Promise.reject(new Error('not here')),
      clock: new ManualClock(new Date()),
      logger: silentLogger(),
      route: { here: () => false, send: (o) => Promise.resolve(void sent.push(o)) },
    });
    try {
      await recorder.start('c1', 7);
      await recorder.flushNow('c1');
      await recorder.stop('c1');
      assert.equal(recorder.recording('c1'), false);
      assert.deepEqual(sent, [
        { op: 'start', cluster: 'c1', from: 7 },
        { op: 'flush', cluster: 'c1' },
        { op: 'stop', cluster: 'c1' },
      ]);
    } finally {
      await recorder.close();
    }
  });
});
