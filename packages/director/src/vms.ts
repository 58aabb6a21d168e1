// The VM lifecycle of instances: create (with agent TLS and disk), recreate, delete, disks and orphans.
import { AnodyneError, type Clock } from '@anodyne/common';
import type { Provider, VmType } from '@anodyne/providers';
import { readAgentState, type AgentClient, type AgentTlsIssuer } from './agents.js';
import type { InstanceRepository, InstanceRow } from './instances.js';
import type { DesiredInstance } from './planner.js';
import type { EventSink } from './updater.js';

export interface VmLifecycleOptions {
  repo: InstanceRepository;
  provider: Provider;
  agents: AgentClient;
  tls: AgentTlsIssuer;
  clock: Clock;
  /** The port the agent in each VM listens on. */
  agentPort: number;
  /** How long to wait for a new VM's agent to answer (default 60 s). */
  agentTimeoutMs?: number;
}

/** Gives instances their VMs and disks and takes them away, keeping the instance records in step. */
export class VmLifecycle {
  constructor(private readonly o: VmLifecycleOptions) {}

  /**
   * Creates the VM of an instance (reusing its IP, reattaching its disk) and waits for its agent,
   * which is `agentProgram` (the deployment's release's) when given.
   */
  async create(row: InstanceRow, agentProgram?: string): Promise<InstanceRow> {
    const tls = await this.o.tls.agentTls(row.agent_id);
    const vm = await this.o.provider.createVm({
      agentId: row.agent_id,
      image: row.image,
      vmType: JSON.parse(row.vm_type) as string | VmType,
      network: { network: row.network, ...(row.ip ? { ip: row.ip } : {}) },
      ...(row.az ? { az: row.az } : {}),
      env: {
        ANODYNE_AGENT_LISTEN: `0.0.0.0:${this.o.agentPort}`,
        ANODYNE_AGENT_CERT: tls.cert,
        ANODYNE_AGENT_KEY: tls.key,
        ANODYNE_AGENT_CA: tls.ca,
        ...(agentProgram ? { ANODYNE_AGENT_PROGRAM: agentProgram } : {}),
      },
      metadata: {
        deployment: row.deployment,
        group: row.group_name,
        index: String(row.idx),
        instance_id: row.id,
        ...(agentProgram ? { agent_program: agentProgram } : {}),
      },
    });
    const updated = { ...row, vm_id: vm.id, ip: vm.ip, bundle_hash: null };
    // A new VM has no health yet: the monitor's next pass decides.
    await this.o.repo.patch(row.id, {
      vm_id: vm.id,
      ip: vm.ip,
      bundle_hash: null,
      health: 'pending',
      health_reason: null,
      health_since: this.o.clock.now().toISOString(),
    });
    if (row.disk_id && (await this.o.provider.hasDisk(row.disk_id))) await this.o.provider.attachDisk(vm.id, row.disk_id);
    await this.waitForAgent(updated);
    return updated;
  }

  /**
   * Replaces an instance's VM. With `desired`, the instance takes the desired VM shape first, so
   * the next plan sees no difference.
   */
  async recreate(row: InstanceRow, desired?: DesiredInstance, agentProgram?: string): Promise<InstanceRow> {
    await this.deleteVmOf(row);
    const shape = desired
      ? { vm_type: JSON.stringify(desired.vmType), image: desired.image, network: desired.network, disk_mb: desired.diskMb }
      : {};
    if (desired) await this.o.repo.patch(row.id, shape);
    return this.create({ ...row, ...shape, vm_id: null }, agentProgram);
  }

  /** Deletes an instance's VM (if any); the instance stays, without a VM or jobs. */
  async deleteVmOf(row: InstanceRow): Promise<void> {
    if (row.vm_id) await this.o.provider.deleteVm(row.vm_id);
    await this.o.repo.patch(row.id, { vm_id: null, bundle_hash: null });
  }

  /** Deletes an instance's VM and its persistent disk (the instance is going away). */
  async deleteResources(row: InstanceRow): Promise<void> {
    if (row.vm_id) await this.o.provider.deleteVm(row.vm_id);
    const diskId = row.disk_id ?? (await this.o.repo.diskId(row.id));
    if (diskId) await this.o.provider.deleteDisk(diskId);
  }

  /** Deletes an instance for good: its VM, its persistent disk and its record. */
  async discard(row: InstanceRow): Promise<void> {
    await this.deleteResources(row);
    await this.o.repo.delete(row.id);
  }

  /**
   * Gives an instance that asks for a persistent disk its disk (created once, kept across VM
   * recreation) attached to its VM; returns where the jobs find it (`spec.persistent_disk`).
   */
  async ensureDisk(row: InstanceRow, sizeMb: number): Promise<{ row: InstanceRow; path: string }> {
    let diskId = row.disk_id;
    if (!diskId || !(await this.o.provider.hasDisk(diskId))) {
      const meta = { deployment: row.deployment, group: row.group_name, index: String(row.idx), instance_id: row.id };
      const disk = await this.o.provider.createDisk(sizeMb, meta);
      diskId = disk.id;
      await this.o.repo.patch(row.id, { disk_id: diskId, disk_mb: sizeMb });
    }
    const { path } = await this.o.provider.attachDisk(row.vm_id!, diskId);
    return { row: { ...row, disk_id: diskId }, path };
  }

  /** Deletes the VMs the provider has for a deployment that no instance owns (a create cut off by a crash). */
  async removeOrphans(deployment: string, sink: EventSink): Promise<void> {
    const rows = await this.o.repo.list(deployment);
    const owned = new Set(rows.map((r) => r.vm_id).filter(Boolean));
    const orphans = (await this.o.provider.listVms({ deployment })).filter((v) => !owned.has(v.id));
    for (const [i, vm] of orphans.entries()) {
      const step = { stage: 'Removing orphaned VMs', instance: vm.metadata['instance_id'] ?? vm.id, index: i + 1, total: orphans.length };
      await sink.event({ ...step, state: 'started' });
      await this.o.provider.deleteVm(vm.id);
      await sink.event({ ...step, state: 'finished' });
    }
  }

  /**
   * Whether the agent of an instance's VM answers within `waitMs` (asked every 200 ms). A VM whose
   * create was cut short (a director killed after the VM was recorded, before its agent answered) may
   * never get one; such an instance gets a new VM rather than failing every deploy after.
   */
  async agentAnswers(row: InstanceRow, waitMs = 10_000): Promise<boolean> {
    const deadline = this.o.clock.nowMs() + waitMs;
    // Bounded by tries as well as time (a clock that does not move on its own still ends it).
    for (let tries = Math.ceil(waitMs / 200); ; tries--) {
      try {
        await readAgentState(this.o.agents, row, 2000);
        return true;
      } catch {
        if (tries <= 0 || this.o.clock.nowMs() >= deadline) return false;
        await this.o.clock.sleep(200);
      }
    }
  }

  private async waitForAgent(row: InstanceRow): Promise<void> {
    const deadline = this.o.clock.nowMs() + (this.o.agentTimeoutMs ?? 60_000);
    let last: unknown;
    while (this.o.clock.nowMs() < deadline) {
      try {
        await readAgentState(this.o.agents, row);
        return;
      } catch (err) {
        last = err;
        await this.o.clock.sleep(200);
      }
    }
    throw new AnodyneError('ANODYNE_E_UNAVAILABLE', `agent ${row.agent_id} did not answer: ${(last as Error)?.message}`);
  }
}
