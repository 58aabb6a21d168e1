// Cluster backup and restore end to end through the platform, on a cluster whose etcd holds 100,000 extra keys,
// beside the floor of `etcdctl snapshot save` + `etcdutl snapshot restore` of the same member in the same run.
// Returns Markdown for docs/benchmarks.md (bench/run.mjs writes it).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import { benchPlatform, sec, stats } from './lib.mjs';

const KEYS = 100_000;
const BATCH = 100; // etcd allows 128 operations in one transaction by default
const VALUE = Buffer.from('x'.repeat(400)).toString('base64'); // about the size of a small Kubernetes object
const b64 = (s) => Buffer.from(s).toString('base64');

/** A POST to the member's JSON gateway with the client certificate. */
function gateway(a, path, body) {
  const u = new URL(path, a.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        ca: a.ca,
        cert: a.cert,
        key: a.key,
        headers: { 'content-type': 'application/json' },
      },
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

const count = async (a) =>
  Number((await gateway(a, '/v3/kv/range', { key: b64('/bench/'), range_end: b64('/bench0'), count_only: true })).count ?? 0);

export async function benchBackup(release, { runs = 1, log = (s) => process.stderr.write(s) } = {}) {
  const { tp, call, waitTask } = await benchPlatform('bb', '10.198.16.0/24', 19_095, 900_000);
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-bench-backup-'));
  try {
    const p = tp.platform;
    const made = (await call('POST', '/v1/clusters', { name: 'bk', plan_name: 'small', parameters: { kubernetes_worker_instances: 0 } }))
      .body;
    if ((await waitTask(made.last_task_id)).state !== 'done') throw new Error('the cluster was not created');
    const master = (await p.director.instances('cluster-bk')).find((r) => r.group_name === 'master');
    const cred = (name) => p.creds.get(`/deployments/cluster-bk/${name}`, { actor: 'bench' });
    const [ca, client] = [await cred('etcd-ca'), await cred('apiserver-etcd-client')];
    const a = { url: `https://${master.ip}:2379`, ca: ca.value.certificate, cert: client.value.certificate, key: client.value.private_key };
    const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
    writeFileSync(files.ca, a.ca);
    writeFileSync(files.cert, a.cert);
    writeFileSync(files.key, a.key, { mode: 0o600 });

    const filled = performance.now();
    for (let i = 0; i < KEYS; i += BATCH) {
      const success = [];
      for (let k = i; k < Math.min(i + BATCH, KEYS); k++)
        success.push({ request_put: { key: b64(`/bench/${String(k).padStart(6, '0')}`), value: VALUE } });
      await gateway(a, '/v3/kv/txn', { success });
    }
    log(`backup bench: ${KEYS} keys written in ${sec(performance.now() - filled)} s\n`);

    const rows = [];
    for (let i = 0; i < runs; i++) {
      // The floor: etcd's own tools on the same member and data.
      const f0 = performance.now();
      const snap = join(dir, `floor-${i}.db`);
      await exec([
        release.bin('etcdctl'),
        `--endpoints=${a.url}`,
        `--cacert=${files.ca}`,
        `--cert=${files.cert}`,
        `--key=${files.key}`,
        'snapshot',
        'save',
        snap,
      ]);
      const f1 = performance.now();
      await exec([release.bin('etcdutl'), 'snapshot', 'restore', snap, `--data-dir=${join(dir, `floor-${i}.etcd`)}`]);
      const f2 = performance.now();

      const b0 = performance.now();
      const created = (await call('POST', '/v1/backups', { cluster: 'bk' })).body;
      if ((await waitTask(created.task.id)).state !== 'done') throw new Error('the backup failed');
      const b1 = performance.now();
      await gateway(a, '/v3/kv/deleterange', { key: b64('/bench/'), range_end: b64('/bench0') });
      const r0 = performance.now();
      const restored = (await call('POST', `/v1/backups/${created.backup.id}/restore`, {})).body;
      if ((await waitTask(restored.id)).state !== 'done') throw new Error('the restore failed');
      const r1 = performance.now();
      const back = await count(a);
      if (back !== KEYS) throw new Error(`the restore gave ${back} keys, not ${KEYS}`);
      const size = (await call('GET', `/v1/backups/${created.backup.id}`)).body.size_bytes;
      rows.push({ backup: b1 - b0, restore: r1 - r0, save: f1 - f0, unpack: f2 - f1, size });
      log(
        `backup bench run ${i + 1}: backup ${sec(b1 - b0)} s, restore ${sec(r1 - r0)} s; floor save ${sec(f1 - f0)} s, restore ${sec(f2 - f1)} s\n`,
      );
      await call('DELETE', `/v1/backups/${created.backup.id}`);
    }
    const m = (k) => stats(rows.map((r) => r[k])).median;
    const total = m('backup') + m('restore');
    const floor = m('save') + m('unpack');
    return [
      '## Cluster backup and restore',
      '',
      `A 1-master cluster whose etcd holds ${KEYS.toLocaleString('en-US')} extra keys of 400 bytes (written through etcd's gateway in`,
      `transactions of ${BATCH}), backed up and restored through the API into the platform's backup store (\`POST /v1/backups\`,`,
      "`POST /v1/backups/{id}/restore`): the backup task takes the etcd job's snapshot, downloads it from the agent, seals and",
      'stores it; the restore task reads and checks it, places it, stops the master, restores the member, starts it, waits',
      'for it and for the API, and restarts the kubelets (none here). Every key is counted back after the restore. The floor,',
      'in the same run: `etcdctl snapshot save` from the same member over TLS plus `etcdutl snapshot restore` of that file into',
      `a new data directory, on the host. Goal: backup + restore ≤ 10 s and ≤ 3× the floor. ${runs} run${runs === 1 ? '' : 's'}; medians.`,
      '',
      '| measure | median s | floor s | × floor |',
      '|---|---|---|---|',
      `| backup (task) | ${sec(m('backup'))} | ${sec(m('save'))} (snapshot save) | ${(m('backup') / m('save')).toFixed(1)} |`,
      `| restore (task) | ${sec(m('restore'))} | ${sec(m('unpack'))} (snapshot restore) | ${(m('restore') / m('unpack')).toFixed(1)} |`,
      `| backup + restore | ${sec(total)} | ${sec(floor)} | ${(total / floor).toFixed(1)} |`,
      '',
      `Sealed artifacts: ${(stats(rows.map((r) => r.size)).median / 2 ** 20).toFixed(1)} MiB per backup.`,
      '',
    ].join('\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await tp.stop();
  }
}
