// The providers package's door: the Provider contract types, the local provider and the in-memory fake provider.
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
export { FakeProvider, type FakeProviderOptions } from './fake/index.js';
