// The availability client: an answer that waited in the socket while this process was blocked counts as an answer; silence does not.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selfSigned } from '@anodyne/common/testing';
import { endpointRequest } from './availability.js';
import type { ClusterEndpoint } from './kube.js';

/** Keeps this thread busy (no timers, no I/O) for `ms`: a long synchronous step or a collector's pause. */
function block(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // spinning
  }
}

/** The test's HTTPS server, in a thread of its own so that it answers while this one is blocked. */
const SERVER = `
const { createServer } = require('node:https');
const { parentPort, workerData } = require('node:worker_threads');
const server = createServer(workerData, (req, res) => {
  if (req.url === '/silent') return;
  setTimeout(() => res.end('{"ok":true}'), req.url === '/slow' ? 300 : 0);
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

describe('endpointRequest', () => {
  let dir: string;
  let worker: Worker;
  let endpoint: ClusterEndpoint;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-availability-'));
    const pems = await selfSigned(dir, 'availability-test', ['IP:127.0.0.1']);
    worker = new Worker(SERVER, { eval: true, workerData: pems });
    const port = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    endpoint = {
      cluster: 'test',
      server: `https://127.0.0.1:${port}`,
      admin: { ca: pems.cert, certificate: pems.cert, private_key: pems.key },
    };
  });
  after(async () => {
    await worker?.terminate();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers', async () => {
    const a = await endpointRequest(endpoint, 'GET', '/fast', undefined, 1000);
    assert.deepEqual(a, { status: 200, body: '{"ok":true}' });
  });

  it('counts an answer that arrived while this process was blocked past the timeout', async () => {
    const pending = endpointRequest(endpoint, 'GET', '/slow', undefined, 1000);
    // Connected and sent (loopback: well within 150 ms); the server answers 300 ms after, while this
    // thread is blocked, and the client's 1 s timer runs out before it can read the answer.
    await new Promise((r) => setTimeout(r, 150));
    // Blocked in the check phase (as after an I/O callback): the next turn begins with the timers.
    await new Promise((r) => setImmediate(r));
    block(2000);
    const a = await pending;
    assert.equal(a.status, 200);
  });

  it('gives up on a server that stays silent, saying how far the exchange got', async () => {
    const started = Date.now();
    await assert.rejects(
      endpointRequest(endpoint, 'GET', '/silent', undefined, 400),
      /^Error: no answer in 400 ms \(connected \d+ ms, TLS \d+ ms, sent \d+ ms\)$/,
    );
    assert.ok(Date.now() - started >= 400);
  });
});
