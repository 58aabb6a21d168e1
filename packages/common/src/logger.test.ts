// Tests of the logger: secret-named keys and registered secret values are redacted, other fields are kept.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger, SecretRegistry, REDACTED } from './logger.js';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[]; raw: () => string } {
  let buf = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf += chunk.toString();
      cb();
    },
  });
  return {
    stream,
    raw: () => buf,
    lines: () =>
      buf
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('logger', () => {
  it('redacts secret-named keys at any depth', () => {
    const out = capture();
    const log = createLogger({ destination: out.stream, level: 'info' });
    log.info(
      {
        user: 'ann',
        password: 'hunter2hunter2',
        nested: { deeper: { client_secret: 's3cr3t-value', privateKey: 'PEM' } },
        list: [{ token: 'tok-abcdef' }],
      },
      'login',
    );
    const [rec] = out.lines();
    assert.ok(rec);
    assert.equal(rec['user'], 'ann');
    assert.equal(rec['password'], REDACTED);
    assert.deepEqual(rec['nested'], { deeper: { client_secret: REDACTED, privateKey: REDACTED } });
    assert.deepEqual(rec['list'], [{ token: REDACTED }]);
    assert.ok(!out.raw().includes('hunter2hunter2'));
    assert.ok(!out.raw().includes('s3cr3t-value'));
  });

  it('masks registered secret values wherever they appear, message included', () => {
    const out = capture();
    const secrets = new SecretRegistry();
    const value = 'Zx9-generated-password-Q';
    secrets.add(value);
    const log = createLogger({ destination: out.stream, secrets });
    log.info({ note: `applied ${value} to node`, err: new Error(`bad ${value}`) }, `message with ${value}`);
    assert.ok(!out.raw().includes(value), out.raw());
    assert.ok(out.raw().includes(REDACTED));
  });

  it('keeps non-secret fields and the level label', () => {
    const out = capture();
    createLogger({ destination: out.stream, name: 'test' }).warn({ count: 3 }, 'hello');
    const [rec] = out.lines();
    assert.equal(rec?.['level'], 'warn');
    assert.equal(rec?.['name'], 'test');
    assert.equal(rec?.['count'], 3);
    assert.equal(rec?.['msg'], 'hello');
  });
});
