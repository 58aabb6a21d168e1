// Test workloads for Day 2 suites: client loops that count answers through a cluster's endpoint, and an app under a PodDisruptionBudget.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { locateRelease } from '@anodyne/release';
import type { ClusterEndpoint } from '@anodyne/clusters';
import type { FromWorker, LoopKind, ToWorker } from './loop-worker.js';
import type { AvailabilityReport } from '@anodyne/director';

/**
 * Where a loop sends its requests: a fixed endpoint, or a function asked again every 2 s (a
 * client that fetches its credentials again, as it must across a CA rotation).
 */
export type EndpointSource = ClusterEndpoint | (() => Promise<ClusterEndpoint>);

/** The release's busybox image (every release packs the same one; nodes import it at start). */
export const busyboxRef = (): string => locateRelease().image('busybox').ref;

/**
 * A client loop in a thread of its own (as a client is a process of its own: a pause of the
 * suite's thread, which also runs the platform, must not count as the cluster's silence). The
 * endpoint is asked of this thread, every 2 s when `source` is a function.
 */
function loopInWorker(kind: LoopKind, source: EndpointSource): { stop(): Promise<AvailabilityReport> } {
  const worker = new Worker(new URL('./loop-worker.js', import.meta.url), { workerData: { kind } });
  let failed: Error | undefined;
  worker.on('error', (err) => (failed = err));
  worker.on('message', (m: FromWorker) => {
    if ('need' in m)
      void (typeof source === 'function' ? source() : Promise.resolve(source)).then(
        (endpoint) => worker.postMessage({ endpoint } satisfies ToWorker),
        // The loop counts the round as failed, with the reason, and asks again at its next round.
        (err: unknown) => worker.postMessage({ error: err instanceof Error ? err.message : String(err) } satisfies ToWorker),
      );
  });
  let stopped: Promise<AvailabilityReport> | undefined;
  return {
    stop: () =>
      (stopped ??= new Promise<AvailabilityReport>((resolve, reject) => {
        if (failed) return reject(failed);
        worker.on('message', (m: FromWorker) => {
          if ('report' in m) resolve(m.report as AvailabilityReport);
        });
        worker.once('error', reject);
        worker.postMessage({ stop: true } satisfies ToWorker);
      }).finally(() => void worker.terminate())),
  };
}

/** A client loop creating, reading and deleting a ConfigMap through the cluster's endpoint, every 100 ms. */
export function configMapLoop(source: EndpointSource) {
  return loopInWorker('configmaps', source);
}

/**
 * A client loop calling the app through its Service every 100 ms: the API server's service proxy
 * picks a ready endpoint of the Service, as in-cluster clients get one through kube-proxy.
 */
export function appLoop(source: EndpointSource) {
  return loopInWorker('app', source);
}

/**
 * Watches this process's event loop while a Day 2 operation runs (the platform and the client
 * loops share it here, as a real client never does): `stop` says the longest delay and the p99,
 * so that a client timeout can be told apart from a stall of this process.
 */
export function eventLoopWatch(): { stop(): string } {
  const h = monitorEventLoopDelay({ resolution: 20 });
  h.enable();
  let gcLongest = 0;
  let gcTotal = 0;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcLongest = Math.max(gcLongest, e.duration);
      gcTotal += e.duration;
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  return {
    stop: () => {
      h.disable();
      gc.disconnect();
      return (
        `this process's event loop: longest delay ${(h.max / 1e6).toFixed(0)} ms, p99 ${(h.percentile(99) / 1e6).toFixed(0)} ms; ` +
        `garbage collection: longest pause ${gcLongest.toFixed(0)} ms, ${(gcTotal / 1000).toFixed(1)} s in all`
      );
    },
  };
}

/**
 * When a loop failed: the task's events and the cluster's pod events from 15 s before its last
 * failure to 2 s after, one line each (what was rolling, which pods were stopping), for the log.
 */
export async function aroundFailure(
  r: AvailabilityReport,
  events: { at: string; stage: string; state: string; instance?: string | null; index?: number | null }[],
  kubectl: Kubectl,
  logDirs: Record<string, string> = {},
): Promise<string[]> {
  const m = /^(\S+Z): /.exec(r.last_error ?? '');
  if (r.failed === 0 || !m) return [];
  const at = Date.parse(m[1]!);
  const near = (t: number) => t >= at - 15_000 && t <= at + 2_000;
  const out = events
    .filter((e) => near(Date.parse(e.at)))
    .map((e) => `${e.at} task: ${e.stage}${e.instance ? ` ${e.instance}` : ''} ${e.state}`);
  const pods = await kubectl(
    'get',
    'events',
    '-A',
    '-o',
    'jsonpath={range .items[*]}{.lastTimestamp}{" "}{.eventTime}{" "}{.reason}{" "}{.involvedObject.kind}/{.involvedObject.name}{" "}{.source.host}{"\\n"}{end}',
  ).catch((err: unknown) => `events unreadable: ${(err as Error).message}`);
  for (const l of pods.split('\n')) {
    const t = Date.parse(l.split(' ').find((w) => /^\d{4}-/.test(w)) ?? '');
    if (near(t)) out.push(`${new Date(t).toISOString()} cluster: ${l.replace(/\S+Z\s+|<nil>\s+/g, '')}`);
  }
  out.push(...logsAround(logDirs, at - 8_000, at + 1_000));
  return [`around the last failure (${m[1]}):`, ...out.sort()];
}

/** Each VM of a deployment by name (`master/0`) and its agent's logs directory, seen from the host: for `aroundFailure`. */
export async function vmLogDirs(
  platform: {
    director: { instances(deployment: string): Promise<{ group_name: string; idx: number; vm_id: string | null }[]> };
    /** The local provider's VMs are read through /proc; other providers' are not. */
    provider: object;
  },
  deployment: string,
): Promise<Record<string, string>> {
  const local = platform.provider as { initPid?: (vmId: string) => number };
  if (!local.initPid) return {};
  const initPid = local.initPid.bind(local);
  return Object.fromEntries(
    (await platform.director.instances(deployment))
      .filter((row) => row.vm_id)
      .map((row) => [`${row.group_name}/${row.idx}`, `/proc/${initPid(row.vm_id!)}/root/var/lib/anodyne/agent/logs`]),
  );
}

/**
 * The warnings and errors that the processes of some VMs logged between `from` and `to` (ms since
 * the epoch), each line prefixed by its time, the VM and the process: `logDirs` maps a VM's name to
 * its agent's logs directory (<dir>/<job>/<process>.log). Reads etcd's JSON lines and klog's
 * `W1204 02:43:05.123456` lines; at most 80 lines, the last ones.
 */
export function logsAround(logDirs: Record<string, string>, from: number, to: number): string[] {
  const year = new Date(from).getUTCFullYear();
  const found: [number, string][] = [];
  for (const [vm, dir] of Object.entries(logDirs)) {
    const files = existsSync(dir)
      ? readdirSync(dir, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .flatMap((d) => readdirSync(join(dir, d.name)).map((f) => join(dir, d.name, f)))
      : [];
    for (const file of files) {
      const proc = basename(file, '.log');
      for (const l of readFileSync(file, 'utf8').split('\n')) {
        let t = NaN;
        const json = /^\{"level":"(warn|error|fatal|panic)","ts":"([^"]+)"/.exec(l);
        const klog = /^([WEF])(\d\d)(\d\d) (\d\d:\d\d:\d\d\.\d+)/.exec(l);
        if (json) t = Date.parse(json[2]!);
        else if (klog) t = Date.parse(`${year}-${klog[2]}-${klog[3]}T${klog[4]}Z`);
        if (t >= from && t <= to) found.push([t, `${new Date(t).toISOString()} ${vm} ${proc}: ${l.slice(0, 300)}`]);
      }
    }
  }
  return found
    .sort((a, b) => a[0] - b[0])
    .slice(-80)
    .map(([, l]) => l);
}

export const line = (r: AvailabilityReport & { failures?: string[] }) =>
  `${r.requests} requests, ${r.failed} failed, longest gap ${(r.longest_gap_ms / 1000).toFixed(1)} s${r.last_error ? ` (last error: ${r.last_error})` : ''}` +
  // The client loops' own record of each failure (step, start, duration), when they kept one.
  (r.failures?.length ? `; failures: ${r.failures.join(' | ')}` : '');

/** The app every test runs: busybox httpd behind a Service, spread over nodes, under a PodDisruptionBudget. */
export async function deployApp(kubectl: Kubectl, dir: string, replicas: number, minAvailable: number): Promise<void> {
  await apply(kubectl, dir, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'app', namespace: 'default' },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'app' } },
      template: {
        metadata: { labels: { app: 'app' } },
        spec: {
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { app: 'app' } } } },
              ],
            },
          },
          terminationGracePeriodSeconds: 15,
          containers: [
            {
              name: 'web',
              image: busyboxRef(),
              imagePullPolicy: 'Never',
              readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 1 },
              // Leave the Service's endpoints before stopping, as a well-behaved app does: long enough for every
              // API server's proxy to see the endpoint go, also on a loaded machine (3 s was not, once in CI).
              lifecycle: { preStop: { exec: { command: ['sleep', '6'] } } },
            },
          ],
        },
      },
    },
  });
  await apply(kubectl, dir, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'app', namespace: 'default' },
    spec: { selector: { app: 'app' }, ports: [{ port: 80, targetPort: 8080 }] },
  });
  await apply(kubectl, dir, budget(minAvailable));
  await kubectl('rollout', 'status', 'deployment/app', '--timeout=180s');
}

export const budget = (minAvailable: number) => ({
  apiVersion: 'policy/v1',
  kind: 'PodDisruptionBudget',
  metadata: { name: 'app', namespace: 'default' },
  spec: { minAvailable, selector: { matchLabels: { app: 'app' } } },
});

export async function apply(kubectl: Kubectl, dir: string, o: unknown): Promise<void> {
  const f = join(dir, `obj-${process.hrtime.bigint()}.json`);
  writeFileSync(f, JSON.stringify(o));
  await kubectl('apply', '-f', f);
}

export type Kubectl = (...args: string[]) => Promise<string>;

export async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, show?: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      // What was there instead, in the message (which is what a CI summary keeps).
      const seen = show ? await show().catch((err: unknown) => `(could not tell: ${(err as Error).message})`) : '';
      throw new Error(`timed out waiting for ${what}${seen ? `; what there was:\n${seen}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
