// The Day 2 suites' client loops, run in a thread of their own: a client never shares an event loop with the platform it measures.
import { parentPort, workerData } from 'node:worker_threads';
import { systemClock } from '@anodyne/common';
import { countingLoop, endpointRequest, expectStatus, refreshed, type ClusterEndpoint } from '@anodyne/clusters';

/** What the loop does each round: `configmaps` (create, read, delete one) or `app` (a GET through the app's Service). */
export type LoopKind = 'configmaps' | 'app';

/** Messages from the suite's thread: the endpoint it was asked for (or why there is none), or stop. */
export type ToWorker = { endpoint: ClusterEndpoint } | { error: string } | { stop: true };
/** Messages to it: an endpoint is needed, or the loop's report. */
export type FromWorker = { need: 'endpoint' } | { report: unknown };

const port = parentPort!;
const { kind } = workerData as { kind: LoopKind };

/** The endpoint, asked of the suite's thread (which holds the platform and its credentials). */
let answer: { resolve(e: ClusterEndpoint): void; reject(err: Error): void } | undefined;
const ask = (): Promise<ClusterEndpoint> =>
  new Promise((resolve, reject) => {
    answer = { resolve, reject };
    port.postMessage({ need: 'endpoint' } satisfies FromWorker);
  });
const endpoint = refreshed(ask, systemClock, 2000);

/**
 * How long a request may stay unanswered before it counts as failed. A write waits for etcd's leader
 * to fsync; with every VM's disk on one host filesystem, CI saw one ConfigMap create wait 5.0 s on the
 * leader's Txn ("leader failed to send out heartbeat on time") while the API servers, reads and the
 * app all answered. That is a slow write on a loaded 2-core host, not an API that is down: a request
 * fails on an error, a bad status, or no answer in 10 s, and the longest gap shows any slow answer.
 */
const TIMEOUT_MS = 10_000;

/** Every failure with its step and timing (the report keeps the last one): the first 20, for the suite's log. */
const failures: string[] = [];
/** Counts an outcome, and keeps what failed with the step it was and when the request started and ended. */
const noted =
  (count: (o: true | string) => void) =>
  (step: string, startedAt: number, outcome: true | string): void => {
    if (outcome !== true && failures.length < 20)
      failures.push(`${new Date(startedAt).toISOString()} ${step} (${Date.now() - startedAt} ms): ${outcome}`);
    count(outcome);
  };

const loop =
  kind === 'configmaps'
    ? countingLoop(`ConfigMaps through the cluster's endpoint`, systemClock, 100, async (count, i) => {
        const note = noted(count);
        const base = '/api/v1/namespaces/default/configmaps';
        const e = await endpoint();
        const name = `loop-${i}`;
        let t = Date.now();
        const created = await endpointRequest(e, 'POST', base, { metadata: { name }, data: { i: String(i) } }, TIMEOUT_MS);
        const createdRv = /"resourceVersion":"(\d+)"/.exec(created.body)?.[1];
        note(`create ${name}`, t, expectStatus(created, 201));
        t = Date.now();
        const read = await endpointRequest(e, 'GET', `${base}/${name}`, undefined, TIMEOUT_MS);
        note(
          `read ${name} (created at resourceVersion ${createdRv ?? '?'})`,
          t,
          read.status === 200 && read.body.includes(`"i":"${i}"`) ? true : `${read.status} ${read.body.slice(0, 160)}`,
        );
        t = Date.now();
        note(`delete ${name}`, t, expectStatus(await endpointRequest(e, 'DELETE', `${base}/${name}`, undefined, TIMEOUT_MS), 200));
      })
    : countingLoop(`app through its Service`, systemClock, 100, async (count) => {
        const a = await endpointRequest(
          await endpoint(),
          'GET',
          '/api/v1/namespaces/default/services/app:80/proxy/',
          undefined,
          TIMEOUT_MS,
        );
        count(a.status === 200 && a.body.includes('hello from anodyne busybox') ? true : `${a.status} ${a.body.slice(0, 160)}`);
      });

port.on('message', (m: ToWorker) => {
  if ('endpoint' in m) answer?.resolve(m.endpoint);
  else if ('error' in m) answer?.reject(new Error(m.error));
  else void loop.stop().then((report) => port.postMessage({ report: { ...report, failures } } satisfies FromWorker));
});
