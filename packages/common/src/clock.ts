// Time as a dependency: the system clock, and a ManualClock that tests move forward by hand.
/** Time, passed in so tests can control it. */
export interface Clock {
  now(): Date;
  /** Milliseconds since the epoch. */
  nowMs(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => new Date(),
  nowMs: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        return;
      }
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/**
 * A clock that only moves when told to. `sleep` resolves once `advance` has moved time
 * past its deadline, so tests of watch times and backoff run instantly.
 */
export class ManualClock implements Clock {
  private ms: number;
  private sleepers: { until: number; resolve: () => void }[] = [];

  constructor(start: Date | number = 0) {
    this.ms = typeof start === 'number' ? start : start.getTime();
  }

  now(): Date {
    return new Date(this.ms);
  }

  nowMs(): number {
    return this.ms;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.sleepers.push({ until: this.ms + ms, resolve });
      this.sleepers.sort((a, b) => a.until - b.until);
    });
  }

  /** Moves time forward, waking sleepers in deadline order and letting their continuations run. */
  async advance(ms: number): Promise<void> {
    const target = this.ms + ms;
    for (;;) {
      const next = this.sleepers[0];
      if (!next || next.until > target) break;
      this.sleepers.shift();
      this.ms = Math.max(this.ms, next.until);
      next.resolve();
      await flushMicrotasks();
    }
    this.ms = target;
    await flushMicrotasks();
  }

  /** Number of pending sleeps, so tests can wait until the code under test is asleep. */
  get pending(): number {
    return this.sleepers.length;
  }
}

/** Lets pending promise chains and I/O callbacks run before time moves on. */
async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 10; j++) await Promise.resolve();
    await new Promise<void>((r) => setImmediate(r));
  }
}
