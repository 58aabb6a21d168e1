// Console suite: the web console in a real browser (Playwright driving Debian's Chromium) against a real platform and cluster.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { exec, skipUnless } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { locateRelease } from '@anodyne/release';
import { https, startTestPlatform, type TestPlatform, awaitQuietHost } from './testing/index.js';

const isRoot = process.getuid?.() === 0;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const PORT = 18_900 + (process.pid % 90);
const CHROMIUM = process.env['ANODYNE_CHROMIUM'] ?? '/usr/bin/chromium';
const AXE = readFileSync(join(REPO, 'node_modules/axe-core/axe.min.js'), 'utf8');
/** `npm run test:console` sets this to docs/ to regenerate the screenshots the README shows; `make test` leaves docs/ alone. */
const SHOTS = process.env['ANODYNE_CONSOLE_SCREENSHOTS'];

/**
 * A launcher that runs Chromium in a network namespace of its own, joined to the host by one veth pair
 * that routes only to the platform's address. Chromium drops every request in flight when it sees an
 * address or link change (net::ERR_NETWORK_CHANGED), and the suites running beside this one add and
 * remove VM links all the time; in its own namespace it sees only its own. The namespace, and the veth
 * pair with it, goes when Chromium's last process exits (a failed run included).
 */
function isolatedChromium(dir: string, platformIp: string): string {
  const n = process.pid % 100_000;
  const [inner, outer] = [`ancr${n}i`, `ancr${n}o`];
  // 10.198.250.0/30: outside every suite's VM network (10.198.<suite>.0/24, suites below 250).
  const [hostIp, ownIp] = ['10.198.250.1', '10.198.250.2'];
  const script = join(dir, 'chromium-netns.sh');
  writeFileSync(
    script,
    [
      '#!/bin/sh',
      'set -e',
      // Run again in a new network namespace; the test process (the parent) keeps the host's.
      'if [ -z "$ANODYNE_HOST_PID" ]; then export ANODYNE_HOST_PID=$PPID; exec unshare --net "$0" "$@"; fi',
      // No IPv6 in it: a link-local address finishing duplicate detection a second after the link is up is a
      // network change to Chromium, which failed one CI run's first page load with ERR_NETWORK_CHANGED.
      'sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1',
      'ip link set lo up',
      `ip link add ${inner} type veth peer name ${outer} netns "$ANODYNE_HOST_PID"`,
      `nsenter -t "$ANODYNE_HOST_PID" -n ip addr add ${hostIp}/30 dev ${outer}`,
      `nsenter -t "$ANODYNE_HOST_PID" -n ip link set ${outer} up`,
      `ip addr add ${ownIp}/30 dev ${inner}`,
      `ip link set ${inner} up`,
      `ip route add ${platformIp}/32 via ${hostIp}`,
      `exec ${CHROMIUM} "$@"`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  return script;
}

interface AxeResult {
  violations: { id: string; impact: string | null; help: string; nodes: { target: string[] }[] }[];
}

describe('the web console in a real browser', { skip: skipUnless(isRoot && existsSync(CHROMIUM), 'needs root and Chromium') }, () => {
  let tp: TestPlatform;
  let browser: Browser;
  let url: string;
  const scanned: string[] = [];

  before(async () => {
    await awaitQuietHost(); // not beside the zero-downtime suites
    tp = await startTestPlatform('console', '10.198.22.0/24', PORT);
    url = tp.platform.url;
    const id = tp.platform.identity;
    await id.createUser({ username: 'alice', password: 'alice-password', groups: [SCOPES.manage] });
    await id.createUser({ username: 'bob', password: 'bob-password', groups: [SCOPES.manage] });
    await id.createUser({ username: 'ops', password: 'ops-password', groups: [SCOPES.admin] });
    browser = await chromium.launch({ executablePath: isolatedChromium(tp.dir, new URL(url).hostname), args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await tp?.stop();
  });

  /** A browser profile of its own; the platform's CA is not in the browser's store, so certificate errors are ignored (only here). */
  const context = (o: { dark?: boolean } = {}) =>
    browser.newContext({
      ignoreHTTPSErrors: true,
      bypassCSP: true, // only so that the accessibility scanner can be injected
      colorScheme: o.dark ? 'dark' : 'light',
      viewport: { width: 1280, height: 860 },
    });

  /** axe-core on the page as it is now: no serious or critical violation. */
  async function accessible(page: Page, what: string): Promise<void> {
    if (!(await page.evaluate<boolean>("'axe' in window"))) await page.addScriptTag({ content: AXE });
    const result = await page.evaluate<unknown>('axe.run()');
    const bad = (result as AxeResult).violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(
      bad.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
      [],
      `accessibility of ${what}`,
    );
    scanned.push(what);
  }

  async function shot(page: Page, name: string): Promise<void> {
    const dir = SHOTS ? resolve(REPO, SHOTS) : join(tp.dir, 'screenshots');
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: join(dir, `console-${name}.png`), fullPage: false });
  }

  /** Signs in through the identity's own page (authorization code flow with PKCE) and waits for the console. */
  async function signIn(page: Page, username: string, password: string): Promise<void> {
    await page.goto(`${url}/console/`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/oauth\/authorize\?/);
    await page.getByLabel('User name').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText(`Signed in as ${username}`).waitFor();
  }

  const waitTaskDone = async (page: Page) => {
    await page.locator('.facts .status', { hasText: /^(done|error|cancelled)$/ }).waitFor({ timeout: 300_000 });
    return (await page.locator('.facts .status').first().textContent())?.trim();
  };

  it('a user signs in (a wrong password shows the error), creates a cluster and watches its task live, downloads its kubeconfig for kubectl, resizes and deletes it', async (t) => {
    const ctx = await context();
    const page = await ctx.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));

    // The identity's sign-in page: a wrong password is said so, on the page, and nothing is issued.
    await page.goto(`${url}/console/`);
    await accessible(page, 'signed-out page');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/oauth\/authorize\?.*code_challenge_method=S256/);
    await accessible(page, 'sign-in page');
    await page.getByLabel('User name').fill('alice');
    await page.getByLabel('Password').fill('not-her-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await assert.doesNotReject(page.getByRole('alert').filter({ hasText: 'bad user name or password' }).waitFor());
    assert.equal(await page.getByLabel('User name').inputValue(), 'alice', 'the user name is kept');
    await page.getByLabel('Password').fill('alice-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as alice').waitFor();
    assert.match(page.url(), /\/console\/#\/clusters$/, 'back on the console, the code gone from the address');
    await page.getByText('No clusters yet').waitFor();

    // The refresh token is an httpOnly cookie for /oauth only; nothing of the session is in web storage.
    const cookies = await ctx.cookies(`${url}/oauth/token`);
    const session = cookies.find((c) => c.name === 'anodyne_console_session');
    assert.ok(session, JSON.stringify(cookies.map((c) => c.name)));
    assert.deepEqual([session.httpOnly, session.secure, session.sameSite, session.path], [true, true, 'Strict', '/oauth']);
    const stored = await page.evaluate<string>('JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage })');
    assert.equal(/eyJ/.test(stored), false, `no token in web storage: ${stored}`);

    // The session survives a reload.
    await page.reload();
    await page.getByText('Signed in as alice').waitFor();
    await accessible(page, 'clusters page (empty)');

    // Create: a bad name is refused with the API's own words, then a good one starts a task.
    await page.getByRole('link', { name: 'Create cluster' }).click();
    await page.getByRole('heading', { name: 'Create a cluster' }).waitFor();
    await accessible(page, 'create page');
    const api = await https(url, tp.platform.caPem, 'POST', '/v1/clusters', {
      token: (await tp.platform.identity.token({ grant_type: 'password', username: 'alice', password: 'alice-password' })).access_token,
      body: JSON.stringify({ name: 'Web_1', plan_name: 'small' }),
    });
    const apiError = api.body as { code: string; message: string };
    assert.equal(api.status, 400);
    await page.getByLabel('Name').fill('Web_1');
    await page.getByRole('button', { name: 'Create cluster' }).click();
    const shown = (await page.getByRole('alert').textContent())?.trim();
    assert.equal(shown, `${apiError.code}: ${apiError.message}`, 'the same message as the API');
    await page.getByLabel('Name').fill('web1');
    await page.getByLabel('Workers').fill('1');
    await page.getByRole('button', { name: 'Create cluster' }).click();
    await page.waitForURL(/#\/tasks\/\d+$/);

    // The task page follows the task live (server-sent events): stages and events appear without a reload.
    const progress = page.getByRole('status');
    const seen = new Set<string>();
    let rowsWhileRunning = 0;
    let firstRows: number | undefined;
    let shotTaken = false;
    for (let i = 0; i < 1500; i++) {
      const state =
        (
          await page
            .locator('.facts .status')
            .first()
            .textContent()
            .catch(() => '')
        )?.trim() ?? '';
      const text = (await progress.textContent().catch(() => ''))?.trim() ?? '';
      if (text) seen.add(text.replace(/ · \d+ s (elapsed|in all).*$/, ''));
      if (state && !['done', 'error', 'cancelled'].includes(state)) {
        const rows = await page.locator('table.events tbody tr').count();
        firstRows ??= rows;
        rowsWhileRunning = Math.max(rowsWhileRunning, rows);
        if (!shotTaken && /step \d+ of \d+/.test(text) && rowsWhileRunning >= 3) {
          await shot(page, 'task');
          await accessible(page, 'task page (running)');
          shotTaken = true;
        }
      } else if (state) break;
      await page.waitForTimeout(200);
    }
    t.diagnostic(`progress lines seen live: ${[...seen].join(' | ')}`);
    assert.equal(await waitTaskDone(page), 'done');
    assert.ok(seen.size >= 3, `the progress line changed as the task went on: ${[...seen].join(' | ')}`);
    const finalRows = await page.locator('table.events tbody tr').count();
    assert.ok(
      firstRows !== undefined && rowsWhileRunning > firstRows && finalRows >= rowsWhileRunning,
      `events arrived live while the task ran, without a reload (${firstRows} → ${rowsWhileRunning} → ${finalRows})`,
    );
    assert.ok(shotTaken, 'the task was seen running with a step k of n');

    // The cluster page: VMs, certificates, tasks; how to connect with the exact lines.
    await page.getByRole('link', { name: 'web1' }).click();
    await page.getByRole('heading', { name: 'Cluster web1' }).waitFor();
    await page.locator('td', { hasText: 'worker/0' }).waitFor();
    await page.getByRole('cell', { name: 'apiserver', exact: true }).waitFor();
    const commands = await page.getByLabel('Commands to connect with the CLI and kubectl').textContent();
    assert.match(commands ?? '', new RegExp(`anodyne login -a ${url.replace(/[.]/g, '\\.')} -u alice`));
    assert.match(commands ?? '', /anodyne get-credentials web1/);
    await page.locator('dd', { hasText: /\d+ running/ }).waitFor({ timeout: 60_000 });
    await shot(page, 'cluster');
    await accessible(page, 'cluster page');

    // The kubeconfig, downloaded, works with kubectl (its credentials from `anodyne get-token`, after a CLI login).
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Download kubeconfig' }).click();
    const file = join(tp.dir, 'web1-kubeconfig.yaml');
    await (await download).saveAs(file);
    assert.match(readFileSync(file, 'utf8'), /get-token/);
    const home = join(tp.dir, 'home-alice');
    mkdirSync(home, { recursive: true });
    const env = {
      ...(process.env as Record<string, string>),
      HOME: home,
      PATH: `${join(REPO, 'bin')}:${dirname(locateRelease().bin('kubectl'))}:${process.env['PATH'] ?? ''}`,
    };
    await exec(['anodyne', 'login', '-a', url, '-u', 'alice', '-p', 'alice-password', '--ca-cert', tp.platform.caFile], { env });
    let nodes = '';
    for (let i = 0; i < 60 && !/worker-0\s+Ready/.test(nodes); i++) {
      nodes = (await exec(['kubectl', '--kubeconfig', file, 'get', 'nodes', '--no-headers'], { env, okCodes: [0, 1], timeoutMs: 30_000 }))
        .stdout;
      if (!/worker-0\s+Ready/.test(nodes)) await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(nodes, /worker-0\s+Ready/);

    // Back up now, then restore that backup (typing the name to confirm): both as tasks followed to the end.
    await page.getByRole('button', { name: 'Back up now' }).click();
    await page.waitForURL(/#\/tasks\/\d+$/);
    assert.equal(await waitTaskDone(page), 'done');
    await page.goto(`${url}/console/#/clusters/web1`);
    const restore = page.getByRole('button', { name: /^Restore backup bk-/ });
    await restore.waitFor();
    await restore.click();
    const restoring = page.getByRole('dialog', { name: /^Restore web1 from bk-/ });
    await restoring.getByLabel(/Type web1 to confirm/).fill('web1');
    await restoring.getByRole('button', { name: 'Restore' }).click();
    await page.waitForURL(/#\/tasks\/\d+$/);
    assert.equal(await waitTaskDone(page), 'done');
    await page.goto(`${url}/console/#/clusters/web1`);
    await page.getByRole('heading', { name: 'Cluster web1' }).waitFor();

    // Resize to 2 workers, with a confirmation.
    await page.getByLabel('Workers').fill('2');
    await page.getByRole('button', { name: 'Resize' }).click();
    const dialog = page.getByRole('dialog', { name: 'Resize web1?' });
    await dialog.waitFor();
    await accessible(page, 'resize confirmation');
    await dialog.getByRole('button', { name: 'Resize' }).click();
    await page.waitForURL(/#\/tasks\/\d+$/);
    assert.equal(await waitTaskDone(page), 'done');
    const admin = { name: 'ops', userName: 'ops', scopes: [SCOPES.admin] };
    assert.equal((await tp.platform.clusters.get(admin, 'web1')).parameters.kubernetes_worker_instances, 2);

    // Delete: the button stays disabled until the name is typed.
    await page.goto(`${url}/console/#/clusters/web1`);
    await page.getByRole('button', { name: 'Delete' }).click();
    const del = page.getByRole('dialog', { name: 'Delete web1?' });
    assert.equal(await del.getByRole('button', { name: 'Delete cluster' }).isDisabled(), true);
    await del.getByLabel(/Type web1 to confirm/).fill('web1');
    await del.getByRole('button', { name: 'Delete cluster' }).click();
    await page.waitForURL(/#\/tasks\/\d+$/);
    assert.equal(await waitTaskDone(page), 'done');
    await page.goto(`${url}/console/#/clusters`);
    await page.getByText('No clusters yet').waitFor();

    // Sign out ends the session: a reload does not bring it back.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await page.reload();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(
      (await ctx.cookies(`${url}/oauth/token`)).some((c) => c.name === 'anodyne_console_session'),
      false,
      'the session cookie is gone',
    );

    // Nothing was loaded from anywhere but the platform.
    const elsewhere = requests.filter((r) => !r.startsWith(url) && !r.startsWith('blob:') && !r.startsWith('data:'));
    assert.deepEqual(elsewhere, []);
    await ctx.close();
  });

  it('a manage user sees only their clusters and no admin pages; an admin sees owners and the admin pages, in light and dark themes', async () => {
    // alice's cluster, made through the API, is the one bob must not see.
    const created = await tp.platform.clusters.create(
      { name: 'alice', userName: 'alice', scopes: [SCOPES.manage] },
      { name: 'alices', plan_name: 'small', parameters: { kubernetes_worker_instances: 0 } },
    );
    await tp.platform.director.wait(created.last_task_id!);

    const bobCtx = await context();
    const bob = await bobCtx.newPage();
    await signIn(bob, 'bob', 'bob-password');
    await bob.getByText('No clusters yet').waitFor();
    assert.equal(await bob.getByRole('link', { name: 'alices' }).count(), 0, "bob does not see alice's cluster");
    for (const admin of ['Users', 'OAuth clients', 'Network profiles', 'Audit log'])
      assert.equal(await bob.getByRole('navigation').getByRole('link', { name: admin }).count(), 0, `no ${admin} link for bob`);
    await bob.goto(`${url}/console/#/users`);
    await bob.getByRole('heading', { name: 'Not found' }).waitFor();
    await bob.goto(`${url}/console/#/clusters/alices`);
    await bob.getByRole('alert').filter({ hasText: 'ANODYNE_E_' }).first().waitFor();
    await bob.goto(`${url}/console/#/plans`);
    await bob.getByRole('cell', { name: 'small', exact: true }).waitFor();
    await accessible(bob, 'plans page');
    await bob.goto(`${url}/console/#/quotas`);
    await bob
      .getByText(/\d+ of \d+/)
      .first()
      .waitFor();
    await accessible(bob, 'quotas page');
    // The registry: its address, bob's own project (made on first sight), no images yet.
    await bob.goto(`${url}/console/#/images`);
    await bob.getByRole('cell', { name: 'bob', exact: true }).first().waitFor();
    await bob.getByText('No images yet.').waitFor();
    assert.match((await bob.locator('p code').first().textContent()) ?? '', /^[\d.]+:\d+$/, "the registry's address is shown");
    await accessible(bob, 'images page');
    await bobCtx.close();

    for (const dark of [false, true]) {
      const opsCtx = await context({ dark });
      const ops = await opsCtx.newPage();
      await signIn(ops, 'ops', 'ops-password');
      const row = ops.getByRole('row', { name: /alices/ });
      await row.waitFor();
      assert.match((await row.textContent()) ?? '', /alice/, 'the owner column');
      await ops.getByRole('columnheader', { name: 'Owner' }).waitFor();
      const theme = dark ? ' (dark)' : '';
      if (!dark) await shot(ops, 'clusters');
      await accessible(ops, `clusters page as admin${theme}`);
      for (const [link, heading, cell] of [
        ['Users', 'Users', 'alice'],
        ['OAuth clients', 'OAuth clients', 'anodyne_console'],
        ['Network profiles', 'Network profiles', undefined],
        ['Audit log', 'Audit log', 'login'],
        ['Alerts', 'Alerts', undefined],
      ] as const) {
        await ops.getByRole('navigation').getByRole('link', { name: link }).click();
        await ops.getByRole('heading', { name: heading, level: 1 }).waitFor();
        if (cell) await ops.getByRole('cell', { name: cell, exact: true }).first().waitFor();
        await accessible(ops, `${heading} page${theme}`);
      }
      await ops.goto(`${url}/console/#/clusters/alices`);
      await ops.getByRole('heading', { name: 'Cluster alices' }).waitFor();
      await accessible(ops, `cluster page as admin${theme}`);
      if (!dark) {
        // Groups are changed from the users page: bob may now also read every cluster.
        await ops.getByRole('navigation').getByRole('link', { name: 'Users' }).click();
        await ops.getByRole('button', { name: 'Change bob' }).click();
        const change = ops.getByRole('dialog', { name: 'Change bob' });
        await change.getByLabel('pks.clusters.admin.read').check();
        await accessible(ops, 'change-user dialog');
        await change.getByRole('button', { name: 'Save' }).click();
        await change.waitFor({ state: 'hidden' });
        assert.deepEqual((await tp.platform.identity.user('bob')).groups, ['pks.clusters.admin.read', 'pks.clusters.manage']);
        await ops.getByRole('cell', { name: 'pks.clusters.admin.read, pks.clusters.manage' }).waitFor();
      }
      await opsCtx.close();
    }
    assert.ok(scanned.length >= 15, `pages scanned: ${scanned.join(', ')}`);
  });
});
