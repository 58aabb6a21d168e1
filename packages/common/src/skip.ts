// skipUnless: a test suite may be skipped only outside CI; under CI=true a skip is a failure.
/**
 * When a test suite may be skipped: only outside CI. `make test` on a developer's machine may
 * skip suites that need root or a missing program (node:test reports them as skipped); under
 * CI=true a suite that would be skipped fails instead, so a green CI run means every suite ran.
 */
export function skipUnless(ok: boolean, reason: string, env: NodeJS.ProcessEnv = process.env): string | false {
  if (ok) return false;
  if (env['CI'] === 'true') throw new Error(`this suite cannot run here (${reason}), and under CI=true a skipped suite is a failure`);
  return reason;
}
