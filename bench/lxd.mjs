// The LXD provider beside the local one: 1+1 and 3+3 created through the platform on each, in the same run
// (request → create task done → all nodes Ready → a pod Running). LXD is a private daemon started for the run.
import { performance } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import { startLxd } from '@anodyne/providers/testing';
import { benchPlatform, sec, stats, until } from './lib.mjs';

const SHAPES = [
  { label: '1 master + 1 worker', plan: 'small', workers: 1 },
  { label: '3 masters + 3 workers', plan: 'ha', workers: 3 },
];

async function createOn(kind, env, network, port, release, runs, log) {
  const { tp, call, waitTask } = await benchPlatform(kind === 'lxd' ? 'bx' : 'bl', network, port, 600_000, env);
  const kubectl = tp.platform.releaseKubectl;
  const out = {};
  try {
    for (const shape of SHAPES) {
      const samples = [];
      for (let i = 0; i < runs; i++) {
        const name = `b${i}`;
        const t0 = performance.now();
        const created = (
          await call('POST', '/v1/clusters', { name, plan_name: shape.plan, parameters: { kubernetes_worker_instances: shape.workers } })
        ).body;
        const task = await waitTask(created.last_task_id);
        if (task.state !== 'done') throw new Error(`${kind}: create failed: ${JSON.stringify(task.error)}`);
        const taskMs = performance.now() - t0;
        const cfg = join(tp.dir, `${name}.kubeconfig`);
        writeFileSync(cfg, (await call('GET', `/v1/clusters/${name}/kubeconfig`)).body.kubeconfig, { mode: 0o600 });
        const k = (...args) => exec([kubectl, `--kubeconfig=${cfg}`, ...args], { okCodes: [0, 1], timeoutMs: 30_000 });
        const readyMs = await until('all nodes Ready', 300_000, async () => {
          const o = (await k('get', 'nodes', '--no-headers')).stdout;
          return o.split('\n').filter((l) => /\sReady\s/.test(l)).length === shape.workers ? performance.now() - t0 : undefined;
        });
        const image = release.image('busybox').ref;
        await until(
          'a pod created',
          120_000,
          async () =>
            (await k('run', 'probe', `--image=${image}`, '--image-pull-policy=Never', '--restart=Never', '--', 'sleep', '600')).code === 0
              ? true
              : undefined,
          200,
        );
        const podMs = await until('the pod Running', 120_000, async () =>
          (await k('get', 'pod', 'probe', '-o', 'jsonpath={.status.phase}')).stdout === 'Running' ? performance.now() - t0 : undefined,
        );
        log(`${kind} ${shape.label} run ${i + 1}: task ${sec(taskMs)} s, nodes Ready ${sec(readyMs)} s, pod Running ${sec(podMs)} s\n`);
        samples.push({ taskMs, readyMs, podMs });
        const del = (await call('DELETE', `/v1/clusters/${name}`)).body;
        await waitTask(del.last_task_id ?? del.task_id);
      }
      out[shape.label] = samples;
    }
  } finally {
    await tp.stop();
  }
  return out;
}

export async function benchLxd(release, { runs = 2, log = (s) => process.stderr.write(s) } = {}) {
  const local = await createOn('local', {}, '10.198.27.0/24', 19_083, release, runs, log);
  const lxd = await startLxd('bench');
  let onLxd;
  try {
    onLxd = await createOn(
      'lxd',
      { ANODYNE_PROVIDER_TYPE: 'lxd', ANODYNE_PROVIDER_LXD_SOCKET: lxd.socket, ANODYNE_PROVIDER_LXD_STORAGE_POOL: lxd.pool },
      '10.198.28.0/24',
      19_084,
      release,
      runs,
      log,
    );
  } finally {
    await lxd.stop();
  }
  const rows = [];
  for (const shape of SHAPES) {
    for (const [label, key] of [
      ['create task done', 'taskMs'],
      ['all nodes Ready', 'readyMs'],
      ['a pod Running', 'podMs'],
    ]) {
      const l = stats(local[shape.label].map((s) => s[key]));
      const x = stats(onLxd[shape.label].map((s) => s[key]));
      rows.push(`| ${shape.label} | ${label} | ${sec(l.median)} | ${sec(x.median)} | ${(x.median / l.median).toFixed(1)} |`);
    }
  }
  return [
    '## Clusters on the LXD provider beside the local provider',
    '',
    `Median of ${runs} creates each, through the platform's API, one cluster at a time, in the same run: the local`,
    'provider (namespaces on this host) against the LXD provider (system containers of a private LXD 5.0 daemon on',
    'this host, a `dir` storage pool; docs/adr/0026). Each cluster is deleted before the next. The ratio is LXD over',
    'local: the Kubernetes processes inside are the same, so the difference is LXD making and starting its instances',
    "through its API (not broken down further; the image is a few kilobytes and /etc an overlay of the host's, since",
    'a copy of /etc in the image cost 0.6–1.8 s of every instance create on a `dir` pool: 1+1 was 2.0× with it).',
    '',
    '| shape | milestone | local (s) | LXD (s) | LXD ÷ local |',
    '|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
