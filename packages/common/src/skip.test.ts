// Tests of skipUnless: runs when the condition holds, skips outside CI, fails under CI=true.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './skip.js';

describe('skipUnless', () => {
  it('runs when the condition holds, skips with the reason outside CI, and fails under CI=true', () => {
    assert.equal(skipUnless(true, 'needs root', { CI: 'true' }), false);
    assert.equal(skipUnless(false, 'needs root', {}), 'needs root');
    assert.equal(skipUnless(false, 'needs root', { CI: 'false' }), 'needs root');
    assert.throws(() => skipUnless(false, 'needs root', { CI: 'true' }), /needs root.*under CI=true a skipped suite is a failure/);
  });
});
