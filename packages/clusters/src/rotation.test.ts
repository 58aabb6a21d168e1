// The CA rotation's policy over fakes: three steps in order, add-ons restarted once the bundle is published, an interrupted rotation resumed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger, systemClock } from '@anodyne/common';
import type { Manifest, TaskEventInput } from '@anodyne/director';
import type { KubeClient } from './kube.js';
import { ADDON_DEPLOYMENTS, ClusterCaRotation, pemSet, type CaRotationPhase } from './rotation.js';

const pem = (body: string) => `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`;

/** A store whose phase moves with the steps, a cluster whose ConfigMap follows the bundle after a rollout. */
function world(start: CaRotationPhase) {
  const log: string[] = [];
  let phase = start;
  let bundle = start === 'idle' ? pem('OLD') : pem('NEW') + pem('OLD');
  let published = bundle;
  const generation: Record<string, number> = {};
  const client = {
    core: {
      readNamespacedConfigMap: () => Promise.resolve({ data: { 'ca.crt': published } }),
    },
    apps: {
      patchNamespacedDeployment: (a: {
        name: string;
        body: { spec: { template: { metadata: { annotations: Record<string, string> } } } };
      }) => {
        assert.ok(a.body.spec.template.metadata.annotations['anodyne.io/ca-bundle-at']);
        log.push(`restart ${a.name}`);
        generation[a.name] = (generation[a.name] ?? 1) + 1;
        return Promise.resolve({});
      },
      readNamespacedDeployment: (a: { name: string }) =>
        Promise.resolve({
          metadata: { generation: generation[a.name] ?? 1 },
          spec: { replicas: 2 },
          status: { observedGeneration: generation[a.name] ?? 1, replicas: 2, updatedReplicas: 2, availableReplicas: 2 },
        }),
    },
  } as unknown as KubeClient;
  const rotation = new ClusterCaRotation({
    steps: {
      caPhase: () => Promise.resolve(phase),
      trustNewCas: (_d, names) => {
        assert.deepEqual(names, ['ca', 'etcd-ca', 'front-proxy-ca', 'service-account-key']);
        log.push('trust new');
        phase = 'trusting';
        bundle = pem('OLD') + pem('NEW');
        return Promise.resolve();
      },
      signWithNewCas: () => {
        log.push('sign with new');
        phase = 'signing';
        bundle = pem('NEW') + pem('OLD');
        return Promise.resolve();
      },
      dropOldCas: () => {
        log.push('drop old');
        phase = 'idle';
        bundle = pem('NEW');
        return Promise.resolve();
      },
    },
    endpoint: (cluster) =>
      Promise.resolve({ cluster, server: 'https://192.0.2.1:6443', admin: { ca: bundle, certificate: '', private_key: '' } }),
    client: () => client,
    clock: systemClock,
    logger: silentLogger(),
    clientsTimeoutMs: 5000,
  });
  const events: TaskEventInput[] = [];
  const converge = (m: Manifest) => {
    log.push(`converge ${m.name}`);
    published = bundle; // the controller manager publishes what it was rolled out with
    return Promise.resolve({ instances: 6 });
  };
  const run = () =>
    rotation.run('c1', { name: 'cluster-c1' } as Manifest, 'alice', converge, new AbortController().signal, {
      event: (e) => (events.push(e), Promise.resolve()),
    });
  return { log, events, run };
}

describe('CA rotation policy', () => {
  it('trusts, rolls out and restarts the add-ons; signs, rolls out and restarts them; drops the old CAs and rolls out', async () => {
    const w = world('idle');
    const result = await w.run();
    const restarts = ADDON_DEPLOYMENTS.map((d) => `restart ${d}`);
    assert.deepEqual(w.log, [
      'trust new',
      'converge cluster-c1',
      ...restarts,
      'sign with new',
      'converge cluster-c1',
      ...restarts,
      'drop old',
      'converge cluster-c1',
    ]);
    assert.equal(result.steps.length, 3);
    assert.deepEqual(
      w.events.filter((e) => e.state === 'finished' && e.index !== undefined).map((e) => [e.index, e.total]),
      [
        [1, 3],
        [2, 3],
        [3, 3],
      ],
    );
  });

  it('a rotation stopped after its second credential step resumes with that step’s rollout', async () => {
    const w = world('signing');
    await w.run();
    assert.equal(w.log[0], 'sign with new', 'step 1 is not done again');
    assert.deepEqual(w.log.slice(-2), ['drop old', 'converge cluster-c1']);
    assert.match(w.events[0]!.message ?? '', /resuming a rotation whose credentials are in step 2/);
  });

  it('a rotation stopped in its first step finishes it first', async () => {
    const w = world('trusting');
    await w.run();
    assert.deepEqual(w.log.slice(0, 2), ['trust new', 'converge cluster-c1']);
  });

  it('compares bundles by their certificates, whatever the whitespace and order', () => {
    assert.deepEqual(pemSet(pem('A') + pem('B')), pemSet(`${pem('B')}\n\n${pem('A').replace('\n', '\r\n')}`));
    assert.equal(pemSet('no certificate').size, 0);
  });
});
