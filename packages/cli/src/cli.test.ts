// CLI suite: the anodyne commands against a real platform (login, clusters, credentials, tasks, exit codes, prompts).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exec, skipUnless, systemClock } from '@anodyne/common';
import { AuditLog } from '@anodyne/store';
import { SCOPES } from '@anodyne/identity';
import { locateRelease } from '@anodyne/release';
import { startTestPlatform, type TestPlatform, awaitQuietHost } from '@anodyne/platform/testing';

const isRoot = process.getuid?.() === 0;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = join(REPO, 'bin', 'anodyne');
const PORT = 19_200 + (process.pid % 90);
const SESSION = `anodyne-cli-${process.pid}`;

describe('the anodyne CLI against a real server', { skip: skipUnless(isRoot, 'needs root') }, () => {
  let tp: TestPlatform;
  let home: string;
  let env: Record<string, string>;
  const cli = (...args: string[]) => exec([BIN, ...args], { env, okCodes: [0, 1, 2, 3, 4], timeoutMs: 180_000 });

  /** Runs a command in a real pseudo-terminal (tmux) and returns the screen whenever asked. */
  async function inTerminal(
    command: string,
  ): Promise<{ screen: () => Promise<string>; done: () => Promise<{ screen: string; code: number }> }> {
    const envs = Object.entries(env)
      .filter(([k]) => ['HOME', 'KUBECONFIG', 'PATH'].includes(k))
      .map(([k, v]) => `${k}='${v}'`)
      .join(' ');
    await exec(['tmux', 'kill-session', '-t', SESSION], { okCodes: [0, 1] });
    await exec(['tmux', 'new-session', '-d', '-s', SESSION, '-x', '200', '-y', '50', `env ${envs} ${command}; echo EXIT=$?; sleep 600`]);
    const screen = async () => (await exec(['tmux', 'capture-pane', '-p', '-t', SESSION])).stdout;
    return {
      screen,
      done: async () => {
        for (let i = 0; i < 600; i++) {
          const s = await screen();
          const m = /EXIT=(\d+)/.exec(s);
          if (m) {
            await exec(['tmux', 'kill-session', '-t', SESSION], { okCodes: [0, 1] });
            return { screen: s, code: Number(m[1]) };
          }
          await new Promise((r) => setTimeout(r, 200));
        }
        throw new Error('the command did not finish');
      },
    };
  }

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    tp = await startTestPlatform('cli', '10.198.10.0/24', PORT);
    await tp.platform.identity.createUser({ username: 'newbie', password: 'newbie-password', groups: [SCOPES.manage] });
    home = join(tp.dir, 'home');
    mkdirSync(home, { recursive: true });
    env = {
      ...(process.env as Record<string, string>),
      HOME: home,
      KUBECONFIG: join(home, '.kube', 'config'),
      PATH: `${dirname(locateRelease().bin('kubectl'))}:${process.env['PATH'] ?? ''}`,
    };
  });
  after(async () => {
    await exec(['tmux', 'kill-session', '-t', SESSION], { okCodes: [0, 1] });
    await tp.stop();
  });

  it('wrong password, not logged in, bad flags: one clear line and the documented exit code', async () => {
    const notLoggedIn = await cli('clusters');
    assert.equal(notLoggedIn.code, 3);
    assert.match(notLoggedIn.stderr, /^Error: ANODYNE_E_NOT_LOGGED_IN: not logged in/);
    const wrong = await cli('login', '-a', tp.platform.url, '-u', 'newbie', '-p', 'nope', '--ca-cert', tp.platform.caFile);
    assert.equal(wrong.code, 3);
    assert.equal(wrong.stderr.trim().split('\n').length, 1, wrong.stderr);
    assert.match(wrong.stderr, /^Error: ANODYNE_E_BAD_CREDENTIALS: /);
    const badFlag = await cli('create-cluster', 'x', '-p', 'small', '-n', 'many');
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /--num-nodes must be a whole number/);
    assert.equal((await cli('no-such-command')).code, 2);
    assert.equal((await cli('create-cluster')).code, 2, 'missing argument');
  });

  it('login → create-cluster --wait (live in a terminal) → clusters → get-credentials → kubectl → update → delete-cluster --wait (piped)', async (t) => {
    const login = await cli('login', '-a', tp.platform.url, '-u', 'newbie', '-p', 'newbie-password', '--ca-cert', tp.platform.caFile);
    assert.equal(login.code, 0, login.stderr);
    assert.equal(statSync(join(home, '.anodyne', 'config.json')).mode & 0o777, 0o600, 'the token file is 0600');
    assert.equal(
      readFileSync(join(home, '.anodyne', 'config.json'), 'utf8').includes('newbie-password'),
      false,
      'the password is not kept',
    );

    const started = performance.now();
    const create = await inTerminal(`${BIN} create-cluster first -p small -n 1 --wait`);
    let sawSpinner = '';
    for (let i = 0; i < 200 && !sawSpinner; i++) {
      const s = await create.screen();
      if (/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] .*\(\d+s elapsed/.test(s)) sawSpinner = s;
      else await new Promise((r) => setTimeout(r, 100));
    }
    const created = await create.done();
    t.diagnostic(`create-cluster --wait in a terminal: ${(performance.now() - started).toFixed(0)} ms`);
    assert.equal(created.code, 0, created.screen);
    assert.ok(sawSpinner, `a live status line with a spinner and elapsed time:\n${created.screen}`);
    assert.match(created.screen, /✓ Creating missing VMs \(2\/2\)/);
    assert.match(created.screen, /Task \d+ done in \d+s/);
    assert.match(created.screen, /Cluster first is ready/);

    // The other read commands a user runs: plans, tasks, one task's log, quotas and usages (tables and --json).
    assert.match((await cli('plans')).stdout, /^small\s+/m);
    const tasks = JSON.parse((await cli('tasks', '--json')).stdout) as { id: number; type: string; state: string }[];
    const createTask = tasks.find((x) => x.type === 'deploy' && x.state === 'done');
    assert.ok(createTask, JSON.stringify(tasks));
    assert.match((await cli('tasks')).stdout, new RegExp(`^${createTask.id}\\s+deploy\\s+done\\s+newbie`, 'm'));
    const shown = await cli('task', String(createTask.id));
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /Creating missing VMs/);
    assert.equal((await cli('task', '99999')).code, 4, 'an unknown task is exit 4');
    assert.equal((await cli('task', 'abc')).code, 2, 'a bad task id is a usage error');
    assert.match((await cli('usages')).stdout, /newbie/);
    assert.equal((JSON.parse((await cli('usages', '--json')).stdout) as { clusters: number }).clusters, 1);
    assert.equal((await cli('quotas')).code, 0);

    const list = await cli('clusters');
    assert.match(list.stdout, /^Name\s+Plan\s+Owner/);
    assert.match(
      list.stdout,
      /first\s+small\s+newbie\s+1\.\d+\.\d+\s+1\s+\S+\s+CREATE\s+succeeded/,
      'the list shows the Kubernetes version',
    );
    const asJson = JSON.parse((await cli('clusters', '--json')).stdout) as { name: string; last_action_state: string }[];
    assert.deepEqual(
      asJson.map((c) => [c.name, c.last_action_state]),
      [['first', 'succeeded']],
    );

    const creds = await cli('get-credentials', 'first');
    assert.equal(creds.code, 0, creds.stderr);
    let nodes = '';
    for (let i = 0; i < 40 && !/worker-0\s+Ready/.test(nodes); i++) {
      nodes = (await exec(['kubectl', 'get', 'nodes', '--no-headers'], { env, okCodes: [0, 1], timeoutMs: 30_000 })).stdout;
      if (!/worker-0\s+Ready/.test(nodes)) await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(nodes, /worker-0\s+Ready/);

    // A second task of the same kind shows an estimate of the time left.
    const update = await inTerminal(`${BIN} update-cluster first --num-nodes 2 --wait`);
    let sawEstimate = '';
    for (let i = 0; i < 200 && !sawEstimate; i++) {
      const s = await update.screen();
      if (/left\)|almost done\)/.test(s)) sawEstimate = s;
      else await new Promise((r) => setTimeout(r, 100));
    }
    const updated = await update.done();
    assert.equal(updated.code, 0, updated.screen);
    assert.ok(sawEstimate, `an estimate of the time left:\n${updated.screen}`);

    // Certificates and their expiry; admin-only upgrades are refused for a manage user in one line.
    const certs = await cli('certificates', 'first');
    assert.equal(certs.code, 0, certs.stderr);
    assert.match(certs.stdout, /^apiserver\s+1\s+\S+\s+3\d\d$/m);
    // The cluster's VMs as the health monitor (every 2 s here) finds them.
    let vms = await cli('vms', 'first');
    for (let i = 0; i < 60 && (vms.stdout.match(/\brunning\b/g) ?? []).length < 3; i++) {
      await new Promise((r) => setTimeout(r, 500));
      vms = await cli('vms', 'first');
    }
    assert.equal(vms.code, 0, vms.stderr);
    assert.match(vms.stdout, /^Instance\s+IP\s+State\s+Health/);
    for (const x of ['master/0', 'worker/0', 'worker/1'])
      assert.match(vms.stdout, new RegExp(`^${x}\\s+10\\.199\\.10\\.\\d+\\s+started\\s+running\\s`, 'm'));
    assert.equal((await cli('vms', 'nope')).code, 4);
    const up = await cli('upgrade-clusters', '--clusters', 'first', '--canaries', '1');
    assert.equal(up.code, 1);
    assert.match(up.stderr, /^Error: ANODYNE_E_SCOPE_REQUIRED: .*\n$/);
    assert.match((await cli('completion', 'bash')).stdout, /complete -F _anodyne anodyne/);

    // In a terminal, delete-cluster asks first; anything but yes deletes nothing.
    const ask = await inTerminal(`${BIN} delete-cluster first`);
    let prompt = '';
    for (let i = 0; i < 100 && !/\(y\/N\)/.test(prompt); i++) {
      prompt = await ask.screen();
      if (!/\(y\/N\)/.test(prompt)) await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(prompt, /Delete cluster first and everything running on it\? \(y\/N\)/);
    await exec(['tmux', 'send-keys', '-t', SESSION, 'n', 'Enter']);
    const declined = await ask.done();
    assert.equal(declined.code, 0, declined.screen);
    assert.match(declined.screen, /Nothing deleted/);
    assert.match((await cli('cluster', 'first')).stdout, /first/, 'the cluster is still there');

    // Piped: plain lines, no terminal control characters.
    const del = await cli('delete-cluster', 'first', '--wait', '--non-interactive');
    assert.equal(del.code, 0, del.stderr);
    assert.doesNotMatch(del.stdout, /\r|\x1b\[/);
    assert.match(del.stdout, /Deleting instances: master\/0 \(\d\/3\) started/);
    assert.match(del.stdout, /Cluster first deleted/);
    const gone = await cli('cluster', 'first');
    assert.equal(gone.code, 4);
    assert.match(gone.stderr, /^Error: ANODYNE_E_CLUSTER_NOT_FOUND: cluster first not found\n$/);
  });

  it('admins manage users and groups from the CLI', async () => {
    const admin = { ...env, ANODYNE_SESSION_FILE: join(home, 'admin-session.json') };
    const run = (...args: string[]) => exec([BIN, ...args], { env: admin, okCodes: [0, 1, 2, 3, 4], timeoutMs: 60_000 });
    await tp.platform.identity.createUser({ username: 'boss', password: 'boss-password', groups: [SCOPES.admin] });
    assert.equal((await run('login', '-a', tp.platform.url, '-u', 'boss', '-p', 'boss-password', '--ca-cert', tp.platform.caFile)).code, 0);
    assert.equal((await run('create-user', 'temp', '--password', 'temp-password', '--group', 'pks.clusters.manage')).code, 0);
    assert.match((await run('users')).stdout, /^temp\s+local\s+pks\.clusters\.manage/m);
    assert.match((await run('set-groups', 'temp', '--group', 'pks.clusters.admin.read')).stdout, /temp: pks\.clusters\.admin\.read/);
    assert.match((await run('set-password', 'temp', '--password', 'temp-password-2')).stdout, /Password of temp set/);
    assert.equal(
      (await run('login', '-a', tp.platform.url, '-u', 'temp', '-p', 'temp-password-2', '--ca-cert', tp.platform.caFile)).code,
      0,
      'the new password works',
    );
    assert.equal((await run('login', '-a', tp.platform.url, '-u', 'boss', '-p', 'boss-password', '--ca-cert', tp.platform.caFile)).code, 0);
    assert.match((await run('rotate-signing-key')).stdout, /Tokens are now signed with key-/);
    // Alerts: one recorded as the platform records them, listed, and not after its own id.
    await new AuditLog(tp.platform.store, systemClock).record({
      actor: 'cli-test',
      action: 'alert.task_failed',
      target: 'cluster-cli-alert',
      result: 'error',
      details: { task: 0 },
    });
    const alerts = JSON.parse((await run('events', '--json')).stdout) as { id: number; kind: string; target: string }[];
    const alert = alerts.find((e) => e.target === 'cluster-cli-alert');
    assert.equal(alert?.kind, 'task_failed');
    assert.match((await run('events')).stdout, new RegExp(`^${alert.id}\\s+\\S+\\s+task_failed\\s+cluster-cli-alert`, 'm'));
    assert.ok(!(await run('events', '--after', String(alert.id))).stdout.includes('cluster-cli-alert'));
    assert.equal((await run('events', '--after', 'soon')).code, 2);
    assert.equal((await run('delete-user', 'temp')).code, 0);
    const gone = await run('delete-user', 'temp');
    assert.equal(gone.code, 4);
    assert.match(gone.stderr, /^Error: ANODYNE_E_USER_NOT_FOUND: /);
    assert.equal((await run('logout')).code, 0);
    const after = await run('users');
    assert.equal(after.code, 3, 'after logout: not authenticated');
    assert.equal(after.stderr.trim().split('\n').length, 1);
  });

  it('an expired session that cannot be refreshed: exit 3 with one line', async () => {
    const file = join(home, '.anodyne', 'config.json');
    const s = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...s, expires_at: Date.now() - 1000, refresh_token: 'not-a-token' }), { mode: 0o600 });
    const r = await cli('clusters');
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^Error: ANODYNE_E_TOKEN_INVALID: /);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });
});
