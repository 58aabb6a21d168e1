// The haproxy configuration of a provider's TCP load balancer (local and LXD providers render the same one).
import type { LoadBalancerBackend, LoadBalancerHealthCheck } from '../contract.js';

/**
 * TCP pass-through; a backend is checked every 500 ms (a TCP connect, or the HTTP GET of the
 * health check) and is out after two failures, in again after one success. A connection a
 * backend refuses is retried on another one. A single backend is not checked: there is nowhere
 * else to send a connection, and each check costs it a request (a cluster API's /readyz reads etcd).
 */
export function haproxyConfig(
  lb: { port: number; backends: LoadBalancerBackend[]; healthCheck?: LoadBalancerHealthCheck | undefined },
  pidfile: string,
): string {
  const check = lb.healthCheck;
  const checking = lb.backends.length > 1;
  const servers = lb.backends.map(
    (b, i) => `  server b${i} ${b.ip}:${b.port}${checking ? ` check${check?.tls ? ' check-ssl verify none' : ''}` : ''}`,
  );
  return [
    'global',
    '  maxconn 4096',
    `  pidfile ${pidfile}`,
    'defaults',
    '  mode tcp',
    '  timeout connect 1s',
    '  timeout client 1h',
    '  timeout server 1h',
    '  timeout check 1s',
    '  retries 3',
    '  option redispatch 1',
    'frontend fe',
    `  bind 0.0.0.0:${lb.port}`,
    '  default_backend be',
    'backend be',
    '  balance roundrobin',
    ...(check ? ['  option httpchk', `  http-check send meth GET uri ${check.httpPath}`, '  http-check expect status 200'] : []),
    '  default-server inter 500ms fall 2 rise 1',
    ...servers,
    '',
  ].join('\n');
}
