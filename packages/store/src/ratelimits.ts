// Fixed-window request counts in the database: one limit that every replica of the platform shares.
import type { Clock } from '@anodyne/common';
import type { Store } from './store.js';
import { storeQuery } from './store.js';

/**
 * Counts requests per key (a client address) in fixed windows, in the store: replicas on one
 * database share the count, so a limit holds however the requests are spread over them. Each hit
 * is one statement (an upsert that starts a new window when the last one has ended), so hits that
 * arrive together all count.
 */
export class RateLimits {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /** Counts one request for `key`; returns how many the current window holds with it. */
  async hit(key: string, windowMs: number): Promise<number> {
    const now = this.clock.nowMs();
    const nowIso = new Date(now).toISOString();
    const cutoff = new Date(now - windowMs).toISOString();
    const row = await storeQuery('counting a request', () =>
      this.store.db
        .insertInto('rate_limits')
        .values({ key, window_start: nowIso, count: 1 })
        .onConflict((oc) =>
          oc.column('key').doUpdateSet((eb) => ({
            count: eb
              .case()
              .when('rate_limits.window_start', '<=', cutoff)
              .then(1)
              .else(eb('rate_limits.count', '+', 1))
              .end(),
            window_start: eb
              .case()
              .when('rate_limits.window_start', '<=', cutoff)
              .then(nowIso)
              .else(eb.ref('rate_limits.window_start'))
              .end(),
          })),
        )
        .returning('count')
        .executeTakeFirstOrThrow(),
    );
    return Number(row.count);
  }

  /** Removes the counts of windows that ended before `windowMs` ago (they would start again at 1 anyway). */
  async prune(windowMs: number): Promise<number> {
    const cutoff = new Date(this.clock.nowMs() - windowMs).toISOString();
    const r = await storeQuery('pruning request counts', () =>
      this.store.db.deleteFrom('rate_limits').where('window_start', '<=', cutoff).executeTakeFirst(),
    );
    return Number(r.numDeletedRows);
  }
}
