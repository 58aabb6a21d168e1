// The providers' test door (`@anodyne/providers/testing`): the provider contract suite and the host-leftovers check.
export { providerContractSuite, type ContractHarness } from './contract.js';
export { hostLeftovers } from './leftovers.js';
