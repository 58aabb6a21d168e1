// The API's Prometheus metrics: requests and latency per route, handler calls, resident memory and uptime.
/** Request counters and latency sums per route, in the Prometheus text format. */
export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly seconds = new Map<string, { sum: number; count: number }>();
  private readonly handled = new Map<string, number>();
  private readonly started = Date.now();

  /** A request that passed authentication, authorization and validation and reached its route's handler. */
  reached(method: string, route: string): void {
    const key = `method="${method}",route="${route.replace(/"/g, '')}"`;
    this.handled.set(key, (this.handled.get(key) ?? 0) + 1);
  }

  observe(method: string, route: string, status: number, elapsedMs: number): void {
    const key = `method="${method}",route="${route.replace(/"/g, '')}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    const lk = `method="${method}",route="${route.replace(/"/g, '')}"`;
    const s = this.seconds.get(lk) ?? { sum: 0, count: 0 };
    s.sum += elapsedMs / 1000;
    s.count += 1;
    this.seconds.set(lk, s);
  }

  render(): string {
    const lines = [
      '# HELP anodyne_http_requests_total HTTP requests by method, route and status.',
      '# TYPE anodyne_http_requests_total counter',
      ...[...this.requests].map(([k, v]) => `anodyne_http_requests_total{${k}} ${v}`),
      "# HELP anodyne_http_handler_calls_total Requests that passed authentication, authorization and validation and reached the route's handler.",
      '# TYPE anodyne_http_handler_calls_total counter',
      ...[...this.handled].map(([k, v]) => `anodyne_http_handler_calls_total{${k}} ${v}`),
      '# HELP anodyne_http_request_duration_seconds Time spent answering requests.',
      '# TYPE anodyne_http_request_duration_seconds summary',
      ...[...this.seconds].flatMap(([k, v]) => [
        `anodyne_http_request_duration_seconds_sum{${k}} ${v.sum.toFixed(6)}`,
        `anodyne_http_request_duration_seconds_count{${k}} ${v.count}`,
      ]),
      '# HELP anodyne_process_resident_memory_bytes Resident memory of the platform process.',
      '# TYPE anodyne_process_resident_memory_bytes gauge',
      `anodyne_process_resident_memory_bytes ${process.memoryUsage().rss}`,
      '# HELP anodyne_uptime_seconds Seconds since the API started.',
      '# TYPE anodyne_uptime_seconds gauge',
      `anodyne_uptime_seconds ${((Date.now() - this.started) / 1000).toFixed(0)}`,
      '',
    ];
    return lines.join('\n');
  }
}
