// Instance hooks of masters: a master stops only while the other etcd members are healthy, and the rollout goes on once all are.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AnodyneError, ManualClock, silentLogger } from '@anodyne/common';
import { NodeHooks, type EtcdMember } from './nodes.js';
import type { KubeClient } from './kube.js';

const members = (...states: boolean[]): EtcdMember[] =>
  states.map((healthy, i) => ({ instance: `master/${i}`, healthy, ...(healthy ? {} : { reason: 'starting' }) }));

function hooks(clock: ManualClock, answers: EtcdMember[][]) {
  const asked: string[] = [];
  let n = 0;
  const h = new NodeHooks({
    clock,
    logger: silentLogger(),
    endpoint: () => Promise.reject(new Error('masters never ask for the cluster API')),
    etcdMembers: (deployment) => {
      asked.push(deployment);
      return Promise.resolve(answers[Math.min(n++, answers.length - 1)]!);
    },
    etcdWaitMs: 10_000,
  });
  return { h, asked };
}

/** Moves the clock on until the promise settles (its sleeps are set after awaits the test cannot see). */
async function drive<T>(clock: ManualClock, p: Promise<T>): Promise<T> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 200 && !settled; i++) await clock.advance(250);
  return p;
}

describe('etcd member health around a master', () => {
  it('before a master stops, only the other members count; the note says so', async () => {
    const clock = new ManualClock();
    // master/0 itself is sick (it is the one being repaired): the others are healthy, so it may stop.
    const { h } = hooks(clock, [members(false, true, true)]);
    const notes: string[] = [];
    await h.beforeStop(
      { deployment: 'cluster-a', group: 'master', index: 0, note: (m) => Promise.resolve(void notes.push(m)) },
      new AbortController().signal,
    );
    assert.deepEqual(notes, ['etcd: 2 other members healthy before master/0 stops']);
  });

  it('waits for a member that is not healthy yet, then goes on', async () => {
    const clock = new ManualClock();
    const { h, asked } = hooks(clock, [members(true, false, true), members(true, false, true), members(true, true, true)]);
    const notes: string[] = [];
    await drive(
      clock,
      h.afterHealthy({ deployment: 'cluster-a', group: 'master', index: 1, note: (m) => Promise.resolve(void notes.push(m)) }),
    );
    assert.equal(asked.length, 3);
    assert.deepEqual(notes, ['etcd: 3 of 3 members healthy after master/1']);
  });

  it('refuses to stop a master while another member is sick, with a code, after the wait', async () => {
    const clock = new ManualClock();
    const { h } = hooks(clock, [members(true, true, false)]);
    const err = await drive(clock, h.beforeStop({ deployment: 'cluster-a', group: 'master', index: 0 }, new AbortController().signal)).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof AnodyneError, String(err));
    assert.equal(err.code, 'ANODYNE_E_ETCD_UNHEALTHY');
    assert.match(err.message, /master\/2 \(starting\).*could lose quorum/);
  });

  it('a single master has no other member to wait for', async () => {
    const clock = new ManualClock();
    const { h } = hooks(clock, [members(false)]);
    await h.beforeStop({ deployment: 'cluster-a', group: 'master', index: 0 }, new AbortController().signal);
  });
});

describe('the order masters roll in', () => {
  const ordered = (leader: number | undefined) =>
    new NodeHooks({
      clock: new ManualClock(),
      logger: silentLogger(),
      endpoint: () => Promise.reject(new Error('not asked')),
      etcdLeader: () => Promise.resolve(leader),
    });

  it("etcd's leader goes last, the followers keep their order", async () => {
    assert.deepEqual(await ordered(0).order('cluster-a', 'master', [0, 1, 2]), [1, 2, 0]);
    assert.deepEqual(await ordered(1).order('cluster-a', 'master', [0, 1, 2]), [0, 2, 1]);
    assert.deepEqual(await ordered(2).order('cluster-a', 'master', [0, 1, 2]), [0, 1, 2]);
  });

  it('workers, an unknown leader, or one not being rolled change nothing', async () => {
    assert.deepEqual(await ordered(0).order('cluster-a', 'worker', [0, 1, 2]), [0, 1, 2]);
    assert.deepEqual(await ordered(undefined).order('cluster-a', 'master', [0, 1, 2]), [0, 1, 2]);
    assert.deepEqual(await ordered(2).order('cluster-a', 'master', [0, 1]), [0, 1]);
  });
});

describe('draining a worker', () => {
  /** A cluster API that answers the pod list from a script, one answer per list, the last one repeated. */
  function scripted(lists: object[][]) {
    const calls: string[] = [];
    let n = 0;
    const api = {
      core: {
        readNode: () => Promise.resolve({ status: { conditions: [{ type: 'Ready', status: 'True' }] } }),
        patchNode: () => Promise.resolve(void calls.push('cordon')),
        listPodForAllNamespaces: () => {
          calls.push('list');
          return Promise.resolve({ items: lists[Math.min(n++, lists.length - 1)] });
        },
        createNamespacedPodEviction: (a: { name: string }) => Promise.resolve(void calls.push(`evict ${a.name}`)),
      },
    } as unknown as KubeClient;
    return { api, calls };
  }
  const pod = (name: string, phase: string, deleting = false) => ({
    metadata: { name, namespace: 'default', ...(deleting ? { deletionTimestamp: new Date(0) } : {}) },
    status: { phase },
  });

  it('waits for an evicted pod that the kubelet has marked Failed until it is deleted; never evicts a finished one', async () => {
    const clock = new ManualClock();
    const { h } = hooks(clock, [members(true)]);
    const { api, calls } = scripted([
      [pod('app', 'Running'), pod('done', 'Succeeded')],
      [pod('app', 'Failed', true), pod('done', 'Succeeded')],
      [pod('app', 'Failed', true), pod('done', 'Succeeded')],
      [pod('done', 'Succeeded')],
    ]);
    await drive(clock, h.drain(api, 'worker-1', new AbortController().signal));
    assert.deepEqual(calls, ['cordon', 'list', 'evict app', 'list', 'list', 'list']);
  });
});
