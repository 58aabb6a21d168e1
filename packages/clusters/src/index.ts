export {
  BUILTIN_PLANS, DEFAULT_KUBELET, DEFAULT_NETWORK, validatePlans, clusterManifest, clusterVariables, authenticationConfig, adminKubeconfig, deploymentName, kubernetesServiceIp,
  type Plan, type KubeletSettings, type ClusterRequest, type OidcTrust, type NetworkProfile,
} from './cluster.js';
export { kubernetesRelease, etcdJob, apiserverJob, controllerManagerJob, schedulerJob, containerdJob, flannelJob, kubeletJob, kubeProxyJob, addonsJob, KUBELET_CGROUP_SETUP } from './jobs.js';
export { addonsYaml, clusterDnsIp, ADMIN_GROUP } from './addons.js';
export { ClusterService, userKubeconfig, tokenKubeconfig, kubeRequest, type ClusterServiceOptions, type ClusterView, type CreateClusterInput, type ClusterCredentials, type ActionState } from './service.js';
