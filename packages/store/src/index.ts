// The store package's door: the Store and openStore, the table types, the SQL dialect type, the audit log and shared rate limits.
export { Store, openStore, restoreSnapshot, mapStoreError, storeQuery, isoNow, type StoreOptions, type DatabaseSnapshot } from './store.js';
export type {
  Database,
  PlatformMetaTable,
  AuditEventsTable,
  CredentialsTable,
  CredentialVersionsTable,
  DeploymentsTable,
  InstancesTable,
  TasksTable,
  TaskEventsTable,
  LocksTable,
  IdentityUsersTable,
  IdentityMembershipsTable,
  IdentityClientsTable,
  ClustersTable,
  QuotasTable,
  NetworkProfilesTable,
  ReleasesTable,
  BackupsTable,
  BackupSchedulesTable,
} from './schema.js';
export type { Dialect } from './migrations/index.js';
export { AuditLog, type AuditEvent, type AuditQuery } from './audit.js';
export { RateLimits } from './ratelimits.js';
export type { Signals, SignalHandler } from './signals.js';
