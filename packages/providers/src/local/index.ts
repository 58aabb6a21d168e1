// The local provider's door: the names @anodyne/providers re-exports (the class lives in provider.ts).
export { LocalProvider, type LocalProviderOptions } from './provider.js';
export { type BindMount } from './boot.js';
export { GUEST_DISK_DIR } from './disks.js';
