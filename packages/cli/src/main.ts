// The CLI's root: builds the command tree from commands/ and runs it, mapping errors to exit codes.
import { Command, CommanderError } from 'commander';
import { ApiError } from '@anodyne/client';
import { COMMANDS } from './commands/index.js';
import { EXIT } from './exit.js';

export { EXIT } from './exit.js';

/** Builds the command tree. Commands parse flags and call the API client; nothing else. */
export function program(): Command {
  const p = new Command('anodyne').description('Kubernetes clusters as a service').exitOverride().showHelpAfterError(false);
  p.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const register of COMMANDS) register(p);
  return p;
}

/** Runs the CLI; returns the exit code. Errors print one line: the API's code and message. */
export async function run(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return EXIT.ok;
      if (err.code === 'usage') process.stderr.write(`Error: ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof ApiError) {
      process.stderr.write(`Error: ${err.code}: ${err.message}\n`);
      if (err.status === 401) return EXIT.unauthenticated;
      if (err.status === 404) return EXIT.notFound;
      if (err.status === 400) return EXIT.usage;
      return EXIT.taskFailed;
    }
    process.stderr.write(`Error: ${(err as Error).message}\n`);
    return EXIT.taskFailed;
  }
}
