// Tests of the release's job definitions without a cluster: the scripts their processes run exist and are valid
// shell, and the masters' pod-network script (pod ranges and routes from one watch of the Nodes) does what it says,
// against a stand-in kubectl and ip that record what they are asked.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KUBERNETES_JOBS } from './jobs.js';

/** A job file with its `{{ }}` expressions replaced by a word (enough for a syntax check). */
const plain = (text: string) => text.replace(/\{\{[^}]*\}\}/g, 'x');

describe('the release jobs', () => {
  it('every script a process runs is one of its job files, and every script is valid sh', () => {
    for (const job of KUBERNETES_JOBS) {
      const files = job.files ?? {};
      for (const p of job.processes) {
        for (const arg of p.args ?? []) {
          if (arg.startsWith('bin/')) assert.ok(arg in files, `${job.name}/${p.name} runs ${arg}, which the job does not have`);
        }
      }
      for (const [path, text] of Object.entries(files)) {
        if (!path.endsWith('.sh')) continue;
        const r = spawnSync('sh', ['-n'], { input: plain(text), encoding: 'utf8' });
        assert.equal(r.status, 0, `${job.name}/${path}: ${r.stderr}`);
      }
    }
  });
});

describe("the masters' pod-network script", () => {
  let dir: string;
  let child: ChildProcess | undefined;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'anodyne-pod-network-'));
  });
  after(() => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives each new Node its range (its index, else the first free), routes every range, and unroutes Nodes gone', async () => {
    const addons = KUBERNETES_JOBS.find((j) => j.name === 'cluster-addons')!;
    const script = addons
      .files!['bin/pod-network.sh']!.replaceAll('{{ p.release_dir }}/bin/kubectl --kubeconfig=kubeconfig', `${dir}/kubectl`)
      .replaceAll('{{ p.pod_cidr }}', '10.200.0.0/16')
      .replaceAll('/run/anodyne-pod-network', `${dir}/ready`);
    assert.doesNotMatch(script, /\{\{/);
    writeFileSync(join(dir, 'pod-network.sh'), script);
    // The Nodes at the start: worker-0 without a range, worker-3 holding the range worker-1's index would give.
    writeFileSync(join(dir, 'list'), 'ADDED|worker-0||10.0.0.10\nADDED|worker-3|10.200.1.0/24|10.0.0.13\n');
    // The watch: the list again (worker-0 with the range it was given), worker-1 registers, worker-3 goes, worker-0's
    // address changes; then the watch ends (and the script lists again).
    writeFileSync(
      join(dir, 'events'),
      [
        'ADDED|worker-0|10.200.0.0/24|10.0.0.10',
        'ADDED|worker-3|10.200.1.0/24|10.0.0.13',
        'ADDED|worker-1||10.0.0.11',
        'DELETED|worker-3|10.200.1.0/24|10.0.0.13',
        'MODIFIED|worker-0|10.200.0.0/24|10.0.0.20',
        '',
      ].join('\n'),
    );
    // A route left by a run before, of a Node gone since.
    writeFileSync(join(dir, 'routes.prev'), '10.200.9.0/24\n');
    writeFileSync(
      join(dir, 'kubectl'),
      [
        '#!/bin/sh',
        'case "$*" in',
        '  *--raw=/version*) exit 0 ;;',
        `  *--watch*) [ -e ${dir}/watched ] && exec sleep 60; touch ${dir}/watched; cat ${dir}/events ;;`,
        `  "get nodes -o jsonpath="*) cat ${dir}/list ;;`,
        `  patch*) echo "kubectl $*" >> ${dir}/calls ;;`,
        'esac',
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'ip'), `#!/bin/sh\necho "ip $*" >> ${dir}/calls\n`);
    chmodSync(join(dir, 'kubectl'), 0o755);
    chmodSync(join(dir, 'ip'), 0o755);
    child = spawn('sh', ['pod-network.sh'], {
      cwd: dir,
      env: { PATH: `${dir}:${process.env['PATH'] ?? '/usr/bin:/bin'}` },
      stdio: 'ignore',
    });
    const deadline = Date.now() + 10_000;
    const calls = () => (existsSync(join(dir, 'calls')) ? readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n') : []);
    while (!calls().some((c) => c.includes('via 10.0.0.20')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    assert.deepEqual(calls(), [
      // the first list: worker-0 gets the /24 of its index, worker-3 is routed, the stale route goes
      `kubectl patch node worker-0 --type=merge -p {"spec":{"podCIDR":"10.200.0.0/24","podCIDRs":["10.200.0.0/24"]}}`,
      'ip route replace 10.200.1.0/24 via 10.0.0.13',
      'ip route del 10.200.9.0/24',
      // the watch: worker-0 routed with its range; worker-1's index is taken (worker-3): the first free /24
      'ip route replace 10.200.0.0/24 via 10.0.0.10',
      `kubectl patch node worker-1 --type=merge -p {"spec":{"podCIDR":"10.200.2.0/24","podCIDRs":["10.200.2.0/24"]}}`,
      'ip route del 10.200.1.0/24',
      'ip route replace 10.200.0.0/24 via 10.0.0.20',
    ]);
    assert.ok(existsSync(join(dir, 'ready')), 'ready once the first list is done');
    assert.deepEqual(readFileSync(join(dir, 'routes.prev'), 'utf8').trim().split('\n'), ['10.200.0.0/24']);
  });
});
