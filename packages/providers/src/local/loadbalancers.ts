// haproxy-based TCP load balancers of the local provider, each in its own network namespace and cgroups on the VM bridge.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AnodyneError, ConflictError, InputError, NotFoundError, exec, type Clock } from '@anodyne/common';
import type { LoadBalancerBackend, LoadBalancerHealthCheck, LoadBalancerInfo, LoadBalancerSpec } from '../contract.js';
import { haproxyConfig } from '../internal/haproxy.js';
import { validateBackends, validateHealthCheck } from '../internal/validate.js';
import { joinCgroupsShell, type VmCgroups } from './cgroups.js';
import { killPids, shellQuote } from './host.js';
import type { DataLayout } from './layout.js';
import type { Lan, VmNetwork } from './network.js';
import type { LbRecord, LocalState, StateFile } from './state.js';

/** How long create waits for haproxy's frontend to accept connections, and how often it looks. */
const READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 50;

/** The cgroup limits of a load balancer's haproxy. */
const LB_SIZE = { cpu: 1, memoryMb: 256, ephemeralDiskMb: 0, pids: 256 };

export interface LoadBalancerDeps {
  layout: DataLayout;
  store: StateFile;
  network: VmNetwork;
  cgroups: VmCgroups;
  clock: Clock;
  /** The network a load balancer is placed on (`default` or a segment); unknown names are refused. */
  lanOf(state: LocalState, network: string): Lan;
}

/**
 * Load balancers: haproxy in master-worker mode in a netns of its own (named by an `lb-` id,
 * while the contract's id is the spec's name), health-checking its backends. The caller has
 * checked for root.
 */
export class LoadBalancers {
  constructor(private readonly d: LoadBalancerDeps) {}

  async create(spec: LoadBalancerSpec): Promise<LoadBalancerInfo> {
    if (!spec || typeof spec.name !== 'string' || !/^[a-z0-9][a-z0-9-]{0,40}$/.test(spec.name)) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'load balancer name must be lowercase letters, digits and dashes');
    }
    if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'load balancer port must be 1 to 65535');
    }
    validateBackends(spec.backends);
    validateHealthCheck(spec.healthCheck);
    const lbId = `lb-${randomBytes(4).toString('hex')}`;
    let lan: Lan = this.d.network.defaultLan;
    const lb = await this.d.store.update((state) => {
      if (state.lbs[spec.name]) {
        throw new ConflictError('ANODYNE_E_CONFLICT', `load balancer ${spec.name} exists`, { details: { name: spec.name } });
      }
      lan = this.d.lanOf(state, spec.network);
      const rec: LbRecord = {
        id: spec.name,
        lbId,
        ip: this.d.network.allocate(state, spec.ip, lan),
        port: spec.port,
        network: lan.name,
        backends: [...spec.backends],
        ...(spec.healthCheck ? { healthCheck: { ...spec.healthCheck } } : {}),
        metadata: { ...(spec.metadata ?? {}) },
      };
      state.lbs[spec.name] = rec;
      return rec;
    });
    try {
      await this.d.network.ensureBridge();
      const dir = this.d.layout.lb(lbId);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'haproxy.cfg'), haproxyConfig(lb, join(this.d.layout.lb(lb.lbId), 'haproxy.pid')));
      await this.d.network.createNetns(lbId, lb.ip, lan);
      await this.d.network.openLoadBalancer(lan, lb.ip, lb.port);
      const procs = this.d.cgroups.create(lbId, LB_SIZE);
      const out = openSync(join(dir, 'haproxy.log'), 'a');
      // Master-worker mode: SIGUSR2 to the master reloads the configuration.
      const netns = this.d.network.netnsPath(lbId);
      const script = `${joinCgroupsShell(procs)}; exec nsenter --net=${netns} -- haproxy -W -f ${shellQuote(join(dir, 'haproxy.cfg'))}`;
      const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: ['ignore', out, out] });
      closeSync(out);
      child.unref();
      writeFileSync(join(dir, 'master.pid'), String(child.pid));
      // Ready when the frontend accepts connections.
      const deadline = this.d.clock.nowMs() + READY_TIMEOUT_MS;
      const probe = ['nsenter', `--net=${netns}`, '--', 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${lb.port}`];
      while (
        !(await exec(probe).then(
          () => true,
          () => false,
        ))
      ) {
        if (child.exitCode !== null || this.d.clock.nowMs() > deadline) {
          const log = readFileSync(join(dir, 'haproxy.log'), 'utf8').slice(-500);
          throw new AnodyneError('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', `haproxy for ${spec.name} did not start: ${log}`);
        }
        await this.d.clock.sleep(READY_POLL_MS);
      }
      return publicLb(lb);
    } catch (err) {
      await this.delete(spec.name).catch(() => undefined);
      throw err;
    }
  }

  list(): LoadBalancerInfo[] {
    return Object.values(this.d.store.read().lbs).map(publicLb);
  }

  get(id: string): Promise<LoadBalancerInfo> {
    const lb = this.d.store.read().lbs[id];
    if (!lb) return Promise.reject(lbNotFound(id));
    return Promise.resolve(publicLb(lb));
  }

  async update(id: string, backends: LoadBalancerBackend[], healthCheck?: LoadBalancerHealthCheck): Promise<LoadBalancerInfo> {
    validateBackends(backends);
    validateHealthCheck(healthCheck);
    return this.d.store.update((state) => {
      const lb = state.lbs[id];
      if (!lb) throw lbNotFound(id);
      lb.backends = [...backends];
      if (healthCheck) lb.healthCheck = { ...healthCheck };
      const dir = this.d.layout.lb(lb.lbId);
      writeFileSync(join(dir, 'haproxy.cfg'), haproxyConfig(lb, join(this.d.layout.lb(lb.lbId), 'haproxy.pid')));
      const master = Number(readFileSync(join(dir, 'master.pid'), 'utf8'));
      killPids([master], 'SIGUSR2');
      return publicLb(lb);
    });
  }

  /** Kills haproxy, removes its netns, veth, cgroups and directory, then its record. Idempotent. */
  async delete(id: string): Promise<void> {
    await this.d.store.update(async (state) => {
      const lb = state.lbs[id];
      if (!lb) return;
      const lan = lanOrNone(() => this.d.lanOf(state, lb.network));
      if (lan) await this.d.network.closeLoadBalancer(lan, lb.ip, lb.port);
      await this.d.cgroups.killAll(lb.lbId);
      await this.d.network.deleteNetns(lb.lbId);
      this.d.cgroups.remove(lb.lbId);
      rmSync(this.d.layout.lb(lb.lbId), { recursive: true, force: true });
      delete state.lbs[id];
    });
  }
}

/** The network a record names, or none when it is gone (cleanup removes its rules anyway). */
function lanOrNone(lanOf: () => Lan): Lan | undefined {
  try {
    return lanOf();
  } catch {
    return undefined;
  }
}

function lbNotFound(id: string): NotFoundError {
  return new NotFoundError('ANODYNE_E_PROVIDER_LB_NOT_FOUND', `load balancer ${id} not found`, { details: { id } });
}

function publicLb(lb: LbRecord): LoadBalancerInfo {
  return {
    id: lb.id,
    ip: lb.ip,
    port: lb.port,
    network: lb.network,
    backends: [...lb.backends],
    ...(lb.healthCheck ? { healthCheck: { ...lb.healthCheck } } : {}),
    metadata: { ...lb.metadata },
  };
}
