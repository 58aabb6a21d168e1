// A second process for the state file's test: `node state-writer.testkit.js PATH WHO N` adds N entries as the test does.
import { StateFile, type LbRecord } from './state.js';

/** Adds `n` entries named `<who>-<i>`, each update pausing inside its section so that two processes interleave. */
export async function addEntries(path: string, who: string, n: number): Promise<void> {
  const file = new StateFile(path);
  for (let i = 0; i < n; i++)
    await file.update(async (s) => {
      await new Promise((r) => setTimeout(r, 2));
      s.lbs[`${who}-${i}`] = { lbId: `${who}-${i}` } as unknown as LbRecord;
    });
}

const [path, who, n] = process.argv.slice(2);
if (path && who && n && process.argv[1]?.endsWith('state-writer.testkit.js')) await addEntries(path, who, Number(n));
