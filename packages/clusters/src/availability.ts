// The cluster API's availability while a task rolls the cluster: a storage-backed read every 200 ms through its endpoint, counted.
import { request } from 'node:https';
import type { Clock } from '@anodyne/common';
import type { AvailabilityProbe, AvailabilityReport } from '@anodyne/director';
import type { ClusterEndpoint } from './kube.js';

/**
 * Starts reading the `default` Namespace through the cluster's endpoint (its load balancer: what
 * users reach) with the admin certificate, one request at a time, until stopped; reports how many
 * were made, how many failed (no answer in 2 s, or not 200) and the longest time without a good
 * answer. A read that needs etcd, not `/version` (which an API server answers before its storage
 * is there, and while it is shutting down).
 */
export function apiProbe(e: ClusterEndpoint, clock: Clock, intervalMs = 200): AvailabilityProbe {
  const u = new URL('/api/v1/namespaces/default', e.server);
  const report: AvailabilityReport = { target: `GET ${u.href}`, requests: 0, failed: 0, longest_gap_ms: 0 };
  let lastGood = clock.nowMs();
  let running = true;
  const once = () =>
    new Promise<boolean>((resolve) => {
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'GET',
          ca: e.admin.ca,
          cert: e.admin.certificate,
          key: e.admin.private_key,
          timeout: 2000,
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 200));
        },
      );
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.end();
    });
  const loop = (async () => {
    while (running) {
      const ok = await once();
      const now = clock.nowMs();
      report.requests++;
      if (ok) lastGood = now;
      else report.failed++;
      report.longest_gap_ms = Math.max(report.longest_gap_ms, now - lastGood);
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
