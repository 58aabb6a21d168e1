// The clusters package's door: plans and manifests, the cluster jobs and add-ons, and the clusters use cases.
export {
  BUILTIN_PLANS,
  DEFAULT_KUBELET,
  DEFAULT_NETWORK,
  validatePlans,
  clusterManifest,
  clusterVariables,
  authenticationConfig,
  deploymentName,
  kubernetesServiceIp,
  type Plan,
  type KubeletSettings,
  type ClusterRequest,
  registryUserOf,
  type OidcTrust,
  type RegistryTrust,
  type NetworkProfile,
} from './cluster.js';
export {
  kubernetesRelease,
  KUBERNETES_JOBS,
  releaseCatalog,
  etcdJob,
  apiserverJob,
  controllerManagerJob,
  schedulerJob,
  containerdJob,
  flannelJob,
  kubeletJob,
  kubeProxyJob,
  addonsJob,
  KUBELET_CGROUP_SETUP,
} from './jobs.js';
export { addonsYaml, clusterDnsIp, ADMIN_GROUP } from './addons.js';
export { access, isAdmin, readsAll, READ_SCOPES, WRITE_SCOPES, ADMIN_SCOPES, type Actor } from './access.js';
export {
  renderKubeconfig,
  adminKubeconfig,
  userKubeconfig,
  tokenKubeconfig,
  type KubeconfigCredential,
  type KubeconfigInput,
} from './kubeconfig.js';
export { kubeClient, kubeCall, type ClusterEndpoint, type KubeClient } from './kube.js';
export { ClusterRecords, type ClusterView, type ActionState } from './records.js';
export { NetworkProfiles, Quotas, type NetworkProfileView, type Quota, type Usage } from './profiles.js';
export { ClusterLifecycle, type CreateClusterInput, type Redeploy } from './lifecycle.js';
export { ClusterBinds, bindingName } from './binds.js';
export { NodeHooks, nodeName, type NodeHooksOptions, type EtcdMember } from './nodes.js';
export { ClusterFleet, type FleetUpgradeRequest, type FleetOutcome } from './fleet.js';
export { ClusterService, type ClusterServiceOptions, type ClusterCredentials, type ReleaseView } from './service.js';
export {
  ReleaseRegistry,
  RELEASE_AGENT,
  RELEASES_GUEST_DIR,
  normaliseVersion,
  type BuiltRelease,
  type ClusterRelease,
} from './releases.js';
export { apiProbe, countingLoop, endpointRequest, expectStatus, refreshed, type EndpointAnswer } from './availability.js';
export {
  ClusterBackups,
  checkArtifacts,
  type BackupView,
  type BackupManifest,
  type PlatformBackupManifest,
  type PlatformBackupSource,
  type BackupFile,
} from './backups.js';
export {
  ClusterCaRotation,
  ROTATED_CREDENTIALS,
  ADDON_DEPLOYMENTS,
  pemSet,
  type CaRotationSteps,
  type CaRotationPhase,
} from './rotation.js';
export { ClusterRepair, type CloudCheckRequest, type ClusterFinding, type ClusterCloudCheckReport } from './repair.js';
export { ChangeRecorder, type RecorderOrder, type RecorderRoute } from './changelog.js';
