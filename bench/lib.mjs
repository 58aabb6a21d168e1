// Helpers shared by the benchmarks.

/** Median (lower middle for an even count), min and max. */
export const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor((s.length - 1) / 2)], min: s[0], max: s[s.length - 1] };
};
export const sec = (ms) => (ms / 1000).toFixed(1);
export const mib = (b) => (b / 2 ** 20).toFixed(0);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls until `probe` returns a value (not undefined), or fails after `ms`. */
export async function until(what, ms, probe, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${ms / 1000} s`);
    await sleep(every);
  }
}

/** Runs `work` over `items`, at most `limit` at a time. */
export async function pool(items, limit, work) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]);
    }),
  );
}
