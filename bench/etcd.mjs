// etcd snapshot and restore PRIMITIVES (Anodyne's own backup is bench/backup.mjs): 100,000 keys
// in one standalone member of the release's etcd, `etcdctl snapshot save` from it and `etcdutl
// snapshot restore` into a new data directory, then the restored member is started and must hold
// every key. The raw floor is copying the member's database file (the same bytes, with none of the
// snapshot's consistency), measured in the same run. No Anodyne code runs here: the timings are the
// tools' own cost on this machine, what the cluster backup builds on, not a product figure.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import { freeLoopbackPort } from '@anodyne/release';
import { stats } from './lib.mjs';

const KEYS = 100_000;
const VALUE = 'x'.repeat(400); // about the size of a small Kubernetes object
const PREFIX = '/registry/bench/';
const b64 = (s) => Buffer.from(s).toString('base64');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function post(agent, port, path, body) {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () =>
          res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`${path}: ${res.statusCode} ${text.slice(0, 200)}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

async function startEtcd(bin, dir, name) {
  const [client, peer] = [await freeLoopbackPort(), await freeLoopbackPort()];
  const child = spawn(
    bin,
    [
      `--name=${name}`,
      `--data-dir=${dir}`,
      `--listen-client-urls=http://127.0.0.1:${client}`,
      `--advertise-client-urls=http://127.0.0.1:${client}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=${name}=http://127.0.0.1:${peer}`,
      '--log-level=error',
      '--quota-backend-bytes=4294967296',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr.on('data', (b) => (err = (err + b).slice(-4000)));
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`etcd exited: ${err}`);
    const ok = await post(agent, client, '/v3/maintenance/status', {}).then(
      () => true,
      () => false,
    );
    if (ok) break;
    if (i > 400) throw new Error(`etcd not healthy: ${err}`);
    await sleep(25);
  }
  const stop = () =>
    new Promise((resolve) => {
      agent.destroy();
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  return {
    client,
    peer,
    agent,
    stop,
    count: async () =>
      Number(
        (await post(agent, client, '/v3/kv/range', { key: b64(PREFIX), range_end: b64(PREFIX.slice(0, -1) + '0'), count_only: true }))
          .count ?? 0,
      ),
  };
}

export async function benchEtcd(release, { runs = 3, log = (s) => process.stderr.write(s) } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-bench-etcd-'));
  const etcdctl = release.bin('etcdctl');
  const etcdutl = release.bin('etcdutl');
  let source;
  try {
    source = await startEtcd(release.bin('etcd'), join(dir, 'source'), 'source');
    const t0 = performance.now();
    const batches = [];
    for (let i = 0; i < KEYS; i += 128) {
      batches.push(
        Array.from({ length: Math.min(128, KEYS - i) }, (_, k) => ({
          requestPut: { key: b64(`${PREFIX}${String(i + k).padStart(6, '0')}`), value: b64(VALUE) },
        })),
      );
    }
    // Eight transactions in flight (etcd's default limit is 128 operations per transaction).
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < batches.length) await post(source.agent, source.client, '/v3/kv/txn', { success: batches[next++] });
      }),
    );
    const loadMs = performance.now() - t0;
    const stored = await source.count();
    if (stored !== KEYS) throw new Error(`loaded ${stored} keys, not ${KEYS}`);
    log(`etcd: ${KEYS} keys loaded in ${(loadMs / 1000).toFixed(1)} s\n`);

    const save = [];
    const copy = [];
    const restore = [];
    const restart = [];
    let snapshotBytes = 0;
    for (let r = 0; r < runs; r++) {
      const snap = join(dir, `snap-${r}.db`);
      let t = performance.now();
      await exec([etcdctl, `--endpoints=http://127.0.0.1:${source.client}`, 'snapshot', 'save', snap], { timeoutMs: 300_000 });
      save.push(performance.now() - t);
      snapshotBytes = statSync(snap).size;
      t = performance.now();
      copyFileSync(join(dir, 'source', 'member', 'snap', 'db'), join(dir, `copy-${r}.db`));
      copy.push(performance.now() - t);
      const restored = join(dir, `restored-${r}`);
      t = performance.now();
      await exec(
        [
          etcdutl,
          'snapshot',
          'restore',
          snap,
          `--data-dir=${restored}`,
          '--name=restored',
          '--initial-cluster=restored=http://127.0.0.1:2380',
          '--initial-advertise-peer-urls=http://127.0.0.1:2380',
        ],
        { timeoutMs: 300_000 },
      );
      restore.push(performance.now() - t);
      // The restored member starts and holds every key.
      t = performance.now();
      const back = await startEtcd(release.bin('etcd'), restored, 'restored');
      restart.push(performance.now() - t);
      const n = await back.count();
      await back.stop();
      if (n !== KEYS) throw new Error(`the restored member holds ${n} keys, not ${KEYS}`);
      rmSync(restored, { recursive: true, force: true });
      rmSync(snap, { force: true });
      rmSync(join(dir, `copy-${r}.db`), { force: true });
      log(
        `etcd run ${r + 1}: save ${(save[r] / 1000).toFixed(2)} s, restore ${(restore[r] / 1000).toFixed(2)} s, restored member answering in ${(restart[r] / 1000).toFixed(2)} s with ${n} keys\n`,
      );
    }
    const row = (label, xs) => {
      const s = stats(xs);
      return `| ${label} | ${(s.median / 1000).toFixed(2)} | ${(s.min / 1000).toFixed(2)} | ${(s.max / 1000).toFixed(2)} |`;
    };
    return [
      "## etcd snapshot and restore primitives (etcdctl/etcdutl on a standalone member) — not Anodyne's backup (see above)",
      '',
      "**A primitive, not a product figure.** This section times etcd's own tools on a standalone etcd member started by the",
      'bench (no cluster, no agent, no director, no Anodyne code), as a lower bound for what the cluster backup above builds on.',
      '',
      `${KEYS.toLocaleString('en')} keys of ${VALUE.length} bytes (snapshot ${(snapshotBytes / 2 ** 20).toFixed(0)} MiB) in a single etcd ${release.manifest.etcd} member on loopback, loaded`,
      `in ${(loadMs / 1000).toFixed(1)} s through etcd's JSON gateway (128-put transactions, 8 in flight). Each restore is checked: the`,
      `restored member starts, answers its maintenance status and must hold all ${KEYS.toLocaleString('en')} keys. ${runs} run${runs === 1 ? '' : 's'};`,
      'medians are the lower middle for an even count.',
      '',
      '| step | median s | min s | max s |',
      '|---|---|---|---|',
      row("raw floor: copy the member's db file", copy),
      row('`etcdctl snapshot save` (consistent, from the running member)', save),
      row('`etcdutl snapshot restore` into a new data dir', restore),
      row('restored member started and answering its status', restart),
      '',
    ].join('\n');
  } finally {
    await source?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
