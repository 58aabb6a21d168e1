// Tests of the error catalogue and AnodyneError: unique ANODYNE_E_ codes, kinds, domain classes, wrapping unknown throwables.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AnodyneError, ConflictError, ErrorCodes, InputError, NotFoundError, hasCode, toAnodyneError, type ErrorCode } from './errors.js';

describe('error catalogue', () => {
  it('every key equals its code', () => {
    for (const [key, def] of Object.entries(ErrorCodes)) assert.equal(def.code, key);
  });

  it('every code is ANODYNE_E_ + upper snake case and unique', () => {
    const seen = new Set<string>();
    for (const def of Object.values(ErrorCodes)) {
      assert.match(def.code, /^ANODYNE_E_[A-Z0-9_]+$/);
      assert.ok(!seen.has(def.code), `duplicate ${def.code}`);
      seen.add(def.code);
      assert.ok(def.message.length > 0, `${def.code} has a message`);
    }
  });
});

describe('AnodyneError', () => {
  it('carries code, kind, retryable, details and cause', () => {
    const cause = new Error('boom');
    const e = new AnodyneError('ANODYNE_E_STORE_UNAVAILABLE', 'db down', { cause, details: { host: 'x' } });
    assert.equal(e.code, 'ANODYNE_E_STORE_UNAVAILABLE');
    assert.equal(e.kind, 'unavailable');
    assert.equal(e.retryable, true);
    assert.equal(e.cause, cause);
    assert.deepEqual(e.toJSON(), { code: 'ANODYNE_E_STORE_UNAVAILABLE', message: 'db down', details: { host: 'x' } });
    assert.equal(e.name, 'AnodyneError');
  });

  const cases: { name: string; make: () => AnodyneError; code: ErrorCode; cls: string }[] = [
    { name: 'input default', make: () => new InputError(), code: 'ANODYNE_E_INVALID_INPUT', cls: 'InputError' },
    {
      name: 'not found specific',
      make: () => new NotFoundError('ANODYNE_E_CREDENTIAL_NOT_FOUND', 'no /x'),
      code: 'ANODYNE_E_CREDENTIAL_NOT_FOUND',
      cls: 'NotFoundError',
    },
    {
      name: 'conflict',
      make: () => new ConflictError('ANODYNE_E_PROVIDER_IP_TAKEN'),
      code: 'ANODYNE_E_PROVIDER_IP_TAKEN',
      cls: 'ConflictError',
    },
  ];
  for (const c of cases) {
    it(`domain error: ${c.name}`, () => {
      const e = c.make();
      assert.equal(e.code, c.code);
      assert.equal(e.name, c.cls);
      assert.ok(e instanceof AnodyneError);
      assert.ok(hasCode(e, c.code));
    });
  }

  it('refuses a code of the wrong kind for a domain class', () => {
    assert.throws(() => new NotFoundError('ANODYNE_E_CONFLICT'), TypeError);
  });

  it('wraps unknown throwables as internal errors', () => {
    const e = toAnodyneError(new RangeError('x'));
    assert.equal(e.code, 'ANODYNE_E_INTERNAL');
    assert.equal(e.message, 'x');
    const same = new InputError();
    assert.equal(toAnodyneError(same), same);
  });
});
