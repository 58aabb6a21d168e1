// The providers package's door: the Provider contract types, the local and LXD providers and the in-memory fake provider.
export type {
  Provider,
  ProviderInfo,
  VmType,
  VmInfo,
  VmState,
  CreateVmRequest,
  NetworkPlacement,
  DiskInfo,
  DiskAttachment,
  LoadBalancerSpec,
  LoadBalancerInfo,
  LoadBalancerBackend,
  NetworkInfo,
  SegmentSpec,
  SegmentInfo,
  SegmentPoolInfo,
  CleanupReport,
} from './contract.js';
export { LocalProvider, GUEST_DISK_DIR, type LocalProviderOptions, type BindMount } from './local/index.js';
export { LxdProvider, type LxdProviderOptions, type LxdEndpoint } from './lxd/index.js';
export { FakeProvider, type FakeProviderOptions } from './fake/index.js';
