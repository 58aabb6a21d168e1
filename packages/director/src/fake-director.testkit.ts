// The director over the fake provider and in-memory agents, for tests of its logic (health monitor, cloud check).
import { ManualClock, type Clock } from '@anodyne/common';
import type { JobCatalog, JobDefinition, VariableSource } from './index.js';

export const job: JobDefinition = { name: 'svc', release: 'test', processes: [{ name: 'svc', command: 'true' }] };
export const catalog: JobCatalog = { job: (_r, name) => (name === 'svc' ? job : undefined) };
export const variables: VariableSource = { ensure: () => Promise.resolve({}), remove: () => Promise.resolve() };
// In-memory agents need no certificates; the director still asks for them per VM.
export const tls = {
  agentTls: () => Promise.resolve({ cert: '', key: '', ca: '' }),
  directorTls: () => Promise.resolve({ cert: '', key: '', ca: '' }),
};

export function manifest(name: string, instances = 3, jobName = 'svc') {
  return {
    name,
    releases: [{ name: 'test', version: '1' }],
    image: 'default',
    update: { canaries: 1, max_in_flight: 2, canary_watch_time: '0-1000', update_watch_time: '0-1000' },
    instance_groups: [{ name: 'node', instances, vm_type: 'small', networks: [{ name: 'default' }], jobs: [{ name: jobName }] }],
  };
}

/** A clock whose sleeps return at once (deploy watch times), and whose time tests move. */
export class StepClock implements Clock {
  constructor(private readonly inner = new ManualClock(Date.parse('2026-01-01T00:00:00Z'))) {}
  now(): Date {
    return this.inner.now();
  }
  nowMs(): number {
    return this.inner.nowMs();
  }
  sleep(): Promise<void> {
    return new Promise((r) => setImmediate(r));
  }
  advance(ms: number): Promise<void> {
    return this.inner.advance(ms);
  }
}
