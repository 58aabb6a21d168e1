// Unit tests of the director's logic: manifest parsing, job rendering, the planner and the updater over the fake provider.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AnodyneError, ManualClock, silentLogger } from '@anodyne/common';
import { FakeProvider } from '@anodyne/providers';
import {
  parseManifest,
  plan,
  renderInstance,
  resolveJobs,
  resolveMaxInFlight,
  parseWatchTime,
  groupUpdatePolicy,
  Updater,
  type ActualInstance,
  type DesiredInstance,
  type InstanceBundle,
  type InstanceDriver,
  type JobCatalog,
  type JobDefinition,
  type Manifest,
  type PlannedChange,
  type TaskEventInput,
} from './index.js';

const httpJob: JobDefinition = {
  name: 'httpd',
  release: 'test',
  properties: { port: { default: 8080 }, greeting: {} },
  processes: [
    {
      name: 'httpd',
      command: 'busybox',
      args: ['httpd', '-f', '-p', '{{ spec.ip }}:{{ p.port }}'],
      env: { GREETING: '{{ p.greeting }}' },
      readiness: { http: { port: '{{ p.port }}', path: '/' } },
    },
  ],
  files: { 'www/index.html': '{{ p.greeting }} from {{ spec.name }}/{{ spec.index }}; peers {{ groups.web.ips }}' },
  drain: 'sleep 0',
};
const catalog: JobCatalog = { job: (_r, name) => (name === 'httpd' ? httpJob : undefined) };

function manifest(overrides: Partial<Manifest> = {}, instances = 5): Manifest {
  return parseManifest({
    name: 'web-dep',
    releases: [{ name: 'test', version: '1' }],
    image: 'default',
    update: { canaries: 1, max_in_flight: 2, canary_watch_time: '1000-5000', update_watch_time: '1000-5000' },
    instance_groups: [
      {
        name: 'web',
        instances,
        vm_type: 'small',
        networks: [{ name: 'default' }],
        jobs: [{ name: 'httpd', properties: { greeting: 'hello' } }],
      },
    ],
    ...overrides,
  });
}

describe('manifest', () => {
  it('accepts a valid manifest from YAML', () => {
    const m = parseManifest(`
name: d
releases: [{name: test, version: "1"}]
image: default
update: {canaries: 1, max_in_flight: "50%", canary_watch_time: 1000, update_watch_time: "1000-3000", serial: false}
instance_groups:
  - {name: web, instances: 2, vm_type: small, networks: [{name: default}], jobs: [{name: httpd}]}
variables: [{name: admin, type: password}]
`);
    assert.equal(m.instance_groups[0]?.instances, 2);
  });

  const bad: [string, unknown, string][] = [
    [
      'negative instances',
      { instance_groups: [{ name: 'web', instances: -1, vm_type: 'small', networks: [{ name: 'default' }], jobs: [{ name: 'httpd' }] }] },
      'instance_groups[0].instances',
    ],
    [
      'bad max_in_flight',
      { update: { canaries: 1, max_in_flight: 'lots', canary_watch_time: 1, update_watch_time: 1 } },
      'update.max_in_flight',
    ],
    [
      'bad job name',
      { instance_groups: [{ name: 'web', instances: 1, vm_type: 'small', networks: [{ name: 'default' }], jobs: [{ name: 'Bad Name' }] }] },
      'instance_groups[0].jobs[0].name',
    ],
    ['unknown key', { colour: 'blue' }, 'colour'],
    [
      'inverted watch range',
      { update: { canaries: 1, max_in_flight: 1, canary_watch_time: '5000-1000', update_watch_time: 1 } },
      'instance_groups[0].update.canary_watch_time',
    ],
    [
      'static ips count',
      {
        instance_groups: [
          {
            name: 'web',
            instances: 2,
            vm_type: 'small',
            networks: [{ name: 'default', static_ips: ['10.0.0.5'] }],
            jobs: [{ name: 'httpd' }],
          },
        ],
      },
      'instance_groups[0].networks[0].static_ips',
    ],
  ];
  for (const [name, patch, path] of bad) {
    it(`names the bad path: ${name}`, () => {
      const base = {
        name: 'd',
        releases: [{ name: 'test', version: '1' }],
        image: 'default',
        update: { canaries: 1, max_in_flight: 1, canary_watch_time: 1, update_watch_time: 1 },
        instance_groups: [{ name: 'web', instances: 1, vm_type: 'small', networks: [{ name: 'default' }], jobs: [{ name: 'httpd' }] }],
      };
      assert.throws(
        () => parseManifest({ ...base, ...(patch as object) }),
        (err: unknown) => {
          assert.ok(err instanceof AnodyneError);
          assert.equal(err.code, 'ANODYNE_E_MANIFEST_INVALID');
          assert.equal(err.details['path'], path, err.message);
          return true;
        },
      );
    });
  }

  it('max_in_flight as a number or a percentage; watch times as a value or a range', () => {
    assert.equal(resolveMaxInFlight(2, 5), 2);
    assert.equal(resolveMaxInFlight('50%', 5), 3);
    assert.equal(resolveMaxInFlight('10%', 5), 1);
    assert.deepEqual(parseWatchTime(3000), { min: 3000, max: 3000 });
    assert.deepEqual(parseWatchTime('1000 - 30000'), { min: 1000, max: 30000 });
  });
});

describe('rendering', () => {
  const ctx = (index: number) => ({
    spec: { deployment: 'web-dep', name: 'web', index, id: `id-${index}`, ip: `10.0.0.${10 + index}`, az: 'z1', bootstrap: index === 0 },
    groups: { web: { ips: ['10.0.0.10', '10.0.0.11'] } },
    vars: {},
  });

  it('fills properties, defaults, spec and group IPs', () => {
    const m = manifest({}, 2);
    const b = renderInstance(m, m.instance_groups[0]!, resolveJobs(m, catalog), ctx(1));
    const job = b.jobs[0]!;
    assert.deepEqual(job.processes[0]?.args, ['httpd', '-f', '-p', '10.0.0.11:8080']);
    assert.equal(job.processes[0]?.env['GREETING'], 'hello');
    assert.deepEqual(job.processes[0]?.readiness, { http: { port: '8080', path: '/' } });
    assert.equal(job.files[0]?.content, 'hello from web/1; peers 10.0.0.10,10.0.0.11');
  });

  it('the bundle hash changes with a property and not otherwise', () => {
    const m = manifest({}, 2);
    const defs = resolveJobs(m, catalog);
    const a = renderInstance(m, m.instance_groups[0]!, defs, ctx(0));
    assert.equal(renderInstance(m, m.instance_groups[0]!, defs, ctx(0)).hash, a.hash);
    const m2 = manifest({ instance_groups: [{ ...m.instance_groups[0]!, jobs: [{ name: 'httpd', properties: { greeting: 'bye' } }] }] });
    assert.notEqual(renderInstance(m2, m2.instance_groups[0]!, resolveJobs(m2, catalog), ctx(0)).hash, a.hash);
  });

  it('refuses unknown jobs, missing required properties and missing template values', () => {
    const m = manifest({}, 1);
    assert.throws(
      () => resolveJobs({ ...m, instance_groups: [{ ...m.instance_groups[0]!, jobs: [{ name: 'nope' }] }] }, catalog),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_JOB_UNKNOWN',
    );
    const noGreeting = { ...m, instance_groups: [{ ...m.instance_groups[0]!, jobs: [{ name: 'httpd' }] }] };
    assert.throws(
      () => renderInstance(noGreeting, noGreeting.instance_groups[0]!, resolveJobs(noGreeting, catalog), ctx(0)),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_MANIFEST_INVALID' && e.message.includes('greeting'),
    );
    const c = ctx(0);
    assert.throws(
      () => renderInstance(m, m.instance_groups[0]!, resolveJobs(m, catalog), { ...c, groups: {} }),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_TEMPLATE_INVALID' && e.message.includes('groups.web.ips'),
    );
  });
});

function desired(group: string, index: number, hash = 'h1', extra: Partial<DesiredInstance> = {}): DesiredInstance {
  return {
    group,
    index,
    vmType: 'small',
    image: 'default',
    diskMb: 0,
    network: 'default',
    bundle: { deployment: 'd', group, index, jobs: [], hash },
    ...extra,
  };
}
function actual(group: string, index: number, hash = 'h1', extra: Partial<ActualInstance> = {}): ActualInstance {
  return {
    group,
    index,
    vmId: `vm-${group}-${index}`,
    vmAlive: true,
    vmType: 'small',
    image: 'default',
    diskMb: 0,
    network: 'default',
    ip: null,
    bundleHash: hash,
    ...extra,
  };
}

describe('planner', () => {
  it('decides create, update, recreate, delete and keep per instance, with reasons', () => {
    const changes = plan(
      [desired('web', 0), desired('web', 1, 'h2'), desired('web', 2, 'h1', { vmType: 'medium' }), desired('web', 3), desired('web', 4)],
      [actual('web', 0), actual('web', 1), actual('web', 2), actual('web', 3, 'h1', { vmAlive: false }), actual('web', 5)],
    );
    const byIndex = Object.fromEntries(changes.map((c) => [c.index, [c.action, c.reasons.join(',')]]));
    assert.deepEqual(byIndex, {
      0: ['keep', ''],
      1: ['update', 'jobs changed'],
      2: ['recreate', 'vm_type changed'],
      3: ['recreate', 'vm missing'],
      4: ['create', 'new instance'],
      5: ['delete', 'not in manifest'],
    });
  });

  it('image, network, static IP and disk changes recreate', () => {
    const reasons = (d: Partial<DesiredInstance>) => plan([desired('g', 0, 'h1', d)], [actual('g', 0)])[0]!.reasons;
    assert.deepEqual(reasons({ image: 'other' }), ['image changed']);
    assert.deepEqual(reasons({ network: 'other' }), ['network changed']);
    assert.deepEqual(reasons({ staticIp: '10.0.0.9' }), ['static ip changed']);
    assert.deepEqual(reasons({ diskMb: 1024 }), ['persistent disk changed']);
  });
});

/** A driver over the fake provider: VMs are records; health is whatever the test says. */
class FakeDriver implements InstanceDriver {
  inFlight = 0;
  maxInFlight = 0;
  applied: string[] = [];
  removed: string[] = [];
  /** Instant (clock ms) at which each instance becomes healthy; absent = never. */
  healthyAt = new Map<string, number>();
  settled?: (c: PlannedChange) => Promise<void>;
  constructor(
    private readonly provider: FakeProvider,
    private readonly clock: ManualClock,
    private readonly defaultHealthyAfter: number | null = 1000,
  ) {}

  async apply(c: PlannedChange): Promise<void> {
    const key = `${c.group}/${c.index}`;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (c.action === 'create' || c.action === 'recreate') {
        if (c.actual?.vmId) await this.provider.deleteVm(c.actual.vmId);
        await this.provider.createVm({
          agentId: key.replace('/', '-'),
          image: 'default',
          vmType: 'small',
          network: { network: 'default' },
          env: {},
        });
      }
      await this.clock.sleep(100); // the work takes a little time
      this.applied.push(key);
      if (!this.healthyAt.has(key) && this.defaultHealthyAfter !== null)
        this.healthyAt.set(key, this.clock.nowMs() + this.defaultHealthyAfter);
    } finally {
      this.inFlight--;
    }
  }

  async remove(c: PlannedChange): Promise<void> {
    if (c.actual?.vmId) await this.provider.deleteVm(c.actual.vmId);
    this.removed.push(`${c.group}/${c.index}`);
  }

  healthy(c: PlannedChange): Promise<boolean> {
    const at = this.healthyAt.get(`${c.group}/${c.index}`);
    return Promise.resolve(at !== undefined && this.clock.nowMs() >= at);
  }
}

async function runToEnd(clock: ManualClock, p: Promise<unknown>): Promise<void> {
  let done = false;
  const settled = p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  for (let i = 0; i < 10_000 && !done; i++) await clock.advance(100);
  await settled;
}

function setup(m: Manifest, healthyAfter: number | null = 1000) {
  const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
  const provider = new FakeProvider({ clock });
  const driver = new FakeDriver(provider, clock, healthyAfter);
  const events: (TaskEventInput & { at: number })[] = [];
  const updater = new Updater({
    clock,
    driver,
    logger: silentLogger(),
    events: { event: (e) => Promise.resolve(void events.push({ ...e, at: clock.nowMs() })) },
    pollMs: 500,
  });
  const groups = (changes: PlannedChange[]) =>
    m.instance_groups.map((g) => ({
      name: g.name,
      instances: g.instances,
      policy: groupUpdatePolicy(m, g),
      changes: changes.filter((c) => c.group === g.name),
    }));
  return { clock, provider, driver, events, updater, groups };
}

describe('updater', () => {
  const fiveUpdates = (group = 'web', n = 5): PlannedChange[] =>
    Array.from({ length: n }, (_, i) => ({ group, index: i, action: 'update' as const, reasons: ['jobs changed'] }));

  it('canary first, then batches of max_in_flight', async () => {
    const m = manifest();
    const { clock, driver, events, updater, groups } = setup(m);
    await runToEnd(clock, updater.run(groups(fiveUpdates()), new AbortController().signal));
    const started = events.filter((e) => e.state === 'started').map((e) => [e.stage, e.instance, e.index, e.total]);
    assert.deepEqual(started, [
      ['Updating instance (canary)', 'web/0', 1, 5],
      ['Updating instance', 'web/1', 2, 5],
      ['Updating instance', 'web/2', 3, 5],
      ['Updating instance', 'web/3', 4, 5],
      ['Updating instance', 'web/4', 5, 5],
    ]);
    // web/1 and web/2 start together, after the canary finished; web/3 after both finished.
    const at = (inst: string, state: string) => events.find((e) => e.instance === inst && e.state === state)!.at;
    assert.ok(at('web/1', 'started') >= at('web/0', 'finished'));
    assert.equal(at('web/1', 'started'), at('web/2', 'started'));
    assert.ok(at('web/3', 'started') >= Math.max(at('web/1', 'finished'), at('web/2', 'finished')));
    assert.equal(driver.maxInFlight, 2);
    assert.equal(events.filter((e) => e.state === 'finished').length, 5);
  });

  it("the driver's order decides which instance is the canary and which roll last", async () => {
    const m = manifest();
    const { clock, driver, events, updater, groups } = setup(m);
    // As a cluster's hooks do for masters: one instance (etcd's leader) last.
    (driver as InstanceDriver).order = (_g, changes) =>
      Promise.resolve([...changes.filter((c) => c.index !== 0), ...changes.filter((c) => c.index === 0)]);
    await runToEnd(clock, updater.run(groups(fiveUpdates()), new AbortController().signal));
    const started = events.filter((e) => e.state === 'started').map((e) => [e.stage, e.instance]);
    assert.deepEqual(started[0], ['Updating instance (canary)', 'web/1']);
    assert.deepEqual(started.at(-1), ['Updating instance', 'web/0']);
    assert.equal(events.filter((e) => e.state === 'finished').length, 5);
  });

  it('max_in_flight as a percentage', async () => {
    const m = manifest({ update: { canaries: 0, max_in_flight: '60%', canary_watch_time: 1000, update_watch_time: 1000 } });
    const { clock, driver, updater, groups } = setup(m);
    await runToEnd(clock, updater.run(groups(fiveUpdates()), new AbortController().signal));
    assert.equal(driver.maxInFlight, 3);
    assert.equal(driver.applied.length, 5);
  });

  it('a canary that never becomes healthy fails the update after the watch time; nothing else is touched', async () => {
    const m = manifest();
    const { clock, driver, events, updater, groups } = setup(m, null);
    let error: unknown;
    const t0 = clock.nowMs();
    await runToEnd(
      clock,
      updater.run(groups(fiveUpdates()), new AbortController().signal).catch((e: unknown) => {
        error = e;
      }),
    );
    assert.ok(error instanceof AnodyneError && error.code === 'ANODYNE_E_CANARY_FAILED', String(error));
    assert.deepEqual(driver.applied, ['web/0']);
    const failed = events.find((e) => e.state === 'failed')!;
    assert.equal(failed.instance, 'web/0');
    const elapsed = failed.at - t0;
    assert.ok(elapsed >= 5000 && elapsed <= 5300, `failed after the watch time max (5000 ms + apply), took ${elapsed}`);
  });

  it('a failed canary goes back to its previous bundle, is watched again, and the task fails saying so; nothing else is touched', async () => {
    const m = manifest();
    const { clock, driver, events, updater, groups } = setup(m, null);
    // Healthy only on the bundle it ran before (the new one cannot start).
    const running = new Map<string, string>();
    const apply = driver.apply.bind(driver);
    driver.apply = async (c: PlannedChange) => {
      await apply(c);
      running.set(`${c.group}/${c.index}`, c.desired!.bundle.hash);
    };
    driver.healthy = (c: PlannedChange) => Promise.resolve(running.get(`${c.group}/${c.index}`) === 'old');
    const settled: string[] = [];
    driver.settled = (c: PlannedChange) => Promise.resolve(void settled.push(`${c.group}/${c.index} ${c.desired!.bundle.hash}`));
    const bundle = (hash: string) => ({ hash, jobs: [] }) as unknown as InstanceBundle;
    const changes = fiveUpdates().map((c) => ({ ...c, previous: bundle('old'), desired: { bundle: bundle('new') } as DesiredInstance }));
    let error: unknown;
    await runToEnd(
      clock,
      updater.run(groups(changes), new AbortController().signal).catch((e: unknown) => {
        error = e;
      }),
    );
    assert.ok(error instanceof AnodyneError && error.code === 'ANODYNE_E_CANARY_FAILED', String(error));
    assert.match((error as Error).message, /rolled back to its previous bundle/);
    assert.deepEqual(driver.applied, ['web/0', 'web/0'], 'the canary was applied twice (new, then old); nothing else');
    assert.equal(running.get('web/0'), 'old');
    assert.deepEqual(settled, ['web/0 old'], 'only the rolled-back canary settled');
    assert.ok(events.some((e) => e.stage === 'Rolling back canary' && e.state === 'finished'));
  });

  it('watch-time ranges: first check after min, healthy as soon as it is', async () => {
    const m = manifest({ update: { canaries: 1, max_in_flight: 1, canary_watch_time: '2000-20000', update_watch_time: 1000 } }, 1);
    const { clock, driver, events, updater, groups } = setup(m);
    driver.healthyAt.set('web/0', clock.nowMs() + 100 + 7000);
    const t0 = clock.nowMs();
    await runToEnd(clock, updater.run(groups(fiveUpdates('web', 1)), new AbortController().signal));
    const done = events.find((e) => e.state === 'finished')!.at - t0;
    assert.ok(done >= 7100 && done <= 7700, `finished at ${done}`);
  });

  it('serial groups wait for each other; serial: false starts with the group before it', async () => {
    const base = manifest({}, 2);
    const g = base.instance_groups[0]!;
    const m = manifest(
      {
        update: { canaries: 0, max_in_flight: 2, canary_watch_time: 1000, update_watch_time: 1000 },
        instance_groups: [
          { ...g, name: 'a' },
          { ...g, name: 'b', update: { serial: false } },
          { ...g, name: 'c' },
        ],
      },
      2,
    );
    const { clock, events, updater, groups } = setup(m);
    const changes = ['a', 'b', 'c'].flatMap((n) => fiveUpdates(n, 2));
    await runToEnd(clock, updater.run(groups(changes), new AbortController().signal));
    const first = (grp: string, state: string) =>
      Math.min(...events.filter((e) => e.instance?.startsWith(grp) && e.state === state).map((e) => e.at));
    const last = (grp: string, state: string) =>
      Math.max(...events.filter((e) => e.instance?.startsWith(grp) && e.state === state).map((e) => e.at));
    assert.equal(first('b/', 'started'), first('a/', 'started'), 'b runs in parallel with a');
    assert.ok(first('c/', 'started') >= Math.max(last('a/', 'finished'), last('b/', 'finished')), 'c waits for a and b');
  });

  it('a new deployment starts every instance at once: canaries and serial groups protect running instances, and none runs yet', async () => {
    const base = manifest({}, 3);
    const g = base.instance_groups[0]!;
    const m = manifest(
      {
        instance_groups: [
          { ...g, name: 'master' },
          { ...g, name: 'worker' },
        ],
      },
      3,
    );
    const { clock, events, updater, groups } = setup(m);
    const creates = ['master', 'worker'].flatMap((grp) =>
      [0, 1, 2].map((index) => ({ group: grp, index, action: 'create' as const, reasons: ['new instance'] })),
    );
    await runToEnd(clock, updater.run(groups(creates), new AbortController().signal));
    const starts = events.filter((e) => e.state === 'started');
    assert.equal(starts.length, 6);
    assert.equal(new Set(starts.map((e) => e.at)).size, 1, 'all six started at the same moment');
    assert.ok(!starts.some((e) => e.stage.includes('canary')), 'no canary among instances that never ran');
    assert.equal(events.filter((e) => e.state === 'finished').length, 6);

    // The same groups with running instances: masters first (a canary, then batches), workers after them.
    const { clock: c2, events: e2, updater: u2, groups: g2 } = setup(m);
    const updates = ['master', 'worker'].flatMap((grp) => fiveUpdates(grp, 3));
    await runToEnd(c2, u2.run(g2(updates), new AbortController().signal));
    const at = (grp: string, state: string, f: (...n: number[]) => number) =>
      f(...e2.filter((e) => e.instance?.startsWith(grp) && e.state === state).map((e) => e.at));
    assert.ok(at('worker/', 'started', Math.min) >= at('master/', 'finished', Math.max), 'workers wait for every master');
    assert.equal(e2.find((e) => e.state === 'started')?.stage, 'Updating instance (canary)');
  });

  it('deletes unneeded instances first and creates VMs on the fake provider', async () => {
    const m = manifest({}, 2);
    const { clock, provider, driver, events, updater, groups } = setup(m);
    const old = await provider.createVm({ agentId: 'web-2', image: 'default', vmType: 'small', network: { network: 'default' }, env: {} });
    const changes = plan([desired('web', 0), desired('web', 1)], [actual('web', 2, 'h1', { vmId: old.id })]);
    await runToEnd(clock, updater.run(groups(changes), new AbortController().signal));
    assert.equal(events[0]?.stage, 'Deleting unneeded instances');
    assert.deepEqual(driver.removed, ['web/2']);
    assert.equal(await provider.hasVm(old.id), false);
    assert.equal((await provider.listVms()).length, 2);
  });

  it('cancellation stops between steps, leaving later instances untouched', async () => {
    const m = manifest();
    const { clock, driver, updater, groups } = setup(m);
    const ac = new AbortController();
    const run = updater.run(groups(fiveUpdates()), ac.signal);
    let error: unknown;
    const settled = run.catch((e: unknown) => {
      error = e;
    });
    while (driver.applied.length < 1) await clock.advance(100);
    ac.abort();
    await runToEnd(clock, settled);
    assert.ok(error instanceof AnodyneError && error.code === 'ANODYNE_E_TASK_CANCELLED', String(error));
    assert.deepEqual(driver.applied, ['web/0'], 'the canary step in progress completes; no batch starts');
  });
});
