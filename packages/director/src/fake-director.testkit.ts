// The director over the fake provider and in-memory agents, for tests of its logic (health monitor, cloud check).
import { ManualClock, silentLogger, type Clock } from '@anodyne/common';
import { FakeProvider } from '@anodyne/providers';
import { openStore } from '@anodyne/store';
import { Director, type JobCatalog, type JobDefinition, type VariableSource } from './index.js';
import { FakeAgents } from './fake-agents.js';

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

/** A director on a SQLite file at `path`, the fake provider, in-memory agents and a step clock (agents answer within 1 s). */
export async function fakeDirector(
  path: string,
  o: { catalog?: JobCatalog; restartBudget?: number; segments?: { pool: string; prefix: number } } = {},
) {
  const clock = new StepClock();
  const store = await openStore({ driver: 'sqlite', path });
  const provider = new FakeProvider({ clock, ...(o.segments ? { segments: o.segments } : {}) });
  const agents = new FakeAgents(provider);
  const director = new Director({
    store,
    provider,
    catalog: o.catalog ?? catalog,
    variables,
    tls,
    clock,
    logger: silentLogger(),
    agents,
    agentTimeoutMs: 1000,
    ...(o.restartBudget !== undefined ? { restartBudget: o.restartBudget } : {}),
  });
  return { clock, store, provider, agents, director };
}
