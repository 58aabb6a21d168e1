export { providerContractSuite, type ContractHarness } from './contract.js';
