export { ApiClient, ApiError, type TokenSet } from './client.js';
export { run, program, EXIT } from './main.js';
export { mergeKubeconfig, withExecCommand } from './kubeconfig.js';
