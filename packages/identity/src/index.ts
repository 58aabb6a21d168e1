// The identity package's door: the Identity issuer with its scopes and clients, and the LDAP user store.
export {
  Identity,
  SCOPES,
  ALL_SCOPES,
  CLI_CLIENT,
  AUDIENCE,
  type IdentityOptions,
  type Principal,
  type TokenRequest,
  type TokenResponse,
  type UserView,
} from './identity.js';
export { LdapUserStore, escapeFilter, type LdapDirectory, type LdapOptions } from './ldap.js';
