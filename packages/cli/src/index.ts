export { ApiClient, ApiError, type TokenSet } from '@anodyne/client';
export { run, program, EXIT } from './main.js';
export { mergeKubeconfig, withExecCommand } from './kubeconfig.js';
