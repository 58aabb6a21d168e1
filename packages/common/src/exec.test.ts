// Tests of exec: stdout and stderr, CommandError details, stdin and extra ok codes, a missing program, timeouts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { exec, CommandError } from './exec.js';
import { AnodyneError } from './errors.js';

describe('exec', () => {
  it('returns stdout of a successful command', async () => {
    const r = await exec(['sh', '-c', 'printf hello; printf warn >&2']);
    assert.equal(r.stdout, 'hello');
    assert.equal(r.stderr, 'warn');
  });

  it('throws CommandError with argv, exit code and stderr tail', async () => {
    await assert.rejects(exec(['sh', '-c', 'echo out; echo "it broke" >&2; exit 3']), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.code, 'ANODYNE_E_COMMAND_FAILED');
      assert.equal(err.exitCode, 3);
      assert.deepEqual(err.argv, ['sh', '-c', 'echo out; echo "it broke" >&2; exit 3']);
      assert.match(err.stderrTail, /it broke/);
      assert.match(err.message, /exit code 3/);
      return true;
    });
  });

  it('passes stdin and accepts extra ok codes', async () => {
    const r = await exec(['sh', '-c', 'cat; exit 1'], { input: 'piped', okCodes: [0, 1] });
    assert.equal(r.stdout, 'piped');
    assert.equal(r.code, 1);
  });

  it('reports a missing program with its own code', async () => {
    await assert.rejects(
      exec(['anodyne-no-such-program']),
      (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_COMMAND_NOT_FOUND',
    );
  });

  it('kills on timeout', async () => {
    await assert.rejects(
      exec(['sleep', '5'], { timeoutMs: 100 }),
      (err: unknown) => err instanceof CommandError && err.signal === 'SIGKILL',
    );
  });
});
