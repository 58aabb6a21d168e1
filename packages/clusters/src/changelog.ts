// Point-in-time recovery: a continuous record of a cluster's etcd changes after a snapshot (a watch), sealed in chunks, and its replay.
import { request, type RequestOptions } from 'node:https';
import { AnodyneError, type Clock, type Logger } from '@anodyne/common';
import { open, seal, type ArtifactStore, type BackupKeys } from '@anodyne/backup';

/** How the platform reaches a cluster's etcd members: their client URLs and a client certificate the etcd CA signed. */
export interface EtcdAccess {
  urls: string[];
  ca: string;
  certificate: string;
  private_key: string;
}

/** One change: a put of a value, or a delete, of one key, at a revision, with when the platform saw it. */
export interface EtcdChange {
  rev: number;
  /** Milliseconds since the epoch, when the watch delivered it. */
  at: number;
  type: 'put' | 'delete';
  /** base64, as etcd's JSON gateway carries bytes. */
  key: string;
  value?: string;
}

/** A sealed chunk of changes: `changes/<cluster>/<from>-<to>.sealed`. */
interface Chunk {
  cluster: string;
  from: number;
  to: number;
  changes: EtcdChange[];
}

const pad = (n: number) => String(n).padStart(12, '0');
const chunkKey = (cluster: string, from: number, to: number) => `changes/${cluster}/${pad(from)}-${pad(to)}.sealed`;

/** A POST to a member's JSON gateway (`/v3/...`) with the client certificate, on a connection of its own. */
function post(a: EtcdAccess, url: string, path: string, timeoutMs?: number): RequestOptions {
  const u = new URL(path, url);
  return {
    host: u.hostname,
    port: u.port,
    path: u.pathname,
    method: 'POST',
    agent: false,
    ca: a.ca,
    cert: a.certificate,
    key: a.private_key,
    headers: { 'content-type': 'application/json' },
    ...(timeoutMs ? { timeout: timeoutMs } : {}),
  };
}

/** A call to etcd's JSON gateway with the client certificate; the answer's JSON. */
function gateway(a: EtcdAccess, url: string, path: string, body: unknown, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request(post(a, url, path, timeoutMs), (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        if ((res.statusCode ?? 500) >= 300)
          reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', `etcd ${path}: ${res.statusCode} ${text.slice(0, 200)}`));
        else resolve(JSON.parse(text || '{}') as Record<string, unknown>);
      });
    });
    req.on('error', (e) => reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', `etcd ${path}: ${e.message}`)));
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.end(JSON.stringify(body));
  });
}

interface Watching {
  cluster: string;
  next: number;
  buffer: EtcdChange[];
  stopped: boolean;
  abort: (() => void) | null;
  flushing: Promise<void>;
  /** Set when the record has a hole (the watch could not resume where it left off). */
  gapAt: number | null;
}

export interface ChangeRecorderOptions {
  artifacts: ArtifactStore;
  keys: BackupKeys;
  access: (cluster: string) => Promise<EtcdAccess>;
  clock: Clock;
  logger: Logger;
  /** How often buffered changes are sealed and stored (default 2 s). */
  flushMs?: number;
  /**
   * Where the records run when the platform has several replicas: only in the leader, so that one
   * process records each cluster. Without it, here.
   */
  route?: RecorderRoute;
}

/** An order to the process that records: start (from a revision), stop, or store what is buffered now. */
export interface RecorderOrder {
  op: 'start' | 'stop' | 'flush';
  cluster: string;
  from?: number;
}

export interface RecorderRoute {
  /** Whether this process records (the platform's leader); the others send their orders to it. */
  here(): boolean;
  /** Sends an order to the process that records; resolves once it has been carried out (or a bounded wait has passed). */
  send(order: RecorderOrder): Promise<void>;
}

/**
 * Records, per cluster, every change etcd makes after a revision: a watch of the whole key space
 * through one member's JSON gateway (another member when it fails), resumed from the last revision
 * seen. Changes are sealed like backups and stored in chunks every few seconds. A watch that
 * cannot resume (etcd compacted the revisions it missed) is a hole: the record says so, and
 * point-in-time restores stop before it.
 */
export class ChangeRecorder {
  private readonly watching = new Map<string, Watching>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly o: ChangeRecorderOptions) {
    this.timer = setInterval(() => void this.flushAll(), o.flushMs ?? 2000);
    this.timer.unref();
  }

  /** Whether this process's orders go to another (it does not lead). */
  private elsewhere(): boolean {
    return this.o.route !== undefined && !this.o.route.here();
  }

  /** Carries out an order sent by another replica (this one records). */
  async apply(order: RecorderOrder): Promise<void> {
    if (order.op === 'start' && order.from !== undefined) await this.startHere(order.cluster, order.from);
    else if (order.op === 'stop') await this.stopHere(order.cluster);
    else if (order.op === 'flush') await this.flushHere(order.cluster);
  }

  /** Records the cluster's changes from `fromRevision` on (replacing a record already running), in the process that records. */
  async start(cluster: string, fromRevision: number): Promise<void> {
    if (this.elsewhere()) return this.o.route!.send({ op: 'start', cluster, from: fromRevision });
    await this.startHere(cluster, fromRevision);
  }

  private async startHere(cluster: string, fromRevision: number): Promise<void> {
    await this.stopHere(cluster);
    const w: Watching = { cluster, next: fromRevision, buffer: [], stopped: false, abort: null, flushing: Promise.resolve(), gapAt: null };
    this.watching.set(cluster, w);
    void this.loop(w);
  }

  /** Stops recording a cluster, storing what it had (in the process that records). */
  async stop(cluster: string): Promise<void> {
    if (this.elsewhere()) return this.o.route!.send({ op: 'stop', cluster });
    await this.stopHere(cluster);
  }

  private async stopHere(cluster: string): Promise<void> {
    const w = this.watching.get(cluster);
    if (!w) return;
    w.stopped = true;
    w.abort?.();
    this.watching.delete(cluster);
    await this.flush(w);
  }

  /** Stops recording every cluster, storing what each had (a replica that no longer leads); `start` may follow. */
  async stopAll(): Promise<void> {
    for (const c of [...this.watching.keys()]) await this.stopHere(c);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.stopAll();
  }

  /** Whether this process records the cluster now. */
  recording(cluster: string): boolean {
    return this.watching.has(cluster);
  }

  private async loop(w: Watching): Promise<void> {
    let attempt = 0;
    while (!w.stopped) {
      try {
        const a = await this.o.access(w.cluster);
        const url = a.urls[attempt % a.urls.length]!;
        await this.watchOnce(w, a, url);
      } catch (err) {
        if (!w.stopped)
          this.o.logger.warn({ cluster: w.cluster, err: (err as Error).message }, 'etcd change record: watch ended; resuming');
      }
      attempt++;
      if (!w.stopped) await this.o.clock.sleep(1000);
    }
  }

  /** One watch stream: newline-separated JSON results, each a batch of events. */
  private watchOnce(w: Watching, a: EtcdAccess, url: string): Promise<void> {
    const body = JSON.stringify({
      create_request: { key: Buffer.from([0]).toString('base64'), range_end: Buffer.from([0]).toString('base64'), start_revision: w.next },
    });
    return new Promise((resolve, reject) => {
      const req = request(post(a, url, '/v3/watch'), (res) => {
        if ((res.statusCode ?? 500) >= 300) {
          res.resume();
          return reject(new AnodyneError('ANODYNE_E_UNAVAILABLE', `etcd watch: ${res.statusCode}`));
        }
        let pending = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          pending += chunk;
          for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
            const line = pending.slice(0, nl).trim();
            pending = pending.slice(nl + 1);
            if (line) this.take(w, line);
          }
        });
        res.on('end', () => resolve());
        res.on('error', reject);
      });
      w.abort = () => req.destroy();
      req.on('error', (e) => (w.stopped ? resolve() : reject(e)));
      req.end(body);
    });
  }

  private take(w: Watching, line: string): void {
    const msg = JSON.parse(line) as {
      result?: {
        compact_revision?: string;
        canceled?: boolean;
        events?: { type?: string; kv: { key: string; value?: string; mod_revision: string } }[];
      };
    };
    const r = msg.result;
    if (!r) return;
    if (r.compact_revision && Number(r.compact_revision) > w.next) {
      // The revisions from w.next on are gone: a hole in the record; go on from what etcd still has.
      this.o.logger.warn({ cluster: w.cluster, from: w.next, compacted: r.compact_revision }, 'etcd change record has a hole');
      w.gapAt = w.next;
      w.next = Number(r.compact_revision);
      return;
    }
    const at = this.o.clock.nowMs();
    for (const e of r.events ?? []) {
      const rev = Number(e.kv.mod_revision);
      w.buffer.push({
        rev,
        at,
        type: e.type === 'DELETE' ? 'delete' : 'put',
        key: e.kv.key,
        ...(e.type === 'DELETE' ? {} : { value: e.kv.value ?? '' }),
      });
      w.next = rev + 1;
    }
  }

  private flushAll(): Promise<void[]> {
    return Promise.all([...this.watching.values()].map((w) => this.flush(w)));
  }

  private flush(w: Watching): Promise<void> {
    w.flushing = w.flushing.then(async () => {
      if (w.buffer.length === 0) return;
      const changes = w.buffer;
      w.buffer = [];
      const chunk: Chunk = { cluster: w.cluster, from: changes[0]!.rev, to: changes[changes.length - 1]!.rev, changes };
      try {
        await this.o.artifacts.put(
          chunkKey(w.cluster, chunk.from, chunk.to),
          seal(Buffer.from(JSON.stringify(chunk)), await this.o.keys.current()),
        );
      } catch (err) {
        w.buffer = [...changes, ...w.buffer];
        this.o.logger.warn(
          { cluster: w.cluster, err: (err as Error).message },
          'etcd change record: storing a chunk failed; kept for the next try',
        );
      }
    });
    return w.flushing;
  }

  /** Stores what is buffered for a cluster now (a restore reads the record right after). */
  async flushNow(cluster: string): Promise<void> {
    if (this.elsewhere()) return this.o.route!.send({ op: 'flush', cluster });
    await this.flushHere(cluster);
  }

  private async flushHere(cluster: string): Promise<void> {
    const w = this.watching.get(cluster);
    if (w) await this.flush(w);
  }

  /** The recorded changes of a cluster after `after` up to the target (a revision or a time), in order. */
  async changesBetween(
    cluster: string,
    after: number,
    target: { revision?: number; time?: number; before?: number },
  ): Promise<EtcdChange[]> {
    const out: EtcdChange[] = [];
    for (const o of await this.o.artifacts.list(`changes/${cluster}/`)) {
      const m = /\/(\d+)-(\d+)\.sealed$/.exec(o.key);
      if (!m || Number(m[2]) <= after) continue;
      const chunk = JSON.parse((await open(await this.o.artifacts.get(o.key), this.o.keys)).toString('utf8')) as Chunk;
      for (const c of chunk.changes) {
        if (c.rev <= after) continue;
        if (target.revision !== undefined && c.rev > target.revision) continue;
        if (target.time !== undefined && c.at > target.time) continue;
        if (target.before !== undefined && c.at >= target.before) continue;
        out.push(c);
      }
    }
    out.sort((x, y) => x.rev - y.rev);
    // Only a gapless run counts: a revision missing from the record ends what can be replayed.
    return out;
  }

  /** Deletes a cluster's record up to a revision (what a newer snapshot holds anyway). */
  async prune(cluster: string, upTo: number): Promise<void> {
    for (const o of await this.o.artifacts.list(`changes/${cluster}/`)) {
      const m = /\/(\d+)-(\d+)\.sealed$/.exec(o.key);
      if (m && Number(m[2]) <= upTo) await this.o.artifacts.delete(o.key);
    }
  }
}

/** Applies recorded changes to a running etcd, in order: puts and deletes of single keys. */
export async function replay(a: EtcdAccess, changes: EtcdChange[]): Promise<void> {
  const url = a.urls[0]!;
  for (const c of changes) {
    if (c.type === 'put') await gateway(a, url, '/v3/kv/put', { key: c.key, value: c.value ?? '' });
    else await gateway(a, url, '/v3/kv/deleterange', { key: c.key });
  }
}

/** Which of `a.urls` is etcd's leader now (by position), asking each member's status; undefined if none says. */
export async function etcdLeaderAt(a: EtcdAccess): Promise<number | undefined> {
  const statuses = await Promise.all(
    a.urls.map((url) =>
      gateway(a, url, '/v3/maintenance/status', {}, 3000).then(
        (r) => r as { header?: { member_id?: string }; leader?: string },
        () => undefined,
      ),
    ),
  );
  const leader = statuses.find((s) => s?.leader)?.leader;
  const at = statuses.findIndex((s) => s?.header?.member_id !== undefined && s.header.member_id === leader);
  return at >= 0 ? at : undefined;
}

/** The revision etcd is at now. */
export async function currentRevision(a: EtcdAccess): Promise<number> {
  const r = (await gateway(a, a.urls[0]!, '/v3/kv/range', { key: Buffer.from('/').toString('base64'), limit: 1, keys_only: true })) as {
    header?: { revision?: string };
  };
  return Number(r.header?.revision ?? 0);
}
