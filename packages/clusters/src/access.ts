// Who may see or change a cluster, its tasks and an owner's quota: the platform's authorisation policy for clusters.
import { NotAllowedError, NotFoundError } from '@anodyne/common';
import { SCOPES } from '@anodyne/identity';

/** The caller as the use cases see it (an identity principal, or the broker acting for itself). */
export interface Actor {
  /** The user name (password grant) or the client id (client_credentials). */
  name: string;
  /** Set for users; binds are for users only. */
  userName?: string;
  scopes: readonly string[];
}

/** Every scope that lets a caller read clusters; the API routes require one of these. */
export const READ_SCOPES = [SCOPES.admin, SCOPES.adminRead, SCOPES.manage];
/** Every scope that lets a caller change clusters (its own, for manage). */
export const WRITE_SCOPES = [SCOPES.admin, SCOPES.manage];
export const ADMIN_SCOPES = [SCOPES.admin];

export const isAdmin = (a: Actor): boolean => a.scopes.includes(SCOPES.admin);
/** Admins and admin readers see every cluster, task and quota. */
export const readsAll = (a: Actor): boolean => isAdmin(a) || a.scopes.includes(SCOPES.adminRead);

/** The policy, in one place. A cluster the caller may not see does not exist for them (404, not 403). */
export const access = {
  /** Listing: everything for readers of all, else the caller's own. */
  listFilter(a: Actor): { owner?: string } {
    return readsAll(a) ? {} : { owner: a.name };
  },

  canSee(a: Actor, owner: string): boolean {
    return owner === a.name || readsAll(a);
  },

  assertSees(a: Actor, cluster: string, owner: string): void {
    if (!this.canSee(a, owner))
      throw new NotFoundError('ANODYNE_E_CLUSTER_NOT_FOUND', `cluster ${cluster} not found`, { details: { name: cluster } });
  },

  /** Changing: admins, or the owner with the manage scope. */
  assertChanges(a: Actor, cluster: string, owner: string): void {
    this.assertSees(a, cluster, owner);
    if (isAdmin(a) || (owner === a.name && a.scopes.includes(SCOPES.manage))) return;
    throw new NotAllowedError(
      'ANODYNE_E_SCOPE_REQUIRED',
      `changing cluster ${cluster} needs ${SCOPES.admin}, or ${SCOPES.manage} as its owner`,
    );
  },

  /** Admin-only actions on a cluster (upgrade to the platform's release, the admin kubeconfig). */
  assertAdmin(a: Actor, what: string): void {
    if (!isAdmin(a))
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', `${what} needs ${SCOPES.admin}`, { details: { required: [SCOPES.admin] } });
  },

  /**
   * A task is visible to readers of all, to whoever started it, and to the owner of the cluster it
   * works on (an admin's upgrade of their cluster).
   */
  canSeeTask(a: Actor, task: { owner: string }, clusterOwner: string | undefined): boolean {
    return readsAll(a) || task.owner === a.name || clusterOwner === a.name;
  },

  /** Cancelling: admins and the task's owner. */
  assertCancels(a: Actor, task: { id: number; owner: string }): void {
    if (!isAdmin(a) && task.owner !== a.name)
      throw new NotAllowedError('ANODYNE_E_SCOPE_REQUIRED', "only an admin or the task's owner may cancel it");
  },

  /** Quotas and usages: one's own, or anyone's for readers of all. */
  assertSeesOwner(a: Actor, owner: string): void {
    if (a.name !== owner && !readsAll(a)) throw new NotFoundError('ANODYNE_E_NOT_FOUND', `no quota for ${owner} visible to you`);
  },

  /** Binds give a user's own identity in the cluster; clients use the admin kubeconfig. */
  userOf(a: Actor): string {
    if (!a.userName) throw new NotAllowedError('ANODYNE_E_NOT_ALLOWED', 'binds are for users; clients use the admin kubeconfig');
    return a.userName;
  },
};
