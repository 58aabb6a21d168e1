// The three-step rotation of a set of CAs and signing keys: trust the new ones, sign with them, stop trusting the old.
import { normalizeName } from './types.js';
import type { CredStore } from './credstore.js';

/** Where a set stands: nothing under way, new versions trusted (step 1 done), new versions signing (step 2 done). */
export type RotationPhase = 'idle' | 'trusting' | 'signing';

/**
 * Rotates CAs (and RSA signing keys, such as a service-account key) together, as CredHub's
 * transitional flow does for one CA. Each step changes only the store; the caller rolls what uses
 * the credentials out between steps, so that at every moment whatever presents a certificate is
 * trusted by whatever checks it:
 *   1. `trustNew`: a new version of each, transitional: in every bundle, not signing;
 *   2. `signWithNew`: the new versions sign (leaves converge onto them), the old ones are still trusted;
 *   3. `dropOld`: the old CA versions leave every bundle. An RSA key keeps its old version as a
 *      verification key (tokens already issued with it stay valid until they roll); the next
 *      rotation's first step retires it.
 * Every step is idempotent and picks up where an interrupted one stopped.
 */
export class TrustRotation {
  constructor(
    private readonly creds: CredStore,
    private readonly actor: string,
  ) {}

  /** The set's phase: `trusting` if any is in step 1, else `signing` if any CA is in step 2, else `idle`. */
  async phase(names: string[]): Promise<RotationPhase> {
    const phases = await Promise.all(names.map(async (n) => ({ ...(await this.creds.rotationPhase(n)), key: await this.isKey(n) })));
    if (phases.some((p) => p.phase === 'trusting')) return 'trusting';
    if (phases.some((p) => p.phase === 'signing' && !p.key)) return 'signing';
    return 'idle';
  }

  /** Step 1: a transitional new version of each one that has none yet. */
  async trustNew(names: string[], actor = this.actor): Promise<void> {
    for (const n of names) {
      const p = await this.creds.rotationPhase(n);
      if (p.phase === 'trusting') continue;
      // A key's old version kept from the last rotation retires now.
      if (p.phase === 'signing') await this.creds.setTransitional(n, null, { actor });
      await this.creds.regenerate(n, { actor, transitional: true });
    }
  }

  /** Step 2: the new versions sign; the old ones stay trusted. */
  async signWithNew(names: string[], actor = this.actor): Promise<void> {
    for (const n of names) {
      const p = await this.creds.rotationPhase(n);
      if (p.phase === 'trusting') await this.creds.setTransitional(n, p.signing, { actor });
    }
  }

  /** Step 3: the old CA versions are no longer trusted (keys keep theirs for verification). */
  async dropOld(names: string[], actor = this.actor): Promise<void> {
    for (const n of names) {
      const p = await this.creds.rotationPhase(n);
      if (p.phase === 'signing' && !(await this.isKey(n))) await this.creds.setTransitional(n, null, { actor });
    }
  }

  private async isKey(name: string): Promise<boolean> {
    const [v] = await this.creds.versions(normalizeName(name));
    return v!.type === 'rsa';
  }
}
