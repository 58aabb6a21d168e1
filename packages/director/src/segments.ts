// A share of the provider's segment pool (a network profile's): a CIDR inside the pool, at least one segment wide.
import { InputError, type ErrorCode } from '@anodyne/common';
import type { SegmentPoolInfo } from '@anodyne/providers';

const toInt = (ip: string): number => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);

/** A checked share: how many segments it holds and whether a segment's range lies in it. */
export interface SegmentShare {
  cidr: string;
  total: number;
  holds(range: string): boolean;
}

/**
 * Checks `within` against the pool before any work starts: an IPv4 network address inside the pool and no narrower
 * than a segment. Refused with `code` (details.key: `key`) otherwise.
 */
export function segmentShare(within: string, pool: SegmentPoolInfo, code: ErrorCode, key: string): SegmentShare {
  const bad = (why: string) =>
    new InputError(code, `${key} ${JSON.stringify(within)}: ${why}`, { details: { key, pool: pool.pool, segment_prefix: pool.prefix } });
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(String(within));
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) throw bad('must be an IPv4 CIDR such as 10.245.8.0/21');
  const prefix = Number(m[5]);
  const size = 2 ** (32 - prefix);
  const base = toInt(m.slice(1, 5).join('.'));
  if (base % size !== 0) throw bad('is not a network address');
  if (prefix > pool.prefix) throw bad(`is narrower than one segment (/${pool.prefix})`);
  const [poolIp, poolBits] = pool.pool.split('/') as [string, string];
  const poolBase = toInt(poolIp);
  if (prefix < Number(poolBits) || base < poolBase || base + size > poolBase + 2 ** (32 - Number(poolBits)))
    throw bad(`lies outside the segment pool ${pool.pool}`);
  return {
    cidr: within,
    total: 2 ** (pool.prefix - prefix),
    holds: (range) => {
      const b = toInt(range.split('/')[0]!);
      return b >= base && b < base + size;
    },
  };
}
