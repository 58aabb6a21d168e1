// Entry point of `anodyne server` (bin/anodyne dispatches here): `main.js [--config FILE]`.
import { runServer } from './server.js';

const args = process.argv.slice(2);
const at = args.findIndex((a) => a === '--config' || a === '-c');
const inline = args.find((a) => a.startsWith('--config='));
const configFile = inline ? inline.slice('--config='.length) : at >= 0 ? args[at + 1] : undefined;
const unknown = args.filter((a, i) => !(a === inline || i === at || (at >= 0 && i === at + 1)));
if (unknown.length > 0 || (at >= 0 && !configFile)) {
  process.stderr.write(`usage: anodyne server [--config FILE]\n`);
  process.exit(2);
}
try {
  await runServer(configFile);
} catch (err) {
  process.stderr.write(`anodyne server: ${(err as Error).message}\n`);
  process.exit(1);
}
