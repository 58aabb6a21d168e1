// The platform's Prometheus metrics (prom-client): requests and latency per route, the process and runtime, certificates, instances, tasks.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AgentVitals } from '@anodyne/director';

/** What the platform reports at each scrape, read when /metrics is asked for. */
export interface PlatformGauges {
  /** Every certificate in use (a CA's transitional version included), when it expires, and whether the renewal pass is due to renew it. */
  certificates(): Promise<{ name: string; expires_at: string; is_ca: boolean; due: boolean }[]>;
  /** Every instance counted by the health last recorded for it (a deployment a task is changing keeps its last). */
  instances(): Promise<Record<string, number>>;
  /** The last health pass: whether resurrection is paused (meltdown), each agent's vitals. Null before the first. */
  health(): { meltdown: boolean; vitals: { deployment: string; instance: string; vitals: AgentVitals }[] } | null;
  /** Tasks by type and state, as stored. */
  tasks(): Promise<{ type: string; state: string; count: number }[]>;
}

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const TASK_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600];

/** The registry behind /metrics. */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly handled: Counter<'method' | 'route'>;
  private readonly latency: Histogram<'method' | 'route'>;
  private readonly taskSeconds: Histogram<'type' | 'state'>;

  constructor(gauges?: PlatformGauges) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'anodyne_' });
    this.requests = new Counter({
      name: 'anodyne_http_requests_total',
      help: 'HTTP requests by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.handled = new Counter({
      name: 'anodyne_http_handler_calls_total',
      help: "Requests that passed authentication, authorization and validation and reached the route's handler.",
      labelNames: ['method', 'route'],
      registers,
    });
    this.latency = new Histogram({
      name: 'anodyne_http_request_duration_seconds',
      help: 'Time spent answering requests.',
      labelNames: ['method', 'route'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.taskSeconds = new Histogram({
      name: 'anodyne_task_duration_seconds',
      help: 'How long tasks ran, by type and how they ended (done, error, cancelled).',
      labelNames: ['type', 'state'],
      buckets: TASK_BUCKETS,
      registers,
    });
    const started = Date.now();
    new Gauge({
      name: 'anodyne_uptime_seconds',
      help: 'Seconds since the API started.',
      registers,
      collect() {
        this.set(Math.round((Date.now() - started) / 1000));
      },
    });
    if (gauges) this.platformGauges(gauges);
  }

  private platformGauges(g: PlatformGauges): void {
    const registers = [this.registry];
    // One read of the certificates per scrape, shared by the two gauges that show them.
    let certs: { at: number; list: ReturnType<PlatformGauges['certificates']> } | undefined;
    const certificates = () => {
      if (!certs || Date.now() - certs.at > 1000) certs = { at: Date.now(), list: g.certificates() };
      return certs.list;
    };
    new Gauge({
      name: 'anodyne_certificate_expiry_timestamp_seconds',
      help: 'When each certificate in use expires (Unix seconds).',
      labelNames: ['name', 'ca'],
      registers,
      async collect() {
        this.reset();
        for (const c of await certificates()) this.set({ name: c.name, ca: String(c.is_ca) }, Math.floor(Date.parse(c.expires_at) / 1000));
      },
    });
    new Gauge({
      name: 'anodyne_certificate_expiring',
      help: 'Certificates in use that the renewal pass is due to renew (1 each): within the renewal window, or in the last third of a shorter life.',
      labelNames: ['name', 'ca'],
      registers,
      async collect() {
        this.reset();
        for (const c of await certificates()) if (c.due) this.set({ name: c.name, ca: String(c.is_ca) }, 1);
      },
    });
    new Gauge({
      name: 'anodyne_instances',
      help: 'Instances by the health last recorded for each (running, failing, unresponsive, missing, stopped, pending).',
      labelNames: ['health'],
      registers,
      async collect() {
        this.reset();
        for (const [health, n] of Object.entries(await g.instances())) this.set({ health }, n);
      },
    });
    new Gauge({
      name: 'anodyne_resurrection_meltdown',
      help: 'Whether resurrection is paused because too many instances are down at once (1) or not (0).',
      registers,
      collect() {
        this.set(g.health()?.meltdown ? 1 : 0);
      },
    });
    const vitals = (name: string, help: string, pick: (v: AgentVitals) => number | undefined | null) =>
      new Gauge({
        name,
        help,
        labelNames: ['deployment', 'instance'],
        registers,
        collect() {
          this.reset();
          for (const a of g.health()?.vitals ?? []) {
            const v = pick(a.vitals);
            if (typeof v === 'number') this.set({ deployment: a.deployment, instance: a.instance }, v);
          }
        },
      });
    vitals('anodyne_agent_load1', "The 1-minute load average an instance's agent reports.", (v) => v.load?.[0]);
    vitals('anodyne_agent_memory_bytes', "Memory charged to an instance's VM, as its agent reports it.", (v) => v.memoryBytes);
    vitals('anodyne_agent_disk_used_percent', "How full an instance's root disk is, as its agent reports it.", (v) => v.disk?.usedPercent);
    new Gauge({
      name: 'anodyne_tasks',
      help: 'Tasks by type and state (queued, processing, done, error, cancelled), as stored.',
      labelNames: ['type', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const t of await g.tasks()) this.set({ type: t.type, state: t.state }, t.count);
      },
    });
  }

  /** A request that passed authentication, authorization and validation and reached its route's handler. */
  reached(method: string, route: string): void {
    this.handled.inc({ method, route });
  }

  observe(method: string, route: string, status: number, elapsedMs: number): void {
    this.requests.inc({ method, route, status: String(status) });
    this.latency.observe({ method, route }, elapsedMs / 1000);
  }

  /** A task that ended, and how long it ran. */
  taskEnded(type: string, state: string, seconds: number): void {
    this.taskSeconds.observe({ type, state }, seconds);
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
