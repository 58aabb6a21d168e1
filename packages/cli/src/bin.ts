#!/usr/bin/env node
// The anodyne executable: runs the CLI with the process's arguments.
import { run } from './main.js';

process.exitCode = await run(process.argv.slice(2));
