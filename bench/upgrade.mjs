// Upgrade benchmark: 1+1 and 3+3 clusters created on the older Kubernetes minor and upgraded to the newest
// through the real API, with a client creating, reading and deleting ConfigMaps through the cluster's
// endpoint all along; the time per stage (masters, workers) from the task's events; beside a floor measured
// in the same run: the same processes started by hand on the new binaries, one instance after another.
// Returns Markdown for docs/benchmarks.md (bench/run.mjs writes it).
import { systemClock } from '@anodyne/common';
import { countingLoop, endpointRequest, expectStatus } from '@anodyne/clusters';
import { rawBoot } from '@anodyne/release';
import { nodeFloor } from './floor.mjs';
import { benchPlatform, sec, stats } from './lib.mjs';

const SHAPES = [
  { label: '1 master + 1 worker', plan: 'small', masters: 1, workers: 1 },
  { label: '3 masters + 3 workers', plan: 'ha', masters: 3, workers: 3 },
];

/** From the first event of the group's instances to the last, in the task's event log. */
function span(events, group) {
  const at = events.filter((e) => (e.instance ?? '').startsWith(`${group}/`)).map((e) => Date.parse(e.at));
  return at.length === 0 ? 0 : Math.max(...at) - Math.min(...at);
}

export async function benchUpgrade(releases, { runs = 1, log = (s) => process.stderr.write(s) } = {}) {
  const newest = releases[0];
  const older = releases.find((r) => r.minor < newest.minor);
  if (!older) return '## Upgrade\n\nOnly one Kubernetes minor is built: nothing to upgrade between.\n';
  const { tp, call, waitTask } = await benchPlatform('bu', '10.198.15.0/24', 19_090, 900_000);
  try {
    const p = tp.platform;

    // The floor: each master's etcd + kube-apiserver, and each worker's node processes, started by hand on the
    // new release's binaries, one after another (as a rolling upgrade goes).
    const masterFloors = [];
    const workerFloors = [];
    for (let i = 0; i < runs; i++) {
      const r = await rawBoot(newest);
      masterFloors.push(r.totalMs);
      await r.stop();
      const n = await nodeFloor(newest);
      workerFloors.push(n.processesMs);
      log(`upgrade floor run ${i + 1}: etcd + apiserver ${sec(r.totalMs)} s; a node's processes ${sec(n.processesMs)} s\n`);
    }
    const masterFloor = stats(masterFloors).median;
    const workerFloor = stats(workerFloors).median;

    const rows = [];
    for (const shape of SHAPES) {
      const samples = [];
      for (let i = 0; i < runs; i++) {
        const name = `up-${shape.masters}-${i}`;
        const created = (
          await call('POST', '/v1/clusters', {
            name,
            plan_name: shape.plan,
            kubernetes_version: older.version,
            parameters: { kubernetes_worker_instances: shape.workers },
          })
        ).body;
        const made = await waitTask(created.last_task_id);
        if (made.state !== 'done') throw new Error(`create failed: ${JSON.stringify(made.error)}`);
        const e = await p.clusters.binds.endpoint(name);
        const base = '/api/v1/namespaces/default/configmaps';
        const loop = countingLoop('ConfigMaps', systemClock, 100, async (count, k) => {
          const cm = `loop-${k}`;
          count(expectStatus(await endpointRequest(e, 'POST', base, { metadata: { name: cm } }, 5000), 201));
          count(expectStatus(await endpointRequest(e, 'GET', `${base}/${cm}`, undefined, 5000), 200));
          count(expectStatus(await endpointRequest(e, 'DELETE', `${base}/${cm}`, undefined, 5000), 200));
        });
        const t0 = performance.now();
        const up = (await call('POST', `/v1/clusters/${name}/upgrade`, { kubernetes_version: newest.version })).body;
        const task = await waitTask(up.last_task_id);
        const totalMs = performance.now() - t0;
        const client = await loop.stop();
        if (task.state !== 'done') throw new Error(`upgrade failed: ${JSON.stringify(task.error)}`);
        const events = (await call('GET', `/v1/tasks/${up.last_task_id}/events`)).body;
        samples.push({ totalMs, mastersMs: span(events, 'master'), workersMs: span(events, 'worker'), client });
        log(
          `${shape.label} upgrade run ${i + 1}: ${sec(totalMs)} s (masters ${sec(span(events, 'master'))} s, workers ${sec(span(events, 'worker'))} s); ` +
            `client ${client.requests} requests, ${client.failed} failed${client.last_error ? ` (last: ${client.last_error})` : ''}\n`,
        );
        const del = (await call('DELETE', `/v1/clusters/${name}`)).body;
        await waitTask(del.last_task_id);
      }
      rows.push({ shape, samples });
    }

    const lines = [
      '## Upgrade',
      '',
      `A cluster created on Kubernetes ${older.version} is upgraded to ${newest.version} through the API (\`POST /v1/clusters/{name}/upgrade\`):`,
      'masters one at a time (etcd healthy before and after each), then workers (a canary, then one at a time), each',
      'drained, stopped, given the new bundle and started. All along a client creates, reads and deletes a ConfigMap',
      "through the cluster's endpoint (a new connection per request) every 100 ms; its requests and failures are",
      "counted. Stages are from the first to the last event of their instances in the task's event log.",
      '',
      'The floor, measured in the same run: the same programs started by hand on the new binaries, one instance after',
      'another: per master etcd + kube-apiserver of the new release started on loopback until /readyz (the cluster',
      "create section's first floor), per worker one bare VM's node processes ready (its second floor); the shape's",
      `floor adds them up. ${runs} run${runs === 1 ? '' : 's'} of each shape; medians are the lower middle for an even count.`,
      '',
      '| shape | measure | median s | min s | max s | floor s | × floor | client requests | failed |',
      '|---|---|---|---|---|---|---|---|---|',
    ];
    for (const { shape, samples } of rows) {
      const floors = {
        totalMs: shape.masters * masterFloor + shape.workers * workerFloor,
        mastersMs: shape.masters * masterFloor,
        workersMs: shape.workers * workerFloor,
      };
      const requests = samples.reduce((a, s) => a + s.client.requests, 0);
      const failed = samples.reduce((a, s) => a + s.client.failed, 0);
      for (const [label, key] of [
        ['upgrade task', 'totalMs'],
        ['masters', 'mastersMs'],
        ['workers', 'workersMs'],
      ]) {
        const st = stats(samples.map((s) => s[key]));
        const tail = key === 'totalMs' ? `${requests} | ${failed}` : ' | ';
        lines.push(
          `| ${shape.label} | ${label} | ${sec(st.median)} | ${sec(st.min)} | ${sec(st.max)} | ${sec(floors[key])} | ${(st.median / floors[key]).toFixed(1)} | ${tail} |`,
        );
      }
    }
    lines.push('');
    return lines.join('\n');
  } finally {
    await tp.stop();
  }
}
