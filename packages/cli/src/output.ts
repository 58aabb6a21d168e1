// Terminal output: aligned tables and a live task follower (stage k/n, elapsed, estimate) or one line per event.
import type { ApiClient, Task, TaskEvent } from '@anodyne/client';

/** Prints rows as aligned columns (the first row is the header unless header is false). */
export function printTable(rows: string[][], header = true): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const lines = rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd(),
  );
  if (header && rows.length === 1) lines.push('(none)');
  process.stdout.write(lines.join('\n') + '\n');
}

const FINAL = ['done', 'error', 'cancelled'];

function eventLine(e: TaskEvent): string {
  const step = e.index && e.total ? ` (${e.index}/${e.total})` : '';
  return `${e.at.slice(11, 19)}  ${e.stage}${e.instance ? `: ${e.instance}` : ''}${step} ${e.state}${e.message ? ` - ${e.message}` : ''}`;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Median duration (ms) of earlier finished tasks of the same type: the basis of the estimate. */
async function typicalDuration(client: ApiClient, task: Task & { type?: string }): Promise<number | undefined> {
  const tasks = await client.tasks({ limit: 100 }).catch((): Task[] => []);
  const ds = tasks
    .filter((t) => t.id !== task.id && t.type === task.type && t.state === 'done' && t.started_at && t.finished_at)
    .map((t) => Date.parse(t.finished_at!) - Date.parse(t.started_at!))
    .sort((a, b) => a - b);
  return ds.length > 0 ? ds[Math.floor(ds.length / 2)] : undefined;
}

const secs = (ms: number) => `${Math.max(0, Math.round(ms / 1000))}s`;

/**
 * Follows a task until it ends and returns its final state. On a terminal: one line per stage
 * with a spinner, step k/n, elapsed time and an estimate of the time left (from earlier tasks of
 * the same kind). Otherwise (piped): one plain line per event, or JSON lines with --json.
 */
export async function followTask(client: ApiClient, id: number, asJson: boolean, tty = process.stdout.isTTY === true): Promise<string> {
  const live = tty && !asJson;
  const first = await client.task(id);
  const typical = live ? await typicalDuration(client, first) : undefined;
  const start = Date.parse(first.started_at ?? first.created_at);
  let last = 0;
  let current: TaskEvent | undefined;
  let stageStart = Date.now();
  let frame = 0;
  const status = () => {
    if (!current) return `${SPINNER[frame % SPINNER.length]} waiting to start`;
    const step = current.index && current.total ? ` ${current.index}/${current.total}` : '';
    const elapsed = Date.now() - start;
    const eta = typical !== undefined ? (typical > elapsed ? `, about ${secs(typical - elapsed)} left` : ', almost done') : '';
    return `${SPINNER[frame % SPINNER.length]} ${current.stage}${step}${current.instance ? ` ${current.instance}` : ''}${current.message ? ` · ${current.message}` : ''} (${secs(elapsed)} elapsed${eta})`;
  };
  const redraw = () => process.stdout.write(`\r\x1b[K${status()}`);
  const timer = live
    ? setInterval(() => {
        frame++;
        redraw();
      }, 100)
    : undefined;
  try {
    for (;;) {
      const events = await client.taskEvents(id, last);
      for (const e of events) {
        last = e.id;
        if (!live) {
          process.stdout.write(asJson ? `${JSON.stringify(e)}\n` : `${eventLine(e)}\n`);
          continue;
        }
        if (e.stage === 'Lifecycle') {
          // Per-instance detail (drain, stop, start): shown on the status line, not as a stage.
          if (current) current = { ...current, message: `${e.instance ?? ''} ${e.message ?? ''}`.trim() };
          continue;
        }
        if (current && current.stage !== e.stage) {
          process.stdout.write(
            `\r\x1b[K✓ ${current.stage}${current.total ? ` (${current.total}/${current.total})` : ''} ${secs(Date.now() - stageStart)}\n`,
          );
          stageStart = Date.now();
        }
        current = e;
        redraw();
      }
      const t = await client.task(id);
      if (FINAL.includes(t.state) && events.length === 0) {
        const took = t.finished_at && t.started_at ? ` in ${secs(Date.parse(t.finished_at) - Date.parse(t.started_at))}` : '';
        if (live) {
          if (current)
            process.stdout.write(`\r\x1b[K${t.state === 'done' ? '✓' : '✗'} ${current.stage} ${secs(Date.now() - stageStart)}\n`);
          else process.stdout.write('\r\x1b[K');
        }
        if (!asJson) process.stdout.write(`Task ${id} ${t.state}${took}${t.error ? `: ${t.error.code}: ${t.error.message}` : ''}\n`);
        const availability = availabilityLine(t.result);
        if (!asJson && availability) process.stdout.write(`${availability}\n`);
        return t.state;
      }
      if (!FINAL.includes(t.state)) await new Promise((r) => setTimeout(r, 300));
    }
  } finally {
    if (timer) clearInterval(timer);
  }
}

/** "API: 1,412 requests, 0 failed, longest gap 0.3 s" from a rolling task's measured availability, if it has one. */
export function availabilityLine(result: unknown): string | undefined {
  const a = (result as { availability?: { requests: number; failed: number; longest_gap_ms: number } } | null)?.availability;
  if (!a) return undefined;
  return `API: ${a.requests.toLocaleString('en-US')} requests, ${a.failed.toLocaleString('en-US')} failed, longest gap ${(a.longest_gap_ms / 1000).toFixed(1)} s`;
}
