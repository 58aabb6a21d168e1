// The PROXY protocol before TLS: v1 and v2 headers from a trusted balancer name the client; anything else from elsewhere is refused.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, silentLogger } from '@anodyne/common';
import { acceptProxyProtocol, parseProxyHeader } from './proxy-protocol.js';

function v2(cmd: number, family: number, addresses: Buffer): Buffer {
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20 | cmd, family, 0, 0]);
  head.writeUInt16BE(addresses.length, 14);
  return Buffer.concat([head, addresses]);
}
const ipv4 = (src: number[], dst: number[], sport: number, dport: number) => {
  const b = Buffer.alloc(12);
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
};

describe('PROXY protocol headers', () => {
  it('parses v1 and v2 headers, asks for more of a partial one, and refuses what is not one', () => {
    assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nrest')), {
      consumed: 40,
      source: { address: '192.0.2.7', port: 5555 },
    });
    assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n')), {
      consumed: 45,
      source: { address: '2001:db8::7', port: 5555 },
    });
    assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { consumed: 15 });
    assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7 10.0')), 'more');
    assert.equal(parseProxyHeader(Buffer.from('PRO')), 'more');
    const h = v2(1, 0x11, ipv4([198, 51, 100, 9], [10, 0, 0, 1], 40000, 443));
    assert.deepEqual(parseProxyHeader(Buffer.concat([h, Buffer.from('tls')])), {
      consumed: 28,
      source: { address: '198.51.100.9', port: 40000 },
    });
    assert.equal(parseProxyHeader(h.subarray(0, 20)), 'more');
    assert.deepEqual(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0))), { consumed: 16 }, 'LOCAL: the balancer itself');
    for (const bad of [
      Buffer.from('PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n'),
      Buffer.from('PROXY TCP4 192.0.2.7 10.0.0.1 99999 2\r\n'),
      Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}`),
      Buffer.from('GET / HTTP/1.1\r\n'),
      Buffer.from('PROXX TCP4'),
      v2(7, 0x11, ipv4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
    ])
      assert.ok(parseProxyHeader(bad) instanceof Error, bad.toString('latin1').slice(0, 30));
  });
});

describe('a TLS server behind a balancer that sends PROXY headers', () => {
  let server: Server;
  let port = 0;
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anodyne-proxy-'));
    const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
    await exec(
      ['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'].concat([
        '-keyout',
        key,
        '-out',
        cert,
        '-subj',
        '/CN=127.0.0.1',
        '-days',
        '1',
      ]),
    );
    const tls = { cert: readFileSync(cert), key: readFileSync(key) };
    rmSync(dir, { recursive: true, force: true });
    server = createServer({ cert: tls.cert, key: tls.key }, (req, res) => res.end(req.socket.remoteAddress ?? ''));
    acceptProxyProtocol(server, { from: ['127.0.0.1'], logger: silentLogger(), timeoutMs: 1000 });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  /** One request on a connection from `from` that first sends `header` (in two pieces): the address the server saw, or 'closed'. */
  const seen = (header: Buffer, from = '127.0.0.1') =>
    new Promise<string>((resolve) => {
      let text = '';
      const done = () => resolve(text ? text.split('\r\n').pop()! : 'closed');
      const raw = netConnect({ port, host: '127.0.0.1', localAddress: from }, () => {
        raw.write(header.subarray(0, 5));
        setTimeout(() => {
          if (raw.destroyed) return;
          raw.write(header.subarray(5));
          const t = tlsConnect({ socket: raw, rejectUnauthorized: false }, () =>
            t.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'),
          );
          t.on('data', (d: Buffer) => (text += d.toString()));
          t.on('error', done);
          t.on('close', done);
        }, 20);
      });
      raw.on('error', done);
      raw.on('close', done);
    });

  it('a v1 or v2 header from the balancer names the client; LOCAL and plain TLS keep the peer', async () => {
    assert.equal(await seen(Buffer.from('PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n')), '192.0.2.7');
    assert.equal(await seen(v2(1, 0x11, ipv4([198, 51, 100, 9], [127, 0, 0, 1], 40000, 443))), '198.51.100.9');
    assert.equal(await seen(v2(0, 0x00, Buffer.alloc(0))), '127.0.0.1');
    assert.equal(await seen(Buffer.alloc(0)), '127.0.0.1', 'TLS with no header');
  });

  it('a header from an address that is not a trusted balancer, or garbage, closes the connection', async () => {
    assert.equal(await seen(Buffer.from('PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n'), '127.0.0.2'), 'closed');
    assert.equal(await seen(Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n')), 'closed');
    // A direct client from elsewhere, with no header, is served as before.
    assert.equal(await seen(Buffer.alloc(0), '127.0.0.2'), '127.0.0.2');
  });
});
