// Child process for the director's kill -9 test: starts a deploy and runs until killed.
import { makeHarness, manifest } from './harness.js';

const dir = process.env['ANODYNE_TEST_DIR'];
const tag = process.env['ANODYNE_TEST_TAG'];
const key = process.env['ANODYNE_TEST_KEY'];
if (!dir || !tag || !key) {
  process.stderr.write('fault-child: ANODYNE_TEST_DIR, ANODYNE_TEST_TAG and ANODYNE_TEST_KEY are required\n');
  process.exit(2);
}
const network = process.env['ANODYNE_TEST_NETWORK'];
const { director } = await makeHarness(dir, tag, Buffer.from(key, 'hex'), network ? { network } : {});
const task = await director.deploy(manifest(process.env['ANODYNE_TEST_GREETING'] ?? 'k1'));
process.stdout.write(`task ${task.id}\n`);
await director.wait(task.id);
process.stdout.write('finished\n');
