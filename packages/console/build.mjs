// Builds the console: type-checks its sources, bundles them with esbuild into dist/, copies the page and styles.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist');
const started = Date.now();
try {
  execFileSync(process.execPath, [join(here, '../../node_modules/typescript/bin/tsc'), '-p', join(here, 'tsconfig.json')], {
    stdio: 'inherit',
  });
} catch {
  console.error('console: type errors (above)');
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, 'src/main.tsx')],
  outfile: join(out, 'app.js'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'eof',
  logLevel: 'warning',
});
for (const f of ['index.html', 'app.css']) copyFileSync(join(here, 'src', f), join(out, f));
const kb = (f) => (statSync(join(out, f)).size / 1024).toFixed(1);
console.log(`console: built in ${Date.now() - started} ms (app.js ${kb('app.js')} KiB, app.css ${kb('app.css')} KiB)`);
