// The provider contract suite run against the in-memory fake provider.
import { ManualClock } from '@anodyne/common';
import { FakeProvider } from './index.js';
import { providerContractSuite } from '../testing/index.js';

providerContractSuite('fake (in-memory, director unit tests only)', () => {
  const provider = new FakeProvider({
    clock: new ManualClock(new Date('2026-01-01T00:00:00Z')),
    network: '10.250.0.0/24',
    segments: { pool: '10.251.0.0/26', prefix: 28 },
  });
  return Promise.resolve({
    provider,
    crashVm: (id: string) => Promise.resolve(provider.crash(id)),
    teardown: async () => {
      await provider.cleanup();
    },
  });
});
