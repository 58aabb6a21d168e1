// The renewal pass over a real credential store (SQLite): what it renews and how, what it leaves, what it alerts.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConflictError, ManualClock, silentLogger } from '@anodyne/common';
import { AuditLog, openStore, type Store } from '@anodyne/store';
import { CredStore, KeyRing, newRandomKey } from '@anodyne/credstore';
import type { ClusterService } from '@anodyne/clusters';
import { CertificateRenewal } from './renewal.js';

const DAY = 86_400_000;

describe('certificate renewal pass', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-renewal-'));
    store = await openStore({ driver: 'sqlite', path: join(dir, 'db.sqlite') });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('renews what expires within the window the way each kind allows, leaves busy clusters for the next pass, alerts once', async () => {
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
    const keys = new KeyRing(newRandomKey());
    const creds = new CredStore({ store, keys, clock, logger: silentLogger() });
    const audit = new AuditLog(store, clock);
    const cert = (name: string, ca: string, days: number) =>
      creds.generate(name, 'certificate', { ca, common_name: name.split('/').pop()!, duration: days }, { actor: 't' });
    // Issued a year ago (the clock is moved on below): leaves of 365 days have 15 left, inside the 30-day window.
    await creds.generate('/deployments/cluster-a/ca', 'certificate', { is_ca: true, common_name: 'a-ca', duration: 3650 });
    await creds.generate('/deployments/cluster-b/ca', 'certificate', { is_ca: true, common_name: 'b-ca', duration: 360 });
    await creds.generate('/deployments/cluster-c/ca', 'certificate', { is_ca: true, common_name: 'c-ca', duration: 3650 });
    await creds.generate('/platform/ca', 'certificate', { is_ca: true, common_name: 'p-ca', duration: 3650 });
    await creds.generate('/director/agent-ca', 'certificate', { is_ca: true, common_name: 'ag-ca', duration: 3650 });
    await cert('/deployments/cluster-a/kubelet', '/deployments/cluster-a/ca', 365); // a's leaf: renewed by a rolling update
    await cert('/deployments/cluster-c/admin', '/deployments/cluster-c/ca', 365); // c is busy
    const api = await cert('/platform/api-server', '/platform/ca', 365);
    await cert('/director/agents/live', '/director/agent-ca', 365);
    await cert('/director/agents/gone', '/director/agent-ca', 365);
    await clock.advance(350 * DAY);
    await cert('/deployments/cluster-a/admin', '/deployments/cluster-a/ca', 365); // not due
    await cert('/deployments/cluster-a/short', '/deployments/cluster-a/ca', 3); // lives less than the window: not due yet
    const calls: string[] = [];
    const clusters = {
      lifecycle: {
        redeploy: (name: string, why: { kind: string }, actor: string) => {
          calls.push(`${why.kind} ${name} by ${actor}`);
          if (name === 'c') return Promise.reject(new ConflictError('ANODYNE_E_CLUSTER_BUSY', 'cluster c has a task running'));
          return Promise.resolve({ last_task_id: 7 });
        },
        rotateCas: (name: string, actor: string) => (calls.push(`rotate-ca ${name} by ${actor}`), Promise.resolve({ last_task_id: 8 })),
      },
    } as unknown as ClusterService;
    const reloaded: string[] = [];
    const handed: string[] = [];
    const renewal = new CertificateRenewal({
      creds,
      clusters,
      agents: {
        hasAgent: (id) => Promise.resolve(id === 'live'),
        renewAgentTls: (id, tls) => {
          assert.match(tls.cert, /BEGIN CERTIFICATE/);
          handed.push(id);
          return Promise.resolve(true);
        },
      },
      audit,
      clock,
      logger: silentLogger(),
      days: 30,
      platform: [{ name: '/platform/api-server', reload: (c) => reloaded.push(c.certificate) }],
    });

    const r = await renewal.pass();
    assert.deepEqual(r.expiring.map((e) => e.name).sort(), [
      '/deployments/cluster-a/kubelet',
      '/deployments/cluster-b/ca',
      '/deployments/cluster-c/admin',
      '/director/agents/live',
      '/platform/api-server',
    ]);
    assert.deepEqual(calls.sort(), [
      'rotate-ca b by certificate-renewal',
      'rotate-certificates a by certificate-renewal',
      'rotate-certificates c by certificate-renewal',
    ]);
    assert.deepEqual(
      [...r.started].sort((x, y) => x.cluster.localeCompare(y.cluster)),
      [
        { cluster: 'a', kind: 'leaves', task: 7 },
        { cluster: 'b', kind: 'ca', task: 8 },
      ],
    );
    assert.deepEqual(r.skipped, [{ cluster: 'c', reason: 'cluster c has a task running' }]);
    assert.deepEqual(r.platform, ['/platform/api-server']);
    assert.deepEqual(r.agents, ['live']);
    assert.deepEqual(handed, ['live']);
    // The API's certificate was issued again and put to use.
    const apiNow = await creds.get<'certificate'>('/platform/api-server');
    assert.equal(apiNow.version, api.version + 1);
    assert.deepEqual(reloaded, [apiNow.value.certificate]);
    assert.ok(Date.parse(apiNow.expires_at!) > clock.nowMs() + DAY, 'renewed for its full duration');
    // The certificate of an agent no instance has is gone, not renewed.
    await assert.rejects(creds.get('/director/agents/gone'));

    // Each expiring certificate was alerted once; a second pass alerts only what is still (or newly) due.
    const alerts = async () => (await audit.list({ actionPrefix: 'alert.' })).map((a) => a.target).sort();
    assert.deepEqual(await alerts(), r.expiring.map((e) => e.name).sort());
    const again = await renewal.pass();
    assert.deepEqual(
      again.expiring.map((e) => e.name).sort(),
      ['/deployments/cluster-a/kubelet', '/deployments/cluster-b/ca', '/deployments/cluster-c/admin'],
      'the fakes renewed no cluster credential; the platform and agent ones are renewed',
    );
    assert.equal((await alerts()).length, 5, 'no second alert for the same versions');
  });
});
