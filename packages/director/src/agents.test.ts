// Tests of the director's agent client over mutual TLS: a request that went on a kept-alive connection the agent
// had just closed is asked once more; any other failure is not.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { AnodyneError } from '@anodyne/common';
import { caWithLeaves } from '@anodyne/common/testing';
import { TlsAgentClient } from './agents.js';

async function makeTls(dir: string) {
  const { leaves } = await caWithLeaves(dir, [
    { name: 'agent-1', sans: ['DNS:agent-1'] },
    { name: 'director', sans: ['DNS:director'] },
  ]);
  return { agent: leaves['agent-1']!, director: leaves['director']! };
}

describe('agent client', () => {
  let dir: string;
  let server: Server;
  let client: TlsAgentClient;
  const row = { ip: '127.0.0.1', agent_id: 'agent-1' };
  /** What the fake agent does with the n-th request on a connection (1-based): answer, or drop the connection. */
  let onRequest: (nth: number) => 'answer' | 'drop' = () => 'answer';
  let connections = 0;
  let requests = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-agent-client-'));
    const tls = await makeTls(dir);
    server = createServer({ ...tls.agent, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      requests++;
      const socket = req.socket as typeof req.socket & { served?: number };
      socket.served = (socket.served ?? 0) + 1;
      if (onRequest(socket.served) === 'drop') {
        socket.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ n: requests }));
    });
    server.on('secureConnection', () => connections++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    client = new TlsAgentClient({ agentTls: () => Promise.resolve(tls.agent), directorTls: () => Promise.resolve(tls.director) }, port);
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('asks again once when a kept-alive connection was closed under the request', async () => {
    onRequest = (nth) => (nth === 2 ? 'drop' : 'answer');
    [connections, requests] = [0, 0];
    assert.deepEqual(await client.call(row, 'GET', '/state'), { n: 1 });
    // The second request goes on the same connection, which the agent drops: asked again on a new one.
    assert.deepEqual(await client.call(row, 'POST', '/start', {}), { n: 3 });
    assert.equal(requests, 3);
    assert.equal(connections, 2);
  });

  it('does not ask again when a new connection fails', async () => {
    server.closeAllConnections();
    onRequest = () => 'drop';
    [connections, requests] = [0, 0];
    await assert.rejects(
      client.call(row, 'POST', '/start', {}),
      (e: unknown) => e instanceof AnodyneError && e.code === 'ANODYNE_E_UNAVAILABLE',
    );
    assert.ok(requests <= 2, `${requests} requests`);
    onRequest = () => 'answer';
  });
});
