// Director scale: 1,000 deployments on the FAKE provider (in-memory VMs) with in-memory agents —
// the director's own cost, with no VM, process or network behind it. Each deployment is 1 master
// + 3 workers (4,000 instances), deployed through the director's real deploy path (tasks, event
// log, locks, planner, updater) into SQLite. Then the health monitor's full pass over every
// instance is timed, side by side with a raw floor measured in the same run: one read of every
// instance row, one provider listing, and one agent state call per instance at the same
// concurrency (what any pass must do, with no classification, writes or resurrection). Also: the
// process's memory before and after, and one pass that finds 10 lost VMs and resurrects them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger, systemClock } from '@anodyne/common';
import { FakeProvider } from '@anodyne/providers';
import { openStore } from '@anodyne/store';
import { Director, HealthMonitor } from '@anodyne/director';
import { FakeAgents } from '@anodyne/director/testing';
import { mib, pool, stats } from './lib.mjs';

const DEPLOYMENTS = 1000;
const CONCURRENCY = 32;
const job = (name) => ({ name, release: 'bench', processes: [{ name, command: 'true' }] });
const catalog = { job: (_r, name) => (['etcd', 'kubelet'].includes(name) ? job(name) : undefined) };
const variables = { ensure: () => Promise.resolve({}), remove: () => Promise.resolve() };
const tls = {
  agentTls: () => Promise.resolve({ cert: '', key: '', ca: '' }),
  directorTls: () => Promise.resolve({ cert: '', key: '', ca: '' }),
};
const manifest = (name) => ({
  name,
  releases: [{ name: 'bench', version: '1' }],
  image: 'default',
  update: { canaries: 1, max_in_flight: 2, canary_watch_time: '0-1000', update_watch_time: '0-1000' },
  instance_groups: [
    { name: 'master', instances: 1, vm_type: 'small', networks: [{ name: 'default' }], jobs: [{ name: 'etcd' }] },
    { name: 'worker', instances: 3, vm_type: 'small', networks: [{ name: 'default' }], jobs: [{ name: 'kubelet' }] },
  ],
});
const memory = () => {
  globalThis.gc?.();
  return process.memoryUsage();
};

export async function benchDirector({ runs = 5, log = (s) => process.stderr.write(s) } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-bench-director-'));
  const store = await openStore({ driver: 'sqlite', path: join(dir, 'anodyne.db') });
  try {
    const provider = new FakeProvider({ clock: systemClock, network: '10.250.0.0/16' });
    const agents = new FakeAgents(provider);
    const director = new Director({ store, provider, catalog, variables, tls, clock: systemClock, logger: silentLogger(), agents });
    const monitor = new HealthMonitor({
      store,
      provider,
      director,
      clock: systemClock,
      logger: silentLogger(),
      concurrency: CONCURRENCY,
      resurrection: { enabled: true, afterMs: 0 },
    });
    const empty = memory();

    const names = Array.from({ length: DEPLOYMENTS }, (_, i) => `d-${String(i).padStart(4, '0')}`);
    const t0 = performance.now();
    await pool(names, 16, async (name) => {
      const t = await director.wait((await director.deploy(manifest(name))).id);
      if (t.state !== 'done') throw new Error(`deploy ${name}: ${t.error?.message}`);
    });
    const deployS = (performance.now() - t0) / 1000;
    log(`director: ${DEPLOYMENTS} deployments (${DEPLOYMENTS * 4} instances) deployed in ${deployS.toFixed(1)} s\n`);
    const loaded = memory();

    // The first pass finds every new instance healthy and writes all of them (pending → running).
    const w0 = performance.now();
    const first = await monitor.pass();
    const firstMs = performance.now() - w0;
    if (first.counts.running !== DEPLOYMENTS * 4) throw new Error(`first pass found ${JSON.stringify(first.counts)}`);
    const passes = [];
    const floors = [];
    for (let i = 0; i < runs; i++) {
      const f0 = performance.now();
      const rows = await store.db.selectFrom('instances').select(['agent_id', 'ip', 'vm_id']).execute();
      await provider.listVms();
      await pool(rows, CONCURRENCY, (r) => agents.call(r, 'GET', '/state'));
      floors.push(performance.now() - f0);
      const p0 = performance.now();
      const report = await monitor.pass();
      passes.push(performance.now() - p0);
      if (report.instances !== DEPLOYMENTS * 4 || report.counts.running !== DEPLOYMENTS * 4)
        throw new Error(`pass found ${JSON.stringify(report.counts)} of ${report.instances}`);
    }
    const afterPasses = memory();

    // Ten VMs lost in ten deployments: one pass finds them and starts ten resurrect tasks.
    const lost = names.filter((_, i) => i % 100 === 7);
    for (const name of lost) {
      const row = (await director.instances(name)).find((r) => r.group_name === 'worker');
      provider.crash(row.vm_id);
    }
    const l0 = performance.now();
    const found = await monitor.pass();
    const findMs = performance.now() - l0;
    if (found.counts.missing !== lost.length || found.resurrections.length !== lost.length)
      throw new Error(`lost ${lost.length}, found ${JSON.stringify(found.counts)}, ${found.resurrections.length} resurrections`);
    for (const r of found.resurrections) {
      const t = await director.wait(r.task);
      if (t.state !== 'done') throw new Error(`resurrect ${r.deployment}: ${t.error?.message}`);
    }
    const healedMs = performance.now() - l0;
    const again = await monitor.pass();
    if (again.counts.running !== DEPLOYMENTS * 4) throw new Error(`after resurrection: ${JSON.stringify(again.counts)}`);

    const p = stats(passes);
    const f = stats(floors);
    log(
      `director: health pass median ${p.median.toFixed(0)} ms (floor ${f.median.toFixed(0)} ms); RSS ${mib(empty.rss)} → ${mib(loaded.rss)} MiB\n`,
    );
    return [
      '## Director scale (fake provider)',
      '',
      `${DEPLOYMENTS} deployments of 1 master + 3 workers (${DEPLOYMENTS * 4} instances) on the **fake provider** with in-memory`,
      "agents: nothing runs, so this is the director's own cost (SQLite store, tasks, event log, planner, updater, health",
      `monitor). Deployed through the real deploy path, 16 at a time, in ${deployS.toFixed(1)} s. A health pass reads every`,
      `instance (and the locks and deployments tables) and the provider's VM list once and asks every agent for its state,`,
      `${CONCURRENCY} at a time; the raw floor reads every instance and the VM list and makes the same state calls at the same`,
      `concurrency, nothing more (no classification, no writes, no resurrection), measured in the same run just before each`,
      `pass. ${runs} run${runs === 1 ? '' : 's'}; medians are the lower middle for an even count.`,
      '',
      '| measure | median | min | max | raw floor (median) | pass ÷ raw floor (medians) |',
      '|---|---|---|---|---|---|',
      `| full health pass over ${DEPLOYMENTS * 4} instances, nothing changed | ${p.median.toFixed(0)} ms | ${p.min.toFixed(0)} ms | ${p.max.toFixed(0)} ms | ${f.median.toFixed(0)} ms | ${(p.median / f.median).toFixed(1)}× |`,
      '',
      `The first pass after the deploys, which records all ${DEPLOYMENTS * 4} instances' health (pending → running) in one`,
      `transaction (one pass, not in the table above): ${firstMs.toFixed(0)} ms. In-memory agents answer at once; over the network`,
      `each state call costs an mTLS request, which the pass overlaps ${CONCURRENCY} at a time.`,
      '',
      `One pass that finds ${lost.length} lost VMs in ${lost.length} deployments and starts their resurrection: ${findMs.toFixed(0)} ms; until all`,
      `${lost.length} resurrect tasks are done (each VM recreated and its agent healthy): ${healedMs.toFixed(0)} ms from the start of that pass.`,
      '',
      "Memory of this benchmark's process (director, SQLite store, fake provider and fake agents; no API server),",
      `${globalThis.gc ? 'each figure after a forced garbage collection' : 'with no forced garbage collection (started without --expose-gc)'}:`,
      '',
      '| bench process memory | RSS | JS heap used |',
      '|---|---|---|',
      `| store open, nothing deployed | ${mib(empty.rss)} MiB | ${mib(empty.heapUsed)} MiB |`,
      `| ${DEPLOYMENTS} deployments deployed | ${mib(loaded.rss)} MiB | ${mib(loaded.heapUsed)} MiB |`,
      `| after ${runs + 1} health passes (the first and ${runs} timed) | ${mib(afterPasses.rss)} MiB | ${mib(afterPasses.heapUsed)} MiB |`,
      '',
      `The fake provider and agents keep their ${(DEPLOYMENTS * 4).toLocaleString('en')} VMs in this process too, so the growth is an upper bound for the`,
      'director itself.',
      '',
    ].join('\n');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Run on its own (`node --expose-gc bench/director.mjs [runs]`): bench/run.mjs starts it in a fresh
// process, so the memory figures are this benchmark's alone.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  process.stdout.write(await benchDirector({ runs: Number(process.argv[2] ?? 5) }));
}
