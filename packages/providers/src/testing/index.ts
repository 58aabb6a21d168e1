// The providers' test door (`@anodyne/providers/testing`): the provider contract suite, the host-leftovers check, the sweep of killed runs, a private LXD daemon, a quiet host for the zero-downtime suites.
export { providerContractSuite, type ContractHarness } from './contract.js';
export { hostLeftovers } from './leftovers.js';
export { removeStaleProviders } from './stale.js';
export { lxdUnavailable, startLxd, startLxdCluster, type TestLxd, type TestLxdCluster } from './lxd.js';
export { awaitQuietHost, holdQuietHost } from './quiet.js';
