// The platform's replicas on one database: each says it is alive, and one of them, elected by a lease with a term, leads.
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { ConflictError, processRuns, type Clock, type Logger } from '@anodyne/common';
import { storeQuery, type Store } from '@anodyne/store';

export interface ReplicasOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  /** Where this replica's API answers (shown to operators; not used to reach it). */
  url: string;
  /** How long a replica counts as alive after it last said so, and how long a leader's lease lasts (default 15 s). */
  leaseMs?: number;
  /** A fixed id (tests); by default a new one for every start. */
  id?: string;
  /** This machine's name and process id (tests pretend to be other processes or machines). */
  host?: string;
  pid?: number;
  /** Whether a process of this machine runs (default: signal 0). */
  pidAlive?: (pid: number) => boolean;
}

/** A replica as it last reported itself. */
export interface ReplicaView {
  id: string;
  host: string;
  pid: number;
  url: string;
  started_at: string;
  seen_at: string;
  leader: boolean;
}

/** The leader's lease: who holds it, since when, until when, and its term. */
export interface LeaderView {
  holder: string;
  term: number;
  acquired_at: string;
  expires_at: string;
}

const LEADER = 'leader';

/**
 * The replicas of the platform that share one database. Each one registers a row and refreshes
 * it every third of the lease; a replica is alive while its row is younger than the lease, and
 * on its own machine only while its process runs (a replica killed and started again on one host
 * takes over at once instead of after the lease).
 *
 * One replica leads: it holds the `leader` lease, renewed with its heartbeat. Another takes the
 * lease only when it expired or its holder is not alive; every new holder raises the term by one.
 * The leader runs what must run once (the health monitor and resurrector, schedules, renewals,
 * key rotation, ending the tasks of replicas that died); work it starts can be fenced with
 * `fence(term)`, which fails once another replica holds a newer term. A leader that cannot renew
 * stops leading when its lease ends by its own clock, before another can take it (the replicas'
 * clocks are assumed to agree within a fraction of the lease, as on one host or with NTP).
 */
export class Replicas {
  readonly id: string;
  readonly host: string;
  readonly pid: number;
  private readonly leaseMs: number;
  private readonly pidAlive: (pid: number) => boolean;
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;
  /** The term this replica leads in, and until when by its own clock (undefined: not leading). */
  private lead: { term: number; untilMs: number } | undefined;
  private readonly listeners: ((leading: boolean, term: number) => void)[] = [];

  constructor(private readonly o: ReplicasOptions) {
    this.id = o.id ?? randomUUID();
    this.host = o.host ?? hostname();
    this.pid = o.pid ?? process.pid;
    this.leaseMs = o.leaseMs ?? 15_000;
    this.pidAlive = o.pidAlive ?? processRuns;
  }

  private iso(ms: number): string {
    return new Date(ms).toISOString();
  }

  /** Registers this replica (alive from now on) and tries to lead once. */
  async register(): Promise<void> {
    const now = this.iso(this.o.clock.nowMs());
    await storeQuery('registering the replica', () =>
      this.o.store.db
        .insertInto('platform_replicas')
        .values({ id: this.id, host: this.host, pid: this.pid, url: this.o.url, started_at: now, seen_at: now })
        .execute(),
    );
    await this.heartbeat();
  }

  /** Heartbeats every third of the lease until `stop()`; a failed one is logged (leadership then lapses by itself). */
  start(): void {
    if (this.timer) return;
    const every = Math.max(100, Math.floor(this.leaseMs / 3));
    this.timer = setInterval(() => {
      this.beating ??= this.heartbeat()
        .catch((err: unknown) => this.o.logger.warn({ err: (err as Error).message }, 'replica heartbeat failed'))
        .finally(() => (this.beating = null));
    }, every);
    this.timer.unref();
  }

  /** Stops heartbeating, gives up the lease if held (another takes it at once) and removes this replica's row. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.beating;
    const held = this.lead;
    this.setLead(undefined);
    await storeQuery('removing the replica', async () => {
      // The lease ends now (its row and term stay: the next holder's term is one more).
      if (held)
        await this.o.store.db
          .updateTable('platform_leases')
          .set({ expires_at: new Date(0).toISOString() })
          .where('name', '=', LEADER)
          .where('holder', '=', this.id)
          .where('term', '=', held.term)
          .execute();
      await this.o.store.db.deleteFrom('platform_replicas').where('id', '=', this.id).execute();
    });
  }

  /** Whether this replica leads now (its lease has not ended by its own clock). */
  isLeader(): boolean {
    if (this.lead && this.o.clock.nowMs() >= this.lead.untilMs) this.setLead(undefined);
    return this.lead !== undefined;
  }

  /** The term this replica leads in (undefined when it does not lead). */
  term(): number | undefined {
    return this.isLeader() ? this.lead!.term : undefined;
  }

  /** Told when this replica starts or stops leading (with the term it led or leads in). */
  onLeadership(listener: (leading: boolean, term: number) => void): void {
    this.listeners.push(listener);
  }

  private setLead(next: { term: number; untilMs: number } | undefined): void {
    const before = this.lead;
    this.lead = next;
    if (before && (!next || next.term !== before.term)) {
      this.o.logger.warn({ replica: this.id, term: before.term }, 'this replica no longer leads');
      for (const l of this.listeners) l(false, before.term);
    }
    if (next && (!before || next.term !== before.term)) {
      this.o.logger.info({ replica: this.id, term: next.term }, 'this replica leads');
      for (const l of this.listeners) l(true, next.term);
    }
  }

  /** The ids of the replicas alive now (this one among them once registered). */
  async alive(): Promise<string[]> {
    return (await this.list()).filter((r) => r.alive).map((r) => r.id);
  }

  private async list(): Promise<(Omit<ReplicaView, 'leader'> & { alive: boolean })[]> {
    const since = this.iso(this.o.clock.nowMs() - this.leaseMs);
    const rows = await storeQuery('listing replicas', () => this.o.store.db.selectFrom('platform_replicas').selectAll().execute());
    return rows.map((r) => ({
      ...r,
      pid: Number(r.pid),
      alive: r.seen_at >= since && (r.host !== this.host || r.id === this.id || this.pidAlive(Number(r.pid))),
    }));
  }

  /**
   * Removes the rows of replicas that are not alive (the leader does, after ending their tasks);
   * one removed by mistake (it registered meanwhile) registers again at its next heartbeat.
   */
  async forgetGone(live: readonly string[]): Promise<number> {
    if (live.length === 0) return 0;
    const r = await storeQuery('removing gone replicas', () =>
      this.o.store.db.deleteFrom('platform_replicas').where('id', 'not in', live).executeTakeFirst(),
    );
    return Number(r.numDeletedRows);
  }

  /** Every registered replica that is alive, and which one leads. */
  async views(): Promise<{ replicas: ReplicaView[]; leader: LeaderView | undefined }> {
    const [rows, leader] = await Promise.all([this.list(), this.leader()]);
    const live = leader && leader.expires_at > this.iso(this.o.clock.nowMs()) ? leader.holder : undefined;
    return {
      replicas: rows.filter((r) => r.alive).map(({ alive: _alive, ...r }) => ({ ...r, leader: r.id === live })),
      leader,
    };
  }

  /** The leader's lease as stored (it may have expired). */
  async leader(): Promise<LeaderView | undefined> {
    const row = await storeQuery('reading the leader lease', () =>
      this.o.store.db.selectFrom('platform_leases').selectAll().where('name', '=', LEADER).executeTakeFirst(),
    );
    return row ? { holder: row.holder, term: Number(row.term), acquired_at: row.acquired_at, expires_at: row.expires_at } : undefined;
  }

  /**
   * Says this replica is alive, then renews the lease it holds or takes it when it is free (no
   * holder, expired, or held by a replica that is not alive). Every step is one statement whose
   * condition decides, so two replicas racing for the lease cannot both win it.
   */
  async heartbeat(): Promise<void> {
    const started = this.o.clock.nowMs();
    const now = this.iso(started);
    const until = this.iso(started + this.leaseMs);
    const db = this.o.store.db;
    await storeQuery('refreshing the replica', async () => {
      const r = await db.updateTable('platform_replicas').set({ seen_at: now }).where('id', '=', this.id).executeTakeFirst();
      // Removed by someone (a restore of the database): registered again.
      if (Number(r.numUpdatedRows) === 0)
        await db
          .insertInto('platform_replicas')
          .values({ id: this.id, host: this.host, pid: this.pid, url: this.o.url, started_at: now, seen_at: now })
          .execute();
    });
    if (this.lead) {
      const renewed = await storeQuery('renewing the leader lease', () =>
        db
          .updateTable('platform_leases')
          .set({ expires_at: until })
          .where('name', '=', LEADER)
          .where('holder', '=', this.id)
          .where('term', '=', this.lead!.term)
          .executeTakeFirst(),
      );
      if (Number(renewed.numUpdatedRows) === 1) return this.setLead({ term: this.lead.term, untilMs: started + this.leaseMs });
      this.setLead(undefined);
    }
    const live = await this.alive();
    const taken = await storeQuery('taking the leader lease', () =>
      db
        .updateTable('platform_leases')
        .set((eb) => ({ holder: this.id, term: eb('term', '+', 1), acquired_at: now, expires_at: until }))
        .where('name', '=', LEADER)
        .where((eb) => (live.length > 0 ? eb.or([eb('expires_at', '<', now), eb('holder', 'not in', live)]) : eb('expires_at', '<', now)))
        .executeTakeFirst(),
    );
    if (Number(taken.numUpdatedRows) === 0) {
      const inserted = await storeQuery('taking the leader lease', () =>
        db
          .insertInto('platform_leases')
          .values({ name: LEADER, holder: this.id, term: 1, acquired_at: now, expires_at: until })
          .onConflict((oc) => oc.column('name').doNothing())
          .executeTakeFirst(),
      );
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) return;
    }
    const mine = await this.leader();
    if (mine?.holder === this.id) this.setLead({ term: mine.term, untilMs: started + this.leaseMs });
  }

  /**
   * Fails unless this replica still leads in `term` by the store (not only by its own clock):
   * what the leader starts checks it first, so a replica that lost the lease while it was paused
   * starts nothing on the strength of an old term.
   */
  async fence(term: number): Promise<void> {
    const l = await this.leader();
    if (!l || l.holder !== this.id || l.term !== term || l.expires_at <= this.iso(this.o.clock.nowMs()))
      throw new ConflictError('ANODYNE_E_NOT_LEADER', `this replica no longer leads in term ${term}`, {
        details: { term, leader: l?.holder ?? null, leader_term: l?.term ?? null },
      });
  }
}
