// Upstream Kubernetes' NetworkPolicy e2e suite (test/e2e/network/netpol), as release/tools.sh builds it: the
// compiled suite, the ginkgo runner that runs it in parallel processes, and the agnhost image its pods run.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { exec } from '@anodyne/common';

/** The suite's directory: $ANODYNE_NETPOL_E2E, or the newest one release/tools.sh built into $ANODYNE_CACHE; undefined when none is built. */
export function findNetpolE2e(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const complete = (d: string) => ['e2e.test', 'ginkgo', 'agnhost.tar', 'repo-list.yaml'].every((f) => existsSync(join(d, f)));
  const given = env['ANODYNE_NETPOL_E2E'];
  if (given) {
    if (!complete(given)) throw new Error(`ANODYNE_NETPOL_E2E=${given} is not a built suite (run release/tools.sh netpol-e2e)`);
    return given;
  }
  const tools = join(env['ANODYNE_CACHE'] ?? '/var/cache/anodyne', 'tools');
  return (existsSync(tools) ? readdirSync(tools) : [])
    .filter((d) => d.startsWith('netpol-e2e-'))
    .map((d) => join(tools, d))
    .filter(complete)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}

/** One spec of the suite as it ended. */
export interface SpecResult {
  name: string;
  state: string;
  seconds: number;
  failure?: string;
}

interface GinkgoSpecReport {
  ContainerHierarchyTexts: string[] | null;
  LeafNodeText: string;
  LeafNodeType: string;
  State: string;
  RunTime: number;
  Failure?: { Message?: string };
}

/**
 * Runs the specs whose names contain one of `focus` (literal texts) and not `skip` against the cluster of `kubeconfig`, in `procs` ginkgo
 * processes, and answers each spec's result (from ginkgo's JSON report; never throws on failed specs). The agnhost
 * image must be on the cluster's nodes already (the suite's pods never pull: the repo list names anodyne.local).
 */
export async function runNetpolE2e(
  dir: string,
  options: { kubeconfig: string; workDir: string; focus: string[]; skip: string; procs: number; timeoutMinutes: number },
): Promise<{ specs: SpecResult[]; seconds: number; output: string }> {
  const report = join(options.workDir, 'netpol-e2e.json');
  const started = performance.now();
  const r = await exec(
    [
      join(dir, 'ginkgo'),
      'run',
      `--procs=${options.procs}`,
      `--focus=${options.focus.map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')}`,
      `--skip=${options.skip}`,
      `--timeout=${options.timeoutMinutes}m`,
      '--no-color',
      '--succinct',
      `--output-dir=${options.workDir}`,
      '--json-report=netpol-e2e.json',
      join(dir, 'e2e.test'),
      '--',
      `--kubeconfig=${options.kubeconfig}`,
      '--provider=skeleton',
      `--report-dir=${options.workDir}`,
    ],
    {
      env: { ...process.env, KUBE_TEST_REPO_LIST: join(dir, 'repo-list.yaml'), HOME: options.workDir },
      cwd: options.workDir,
      okCodes: [0, 1],
      // ginkgo stops the specs itself at its --timeout; this only guards against a runner that hangs past it.
      timeoutMs: (options.timeoutMinutes + 5) * 60_000,
    },
  );
  const seconds = Math.round((performance.now() - started) / 1000);
  const output = `${r.stdout}\n${r.stderr}`;
  if (!existsSync(report)) throw new Error(`the netpol e2e suite wrote no report (exit ${r.code}):\n${output.slice(-4000)}`);
  const suites = JSON.parse(readFileSync(report, 'utf8')) as { SpecReports: GinkgoSpecReport[] | null }[];
  const specs = suites
    .flatMap((s) => s.SpecReports ?? [])
    .filter((s) => s.LeafNodeType === 'It')
    .map((s) => ({
      name: [...(s.ContainerHierarchyTexts ?? []), s.LeafNodeText].join(' '),
      state: s.State,
      seconds: Math.round(s.RunTime / 1e9),
      ...(s.Failure?.Message ? { failure: s.Failure.Message } : {}),
    }));
  return { specs, seconds, output };
}
