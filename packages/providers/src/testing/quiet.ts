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

/** The pid of the process that holds the host, if it still runs (a run killed before its `after` holds nothing). */
function holder(): number | undefined {
  try {
    const pid = Number(readFileSync(MARK, 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return undefined; // kill(0) would ask this process group
    process.kill(pid, 0); // throws when that process is gone
    return pid;
  } catch {
    return undefined;
  }
}

/** Marks the host as needed by this process until the returned function is called (in the suite's `after`). */
export function holdQuietHost(): () => void {
  writeFileSync(MARK, String(process.pid));
  return () => {
    if (holder() === process.pid) rmSync(MARK, { force: true });
  };
}

/** Waits (at most `maxMs`) while another process holds the host: called before a suite starts VMs. */
export async function awaitQuietHost(maxMs = 20 * 60_000): Promise<void> {
  const started = Date.now();
  for (let pid = holder(); pid !== undefined && pid !== process.pid && Date.now() - started < maxMs; pid = holder())
    await new Promise((r) => setTimeout(r, 1000));
}
