import type { ApiClient } from './client.js';

/** Prints rows as aligned columns (the first row is the header unless header is false). */
export function printTable(rows: string[][], header = true): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const lines = rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd());
  if (header && rows.length === 1) lines.push('(none)');
  process.stdout.write(lines.join('\n') + '\n');
}

interface TaskEvent { id: number; at: string; stage: string; state: string; instance?: string | null; index?: number | null; total?: number | null; message?: string | null }
interface Task { id: number; state: string; description: string; error: { code: string; message: string } | null; created_at: string; started_at: string | null; finished_at: string | null }

const FINAL = ['done', 'error', 'cancelled'];

function eventLine(e: TaskEvent): string {
  const step = e.index && e.total ? ` (${e.index}/${e.total})` : '';
  return `${e.at.slice(11, 19)}  ${e.stage}${e.instance ? `: ${e.instance}` : ''}${step} ${e.state}${e.message ? ` - ${e.message}` : ''}`;
}

/**
 * Prints a task's events, following it until it ends: one line per event (JSON lines with
 * --json). Returns the final state.
 */
export async function followTask(client: ApiClient, id: number, asJson: boolean): Promise<string> {
  let last = 0;
  for (;;) {
    const events = await client.call<TaskEvent[]>('GET', `/v1/tasks/${id}/events?after=${last}`);
    for (const e of events) {
      process.stdout.write(asJson ? `${JSON.stringify(e)}\n` : `${eventLine(e)}\n`);
      last = e.id;
    }
    const t = await client.call<Task>('GET', `/v1/tasks/${id}`);
    if (FINAL.includes(t.state)) {
      const tail = await client.call<TaskEvent[]>('GET', `/v1/tasks/${id}/events?after=${last}`);
      for (const e of tail) process.stdout.write(asJson ? `${JSON.stringify(e)}\n` : `${eventLine(e)}\n`);
      if (!asJson) process.stdout.write(`Task ${id} ${t.state}${t.error ? `: ${t.error.code}: ${t.error.message}` : ''}\n`);
      return t.state;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
