// Kubeconfig files on the user's machine: merging a cluster's entries in and pointing the exec plugin at this CLI.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

interface Named {
  name: string;
  [k: string]: unknown;
}
interface KubeconfigDoc {
  apiVersion?: string;
  kind?: string;
  clusters?: Named[];
  users?: Named[];
  contexts?: Named[];
  'current-context'?: string;
  [k: string]: unknown;
}

/** The launcher of this CLI (bin/anodyne at the repository root). */
export function launcherPath(): string {
  return process.env['ANODYNE_BIN'] ?? resolve(dirname(fileURLToPath(import.meta.url)), '../../../bin/anodyne');
}

/** Points the kubeconfig's exec plugin at this CLI's launcher, so kubectl finds it without PATH. */
export function withExecCommand(kubeconfig: string): string {
  const doc = parse(kubeconfig) as KubeconfigDoc;
  for (const u of doc.users ?? []) {
    const exec = (u['user'] as { exec?: { command?: string } } | undefined)?.exec;
    if (exec?.command === 'anodyne') exec.command = launcherPath();
  }
  return stringify(doc);
}

/**
 * Merges a kubeconfig's clusters, users and contexts into the user's (first KUBECONFIG entry or
 * ~/.kube/config), replacing entries of the same name, and selects its context. Returns the file.
 */
export function mergeKubeconfig(
  incoming: string,
  file = (process.env['KUBECONFIG'] ?? '').split(':').find(Boolean) ?? resolve(homedir(), '.kube', 'config'),
): string {
  const add = parse(incoming) as KubeconfigDoc;
  const cur: KubeconfigDoc = existsSync(file) ? ((parse(readFileSync(file, 'utf8')) as KubeconfigDoc | null) ?? {}) : {};
  const merged: KubeconfigDoc = { apiVersion: 'v1', kind: 'Config', ...cur };
  for (const key of ['clusters', 'users', 'contexts'] as const) {
    const names = new Set((add[key] ?? []).map((e) => e.name));
    merged[key] = [...(cur[key] ?? []).filter((e) => !names.has(e.name)), ...(add[key] ?? [])];
  }
  if (add['current-context']) merged['current-context'] = add['current-context'];
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, stringify(merged), { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}
