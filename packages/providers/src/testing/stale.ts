// removeStaleProviders: what a killed test run's local provider left on ranges a new run needs.
import { silentLogger, systemClock } from '@anodyne/common';
import { parseCidr } from '../internal/validate.js';
import { hostAddresses, ownerRuns, parseOwnerAlias, type BridgeOwner } from '../local/host.js';
import { LocalProvider } from '../local/provider.js';

/**
 * Before a suite makes its bridges: a local provider whose bridge holds an address in one of
 * `ranges` and whose maker (named in the bridge's alias) no longer runs is a run killed before its
 * cleanup (a stopped session, a SIGKILL): its VMs, namespaces, mounts, cgroups, bridges and rules
 * are removed by its tag and data directory. A bridge of a process that still runs, or one not
 * ours, is left (the suite's provider then refuses the range, naming it). Returns the tags removed.
 */
export async function removeStaleProviders(ranges: string[]): Promise<string[]> {
  const wanted = ranges.map((r) => parseCidr(r, 8, 32));
  const stale = new Map<string, { owner: BridgeOwner; network: string }>();
  for (const a of await hostAddresses()) {
    const owner = parseOwnerAlias(a.alias);
    // LXD's bridges are swept with their test daemons (startLxd), not here.
    if (!owner || owner.kind !== 'local' || ownerRuns(owner)) continue;
    const held = parseCidr(`${a.address}/${a.prefix}`, 8, 32);
    if (!wanted.some((w) => w.base < held.base + held.size && held.base < w.base + w.size)) continue;
    stale.set(`${owner.tag} ${owner.dataDir}`, { owner, network: held.text });
  }
  for (const { owner, network } of stale.values()) {
    await new LocalProvider({
      dataDir: owner.dataDir,
      tag: owner.tag,
      network,
      agentCommand: ['true'],
      logger: silentLogger(),
      clock: systemClock,
    }).cleanup();
  }
  return [...stale.values()].map((s) => s.owner.tag);
}
