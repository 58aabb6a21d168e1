// The CLI's commands in the order `anodyne --help` lists them; each file registers one command on the root.
import { type Command } from 'commander';
import { register as login } from './login.js';
import { register as logout } from './logout.js';
import { register as getToken } from './get-token.js';
import { register as plans } from './plans.js';
import { register as clusters } from './clusters.js';
import { register as cluster } from './cluster.js';
import { register as createCluster } from './create-cluster.js';
import { register as updateCluster } from './update-cluster.js';
import { register as deleteCluster } from './delete-cluster.js';
import { register as getCredentials } from './get-credentials.js';
import { register as upgradeCluster } from './upgrade-cluster.js';
import { register as upgradeClusters } from './upgrade-clusters.js';
import { register as releases } from './releases.js';
import { register as recreateCluster } from './recreate-cluster.js';
import { register as backup } from './backup.js';
import { register as images } from './images.js';
import { register as projects } from './projects.js';
import { register as imagePolicy } from './image-policy.js';
import { register as cloudCheck } from './cloud-check.js';
import { register as certificates } from './certificates.js';
import { register as vms } from './vms.js';
import { register as rotateCertificates } from './rotate-certificates.js';
import { register as completion } from './completion.js';
import { register as getKubeconfig } from './get-kubeconfig.js';
import { register as tasks } from './tasks.js';
import { register as events } from './events.js';
import { register as task } from './task.js';
import { register as cancelTask } from './cancel-task.js';
import { register as networkProfiles } from './network-profiles.js';
import { register as quotas } from './quotas.js';
import { register as usages } from './usages.js';
import { register as createUser } from './create-user.js';
import { register as users } from './users.js';
import { register as setGroups } from './set-groups.js';
import { register as setPassword } from './set-password.js';
import { register as rotateSigningKey } from './rotate-signing-key.js';
import { register as deleteUser } from './delete-user.js';
import { register as server } from './server.js';

/** Adds one command to the root program. */
export type Register = (p: Command) => void;

/** Every command, in help order. */
export const COMMANDS: readonly Register[] = [
  login,
  logout,
  getToken,
  plans,
  clusters,
  cluster,
  createCluster,
  updateCluster,
  deleteCluster,
  getCredentials,
  upgradeCluster,
  upgradeClusters,
  releases,
  recreateCluster,
  backup,
  images,
  projects,
  imagePolicy,
  cloudCheck,
  certificates,
  vms,
  rotateCertificates,
  completion,
  getKubeconfig,
  tasks,
  task,
  events,
  cancelTask,
  networkProfiles,
  quotas,
  usages,
  createUser,
  users,
  setGroups,
  setPassword,
  rotateSigningKey,
  deleteUser,
  server,
];
