// The LXD provider's door: the names @anodyne/providers re-exports (the class lives in provider.ts).
export { LxdProvider, type LxdProviderOptions } from './provider.js';
export { type LxdEndpoint } from './client.js';
