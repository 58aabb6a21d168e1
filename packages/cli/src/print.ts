// Small printing helpers the commands share: a line, pretty JSON, and the cluster list's rows.
import { type Cluster } from '@anodyne/client';

/** Writes s to stdout, ending it with a newline if it has none. */
export const out = (s: string): void => {
  process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
};

/** Writes v as indented JSON. */
export const json = (v: unknown): void => out(JSON.stringify(v, null, 2));

/** The rows of the cluster list (header first), for printTable. */
export function clusterRows(cs: Cluster[]): string[][] {
  return [
    ['Name', 'Plan', 'Owner', 'Kubernetes', 'Workers', 'Host', 'Last Action', 'State'],
    ...cs.map((c) => [
      c.name,
      c.plan_name,
      c.owner,
      c.kubernetes_version,
      String(c.parameters.kubernetes_worker_instances),
      c.kubernetes_master_ips[0] ?? '',
      c.last_action,
      c.last_action_state,
    ]),
  ];
}
