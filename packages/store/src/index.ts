export { Store, openStore, mapStoreError, isoNow, type StoreOptions } from './store.js';
export type { Database, PlatformMetaTable, AuditEventsTable, CredentialsTable, CredentialVersionsTable } from './schema.js';
export type { Dialect } from './migrations/index.js';
export { AuditLog, type AuditEvent, type AuditQuery } from './audit.js';
