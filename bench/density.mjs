// Density benchmark: 1 master + 1 worker clusters created in batches through the real API until the
// machine reaches a limit (a create or a cluster failing, memory running short, the API's p99 at 1 s, or
// the most this run tries), each with all nodes Ready and a pod running. After each batch: every cluster
// checked again, the host's memory, each cluster's memory (its VMs' cgroups) and idle CPU (their cpuacct
// over a quiet window, the agents' share apart), the platform API's p99 under load and the platform's RSS.
// The platform memory row: RSS with the store just open, with 1,000 clusters stored, and with those plus
// the running ones. Returns Markdown for docs/benchmarks.md (bench/run.mjs writes it).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg, totalmem } from 'node:os';
import { exec } from '@anodyne/common';
import { load } from './api.mjs';
import { pidsUnder, vmMemory } from './clusters.mjs';
import { benchPlatform, mib, pool, sleep, stats, storeClusterRows, until } from './lib.mjs';

const STORED = 1000;
/** Stop before a batch when the host has less than this available (the machine must stay usable). */
const RESERVE = 2 * 2 ** 30;
/** The API's p99 (ms) at which the platform counts as no longer keeping up. */
const P99_LIMIT = 1000;

const memAvailable = () => Number(/^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024;
/** This process's RSS after garbage collections and a moment for freed pages to go back. */
async function settledRss() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await sleep(300);
  }
  return process.memoryUsage().rss;
}
/** CPU time (ns) a VM's cgroup was charged, and that of the agents in it. */
function vmCpu(tag, vmId) {
  const dir = `/sys/fs/cgroup/cpuacct/anodyne/${tag}/${vmId}`;
  const total = Number(readFileSync(join(dir, 'cpuacct.usage'), 'utf8'));
  let agent = 0;
  for (const pid of pidsUnder(`/sys/fs/cgroup/memory/anodyne/${tag}/${vmId}`)) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('agent/anodyne-agent')) continue;
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      agent += ((Number(f[11]) + Number(f[12])) * 1e9) / 100; // utime + stime, in clock ticks of 1/100 s
    } catch {
      // the process ended
    }
  }
  return { total, agent };
}

export async function benchDensity(release, { max = 30, batch = 5, quietSeconds = 10, log = (s) => process.stderr.write(s) } = {}) {
  const kubectl = release.bin('kubectl');
  const image = release.image('busybox').ref;
  // A segment for every cluster the machine might hold (128 of /27).
  const segments = { ANODYNE_PROVIDER_SEGMENT_POOL: '10.190.0.0/20', ANODYNE_PROVIDER_SEGMENT_PREFIX: '27' };
  const { tp, call, waitTask } = await benchPlatform('dn', '10.198.16.0/24', 19_082, 900_000, segments);
  const p = tp.platform;
  const names = [];
  const vms = new Map(); // cluster name → VM ids
  const k = (name, ...args) =>
    exec([kubectl, `--kubeconfig=${join(tp.dir, `${name}.kubeconfig`)}`, ...args], { okCodes: [0, 1], timeoutMs: 30_000 });
  /** Every node of the cluster Ready and its pod Running. */
  const healthy = async (name) =>
    (await k(name, 'get', 'nodes', '--no-headers')).stdout.split('\n').filter((l) => /\sReady\s/.test(l)).length === 1 &&
    (await k(name, 'get', 'pod', 'probe', '-o', 'jsonpath={.status.phase}')).stdout === 'Running';
  try {
    // The bench user's quota raised above what one run tries (the default is 10 clusters).
    const quota = await call('PUT', '/v1/quotas/bench', { max_clusters: max + 10, max_workers: max + 10 });
    if (quota.status !== 200) throw new Error(`setting the quota: ${quota.status} ${quota.text}`);
    const memory = { open: await settledRss() };
    // A fresh token for each load (the run outlives one).
    const freshToken = async () =>
      (await p.identity.token({ grant_type: 'password', username: 'bench', password: 'bench-password' })).access_token;
    await storeClusterRows(p.store, STORED, 's');
    await call('GET', '/v1/clusters'); // the list's view built once, as a running platform has it
    memory.stored = await settledRss();

    const steps = [];
    let limit = `the most this run tries (${max} clusters)`;
    for (let n = 0; n < max; n += batch) {
      const free = memAvailable();
      if (free < RESERVE) {
        limit = `memory: ${mib(free)} MiB available, under the ${mib(RESERVE)} MiB this run keeps free`;
        break;
      }
      const batchNames = Array.from({ length: Math.min(batch, max - n) }, (_, i) => `d-${String(n + i).padStart(2, '0')}`);
      const t0 = performance.now();
      const failed = [];
      await Promise.all(
        batchNames.map(async (name) => {
          try {
            const created = await call('POST', '/v1/clusters', {
              name,
              plan_name: 'small',
              parameters: { kubernetes_worker_instances: 1 },
            });
            if (created.status !== 202) throw new Error(`${created.status} ${created.text.slice(0, 300)}`);
            names.push(name);
            const task = await waitTask(created.body.last_task_id);
            if (task.state !== 'done') throw new Error(`task ${task.state}: ${JSON.stringify(task.error).slice(0, 400)}`);
            writeFileSync(join(tp.dir, `${name}.kubeconfig`), (await call('GET', `/v1/clusters/${name}/kubeconfig`)).body.kubeconfig, {
              mode: 0o600,
            });
            await until(
              `${name}: a pod created`,
              180_000,
              async () =>
                (await k(name, 'run', 'probe', `--image=${image}`, '--image-pull-policy=Never', '--restart=Never', '--', 'sleep', '86400'))
                  .code === 0
                  ? true
                  : undefined,
              200,
            );
            await until(
              `${name}: its node Ready and its pod Running`,
              300_000,
              async () => ((await healthy(name)) ? true : undefined),
              500,
            );
            vms.set(name, (await p.director.instances(`cluster-${name}`)).map((r) => r.vm_id).filter(Boolean));
          } catch (err) {
            failed.push(`${name}: ${err.message}`);
          }
        }),
      );
      const batchMs = performance.now() - t0;
      if (failed.length > 0) {
        limit = `a failure while creating clusters ${names.length - batchNames.length + 1}–${names.length}: ${failed.join('; ')}`;
        break;
      }
      // Every cluster so far still has its node Ready and its pod Running.
      const lost = [];
      await pool([...vms.keys()], 4, async (name) => {
        if (!(await healthy(name))) lost.push(name);
      });
      // Quiet window: CPU charged to every VM, and to its agent, while nothing is asked of the clusters.
      const before = new Map([...vms].map(([name, ids]) => [name, ids.map((id) => vmCpu(tp.tag, id))]));
      const cpu0 = process.cpuUsage();
      await sleep(quietSeconds * 1000);
      const platformCpu = ((process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system) / 1e6 / quietSeconds) * 100;
      const perCluster = [];
      let agents = 0;
      for (const [name, ids] of vms) {
        const after = ids.map((id) => vmCpu(tp.tag, id));
        const b = before.get(name);
        perCluster.push((after.reduce((s, a, i) => s + a.total - b[i].total, 0) / 1e9 / quietSeconds) * 100);
        agents += (after.reduce((s, a, i) => s + a.agent - b[i].agent, 0) / 1e9 / quietSeconds) * 100;
      }
      const clusterMemory = [...vms.values()].map((ids) => ids.reduce((s, id) => s + vmMemory(tp.tag, id).vmRss, 0));
      const api = await load(`${p.url}/v1/clusters`, await freshToken(), 5, 4);
      const step = {
        clusters: vms.size,
        batchMs,
        used: totalmem() - memAvailable(),
        clusterMemory: stats(clusterMemory),
        cpu: stats(perCluster),
        cpuAll: perCluster.reduce((s, x) => s + x, 0),
        agentsPerVm: agents / [...vms.values()].reduce((s, ids) => s + ids.length, 0),
        platformCpu,
        p99: api.p99,
        rps: api.rps,
        rss: await settledRss(),
        load: loadavg()[0],
      };
      steps.push(step);
      log(
        `density: ${step.clusters} clusters, batch ${(batchMs / 1000).toFixed(0)} s, host used ${mib(step.used)} MiB, ` +
          `cluster ${mib(step.clusterMemory.median)} MiB, idle CPU ${step.cpu.median.toFixed(1)} % per cluster (${step.cpuAll.toFixed(0)} % all), ` +
          `API p99 ${step.p99} ms, platform RSS ${mib(step.rss)} MiB, load ${step.load.toFixed(1)}\n`,
      );
      if (lost.length > 0) {
        limit = `clusters no longer healthy after ${vms.size} were created: ${lost.join(', ')}`;
        break;
      }
      if (api.p99 >= P99_LIMIT) {
        limit = `the platform API's p99 reached ${api.p99} ms with ${vms.size} clusters`;
        break;
      }
    }
    const at30 = steps.find((s) => s.clusters >= 30) ?? steps.at(-1);
    const lines = [
      '## Density',
      '',
      '1 master + 1 worker clusters (plan `small`) created through the real API in batches of',
      `${batch} at once, on top of ${STORED.toLocaleString('en')} cluster records stored (rows only, as in the API section), until a limit:`,
      `a create or an earlier cluster failing, less than ${mib(RESERVE)} MiB of memory available before a batch, the API's p99 at`,
      `${P99_LIMIT} ms, or ${max} clusters (the most one run tries). After each batch: every cluster checked again (its node`,
      "Ready, a busybox pod Running); each cluster's memory as its two VMs' memory cgroups charge it (RSS, no page cache);",
      `its CPU over a ${quietSeconds} s window with nothing asked of the clusters (its VMs' cpuacct, in % of one core; the agents'`,
      "part is their processes' own time, per VM); the platform API under load (autocannon, 4 connections, 5 s, GET",
      `/v1/clusters of ${STORED.toLocaleString('en')}+ records); the platform's CPU over the quiet window and its RSS after a`,
      "garbage collection (the test kit's platform passes its health monitor every 2 s, not the default 30 s, so the",
      "platform's CPU is an upper bound). No floor: the limit is named instead.",
      '',
      `**Limit reached: ${limit}.**`,
      '',
      '| clusters | batch s | host memory used GiB | per cluster MiB (median, min–max) | idle CPU per cluster % (median, max) | idle CPU all clusters % | agents' +
        "' CPU per VM % | platform CPU % | API req/s | API p99 ms | platform RSS MiB | load (1 min) |",
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...steps.map(
        (s) =>
          `| ${s.clusters} | ${(s.batchMs / 1000).toFixed(0)} | ${(s.used / 2 ** 30).toFixed(1)} | ${mib(s.clusterMemory.median)} (${mib(s.clusterMemory.min)}–${mib(s.clusterMemory.max)}) | ` +
          `${s.cpu.median.toFixed(1)} (${s.cpu.max.toFixed(1)}) | ${s.cpuAll.toFixed(0)} | ${s.agentsPerVm.toFixed(2)} | ${s.platformCpu.toFixed(1)} | ${s.rps.toFixed(0)} | ${s.p99} | ${mib(s.rss)} | ${s.load.toFixed(1)} |`,
      ),
      '',
      '### Platform memory',
      '',
      'RSS of the process that runs the platform (the benchmark runs it in-process, as the test kit does; measured',
      'after a garbage collection). The first row is the baseline: the platform started with its store open and empty.',
      '',
      '| state | platform RSS MiB | over the baseline MiB |',
      '|---|---|---|',
      `| store open, nothing stored | ${mib(memory.open)} | 0 |`,
      `| ${STORED.toLocaleString('en')} clusters stored | ${mib(memory.stored)} | ${mib(memory.stored - memory.open)} |`,
      ...(at30
        ? [`| ${STORED.toLocaleString('en')} stored + ${at30.clusters} running | ${mib(at30.rss)} | ${mib(at30.rss - memory.open)} |`]
        : []),
      '',
    ];
    return lines.join('\n');
  } finally {
    // Every cluster deleted through the API (its VMs, networks and disks), then the platform.
    await pool([...names], 4, async (name) => {
      const del = await call('DELETE', `/v1/clusters/${name}`).catch(() => undefined);
      if (del?.status === 202) await waitTask(del.body.last_task_id).catch(() => undefined);
    });
    await tp.stop();
  }
}
