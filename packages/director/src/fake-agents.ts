// In-memory agents for the fake provider, for tests and benchmarks of the director's logic; they can hang or fail on demand.
import { AnodyneError } from '@anodyne/common';
import type { FakeProvider } from '@anodyne/providers';
import type { AgentAddress, AgentClient } from './agents.js';
import type { InstanceBundle } from './jobs.js';

interface FakeAgentState {
  bundle: InstanceBundle | null;
  running: boolean;
}

/**
 * In-memory agents for the fake provider. FOR TESTS AND BENCHMARKS OF THE DIRECTOR'S LOGIC
 * ONLY: nothing runs. An agent answers while the fake provider has a running VM for its
 * agent id at its address; a new VM starts with a fresh agent (no jobs), as a real one does.
 * Test hooks make an agent hang (`hang`) or its processes fail (`fail`).
 */
export class FakeAgents implements AgentClient {
  readonly calls: Record<string, number> = {};
  private readonly states = new Map<string, FakeAgentState>();
  private readonly hung = new Set<string>();
  private readonly failing = new Set<string>();
  private looping: { restarts: number; code: number; log: string } | undefined;

  constructor(private readonly provider: FakeProvider) {}

  /** The agent on `agentId`'s current VM stops answering (the VM stays up; a new or rebooted VM's agent answers). */
  hang(agentId: string): void {
    const vm = this.provider.runningVmOf(agentId);
    if (vm) this.hung.add(this.hangKey(agentId, vm.id));
  }

  private hangKey(agentId: string, vmId: string): string {
    return `${agentId}@${vmId}#${this.provider.bootsOf(vmId)}`;
  }

  /** The processes of `agentId`'s jobs stop being ready. */
  fail(agentId: string): void {
    this.failing.add(agentId);
  }

  /**
   * Every agent's processes crash-loop once started: not running, restarted `restarts` times,
   * the last exit `code`, and `log` as what they wrote. `undefined` stops it.
   */
  crashLoop(spec: { restarts: number; code: number; log: string } | undefined): void {
    this.looping = spec;
  }

  /** Undoes `hang` and `fail`. */
  heal(agentId: string): void {
    for (const k of this.hung) if (k.startsWith(`${agentId}@`)) this.hung.delete(k);
    this.failing.delete(agentId);
  }

  call(row: AgentAddress, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<unknown> {
    // In-memory agents answer at once: a long poll's query (`/state?wait_ms=…`) changes nothing here.
    const route = `${method} ${path.split('?')[0]}`;
    this.calls[route] = (this.calls[route] ?? 0) + 1;
    const vm = this.provider.runningVmOf(row.agent_id);
    if (!vm || vm.ip !== row.ip || this.hung.has(this.hangKey(row.agent_id, vm.id))) {
      return Promise.reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', `agent ${row.agent_id} unreachable: timed out`));
    }
    // A recreated VM keeps the agent id: state is per VM, so it starts empty.
    const key = `${row.agent_id}@${vm.id}`;
    let s = this.states.get(key);
    if (!s) {
      s = { bundle: null, running: false };
      this.states.set(key, s);
    }
    const loop = s.running ? this.looping : undefined;
    const state = () => ({
      agentId: row.agent_id,
      bundleHash: s.bundle?.hash ?? null,
      healthy: s.running && !this.failing.has(row.agent_id) && !loop,
      processes: (s.bundle?.jobs ?? []).flatMap((j) =>
        j.processes.map((p) => ({
          job: j.name,
          name: p.name,
          state: !s.running ? 'stopped' : this.failing.has(row.agent_id) || loop ? 'failing' : 'running',
          restarts: loop?.restarts ?? 0,
          lastExit: loop ? { code: loop.code, signal: null } : null,
        })),
      ),
      vitals: {},
    });
    const logs = () =>
      Object.fromEntries((s.bundle?.jobs ?? []).flatMap((j) => j.processes.map((p) => [`${j.name}/${p.name}`, loop?.log ?? ''])));
    switch (route) {
      case 'GET /state':
        return Promise.resolve(state());
      case 'POST /apply':
        s.bundle = body as InstanceBundle;
        s.running = false;
        return Promise.resolve(state());
      case 'POST /start':
        s.running = s.bundle !== null;
        return Promise.resolve(state());
      case 'POST /stop':
        s.running = false;
        return Promise.resolve(state());
      case 'POST /drain':
        return Promise.resolve({ results: [] });
      case 'GET /logs':
        return Promise.resolve({ logs: logs() });
      default:
        return Promise.reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', `agent ${row.agent_id} ${route}: 404`));
    }
  }
}
