// The cluster API's availability while a task rolls the cluster: requests through its endpoint in a loop, counted.
import { request, type RequestOptions } from 'node:https';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Clock } from '@anodyne/common';
import type { AvailabilityProbe, AvailabilityReport } from '@anodyne/director';
import type { ClusterEndpoint } from './kube.js';

export interface EndpointAnswer {
  status: number;
  body: string;
}

/** TLS contexts by endpoint: a client that fetched its credentials once reuses them (building one costs milliseconds). */
const contexts = new WeakMap<ClusterEndpoint['admin'], SecureContext>();
function contextOf(e: ClusterEndpoint): SecureContext {
  let c = contexts.get(e.admin);
  if (!c) contexts.set(e.admin, (c = createSecureContext({ ca: e.admin.ca, cert: e.admin.certificate, key: e.admin.private_key })));
  return c;
}

/**
 * One request to the cluster's API through its endpoint (what users reach) with the admin
 * certificate, on a connection of its own (as a new client makes it: the answer is the
 * endpoint's, not that of a connection pinned to one API server). Rejects when the connection
 * stays silent for `timeoutMs`.
 *
 * A silence is judged only after what already arrived has been read: when this process itself
 * did not run for a while (a long synchronous step, a pause of its garbage collector), its timers
 * fire before it reads its sockets, and an answer waiting in the socket must not count as none.
 */
export function endpointRequest(
  e: ClusterEndpoint,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 2000,
): Promise<EndpointAnswer> {
  const u = new URL(path, e.server);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    let settled = false;
    // When each step of the exchange happened (ms after the start), said when there is no answer:
    // no connection, no TLS handshake or no answer to a sent request each point somewhere else.
    const t0 = performance.now();
    const steps: string[] = [];
    const mark = (what: string) => steps.push(`${what} ${Math.round(performance.now() - t0)} ms`);
    // `secureContext` reaches tls.connect (Node's types for https.request leave it out).
    const options: RequestOptions & { secureContext: SecureContext } = {
      host: u.hostname,
      port: u.port,
      path: `${u.pathname}${u.search}`,
      method,
      agent: false,
      secureContext: contextOf(e),
      timeout: timeoutMs,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    };
    const req = request(options, (res) => {
      mark('answered');
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        settled = true;
        resolve({ status: res.statusCode ?? 0, body: text });
      });
      res.on('error', (err) => {
        settled = true;
        reject(err);
      });
    });
    req.on('socket', (socket) => {
      socket.once('connect', () => mark('connected'));
      socket.once('secureConnect', () => mark('TLS'));
    });
    req.on('finish', () => mark('sent'));
    req.on('error', (err) => {
      settled = true;
      reject(err);
    });
    req.on('timeout', () => {
      // Judged after this turn's I/O has been read (setImmediate runs after the poll phase): bytes
      // read meanwhile were activity, and the socket's timer starts again from them.
      const before = req.socket?.bytesRead ?? 0;
      setImmediate(() => {
        if (settled || (req.socket?.bytesRead ?? 0) > before) return;
        req.destroy(new Error(`no answer in ${timeoutMs} ms (${steps.join(', ') || 'not connected'})`));
      });
    });
    req.end(payload);
  });
}

/**
 * Runs `step` one at a time, `intervalMs` apart, until stopped. Each step makes one or more
 * requests and passes each outcome to `count` (true: good; a string: failed, why). Reports the
 * requests, the failures (the last one's reason) and the longest time without a good answer.
 */
export function countingLoop(
  target: string,
  clock: Clock,
  intervalMs: number,
  step: (count: (outcome: true | string) => void, i: number) => Promise<void>,
): { stop(): Promise<AvailabilityReport> } {
  const report: AvailabilityReport = { target, requests: 0, failed: 0, longest_gap_ms: 0 };
  let lastGood = clock.nowMs();
  let running = true;
  const count = (outcome: true | string) => {
    const now = clock.nowMs();
    report.requests++;
    if (outcome === true) lastGood = now;
    else {
      report.failed++;
      report.last_error = `${new Date(now).toISOString()}: ${outcome}`;
    }
    report.longest_gap_ms = Math.max(report.longest_gap_ms, now - lastGood);
  };
  const loop = (async () => {
    for (let i = 0; running; i++) {
      await step(count, i).catch((err: unknown) => count(err instanceof Error ? err.message : String(err)));
      if (running) await clock.sleep(intervalMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { ...report };
    },
  };
}

/** An answer with this status counts as good; otherwise the status and the start of the body say why not. */
export function expectStatus(a: EndpointAnswer, ...ok: number[]): true | string {
  return ok.includes(a.status) ? true : `${a.status} ${a.body.slice(0, 160)}`;
}

/** `get`, asked again only when its last answer is `everyMs` old (a client re-reading its credentials now and then). */
export function refreshed<T>(get: () => Promise<T>, clock: Clock, everyMs: number): () => Promise<T> {
  let current: { value: T; at: number } | undefined;
  return async () => {
    if (!current || clock.nowMs() - current.at >= everyMs) current = { value: await get(), at: clock.nowMs() };
    return current.value;
  };
}

/**
 * Reads the `default` Namespace through the cluster's endpoint every `intervalMs` until
 * stopped; a failure is no answer in `timeoutMs` (5 s: it reads, and reads do not wait on etcd's fsync) or
 * not 200. A read that needs etcd, not `/version` (which an API server answers before its
 * storage is there, and while it is shutting down).
 * `endpoint` is asked again every `refreshMs`, as a client that fetches its credentials again
 * does (a CA rotation changes the CA bundle and the client certificate while the probe runs).
 */
export function apiProbe(
  endpoint: () => Promise<ClusterEndpoint>,
  clock: Clock,
  intervalMs = 200,
  refreshMs = 2000,
  timeoutMs = 5000,
): AvailabilityProbe {
  const path = '/api/v1/namespaces/default';
  const fresh = refreshed(endpoint, clock, refreshMs);
  return countingLoop(`GET ${path} through the cluster's endpoint`, clock, intervalMs, async (count) => {
    count(expectStatus(await endpointRequest(await fresh(), 'GET', path, undefined, timeoutMs), 200));
  });
}
