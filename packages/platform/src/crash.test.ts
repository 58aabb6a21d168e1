// Fault test: `anodyne server` killed with SIGKILL during a cluster create, update and delete, then restarted: each is resumed (root).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exec, skipUnless } from '@anodyne/common';
import { hostLeftovers, removeStaleProviders, awaitQuietHost } from '@anodyne/providers/testing';
import { https, removeProviderLeftovers, segmentPoolBeside } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const PORT = 19_700 + (process.pid % 90);
const NETWORK = '10.198.13.0/24';
// Its clusters' segments from a pool of its own (the default pool is every platform's on this host).
const SEGMENT_POOL = segmentPoolBeside(NETWORK);

/**
 * The platform as a user runs it (`anodyne server`, a separate process), killed with SIGKILL in
 * the middle of a create, an update and a delete, and started again each time.
 */
describe('faults: kill -9 of the platform during create, update and delete', { skip: skipUnless(isRoot, 'needs root') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-crash-'));
  const tag = `kc${(process.pid % 1296).toString(36)}`;
  const env = {
    ...process.env,
    ANODYNE_DATA_DIR: dir,
    ANODYNE_PROVIDER_NETWORK: NETWORK,
    ANODYNE_PROVIDER_TAG: tag,
    ANODYNE_PROVIDER_SEGMENT_POOL: SEGMENT_POOL,
    ANODYNE_PROVIDER_SEGMENT_PREFIX: '27',
    ANODYNE_SERVER_PORT: String(PORT),
    ANODYNE_REGISTRY_PORT: String(PORT + 20_000),
    ANODYNE_REGISTRY_PUSH_RELEASE_IMAGES: 'false',
    ANODYNE_LOG_LEVEL: 'warn',
  };
  let server: ChildProcess | undefined;
  let url = '';
  let ca = '';
  let token = '';
  let password = '';

  async function start(): Promise<void> {
    const child = spawn('node', [join(REPO, 'packages/platform/dist/main.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    server = child;
    let out = '';
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`server did not start: ${out}`)), 60_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/Stop with Ctrl-C/.test(out)) {
          clearTimeout(timer);
          res();
        }
      });
      child.stderr.resume();
      child.once('exit', (code) => rej(new Error(`server exited ${code}: ${out}`)));
    });
    url = /Anodyne is up: (\S+)/.exec(out)![1]!;
    password ||= /password: (\S+)/.exec(out)?.[1] ?? '';
    const { readFileSync } = await import('node:fs');
    ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const r = await https(url, ca, 'POST', '/oauth/token', {
      body: JSON.stringify({ grant_type: 'password', username: 'admin', password }),
    });
    token = (r.body as { access_token: string }).access_token;
  }
  const kill9 = async () => {
    const exited = new Promise((r) => server!.once('exit', r));
    server!.kill('SIGKILL');
    await exited;
    // The image registry it ran dies with it (nothing of the killed server runs on).
    for (let i = 0; i < 50; i++) {
      const left = await exec(['pgrep', '-f', join(dir, 'registry', 'config.yml')], { okCodes: [0, 1] });
      if (left.code === 1) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail('the registry outlived the killed server');
  };
  const call = (method: string, path: string, body?: unknown) =>
    https(url, ca, method, path, { token, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const waitForEvent = async (taskId: number, stage: RegExp) => {
    for (let i = 0; i < 600; i++) {
      const ev = (await call('GET', `/v1/tasks/${taskId}/events`)).body as { stage: string; state: string }[];
      if (ev.some((e) => stage.test(e.stage) && e.state === 'started')) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${stage} event`);
  };
  const taskState = async (id: number) => (await call('GET', `/v1/tasks/${id}`)).body as { state: string; error: { code: string } | null };

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    await removeStaleProviders([NETWORK, SEGMENT_POOL]);
    await start();
  });
  after(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server!.once('exit', r));
      server.kill('SIGTERM');
      await exited;
    }
    // Whatever a failed run left (VMs keep running when the platform dies) goes too.
    await removeProviderLeftovers(dir, tag, NETWORK);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Waits until task `id` ends (up to 5 min: a master's restart after a kill, beside another suite, has taken over 2 min). */
  const ended = async (id: number) => {
    for (let i = 0; i < 1500 && !['done', 'error', 'cancelled'].includes((await taskState(id)).state); i++)
      await new Promise((r) => setTimeout(r, 200));
    return taskState(id);
  };
  const resumedOnce = async (id: number) => {
    const ev = (await call('GET', `/v1/tasks/${id}/events`)).body as { stage: string; message?: string }[];
    return ev.filter((e) => e.stage === 'Taking over' && /^resumed by/.test(e.message ?? '')).length;
  };

  it('every interrupted deploy and delete is resumed after the restart and finishes; nothing is orphaned on the host', async () => {
    // 1. Killed while the create updates its first instance: started again, the platform resumes the create.
    const created = (
      await call('POST', '/v1/clusters', { name: 'crashy', plan_name: 'small', parameters: { kubernetes_worker_instances: 1 } })
    ).body as { last_task_id: number };
    await waitForEvent(created.last_task_id, /^Updating instance/);
    await kill9();
    await start();
    const t1 = await ended(created.last_task_id);
    assert.equal(t1.state, 'done', `the interrupted create was resumed and finished: ${JSON.stringify(t1)}`);
    assert.equal(await resumedOnce(created.last_task_id), 1);
    assert.equal(((await call('GET', '/v1/clusters/crashy')).body as { last_action_state: string }).last_action_state, 'succeeded');

    // 2. An update to 2 workers, killed while it creates the new worker: resumed, the cluster has both.
    const upd = await call('PATCH', '/v1/clusters/crashy', { kubernetes_worker_instances: 2 });
    assert.equal(upd.status, 202, upd.text);
    const updTask = (upd.body as { last_task_id: number }).last_task_id;
    await waitForEvent(updTask, /^Updating instance/);
    await kill9();
    await start();
    const t2 = await ended(updTask);
    assert.equal(t2.state, 'done', JSON.stringify(t2));
    const cluster = (await call('GET', '/v1/clusters/crashy')).body as {
      last_action_state: string;
      parameters: { kubernetes_worker_instances: number };
    };
    assert.equal(cluster.last_action_state, 'succeeded');
    assert.equal(cluster.parameters.kubernetes_worker_instances, 2);

    // 3. Killed during the delete: resumed after the restart, the cluster goes.
    const del = (await call('DELETE', '/v1/clusters/crashy')).body as { last_task_id: number };
    await waitForEvent(del.last_task_id, /^Deleting instances/);
    await kill9();
    await start();
    assert.equal((await ended(del.last_task_id)).state, 'done');
    assert.equal((await call('GET', '/v1/clusters/crashy')).status, 404);
    const open = ((await call('GET', '/v1/tasks?limit=100')).body as { state: string }[]).filter(
      (t) => !['done', 'error', 'cancelled'].includes(t.state),
    );
    assert.deepEqual(open, [], 'no task is left running');

    // Stopped with nothing deployed, the platform leaves nothing on the host.
    const exited = new Promise((r) => server!.once('exit', r));
    server!.kill('SIGTERM');
    await exited;
    assert.deepEqual(await hostLeftovers(tag, join(dir, 'provider')), []);
  });
});
