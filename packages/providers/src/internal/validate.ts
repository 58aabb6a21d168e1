// Checks shared by providers: IPv4 CIDRs and an IP pool, VM type resolution, create-request and backend validation.
import { isIPv4 } from 'node:net';
import { AnodyneError, ConflictError, InputError } from '@anodyne/common';
import type { CreateVmRequest, LoadBalancerBackend, LoadBalancerHealthCheck, VmType } from '../contract.js';

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export interface Cidr {
  base: number;
  prefix: number;
  size: number;
  /** First address: the gateway (the host's side of the network). */
  gateway: string;
  text: string;
}

export function parseCidr(text: string, shortest = 16, longest = 29): Cidr {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(text);
  if (!m || !isIPv4(m[1]!) || Number(m[2]) < shortest || Number(m[2]) > longest) {
    const why = `network range ${JSON.stringify(text)} must be an IPv4 CIDR from /${shortest} to /${longest}`;
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', why, {
      details: { range: text },
    });
  }
  const prefix = Number(m[2]);
  const size = 2 ** (32 - prefix);
  const base = ipToInt(m[1]!) - (ipToInt(m[1]!) % size);
  return { base, prefix, size, gateway: intToIp(base + 1), text: `${intToIp(base)}/${prefix}` };
}

/**
 * Addresses of one network: .1 is the gateway, the last is broadcast; the rest are handed
 * out lowest first. The caller persists `used`.
 */
export class IpPool {
  constructor(
    readonly cidr: Cidr,
    private readonly used: Set<string>,
  ) {}

  /** Validates and reserves a static IP, or the lowest free one. */
  allocate(requested?: string): string {
    if (requested !== undefined) {
      if (!isIPv4(requested))
        throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `${JSON.stringify(requested)} is not an IPv4 address`, {
          details: { ip: requested },
        });
      const n = ipToInt(requested);
      if (n <= this.cidr.base + 1 || n >= this.cidr.base + this.cidr.size - 1) {
        throw new InputError('ANODYNE_E_PROVIDER_IP_OUT_OF_RANGE', `IP ${requested} is outside the usable range of ${this.cidr.text}`, {
          details: { ip: requested, range: this.cidr.text },
        });
      }
      if (this.used.has(requested))
        throw new ConflictError('ANODYNE_E_PROVIDER_IP_TAKEN', `IP ${requested} is already in use`, { details: { ip: requested } });
      this.used.add(requested);
      return requested;
    }
    for (let n = this.cidr.base + 2; n < this.cidr.base + this.cidr.size - 1; n++) {
      const ip = intToIp(n);
      if (!this.used.has(ip)) {
        this.used.add(ip);
        return ip;
      }
    }
    throw new AnodyneError('ANODYNE_E_PROVIDER_IP_EXHAUSTED', `no free IP left in ${this.cidr.text}`, {
      details: { range: this.cidr.text },
    });
  }

  release(ip: string): void {
    this.used.delete(ip);
  }

  isFree(ip: string): boolean {
    return !this.used.has(ip);
  }
}

export function resolveVmType(vmType: CreateVmRequest['vmType'], named: Record<string, VmType>): VmType {
  if (typeof vmType === 'string') {
    const t = named[vmType];
    if (!t)
      throw new InputError(
        'ANODYNE_E_PROVIDER_VM_TYPE_UNKNOWN',
        `unknown VM type ${JSON.stringify(vmType)}; known: ${Object.keys(named).join(', ')}`,
        { details: { vmType, known: Object.keys(named) } },
      );
    return t;
  }
  const ok =
    vmType &&
    typeof vmType === 'object' &&
    vmType.cpu > 0 &&
    vmType.memoryMb >= 16 &&
    vmType.ephemeralDiskMb >= 0 &&
    (vmType.pids === undefined || vmType.pids >= 16);
  if (!ok)
    throw new InputError(
      'ANODYNE_E_PROVIDER_VM_TYPE_UNKNOWN',
      'an explicit VM type needs cpu > 0, memoryMb ≥ 16, ephemeralDiskMb ≥ 0 (and pids ≥ 16 when given)',
      { details: { vmType } },
    );
  return vmType;
}

export function validateCreate(req: CreateVmRequest, images: string[], networks: string[]): void {
  if (!req || typeof req.agentId !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(req.agentId)) {
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'agentId must be 1 to 64 letters, digits, dot, dash or underscore', {
      details: { agentId: req?.agentId },
    });
  }
  if (!images.includes(req.image))
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `unknown image ${JSON.stringify(req.image)}; known: ${images.join(', ')}`, {
      details: { image: req.image },
    });
  if (!req.network || !networks.includes(req.network.network)) {
    throw new InputError(
      'ANODYNE_E_PROVIDER_INPUT_INVALID',
      `unknown network ${JSON.stringify(req.network?.network)}; known: ${networks.join(', ')}`,
      { details: { network: req.network?.network } },
    );
  }
  if (req.az !== undefined && (typeof req.az !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(req.az))) {
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `availability zone ${JSON.stringify(req.az)} must be a DNS-1123 label`, {
      details: { az: req.az },
    });
  }
  for (const [k, v] of Object.entries(req.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string' || v.includes('\0')) {
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `environment variable ${JSON.stringify(k)} is not a valid name or value`, {
        details: { key: k },
      });
    }
  }
}

export function validateBackends(backends: LoadBalancerBackend[]): void {
  if (!Array.isArray(backends)) throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'backends must be a list');
  for (const b of backends) {
    if (!isIPv4(b.ip) || !Number.isInteger(b.port) || b.port < 1 || b.port > 65535) {
      throw new InputError(
        'ANODYNE_E_PROVIDER_INPUT_INVALID',
        `backend ${JSON.stringify(b)} needs an IPv4 address and a port from 1 to 65535`,
        { details: { backend: b } },
      );
    }
  }
}

export function validateHealthCheck(check: LoadBalancerHealthCheck | undefined): void {
  if (check === undefined) return;
  if (
    typeof check !== 'object' ||
    check === null ||
    typeof check.httpPath !== 'string' ||
    !/^\/[\x21-\x7e]{0,200}$/.test(check.httpPath) ||
    (check.tls !== undefined && typeof check.tls !== 'boolean')
  ) {
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', 'a health check needs an httpPath (/ and printable characters, no spaces)', {
      details: { healthCheck: check },
    });
  }
}

export function matches(metadata: Record<string, string>, filter?: Record<string, string>): boolean {
  return !filter || Object.entries(filter).every(([k, v]) => metadata[k] === v);
}

/** A segment's name: a DNS label, so that providers can use it as their own network's name. */
export function validateSegmentName(name: unknown, networks: string[]): string {
  if (typeof name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(name)) {
    const why = `segment name ${JSON.stringify(name)} must be a DNS label (lowercase letters, digits and dashes, at most 63)`;
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', why, { details: { name } });
  }
  if (networks.includes(name))
    throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `segment name ${name} is the name of a network`, { details: { name } });
  return name;
}

/**
 * A pool of network segments: `pool` cut into ranges of `/prefix`, numbered from 0. In each range
 * the first address is the gateway (the host's side), the last broadcast; the rest go to VMs and
 * load balancers.
 */
export class SegmentPool {
  readonly pool: Cidr;
  readonly prefix: number;

  constructor(pool: string, prefix: number) {
    this.pool = parseCidr(pool, 8, 28);
    if (!Number.isInteger(prefix) || prefix <= this.pool.prefix || prefix > 29 || prefix - this.pool.prefix > 16) {
      const why = `segment size /${prefix} must be longer than the pool's /${this.pool.prefix}, at most /29, and cut it in at most 65536`;
      throw new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', why, { details: { pool, prefix } });
    }
    this.prefix = prefix;
  }

  get total(): number {
    return 2 ** (this.prefix - this.pool.prefix);
  }

  /** Addresses one segment offers to VMs and load balancers. */
  get addresses(): number {
    return 2 ** (32 - this.prefix) - 3;
  }

  range(index: number): Cidr {
    return parseCidr(`${intToIp(this.pool.base + index * 2 ** (32 - this.prefix))}/${this.prefix}`, this.prefix, this.prefix);
  }

  /** The segment indexes of a share of the pool (`within`: a CIDR inside it, at least one segment wide), or ANODYNE_E_PROVIDER_INPUT_INVALID. */
  share(within: string | undefined): { first: number; count: number; text: string } {
    if (within === undefined) return { first: 0, count: this.total, text: this.pool.text };
    const bad = (why: string) =>
      new InputError('ANODYNE_E_PROVIDER_INPUT_INVALID', `segment share ${JSON.stringify(within)}: ${why}`, {
        details: { within, pool: this.pool.text, prefix: this.prefix },
      });
    if (typeof within !== 'string') throw bad('must be an IPv4 CIDR');
    const c = parseCidr(within, 0, 32);
    if (c.text !== within) throw bad(`is not a network address (${c.text} is)`);
    if (c.prefix > this.prefix) throw bad(`is narrower than one segment (/${this.prefix})`);
    if (c.prefix < this.pool.prefix || c.base < this.pool.base || c.base + c.size > this.pool.base + this.pool.size)
      throw bad(`lies outside the pool ${this.pool.text}`);
    const step = 2 ** (32 - this.prefix);
    return { first: (c.base - this.pool.base) / step, count: c.size / step, text: c.text };
  }

  /** The lowest index of the share (the whole pool by default) not in `used`, or ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED. */
  allocate(used: Set<number>, within?: string): number {
    const share = this.share(within);
    for (let i = share.first; i < share.first + share.count; i++) if (!used.has(i)) return i;
    const where = within === undefined ? `the pool ${this.pool.text}` : `the share ${share.text} of the pool ${this.pool.text}`;
    throw new AnodyneError('ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED', `all ${share.count} segments of ${where} are in use`, {
      details: { pool: this.pool.text, ...(within === undefined ? {} : { within: share.text }), total: share.count },
    });
  }

  info(used: number): { pool: string; addresses: number; prefix: number; total: number; free: number } {
    return { pool: this.pool.text, addresses: this.addresses, prefix: this.prefix, total: this.total, free: this.total - used };
  }
}
