// Signals between the replicas of one database: PostgreSQL LISTEN/NOTIFY, or in process on SQLite (one process writes it).
import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Logger } from '@anodyne/common';

/** Called with a notice's payload; with '' when notices may have been missed (the listener (re)connected): read again then. */
export type SignalHandler = (payload: string) => void;

/**
 * Notices that something changed in the store, for whoever follows it (an event stream, the task
 * queue). A notice only says "look again": it is sent after the write it speaks of has been made,
 * it may be lost (a listener that reconnects is told with an empty payload), and followers still
 * read the store now and then.
 */
export interface Signals {
  /** Tells every follower of `channel`, in every replica. Never throws: a notice that cannot be sent is logged. */
  notify(channel: string, payload: string): Promise<void>;
  /** Calls `handler` for each notice on `channel`. Returns the function that stops it. */
  subscribe(channel: string, handler: SignalHandler): () => void;
  close(): Promise<void>;
}

const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

function checkChannel(channel: string): void {
  if (!CHANNEL.test(channel)) throw new Error(`not a channel name: ${channel}`);
}

/** One process: notices go straight to this process's followers. */
export class LocalSignals implements Signals {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  notify(channel: string, payload: string): Promise<void> {
    checkChannel(channel);
    setImmediate(() => this.emitter.emit(channel, payload));
    return Promise.resolve();
  }

  subscribe(channel: string, handler: SignalHandler): () => void {
    checkChannel(channel);
    this.emitter.on(channel, handler);
    return () => this.emitter.off(channel, handler);
  }

  close(): Promise<void> {
    this.emitter.removeAllListeners();
    return Promise.resolve();
  }
}

/**
 * PostgreSQL's LISTEN/NOTIFY: notices go through the database to every replica. Each process
 * keeps one connection of its own for listening (opened at the first follower, not from the
 * pool: a LISTEN belongs to its connection), and opens it again a second after losing it.
 */
export class PgSignals implements Signals {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  private client: pg.Client | undefined;
  /** The channels the current connection listens to. */
  private readonly listening = new Set<string>();
  private connecting: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly send: (channel: string, payload: string) => Promise<void>,
    private readonly logger?: Logger,
  ) {}

  async notify(channel: string, payload: string): Promise<void> {
    checkChannel(channel);
    await this.send(channel, payload).catch((err: unknown) =>
      this.logger?.debug({ channel, err: (err as Error).message }, 'a store notice was not sent'),
    );
  }

  subscribe(channel: string, handler: SignalHandler): () => void {
    checkChannel(channel);
    this.emitter.on(channel, handler);
    if (this.client) void this.listenAll(this.client).catch(() => this.lost());
    else this.connect();
    return () => this.emitter.off(channel, handler);
  }

  /** LISTENs on `client` to every followed channel it does not listen to yet. */
  private async listenAll(client: pg.Client): Promise<void> {
    for (const name of this.emitter.eventNames()) {
      const channel = String(name);
      if (this.listening.has(channel)) continue;
      this.listening.add(channel);
      await client.query(`LISTEN ${channel}`);
    }
  }

  private connect(): void {
    if (this.connecting || this.client || this.closed) return;
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 5000 });
    client.on('notification', (n) => this.emitter.emit(n.channel, n.payload ?? ''));
    // A connection that fails while it is being set up is not taken into use; one that fails later is replaced.
    let dead = false;
    const die = () => {
      dead = true;
      if (this.client === client) this.lost();
      else this.again();
    };
    client.on('error', die);
    client.on('end', die);
    this.connecting = (async () => {
      try {
        await client.connect();
        this.listening.clear();
        await this.listenAll(client);
        if (this.closed || dead) {
          await client.end().catch(() => undefined);
          if (!this.closed) this.again();
          return;
        }
        this.client = client;
        // Channels followed while the LISTENs above ran.
        await this.listenAll(client);
        // Whatever was sent while no connection listened is unknown: every follower reads again.
        for (const channel of this.emitter.eventNames()) this.emitter.emit(channel, '');
      } catch (err) {
        this.logger?.debug({ err: (err as Error).message }, 'listening to the store failed; trying again');
        if (this.client === client) this.client = undefined;
        await client.end().catch(() => undefined);
        this.again();
      } finally {
        this.connecting = undefined;
      }
    })();
  }

  private lost(): void {
    const c = this.client;
    this.client = undefined;
    this.listening.clear();
    if (c) void c.end().catch(() => undefined);
    this.again();
  }

  private again(): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.connect();
    }, 1000);
    this.retry.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.emitter.removeAllListeners();
    await this.connecting;
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
