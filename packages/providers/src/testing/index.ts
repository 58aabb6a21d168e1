// The providers' test door (`@anodyne/providers/testing`): the provider contract suite, the host-leftovers check and the sweep of killed runs.
export { providerContractSuite, type ContractHarness } from './contract.js';
export { hostLeftovers } from './leftovers.js';
export { removeStaleProviders } from './stale.js';
