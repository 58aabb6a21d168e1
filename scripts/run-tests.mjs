// Runs node:test files in the order given, ANODYNE_TEST_CONCURRENCY (2) at a time, with the spec reporter: one
// summary at the end, exit code 1 when a test failed. `node --test a b` sorts its files by path first, which
// undid scripts/test.sh's order (the two zero-downtime 3+3 suites ran side by side at the end of every run).
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { resolve } from 'node:path';

const files = process.argv.slice(2).map((f) => resolve(f));
if (files.length === 0) {
  console.error('run-tests: no test files given');
  process.exit(2);
}
const concurrency = Number(process.env.ANODYNE_TEST_CONCURRENCY ?? 2);
const stream = run({ files, concurrency: Number.isInteger(concurrency) && concurrency > 0 ? concurrency : 2 });
stream.on('test:fail', () => {
  process.exitCode = 1;
});
stream.compose(spec).pipe(process.stdout);
