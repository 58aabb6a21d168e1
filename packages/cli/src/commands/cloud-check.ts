// anodyne cloud-check [NAME] [--auto | --resolve ID=RESOLUTION ...]: finds what the provider and agents hold that the store does not say, and fixes it.
import { createInterface } from 'node:readline/promises';
import { CommanderError, type Command } from 'commander';
import type { ApiClient, CloudCheckReport, CloudCheckRequest, CloudFinding } from '@anodyne/client';
import { EXIT } from '../exit.js';
import { followTask, printTable } from '../output.js';
import { json, out } from '../print.js';
import { authedClient } from '../session.js';

type Resolutions = NonNullable<CloudCheckRequest['resolutions']>;

/** Runs one cloud-check task to its end and returns its report (null if the task failed). */
async function runCheck(client: ApiClient, body: CloudCheckRequest, asJson: boolean): Promise<CloudCheckReport | null> {
  const task = await client.cloudCheck(body);
  if ((await followTask(client, task.id, asJson)) !== 'done') return null;
  return (await client.task(task.id)).result as CloudCheckReport;
}

function printFindings(findings: CloudFinding[]): void {
  if (findings.length === 0) return out('No problems found.');
  printTable([
    ['ID', 'Problem', 'Description', 'Resolutions'],
    ...findings.map((f) => [f.id, f.type, f.description, f.resolutions.join(', ')]),
  ]);
}

function printActions(report: CloudCheckReport): void {
  if (report.actions.length === 0) return;
  printTable([
    ['Finding', 'Resolution', 'Result', 'Detail'],
    ...report.actions.map((a) => [a.finding, a.resolution, a.result, `${a.detail}${a.task !== undefined ? ` (task ${a.task})` : ''}`]),
  ]);
}

/** In a terminal: one question per finding, its resolutions numbered, the first the default. */
async function ask(findings: CloudFinding[]): Promise<Resolutions> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  const chosen: Resolutions = {};
  try {
    for (const f of findings) {
      out(`\n${f.id}: ${f.description}`);
      f.resolutions.forEach((r, i) => out(`  ${i + 1}. ${r}${i === 0 ? ' (default)' : ''}`));
      for (;;) {
        const answer = (await rl.question(`Resolution [1-${f.resolutions.length}]: `)).trim();
        const n = answer === '' ? 1 : Number(answer);
        const r = Number.isInteger(n) ? f.resolutions[n - 1] : f.resolutions.find((x) => x === answer);
        if (r) {
          chosen[f.id] = r;
          break;
        }
        out(`answer a number from 1 to ${f.resolutions.length}, or a resolution's name`);
      }
    }
  } finally {
    rl.close();
  }
  return chosen;
}

export function register(p: Command): void {
  p.command('cloud-check [name]')
    .description(
      'compare the store with the provider and the agents (every cluster, or one): unresponsive agents, missing VMs and disks, ' +
        'detached disks, stale bundles, and VMs, disks and load balancers no cluster owns; resolve each (admins)',
    )
    .option('--auto', 'resolve every finding with its first resolution, without asking')
    .option('--resolve <id=resolution...>', 'resolve these findings so, without asking (ids as the report shows them)')
    .option('--report', 'only report, even in a terminal')
    .option('--json')
    .action(async (name: string | undefined, o: { auto?: boolean; resolve?: string[]; report?: boolean; json?: boolean }) => {
      if (o.auto && o.resolve) throw new CommanderError(EXIT.usage, 'anodyne.usage', 'give --auto or --resolve, not both');
      const resolutions: Resolutions = {};
      for (const r of o.resolve ?? []) {
        const at = r.lastIndexOf('=');
        if (at <= 0) throw new CommanderError(EXIT.usage, 'anodyne.usage', `--resolve wants ID=RESOLUTION, not ${JSON.stringify(r)}`);
        resolutions[r.slice(0, at)] = r.slice(at + 1) as Resolutions[string];
      }
      const { client } = await authedClient();
      const scope = name !== undefined ? { cluster: name } : {};
      const asJson = !!o.json;
      const first = await runCheck(client, { ...scope, ...(o.auto ? { auto: true } : {}), ...(o.resolve ? { resolutions } : {}) }, asJson);
      if (!first) {
        process.exitCode = EXIT.taskFailed;
        return;
      }
      let report = first;
      const interactive = !o.auto && !o.resolve && !o.report && !asJson && process.stdin.isTTY === true && process.stdout.isTTY === true;
      if (interactive && first.findings.length > 0) {
        printFindings(first.findings);
        const chosen = await ask(first.findings);
        const second = await runCheck(client, { ...scope, resolutions: chosen }, false);
        if (!second) {
          process.exitCode = EXIT.taskFailed;
          return;
        }
        report = second;
      } else if (!asJson) printFindings(first.findings);
      if (asJson) return json(report);
      if (report.skipped.length > 0) out(`Left out while a task changes them: ${report.skipped.join(', ')}`);
      printActions(report);
      if (report.actions.some((a) => a.result === 'error')) process.exitCode = EXIT.taskFailed;
    });
}
