export {
  BUILTIN_PLANS, DEFAULT_NETWORK, clusterManifest, clusterVariables, adminKubeconfig, deploymentName, kubernetesServiceIp,
  type Plan, type ClusterRequest, type NetworkProfile,
} from './cluster.js';
export { kubernetesRelease, etcdJob, apiserverJob, controllerManagerJob, schedulerJob, containerdJob, networkingJob, kubeletJob, kubeProxyJob, addonsJob } from './jobs.js';
export { addonsYaml, clusterDnsIp, ADMIN_GROUP } from './addons.js';
