// A quiet host for the zero-downtime suites: while one holds it, suites that start VMs wait before they do.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The mark a suite leaves while it needs the host to itself. Suites run two at a time
 * (scripts/test.sh); a CA rotation or an upgrade of a 3+3 cluster counts every failed request,
 * and beside a suite that creates clusters an etcd leader once stalled 3 s and a write failed.
 */
const MARK = join(tmpdir(), 'anodyne-test-quiet-host');

interface Holder {
  pid: number;
  suite: string;
}

function holder(): Holder | undefined {
  try {
    const h = JSON.parse(readFileSync(MARK, 'utf8')) as Holder;
    process.kill(h.pid, 0); // throws when that process is gone (a run killed before its `after`)
    return h;
  } catch {
    return undefined;
  }
}

/** Marks the host as needed by `suite` until the returned function is called (in the suite's `after`). */
export function holdQuietHost(suite: string): () => void {
  writeFileSync(MARK, JSON.stringify({ pid: process.pid, suite } satisfies Holder));
  return () => {
    if (holder()?.pid === process.pid) rmSync(MARK, { force: true });
  };
}

/** Waits (at most `maxMs`) while another process holds the host: called before a suite starts VMs. */
export async function awaitQuietHost(maxMs = 20 * 60_000): Promise<void> {
  const started = Date.now();
  for (let h = holder(); h && h.pid !== process.pid && Date.now() - started < maxMs; h = holder())
    await new Promise((r) => setTimeout(r, 1000));
}
