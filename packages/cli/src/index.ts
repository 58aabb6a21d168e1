// The CLI package's door: the command tree and its runner.
export { ApiClient, ApiError, type TokenSet } from '@anodyne/client';
export { run, program, EXIT } from './main.js';
export { mergeKubeconfig, withExecCommand } from './kubeconfig.js';
