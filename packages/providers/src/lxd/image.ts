// The LXD provider's image: a Debian root made here (merged-/usr links, Anodyne's init; /usr and /etc from this host), no image server.
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '@anodyne/common';
import { shellQuote } from '../local/host.js';

/** Where an instance's init, role programs, environment and a load balancer's configuration live inside it. */
export const IMAGE_DIR = '/anodyne';

/** Where this host's /etc is bound read-only in every instance: the lower layer of its /etc. */
export const HOST_ETC = `${IMAGE_DIR}/host-etc`;

/**
 * PID 1 of every instance (run by LXC as `lxc.init.cmd`): its environment from the file the provider
 * wrote, /etc as a copy-on-write overlay of this host's (as the local provider makes it: nothing of
 * /etc is unpacked per instance), private /run and /tmp, the cgroup hierarchies, loopback and eth0 up
 * with the address the provider chose (LXD's DHCP is off on our networks: addresses are the
 * provider's, kept in the instance's config), the default route via the host, then tini reaping
 * orphans with the role's program (`agent` or `lb`) as its child.
 */
const INIT = `#!/bin/sh
set -e
. ${IMAGE_DIR}/env
if ! mountpoint -q /etc; then
  mkdir -p ${IMAGE_DIR}/etc-upper ${IMAGE_DIR}/etc-work
  mount -t overlay overlay -o lowerdir=${HOST_ETC},upperdir=${IMAGE_DIR}/etc-upper,workdir=${IMAGE_DIR}/etc-work /etc
fi
mountpoint -q /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mountpoint -q /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
# The cgroup v1 hierarchies inside the container's cgroup namespace (kubelet and containerd manage theirs there).
if ! mountpoint -q /sys/fs/cgroup; then
  mount -t tmpfs -o mode=0755,nosuid,nodev,noexec cgroup /sys/fs/cgroup
  for c in $(cut -d: -f2 /proc/self/cgroup); do
    case "$c" in
      '') ;;
      name=*) mkdir -p "/sys/fs/cgroup/\${c#name=}" && mount -t cgroup -o "none,$c" cgroup "/sys/fs/cgroup/\${c#name=}" ;;
      *) mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" ;;
    esac
  done
fi
ip link set lo up
ip addr add "$ANODYNE_VM_ADDRESS" dev eth0
ip link set eth0 up
ip route add default via "$ANODYNE_VM_GATEWAY"
unset ANODYNE_VM_ADDRESS ANODYNE_VM_GATEWAY
exec /usr/bin/tini -g -- /bin/sh ${IMAGE_DIR}/"$ANODYNE_ROLE"
`;

export interface BuiltImage {
  /** The unified tarball LXD imports (metadata.yaml and rootfs/). */
  tarball: Buffer;
  /** sha256 of the tarball: the fingerprint LXD gives it. */
  fingerprint: string;
}

/**
 * The image's root: empty mount points (/usr, /etc's lower layer, the release and the agent's code
 * come in as read-only disk devices from the host, as the local provider binds them), Debian's
 * merged-/usr links, and Anodyne's init with the two role programs: a few kilobytes, so an instance
 * is made from it quickly even on a `dir` pool (a copy of /etc in the image took 0.6–1.8 s per
 * instance there). Built with fixed times and owners, so the same inputs give the same fingerprint
 * (LXD keeps one copy).
 */
export async function buildImage(agentCommand: string[], tag: string): Promise<BuiltImage> {
  const dir = mkdtempSync(join(tmpdir(), 'anodyne-lxd-image-'));
  try {
    const root = join(dir, 'rootfs');
    for (const d of [
      'usr',
      'etc',
      'proc',
      'sys',
      'dev',
      'run',
      'tmp',
      'var/lib',
      'var/log',
      'var/tmp',
      'root',
      'home',
      'opt',
      'mnt',
      HOST_ETC.slice(1),
    ]) {
      mkdirSync(join(root, d), { recursive: true });
    }
    for (const l of ['bin', 'sbin', 'lib', 'lib64']) symlinkSync(`usr/${l}`, join(root, l));
    const own = join(root, IMAGE_DIR);
    mkdirSync(own, { recursive: true });
    writeFileSync(join(own, 'init'), INIT);
    chmodSync(join(own, 'init'), 0o755);
    writeFileSync(join(own, 'agent'), `exec ${agentCommand.map(shellQuote).join(' ')}\n`);
    writeFileSync(join(own, 'lb'), `exec haproxy -W -f ${IMAGE_DIR}/haproxy.cfg\n`);
    writeFileSync(
      join(dir, 'metadata.yaml'),
      [
        'architecture: x86_64',
        'creation_date: 1',
        'properties:',
        '  os: debian',
        `  description: Anodyne node (tag ${tag})`,
        `  anodyne_tag: ${tag}`,
        '',
      ].join('\n'),
    );
    const file = join(dir, 'image.tar');
    await exec([
      'tar',
      '--sort=name',
      '--mtime=@1',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      dir,
      '-cf',
      file,
      'metadata.yaml',
      'rootfs',
    ]);
    const tarball = readFileSync(file);
    return { tarball, fingerprint: createHash('sha256').update(tarball).digest('hex') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
