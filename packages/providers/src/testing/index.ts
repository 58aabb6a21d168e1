export { providerContractSuite, type ContractHarness } from './contract.js';
export { hostLeftovers } from './leftovers.js';
