// The LDAP user store: find the user with a service bind, bind as the user, map LDAP groups to Anodyne scopes.
import { Client, InvalidCredentialsError } from 'ldapts';
import { UnavailableError, type Logger } from '@anodyne/common';

/** Where users may come from besides the local table. */
export interface LdapDirectory {
  /** Checks a user's password against the directory; returns their scopes, or null if refused. */
  authenticate(username: string, password: string): Promise<{ dn: string; scopes: string[]; email?: string } | null>;
}

export interface LdapOptions {
  url: string;
  /** A service account that may search users and groups. */
  bindDn: string;
  bindPassword: string;
  userBase: string;
  /** `{0}` is replaced by the escaped user name, e.g. `(uid={0})`. */
  userFilter: string;
  groupBase: string;
  /** `{0}` is the user's DN, e.g. `(member={0})`. */
  groupFilter: string;
  /** LDAP group CN → Anodyne scopes. */
  groupScopes: Record<string, string[]>;
  timeoutMs?: number;
}

/** RFC 4515 escaping for values placed in a search filter. */
export function escapeFilter(value: string): string {
  return value.replace(/[\\*()\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** An LDAP user store: search the user with a service bind, bind as the user, map groups to scopes. */
export class LdapUserStore implements LdapDirectory {
  constructor(
    private readonly o: LdapOptions,
    private readonly logger: Logger,
  ) {}

  private client(): Client {
    return new Client({ url: this.o.url, timeout: this.o.timeoutMs ?? 5000, connectTimeout: this.o.timeoutMs ?? 5000 });
  }

  async authenticate(username: string, password: string): Promise<{ dn: string; scopes: string[]; email?: string } | null> {
    if (!password) return null; // an empty password would be an anonymous bind: never a login
    const svc = this.client();
    try {
      await svc.bind(this.o.bindDn, this.o.bindPassword);
      const { searchEntries } = await svc.search(this.o.userBase, {
        scope: 'sub',
        filter: this.o.userFilter.replace('{0}', escapeFilter(username)),
        attributes: ['dn', 'mail'],
      });
      if (searchEntries.length !== 1) return null;
      const entry = searchEntries[0]!;
      const user = this.client();
      try {
        await user.bind(entry.dn, password);
      } catch (err) {
        if (err instanceof InvalidCredentialsError) return null;
        throw err;
      } finally {
        await user.unbind().catch(() => undefined);
      }
      const groups = await svc.search(this.o.groupBase, {
        scope: 'sub',
        filter: this.o.groupFilter.replace('{0}', escapeFilter(entry.dn)),
        attributes: ['cn'],
      });
      const scopes = new Set<string>();
      for (const g of groups.searchEntries) {
        const cns = Array.isArray(g['cn']) ? g['cn'] : [g['cn']];
        for (const cn of cns) for (const s of this.o.groupScopes[String(cn)] ?? []) scopes.add(s);
      }
      const mail = entry['mail'];
      return { dn: entry.dn, scopes: [...scopes].sort(), ...(typeof mail === 'string' ? { email: mail } : {}) };
    } catch (err) {
      if (err instanceof InvalidCredentialsError) {
        this.logger.error('the LDAP service account was refused');
        throw new UnavailableError('ANODYNE_E_LDAP_UNAVAILABLE', 'the LDAP service account was refused by the directory');
      }
      throw new UnavailableError('ANODYNE_E_LDAP_UNAVAILABLE', `LDAP: ${(err as Error).message}`, { cause: err });
    } finally {
      await svc.unbind().catch(() => undefined);
    }
  }
}
