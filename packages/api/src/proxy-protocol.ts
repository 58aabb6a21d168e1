// The PROXY protocol (v1 and v2) in front of the API's TLS: a TCP load balancer says which client a connection is for.
import { isIP } from 'node:net';
import type { Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import type { Logger } from '@anodyne/common';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The longest v1 line (107 bytes with its CRLF) and the longest v2 header we read (addresses of a Unix socket). */
const V1_MAX = 107;
const V2_MAX = 16 + 216;
const TLS_HANDSHAKE = 0x16;

/** What a PROXY header said: the client's address (undefined: a LOCAL or UNKNOWN connection, the balancer's own, e.g. a health check). */
export interface ProxyHeader {
  consumed: number;
  source?: { address: string; port: number };
}

/**
 * Parses a PROXY header at the start of `buf`: the header, 'more' when `buf` is a proper
 * beginning of one, or an Error when it is not one.
 */
export function parseProxyHeader(buf: Buffer): ProxyHeader | 'more' | Error {
  if (buf.length === 0) return 'more';
  if (buf[0] === 0x50) {
    // v1: "PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n"
    const prefix = Buffer.from('PROXY ');
    if (!prefix.subarray(0, Math.min(buf.length, 6)).equals(buf.subarray(0, Math.min(buf.length, 6))))
      return new Error('not a PROXY header');
    const end = buf.indexOf('\r\n');
    if (end < 0) return buf.length >= V1_MAX ? new Error('PROXY v1 line too long') : 'more';
    if (end + 2 > V1_MAX) return new Error('PROXY v1 line too long');
    const parts = buf.subarray(0, end).toString('latin1').split(' ');
    if (parts[1] === 'UNKNOWN') return { consumed: end + 2 };
    if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6')) return new Error('malformed PROXY v1 line');
    const [, family, src, , sport] = parts as [string, string, string, string, string, string];
    const port = Number(sport);
    if (isIP(src) !== (family === 'TCP4' ? 4 : 6) || !Number.isInteger(port) || port < 0 || port > 65535)
      return new Error('malformed PROXY v1 address');
    return { consumed: end + 2, source: { address: src, port } };
  }
  if (buf[0] === 0x0d) {
    const n = Math.min(buf.length, V2_SIGNATURE.length);
    if (!buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) return new Error('not a PROXY header');
    if (buf.length < 16) return 'more';
    const verCmd = buf[12]!;
    if (verCmd >> 4 !== 2) return new Error('PROXY v2: unknown version');
    const length = buf.readUInt16BE(14);
    if (16 + length > V2_MAX) return new Error('PROXY v2 header too long');
    if (buf.length < 16 + length) return 'more';
    const consumed = 16 + length;
    const cmd = verCmd & 0x0f;
    if (cmd === 0) return { consumed }; // LOCAL: the balancer's own connection
    if (cmd !== 1) return new Error('PROXY v2: unknown command');
    const family = buf[13]! >> 4;
    const a = buf.subarray(16, consumed);
    if (family === 1 && a.length >= 12) return { consumed, source: { address: [...a.subarray(0, 4)].join('.'), port: a.readUInt16BE(8) } };
    if (family === 2 && a.length >= 36) {
      const groups = Array.from({ length: 8 }, (_, i) => a.readUInt16BE(i * 2).toString(16));
      return { consumed, source: { address: groups.join(':'), port: a.readUInt16BE(32) } };
    }
    return { consumed }; // UNSPEC or a Unix socket: no IP address to use
  }
  return new Error('not a PROXY header');
}

/** The client's address a balancer named in its PROXY header, kept on the raw connection. */
const CLIENT = Symbol('anodyne.proxyClient');
type Marked = Socket & { [CLIENT]?: string };

/**
 * Accepts a PROXY header (v1 or v2) before TLS on connections from the given balancer addresses:
 * the API then sees the client's address (the token rate limit counts per client, not per
 * balancer). A connection that starts with TLS is served as it is (direct clients, health checks
 * without a header); a PROXY header from any other address, or anything else, closes the
 * connection. Must be called before the server listens.
 */
export function acceptProxyProtocol(server: TlsServer, o: { from: string[]; logger: Logger; timeoutMs?: number }): void {
  const trusted = new Set(o.from.map(normal));
  const tlsListeners = server.listeners('connection') as ((s: Socket) => void)[];
  server.removeAllListeners('connection');
  const handOn = (socket: Socket) => {
    for (const l of tlsListeners) l.call(server, socket);
  };
  server.on('connection', (socket: Marked) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), o.timeoutMs ?? 5000);
    const refuse = (why: string) => {
      clearTimeout(timer);
      o.logger.warn({ peer: socket.remoteAddress, why }, 'connection refused before TLS');
      socket.destroy();
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf[0] === TLS_HANDSHAKE) return pass(buf);
      if (!trusted.has(normal(socket.remoteAddress ?? '')))
        return refuse('a PROXY header (or not TLS) from an address not in server.proxyProtocolFrom');
      const h = parseProxyHeader(buf);
      if (h === 'more') return;
      if (h instanceof Error) return refuse(h.message);
      if (h.source) socket[CLIENT] = h.source.address;
      pass(buf.subarray(h.consumed));
    };
    const pass = (rest: Buffer) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      if (rest.length > 0) socket.unshift(rest);
      handOn(socket);
    };
    socket.on('data', onData);
  });
  // The TLS connection made over a raw one answers with the client's address its balancer named.
  server.on('secureConnection', (tls: TLSSocket) => {
    const raw = (tls as TLSSocket & { _parent?: Marked })._parent;
    const client = raw?.[CLIENT];
    if (client) Object.defineProperty(tls, 'remoteAddress', { value: client, configurable: true });
  });
}

/** An IPv4 address as IPv4 also when the socket reports it IPv4-mapped (`::ffff:1.2.3.4`). */
function normal(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}
