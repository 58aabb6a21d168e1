// Cluster creation benchmark: request → create task done → all nodes Ready → a pod Running, for 1+1 and 3+3,
// through the real API on the local provider, side by side with two raw floors (etcd +
// kube-apiserver of the same release started directly; and one bare VM running etcd,
// kube-apiserver, containerd and a kubelet, bench/floor.mjs) measured in the same run; the director
// task's stages from its event log; and memory per VM (the agent's RSS, the VM's memory cgroup)
// once a pod runs. Returns Markdown for docs/benchmarks.md (bench/run.mjs writes it).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import { rawBoot } from '@anodyne/release';
import { nodeFloor } from './floor.mjs';
import { benchPlatform, mib, nodesReadyAt, sec, stats, until } from './lib.mjs';

const SHAPES = [
  { label: '1 master + 1 worker', plan: 'small', workers: 1 },
  { label: '3 masters + 3 workers', plan: 'ha', workers: 3 },
];

/** Every process of a cgroup subtree (v1 memory hierarchy). */
export function pidsUnder(dir) {
  const pids = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) pids.push(...pidsUnder(join(dir, e.name)));
  return pids;
}

/**
 * A process's memory from /proc/<pid>/smaps_rollup: resident (RSS, which counts every shared page
 * it maps, such as its program's, in full), proportional (PSS: shared pages divided among the
 * processes mapping them) and private (its own pages: what it alone adds), in bytes.
 */
export function processMemory(pid) {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: kb('Rss'), pss: kb('Pss'), private: kb('Private_Clean') + kb('Private_Dirty') };
}

/**
 * A bare Go program idling (the runtime the agent is built with, the same static build flags, no code of ours):
 * the agent's memory floor.
 */
async function bareGoMemory() {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-bench-go-'));
  try {
    writeFileSync(join(dir, 'go.mod'), 'module floor\n\ngo 1.24\n');
    writeFileSync(join(dir, 'main.go'), 'package main\n\nimport "time"\n\nfunc main() {\n\tfor {\n\t\ttime.Sleep(time.Hour)\n\t}\n}\n');
    execFileSync('go', ['build', '-trimpath', '-buildvcs=false', '-ldflags=-s -w -buildid=', '-o', 'floor', '.'], {
      cwd: dir,
      env: { ...process.env, CGO_ENABLED: '0', GOTOOLCHAIN: 'local' },
      stdio: 'ignore',
    });
    const child = spawn(join(dir, 'floor'), [], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 2000));
      return processMemory(child.pid);
    } finally {
      child.kill('SIGKILL');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A VM's memory as its cgroup charges it (RSS, without page cache), and its agent's memory. */
export function vmMemory(tag, vmId) {
  const dir = `/sys/fs/cgroup/memory/anodyne/${tag}/${vmId}`;
  const stat = Object.fromEntries(
    readFileSync(join(dir, 'memory.stat'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' ')),
  );
  let agent = { rss: 0, pss: 0, private: 0 };
  for (const pid of pidsUnder(dir)) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('agent/anodyne-agent')) continue;
      agent = processMemory(pid);
    } catch {
      // the process ended
    }
  }
  return { vmRss: Number(stat.total_rss), agentRss: agent.rss, agentPss: agent.pss, agentPrivate: agent.private };
}

export async function benchClusters(release, { runs = 3, log = (s) => process.stderr.write(s) } = {}) {
  const kubectl = release.bin('kubectl');
  const { tp, call, waitTask } = await benchPlatform('bn', '10.198.14.0/24', 19_080, 600_000);
  try {
    const p = tp.platform;

    const floors = [];
    const nodeFloors = [];
    for (let i = 0; i < runs; i++) {
      const r = await rawBoot(release);
      floors.push(r.totalMs);
      await r.stop();
      const n = await nodeFloor(release);
      nodeFloors.push(n);
      log(
        `raw floors run ${i + 1}: etcd + apiserver ${sec(r.totalMs)} s; one VM with a node: every process ready ${sec(n.processesMs)} s, Node Ready ${sec(n.readyMs)} s, pod Running ${sec(n.podMs)} s\n`,
      );
    }

    const results = [];
    const memory = [];
    const bare = await bareGoMemory();
    for (const shape of SHAPES) {
      const samples = [];
      for (let i = 0; i < runs; i++) {
        const name = `bench-${i}`;
        const t0 = performance.now();
        const platformCpu0 = process.cpuUsage();
        const created = (
          await call('POST', '/v1/clusters', { name, plan_name: shape.plan, parameters: { kubernetes_worker_instances: shape.workers } })
        ).body;
        const wall0 = Date.now() - (performance.now() - t0);
        // The cluster's Nodes watched from as soon as its admin kubeconfig exists (its CA and certificate are made early
        // in the task), so that the Ready is timed as it happens.
        const kubeconfigText = until('the admin kubeconfig', 120_000, async () => {
          const r = await call('GET', `/v1/clusters/${name}/kubeconfig`);
          return r.status === 200 ? r.body.kubeconfig : undefined;
        });
        const readyAt = kubeconfigText.then((text) => nodesReadyAt(text, shape.workers, 300_000));
        // Awaited below; marked handled so that a run failing first reports its own error, not these.
        for (const pending of [kubeconfigText, readyAt]) pending.catch(() => undefined);
        const task = await waitTask(created.last_task_id);
        if (task.state !== 'done') throw new Error(`create failed: ${JSON.stringify(task.error)}`);
        const taskMs = performance.now() - t0;
        // Each process's start and first ready (its agent's clock: the same host), from the request.
        const processes = [];
        for (const row of await p.director.instances(`cluster-${name}`)) {
          for (const pr of (await p.director.agentState(row, 5000)).processes) {
            if (pr.startedAt === null || pr.readyAt === null) continue;
            processes.push({ key: `${row.group_name} ${pr.job}/${pr.name}`, started: pr.startedAt - wall0, ready: pr.readyAt - wall0 });
          }
        }
        const cfg = join(tp.dir, `${name}.kubeconfig`);
        writeFileSync(cfg, await kubeconfigText, { mode: 0o600 });
        const k = (...args) => exec([kubectl, `--kubeconfig=${cfg}`, ...args], { okCodes: [0, 1], timeoutMs: 30_000 });
        const readyMs = (await readyAt) - t0;
        // CPU time spent on the create up to then: every VM's cgroup (each made for this cluster) and the platform.
        const platformCpu = process.cpuUsage(platformCpu0);
        let vmsCpuNs = 0;
        for (const row of await p.director.instances(`cluster-${name}`)) {
          if (row.vm_id) vmsCpuNs += Number(readFileSync(`/sys/fs/cgroup/cpuacct/anodyne/${tp.tag}/${row.vm_id}/cpuacct.usage`, 'utf8'));
        }
        const platformCpuNs = (platformCpu.user + platformCpu.system) * 1000;
        const image = release.image('busybox').ref;
        // The default service account appears shortly after the controller manager starts.
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
        // Memory of every VM of the cluster, now that it runs a pod.
        for (const row of await p.director.instances(`cluster-${name}`)) {
          if (row.vm_id) memory.push({ shape: shape.label, group: row.group_name, ...vmMemory(tp.tag, row.vm_id) });
        }
        // Stages of the director's task, from its event log.
        const events = (await call('GET', `/v1/tasks/${created.last_task_id}/events`)).body;
        const stages = new Map();
        for (const e of events) {
          const key = e.stage.replace(/ \(canary\)$/, '');
          const at = Date.parse(e.at);
          const st = stages.get(key) ?? { first: at, last: at };
          st.first = Math.min(st.first, at);
          st.last = Math.max(st.last, at);
          stages.set(key, st);
        }
        samples.push({
          processes,
          taskMs,
          readyMs,
          podMs,
          vmsCpuNs,
          platformCpuNs,
          stages: Object.fromEntries([...stages].filter(([key]) => key !== 'Lifecycle').map(([key, v]) => [key, v.last - v.first])),
        });
        // Scale-up of one worker (1+1 only): from the request to the task done and to the new Node Ready.
        if (shape.workers === 1) {
          const s0 = performance.now();
          const bothReady = nodesReadyAt(await kubeconfigText, 2, 300_000);
          const patched = await call('PATCH', `/v1/clusters/${name}`, { kubernetes_worker_instances: 2 });
          if (patched.status !== 202 && patched.status !== 200) throw new Error(`scale-up refused: ${JSON.stringify(patched.body)}`);
          const st = await waitTask(patched.body.last_task_id);
          if (st.state !== 'done') throw new Error(`scale-up failed: ${JSON.stringify(st.error)}`);
          const taskMs = performance.now() - s0;
          const readyMs = (await bothReady) - s0;
          samples[samples.length - 1].scale = { taskMs, readyMs };
        }
        const del = (await call('DELETE', `/v1/clusters/${name}`)).body;
        await waitTask(del.last_task_id);
        log(`${shape.label} run ${i + 1}: task ${sec(taskMs)} s, nodes Ready ${sec(readyMs)} s, pod Running ${sec(podMs)} s\n`);
      }
      results.push({ shape, samples });
    }

    const floor = stats(floors);
    const nodeProcesses = stats(nodeFloors.map((n) => n.processesMs));
    const nodeReady = stats(nodeFloors.map((n) => n.readyMs));
    const nodePod = stats(nodeFloors.map((n) => n.podMs));
    // Each cluster event and the node floor's event it is divided by: the same event on both sides.
    const EVENTS = [
      { label: 'create task done', key: 'taskMs', base: nodeProcesses },
      { label: 'all nodes Ready', key: 'readyMs', base: nodeReady },
      { label: 'a pod Running', key: 'podMs', base: nodePod },
    ];
    const lines = [
      '## Cluster create',
      '',
      'Cluster creation goes through the real HTTPS API, the director and the local provider; times are from the',
      'request to the event. "create task done" is the director\'s create task ending, which it does once every process',
      'on every VM passes the readiness probe its job declares; "all nodes Ready" is every worker\'s Node Ready (masters',
      'run no kubelet). Two raw floors of the same release, measured in the same run: etcd + kube-apiserver started',
      'directly on loopback (no VM, no TLS between them, etcd with `--unsafe-no-fsync`), timed from starting etcd to',
      "the API server's /readyz; and **one bare VM of the local provider running etcd, kube-apiserver, containerd and a",
      'kubelet** started by one shell script (no agent, no director, self-signed serving certificate, a static token,',
      'AlwaysAllow, no scheduler: the pod names its node), timed from asking for the VM to three events: every process',
      "ready by the same probes the clusters' jobs declare (etcd /health, kube-apiserver /readyz, kubelet /healthz,",
      'checked every 50 ms by the script), the Node Ready, and a pod Running.',
      'A Node Ready, of the clusters and of the floor alike, is seen through a watch of the Nodes that the bench holds',
      "(started as soon as the cluster's admin kubeconfig exists, asked again every 50 ms until the API answers): the",
      'event as it arrives, with no kubectl started per look. A pod Running is polled with kubectl every 100 ms.',
      '',
      'The "× raw floor" column divides each cluster row\'s median by the median of the one-VM floor\'s same event:',
      '"create task done" by the floor\'s "every process ready", "all nodes Ready" by its "Node Ready", "a pod Running" by',
      'its "a pod Running". The clusters run more processes on more VMs than the floor (controller manager, scheduler,',
      'add-ons, flannel, kube-proxy; a worker is ready only once a master gave its Node a pod range),',
      'and the director checks readiness on its own schedule:',
      'the ratio is what all of that costs over the floor. The etcd + kube-apiserver floor has no same event in the',
      `cluster rows, so it has no ratio. ${runs} run${runs === 1 ? '' : 's'} of each; medians are the lower middle for an even count.`,
      'Scale-up (each 1+1 run, once its pod runs): `PATCH /v1/clusters/{name}` to 2 workers, timed from the request to',
      'its task done (divided by the floor\'s "every process ready") and to the new Node Ready (by its "Node Ready").',
      '',
      '| shape | measure | median s | min s | max s | × raw floor |',
      '|---|---|---|---|---|---|',
      `| raw floor | etcd + kube-apiserver ready | ${sec(floor.median)} | ${sec(floor.min)} | ${sec(floor.max)} | |`,
      `| raw floor, one VM + kubelet | every process ready | ${sec(nodeProcesses.median)} | ${sec(nodeProcesses.min)} | ${sec(nodeProcesses.max)} | 1.0 |`,
      `| raw floor, one VM + kubelet | Node Ready | ${sec(nodeReady.median)} | ${sec(nodeReady.min)} | ${sec(nodeReady.max)} | 1.0 |`,
      `| raw floor, one VM + kubelet | a pod Running | ${sec(nodePod.median)} | ${sec(nodePod.min)} | ${sec(nodePod.max)} | 1.0 |`,
    ];
    for (const { shape, samples } of results) {
      for (const { label, key, base } of EVENTS) {
        const st = stats(samples.map((r) => r[key]));
        lines.push(
          `| ${shape.label} | ${label} | ${sec(st.median)} | ${sec(st.min)} | ${sec(st.max)} | ${(st.median / base.median).toFixed(1)} |`,
        );
      }
    }
    const scales = results.flatMap(({ samples }) => samples.map((r) => r.scale).filter(Boolean));
    if (scales.length > 0) {
      for (const [label, key, base] of [
        ['scale-up task done', 'taskMs', nodeProcesses],
        ['scale-up: the new Node Ready', 'readyMs', nodeReady],
      ]) {
        const st = stats(scales.map((x) => x[key]));
        lines.push(
          `| 1 master + 1 worker → 2 workers | ${label} | ${sec(st.median)} | ${sec(st.min)} | ${sec(st.max)} | ${(st.median / base.median).toFixed(1)} |`,
        );
      }
    }
    lines.push(
      '',
      '### Where the time goes (director task stages, median seconds)',
      '',
      "Each stage from its first event to its last in the create task's event log (canary steps counted with their",
      'stage, the driver\'s "Lifecycle" notes left out); stages can overlap and leave gaps, so they need not add up to',
      "the task's time.",
      '',
    );
    for (const { shape, samples } of results) {
      const names = [...new Set(samples.flatMap((r) => Object.keys(r.stages)))];
      const rows = names.map((n) => [n, stats(samples.map((r) => r.stages[n] ?? 0)).median]).sort((a, b) => b[1] - a[1]);
      lines.push(`#### ${shape.label}`, '', '| stage | median s |', '|---|---|', ...rows.map(([n, ms]) => `| ${n} | ${sec(ms)} |`), '');
    }
    lines.push(
      '### Where the time goes (each process on the VMs, median seconds from the request)',
      '',
      "Read from each VM's agent once the create task is done: when the process was started (the agent starts some only",
      'once their API answers, ADR 0025) and when its readiness probe first passed; over every VM of the group and every',
      'run, sorted by ready.',
      '',
    );
    for (const { shape, samples } of results) {
      const keys = [...new Set(samples.flatMap((r) => r.processes.map((x) => x.key)))];
      const rows = keys
        .map((k) => {
          const all = samples.flatMap((r) => r.processes.filter((x) => x.key === k));
          return [k, stats(all.map((x) => x.started)).median, stats(all.map((x) => x.ready)).median];
        })
        .sort((a, b) => a[2] - b[2]);
      lines.push(
        `#### ${shape.label}`,
        '',
        '| VM and process | started s | ready s | ready − started s |',
        '|---|---|---|---|',
        ...rows.map(([k, st, rd]) => `| ${k} | ${sec(st)} | ${sec(rd)} | ${sec(rd - st)} |`),
        '',
      );
    }
    // CPU spent until all nodes Ready: what the shortest possible create would be if every core worked on it all along.
    const cores = cpus().length;
    const floorCpu = stats(nodeFloors.map((n) => n.cpuNs));
    lines.push(
      '### CPU spent until all nodes Ready (median)',
      '',
      "CPU time charged to the cluster's VMs (their cgroups, made for the cluster: every process in them) and to the",
      "platform's process (API, director, the VMs' creation) from the request to all nodes Ready; the floor's is its one",
      `VM's until its Node Ready. Divided by the machine's ${cores} cores it is the shortest that create could take here if`,
      "nothing ever waited; its last column divides that by the floor's Node Ready, the smallest ratio the machine allows.",
      '',
      `| shape | VMs' CPU s | platform CPU s | total CPU s | ÷ ${cores} cores s | all nodes Ready s | CPU-bound × raw floor |`,
      '|---|---|---|---|---|---|---|',
      `| raw floor, one VM + kubelet | ${sec(floorCpu.median / 1e6)} | | ${sec(floorCpu.median / 1e6)} | ${sec(floorCpu.median / 1e6 / cores)} | ${sec(nodeReady.median)} | |`,
    );
    for (const { shape, samples } of results) {
      const vms = stats(samples.map((r) => r.vmsCpuNs / 1e6)).median;
      const platform = stats(samples.map((r) => r.platformCpuNs / 1e6)).median;
      const ready = stats(samples.map((r) => r.readyMs)).median;
      lines.push(
        `| ${shape.label} | ${sec(vms)} | ${sec(platform)} | ${sec(vms + platform)} | ${sec((vms + platform) / cores)} | ${sec(ready)} | ${((vms + platform) / cores / nodeReady.median).toFixed(1)} |`,
      );
    }
    lines.push('');
    lines.push(
      '### Memory per VM (all nodes Ready, one pod running)',
      '',
      "The agent's memory three ways, and everything the VM's memory cgroup charges as RSS (agent, etcd and the",
      'control plane on masters; containerd, kubelet, kube-proxy, flannel and pods on workers), over every VM of every run.',
      'The agent is a static Go program (packages/agent/go). Its RSS counts in full the pages of the program it maps,',
      'which every agent of the same release on the host shares (one copy in memory); PSS divides shared pages among the',
      "processes that map them; private is what the agent alone adds, and is what its VM's cgroup is charged for it. The",
      'floor: a bare Go program idling (built with the same flags), started in the same run.',
      '',
      '| shape | VM | VMs | agent RSS MiB | agent PSS MiB | agent private MiB | VM RSS MiB (median, min–max) |',
      '|---|---|---|---|---|---|---|',
      `| floor: bare Go program | | 1 | ${mib(bare.rss)} | ${mib(bare.pss)} | ${mib(bare.private)} | |`,
    );
    for (const shape of SHAPES) {
      for (const group of ['master', 'worker']) {
        const ms = memory.filter((m) => m.shape === shape.label && m.group === group);
        if (ms.length === 0) continue;
        const range = (key) => {
          const st = stats(ms.map((m) => m[key]));
          return `${mib(st.median)} (${mib(st.min)}–${mib(st.max)})`;
        };
        lines.push(
          `| ${shape.label} | ${group} | ${ms.length} | ${range('agentRss')} | ${range('agentPss')} | ${range('agentPrivate')} | ${range('vmRss')} |`,
        );
      }
    }
    lines.push('');
    return lines.join('\n');
  } finally {
    await tp.stop();
  }
}
