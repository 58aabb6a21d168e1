// The local provider's state file: updates from two processes at once (replicas on one host) lose nothing; a dead owner's lock is taken over.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StateFile, type LbRecord } from './state.js';
import { addEntries } from './state-writer.testkit.js';

describe('the state file', () => {
  it('two processes updating it at once: every change of both is kept', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-state-'));
    try {
      const path = join(dir, 'state.json');
      // The other process: the same updates from a program of its own.
      const writer = fileURLToPath(new URL('./state-writer.testkit.js', import.meta.url));
      const child = spawn(process.execPath, [writer, path, 'child', '60'], { stdio: 'inherit' });
      const childDone = new Promise<number | null>((r) => child.once('exit', r));
      await addEntries(path, 'parent', 60);
      assert.equal(await childDone, 0);
      const lbs = Object.keys(new StateFile(path).read().lbs);
      assert.equal(lbs.filter((k) => k.startsWith('parent-')).length, 60);
      assert.equal(lbs.filter((k) => k.startsWith('child-')).length, 60);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a lock left by a process that died is taken over', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-state-'));
    try {
      const path = join(dir, 'state.json');
      const dead = spawnSync('/bin/sh', ['-c', 'echo $$']).stdout.toString().trim();
      writeFileSync(`${path}.lock`, dead);
      await new StateFile(path).update((s) => void (s.lbs['x'] = { lbId: 'x' } as unknown as LbRecord));
      assert.deepEqual(Object.keys(new StateFile(path).read().lbs), ['x']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
