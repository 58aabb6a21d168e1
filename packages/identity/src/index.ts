// The identity package's door: the Identity issuer with its scopes and clients, and the LDAP user store.
export {
  Identity,
  SCOPES,
  ALL_SCOPES,
  CLI_CLIENT,
  CONSOLE_CLIENT,
  CONSOLE_PATH,
  GRANT_TYPES,
  AUDIENCE,
  type Authorization,
  type AuthorizeRequest,
  type IdentityOptions,
  type Principal,
  type TokenRequest,
  type TokenResponse,
  type UserView,
} from './identity.js';
export { loginPage, authorizeErrorPage, LOGIN_PAGE_HEADERS } from './login-page.js';
export { LdapUserStore, escapeFilter, type LdapDirectory, type LdapOptions } from './ldap.js';
