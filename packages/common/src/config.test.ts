// Tests of loadConfig: embedded defaults, the YAML file then environment overrides, env names per key, errors naming the bad key.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, PlatformConfigSchema, envBindings } from './config.js';
import { AnodyneError } from './errors.js';

describe('config', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-config-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('gives embedded defaults with no file and no environment', () => {
    const c = loadConfig(PlatformConfigSchema, { env: {} });
    assert.equal(c.store.driver, 'sqlite');
    assert.equal(c.server.port, 9021);
    assert.equal(c.log.level, 'info');
  });

  it('reads the YAML file, then environment overrides win', () => {
    const p = file('a.yaml', 'store:\n  driver: postgres\n  url: postgres://a@127.0.0.1/x\nserver:\n  port: 9443\n');
    const c = loadConfig(PlatformConfigSchema, {
      file: p,
      env: { ANODYNE_SERVER_PORT: '9555', ANODYNE_DATA_DIR: '/tmp/d', ANODYNE_SERVER_ALT_NAMES: 'a.example, b.example' },
    });
    assert.equal(c.store.driver, 'postgres');
    assert.equal(c.server.port, 9555);
    assert.equal(c.dataDir, '/tmp/d');
    assert.deepEqual(c.server.altNames, ['a.example', 'b.example']);
  });

  it('derives one environment variable per leaf key', () => {
    const names = envBindings(PlatformConfigSchema).map((b) => b.name);
    assert.ok(names.includes('ANODYNE_STORE_URL'));
    assert.ok(names.includes('ANODYNE_STORE_POOL_SIZE'));
    assert.ok(names.includes('ANODYNE_DATA_DIR'));
  });

  const bad: { name: string; yaml?: string; env?: Record<string, string>; key: string; code: string }[] = [
    { name: 'wrong enum in file', yaml: 'store:\n  driver: mysql\n', key: 'store.driver', code: 'ANODYNE_E_CONFIG_INVALID' },
    { name: 'port out of range', yaml: 'server:\n  port: 70000\n', key: 'server.port', code: 'ANODYNE_E_CONFIG_INVALID' },
    {
      name: 'public URL not https',
      yaml: 'server:\n  publicUrl: http://lb.example:9021\n',
      key: 'server.publicUrl',
      code: 'ANODYNE_E_CONFIG_INVALID',
    },
    { name: 'unknown key', yaml: 'store:\n  drivr: sqlite\n', key: 'store.drivr', code: 'ANODYNE_E_CONFIG_INVALID' },
    { name: 'non-numeric env', env: { ANODYNE_SERVER_PORT: 'abc' }, key: 'server.port', code: 'ANODYNE_E_CONFIG_INVALID' },
    { name: 'not YAML', yaml: 'a: [unclosed', key: '', code: 'ANODYNE_E_CONFIG_UNREADABLE' },
  ];
  for (const c of bad) {
    it(`names the bad key: ${c.name}`, () => {
      const p = c.yaml === undefined ? undefined : file(`${c.name}.yaml`, c.yaml);
      assert.throws(
        () => loadConfig(PlatformConfigSchema, { file: p, env: c.env ?? {} }),
        (err: unknown) => {
          assert.ok(err instanceof AnodyneError);
          assert.equal(err.code, c.code);
          if (c.key) {
            assert.ok(err.message.includes(c.key), err.message);
            assert.equal(err.details['key'], c.key);
          }
          return true;
        },
      );
    });
  }

  it('reports an unreadable file with its code', () => {
    assert.throws(
      () => loadConfig(PlatformConfigSchema, { file: join(dir, 'missing.yaml'), env: {} }),
      (err: unknown) => err instanceof AnodyneError && err.code === 'ANODYNE_E_CONFIG_UNREADABLE',
    );
  });
});
