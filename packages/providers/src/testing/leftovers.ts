// hostLeftovers: what the host still holds of a local provider or VM (netns, links, mounts, cgroups, processes, iptables).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { netnsList, linksWithPrefix, mountsUnder, rulesWithComment, vethsOfTag } from '../local/host.js';
import { segmentBridgesOfTag } from '../local/network.js';

/**
 * What the host still holds of a local provider (by its tag), or of one of its VMs: checked on
 * the host itself (netns, links, mounts, cgroups, processes, iptables), not in the provider's
 * records. Tests of every package that runs the local provider end with this being empty.
 */
export async function hostLeftovers(tag: string, dataDir: string, vmId?: string): Promise<string[]> {
  const left: string[] = [];
  const needle = vmId ?? `anodyne-${tag}-`;
  for (const ns of await netnsList()) if (ns.includes(needle)) left.push(`netns ${ns}`);
  for (const l of vmId ? await linksWithPrefix(`av${tag}${vmId.slice(3, 9)}`) : await vethsOfTag(tag)) left.push(`link ${l}`);
  for (const m of mountsUnder(vmId ? join(dataDir, 'vms', vmId) : dataDir)) left.push(`mount ${m}`);
  for (const ctrl of readdirSync('/sys/fs/cgroup')) {
    const cg = join('/sys/fs/cgroup', ctrl, 'anodyne', tag, ...(vmId ? [vmId] : []));
    if (existsSync(cg)) left.push(`cgroup ${cg}`);
  }
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      if (cg.includes(`/anodyne/${tag}/${vmId ?? ''}`)) left.push(`process ${pid}`);
    } catch {
      // exited meanwhile
    }
  }
  if (!vmId) {
    if ((await linksWithPrefix(`anbr-${tag}`)).includes(`anbr-${tag}`)) left.push('bridge');
    for (const b of await segmentBridgesOfTag(tag)) left.push(`segment bridge ${b}`);
    for (const t of ['filter', 'nat']) for (const r of await rulesWithComment(t, `anodyne:${tag}`)) left.push(`iptables ${r}`);
  }
  return left;
}
