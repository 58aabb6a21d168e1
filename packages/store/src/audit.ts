// The audit log: an append-only record in the store of who did what to which object, and whether it worked.
import type { Clock } from '@anodyne/common';
import type { Store } from './store.js';
import { mapStoreError } from './store.js';

export interface AuditEvent {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  result: 'ok' | 'denied' | 'error';
  details: Record<string, unknown>;
}

export interface AuditQuery {
  actor?: string;
  action?: string;
  /** Actions that start with this (`alert.`: every alert). */
  actionPrefix?: string;
  target?: string;
  /** Only events after this id (a feed read from where it was left). */
  afterId?: number;
  limit?: number;
}

/**
 * Append-only record of who did what to which object, and whether it worked.
 * Details must never hold secret values; callers pass names and ids only.
 */
export class AuditLog {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  async record(event: Omit<AuditEvent, 'id' | 'at' | 'details'> & { details?: Record<string, unknown> }): Promise<void> {
    try {
      await this.store.db
        .insertInto('audit_events')
        .values({
          at: this.clock.now().toISOString(),
          actor: event.actor,
          action: event.action,
          target: event.target,
          result: event.result,
          details: JSON.stringify(event.details ?? {}),
        })
        .execute();
    } catch (err) {
      throw mapStoreError(err, 'recording an audit event');
    }
  }

  /** Newest first. */
  async list(query: AuditQuery = {}): Promise<AuditEvent[]> {
    let q = this.store.db.selectFrom('audit_events').selectAll();
    if (query.actor !== undefined) q = q.where('actor', '=', query.actor);
    if (query.action !== undefined) q = q.where('action', '=', query.action);
    if (query.target !== undefined) q = q.where('target', '=', query.target);
    if (query.actionPrefix !== undefined) q = q.where('action', 'like', `${query.actionPrefix.replace(/[\\%_]/g, (c) => '\\' + c)}%`);
    if (query.afterId !== undefined) q = q.where('id', '>', query.afterId);
    try {
      const rows = await q
        .orderBy('id', 'desc')
        .limit(query.limit ?? 100)
        .execute();
      return rows.map((r) => ({
        ...r,
        id: Number(r.id),
        result: r.result as AuditEvent['result'],
        details: JSON.parse(r.details) as Record<string, unknown>,
      }));
    } catch (err) {
      throw mapStoreError(err, 'reading audit events');
    }
  }
}
