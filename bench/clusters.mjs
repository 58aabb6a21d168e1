// Cluster creation benchmark: request → all nodes Ready → a pod Running, for 1+1 and 3+3,
// through the real API on the local provider, side by side with the raw floor (etcd +
// kube-apiserver of the same release started directly) measured in the same run. Prints a
// Markdown table and writes docs/benchmarks.md. Needs root; `make bench` runs it.
//   node bench/clusters.mjs [--runs N]
import { cpus, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exec } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';
import { locateRelease, rawBoot } from '@anodyne/release';
import { startTestPlatform, https } from '@anodyne/api/testing';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 3;
const SHAPES = [
  { label: '1 master + 1 worker', plan: 'small', workers: 1 },
  { label: '3 masters + 3 workers', plan: 'ha', workers: 3 },
];

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor((s.length - 1) / 2)], min: s[0], max: s[s.length - 1] };
};
const sec = (ms) => (ms / 1000).toFixed(1);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const release = locateRelease();
const kubectl = release.bin('kubectl');
const tp = await startTestPlatform('bn', '10.198.14.0/24', 19_080);
const results = [];
try {
  const p = tp.platform;
  await p.identity.createUser({ username: 'bench', password: 'bench-password', groups: [SCOPES.admin] });
  const token = (await p.identity.token({ grant_type: 'password', username: 'bench', password: 'bench-password' })).access_token;
  const call = (method, path, body) => https(p.url, p.caPem, method, path, { token, ...(body ? { body: JSON.stringify(body) } : {}) });
  const waitTask = async (id) => {
    for (;;) {
      const t = (await call('GET', `/v1/tasks/${id}`)).body;
      if (['done', 'error', 'cancelled'].includes(t.state)) return t;
      await sleep(100);
    }
  };

  const floors = [];
  for (let i = 0; i < RUNS; i++) {
    const r = await rawBoot(release);
    floors.push(r.totalMs);
    await r.stop();
  }

  for (const shape of SHAPES) {
    const runs = [];
    for (let i = 0; i < RUNS; i++) {
      const name = `bench-${i}`;
      const t0 = performance.now();
      const created = (await call('POST', '/v1/clusters', { name, plan_name: shape.plan, parameters: { kubernetes_worker_instances: shape.workers } })).body;
      const task = await waitTask(created.last_task_id);
      if (task.state !== 'done') throw new Error(`create failed: ${JSON.stringify(task.error)}`);
      const taskMs = performance.now() - t0;
      const cfg = join(tp.dir, `${name}.kubeconfig`);
      writeFileSync(cfg, (await call('GET', `/v1/clusters/${name}/kubeconfig`)).body.kubeconfig, { mode: 0o600 });
      const k = (...args) => exec([kubectl, `--kubeconfig=${cfg}`, ...args], { okCodes: [0, 1], timeoutMs: 30_000 });
      let readyMs = 0;
      for (;;) {
        const out = (await k('get', 'nodes', '--no-headers')).stdout;
        const ready = out.split('\n').filter((l) => /\sReady\s/.test(l)).length;
        if (ready === shape.workers) { readyMs = performance.now() - t0; break; }
        await sleep(100);
      }
      const image = release.image('busybox').ref;
      for (;;) {
        const r = await k('run', 'probe', `--image=${image}`, '--image-pull-policy=Never', '--restart=Never', '--', 'sleep', '600');
        if (r.code === 0) break;
        await sleep(200); // the default service account appears shortly after the controller manager
      }
      let podMs = 0;
      for (;;) {
        if ((await k('get', 'pod', 'probe', '-o', 'jsonpath={.status.phase}')).stdout === 'Running') { podMs = performance.now() - t0; break; }
        await sleep(100);
      }
      // Stages of the director's task, from its event log.
      const events = (await call('GET', `/v1/tasks/${created.last_task_id}/events`)).body;
      const stages = new Map();
      for (const e of events) {
        const key = e.stage.replace(/ \(canary\)$/, '');
        const at = Date.parse(e.at);
        const s = stages.get(key) ?? { first: at, last: at };
        s.first = Math.min(s.first, at);
        s.last = Math.max(s.last, at);
        stages.set(key, s);
      }
      runs.push({ taskMs, readyMs, podMs, stages: Object.fromEntries([...stages].filter(([k]) => k !== 'Lifecycle').map(([k, v]) => [k, v.last - v.first])) });
      const del = (await call('DELETE', `/v1/clusters/${name}`)).body;
      await waitTask(del.last_task_id);
      process.stderr.write(`${shape.label} run ${i + 1}: task ${sec(taskMs)} s, nodes Ready ${sec(readyMs)} s, pod Running ${sec(podMs)} s\n`);
    }
    results.push({ shape, runs });
  }

  const floor = stats(floors);
  const lines = [
    '# Benchmarks',
    '',
    `Measured by \`make bench\` (bench/clusters.mjs) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB memory, ${RUNS} runs each.`,
    'Cluster creation goes through the real HTTPS API, the director and the local provider; times are from the',
    'request to the event. The raw floor is etcd + kube-apiserver of the same release started directly on loopback',
    '(no Anodyne, no VMs, no TLS between them), measured in the same run.',
    '',
    '## Cluster create',
    '',
    '| shape | measure | median s | min s | max s | × raw floor |',
    '|---|---|---|---|---|---|',
    `| raw floor | etcd + kube-apiserver ready | ${sec(floor.median)} | ${sec(floor.min)} | ${sec(floor.max)} | 1.0 |`,
  ];
  for (const { shape, runs } of results) {
    for (const [label, key] of [['create task done', 'taskMs'], ['all nodes Ready', 'readyMs'], ['a pod Running', 'podMs']]) {
      const s = stats(runs.map((r) => r[key]));
      lines.push(`| ${shape.label} | ${label} | ${sec(s.median)} | ${sec(s.min)} | ${sec(s.max)} | ${(s.median / floor.median).toFixed(1)} |`);
    }
  }
  lines.push('', '## Where the time goes (director task stages, median seconds)', '');
  for (const { shape, runs } of results) {
    const names = [...new Set(runs.flatMap((r) => Object.keys(r.stages)))];
    const rows = names.map((n) => [n, stats(runs.map((r) => r.stages[n] ?? 0)).median]).sort((a, b) => b[1] - a[1]);
    lines.push(`### ${shape.label}`, '', '| stage | median s |', '|---|---|', ...rows.map(([n, ms]) => `| ${n} | ${sec(ms)} |`), '');
  }
  lines.push('Not yet measured here (issue 10): platform API throughput with 1,000 stored clusters, a director pass over 1,000', 'deployments, agent memory per VM, etcd backup and restore of 100,000 keys.', '');
  const md = lines.join('\n');
  process.stdout.write(md + '\n');
  mkdirSync(join(REPO, 'docs'), { recursive: true });
  writeFileSync(join(REPO, 'docs', 'benchmarks.md'), md + '\n');
} finally {
  await tp.stop();
}
