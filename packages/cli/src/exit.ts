// The CLI's exit codes, shared by main.ts and the commands (documented in docs/cli.md).

/** Exit codes (documented in docs/cli.md). */
export const EXIT = { ok: 0, taskFailed: 1, usage: 2, unauthenticated: 3, notFound: 4 } as const;
