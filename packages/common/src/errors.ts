// Anodyne's errors: the catalogue of stable ANODYNE_E_ codes with their kinds, the AnodyneError base class and domain errors.
/**
 * Anodyne's errors: one catalogue of stable codes, a base class and domain errors.
 *
 * Domain errors know nothing of HTTP. Each code carries a `kind`; the API maps kinds to
 * status codes in exactly one place. Codes are part of the public contract: clients,
 * scripts and the CLI match on them, so a code is never renamed or reused.
 */

/** The broad classes of failure. The API maps each to one HTTP status. */
export type ErrorKind =
  | 'invalid_input'
  | 'not_found'
  | 'conflict'
  | 'not_allowed'
  | 'unauthenticated'
  | 'unavailable'
  | 'precondition_failed'
  | 'quota_exceeded'
  | 'timeout'
  | 'cancelled'
  | 'internal';

export interface ErrorDefinition {
  readonly code: string;
  readonly kind: ErrorKind;
  /** Default message; call sites usually give a more specific one. */
  readonly message: string;
  /** Whether the same call may succeed if repeated later unchanged. */
  readonly retryable: boolean;
}

function def(code: string, kind: ErrorKind, message: string, retryable = false): ErrorDefinition {
  return { code, kind, message, retryable };
}

/**
 * The catalogue. Every key equals its code (guarded by errors.test.ts), codes are
 * unique and match /^ANODYNE_E_[A-Z0-9_]+$/.
 */
export const ErrorCodes = {
  // generic
  ANODYNE_E_INTERNAL: def('ANODYNE_E_INTERNAL', 'internal', 'Internal error'),
  ANODYNE_E_INVALID_INPUT: def('ANODYNE_E_INVALID_INPUT', 'invalid_input', 'Invalid input'),
  ANODYNE_E_NOT_FOUND: def('ANODYNE_E_NOT_FOUND', 'not_found', 'Not found'),
  ANODYNE_E_CONFLICT: def('ANODYNE_E_CONFLICT', 'conflict', 'Conflict'),
  ANODYNE_E_NOT_ALLOWED: def('ANODYNE_E_NOT_ALLOWED', 'not_allowed', 'Not allowed'),
  ANODYNE_E_UNAUTHENTICATED: def('ANODYNE_E_UNAUTHENTICATED', 'unauthenticated', 'Not authenticated'),
  ANODYNE_E_UNAVAILABLE: def('ANODYNE_E_UNAVAILABLE', 'unavailable', 'Temporarily unavailable', true),
  ANODYNE_E_TIMEOUT: def('ANODYNE_E_TIMEOUT', 'timeout', 'Timed out', true),
  ANODYNE_E_CANCELLED: def('ANODYNE_E_CANCELLED', 'cancelled', 'Cancelled'),
  ANODYNE_E_METHOD_NOT_ALLOWED: def('ANODYNE_E_METHOD_NOT_ALLOWED', 'invalid_input', 'The path does not take this method'),
  ANODYNE_E_URI_TOO_LONG: def('ANODYNE_E_URI_TOO_LONG', 'invalid_input', 'A path segment is too long'),
  ANODYNE_E_UNSUPPORTED_MEDIA_TYPE: def(
    'ANODYNE_E_UNSUPPORTED_MEDIA_TYPE',
    'invalid_input',
    "The request body's content type is not accepted",
  ),

  // configuration
  ANODYNE_E_CONFIG_INVALID: def('ANODYNE_E_CONFIG_INVALID', 'invalid_input', 'Configuration is invalid'),
  ANODYNE_E_CONFIG_UNREADABLE: def('ANODYNE_E_CONFIG_UNREADABLE', 'invalid_input', 'Configuration file cannot be read'),

  // store
  ANODYNE_E_STORE_UNAVAILABLE: def('ANODYNE_E_STORE_UNAVAILABLE', 'unavailable', 'The database cannot be reached', true),
  ANODYNE_E_STORE_CORRUPT: def('ANODYNE_E_STORE_CORRUPT', 'internal', 'The database file is corrupt or not a database'),
  ANODYNE_E_STORE_SCHEMA_TOO_NEW: def(
    'ANODYNE_E_STORE_SCHEMA_TOO_NEW',
    'precondition_failed',
    'The database schema is newer than this version of Anodyne',
  ),
  ANODYNE_E_STORE_MIGRATION_FAILED: def('ANODYNE_E_STORE_MIGRATION_FAILED', 'internal', 'A database migration failed'),
  ANODYNE_E_STORE_CONFIG_INVALID: def('ANODYNE_E_STORE_CONFIG_INVALID', 'invalid_input', 'The store configuration is invalid'),

  // exec helper
  ANODYNE_E_COMMAND_FAILED: def('ANODYNE_E_COMMAND_FAILED', 'internal', 'An external command failed'),
  ANODYNE_E_COMMAND_NOT_FOUND: def('ANODYNE_E_COMMAND_NOT_FOUND', 'precondition_failed', 'An external command is not installed'),

  // credential store
  ANODYNE_E_CREDENTIAL_NOT_FOUND: def('ANODYNE_E_CREDENTIAL_NOT_FOUND', 'not_found', 'Credential not found'),
  ANODYNE_E_CREDENTIAL_EXISTS: def('ANODYNE_E_CREDENTIAL_EXISTS', 'conflict', 'Credential already exists'),
  ANODYNE_E_CREDENTIAL_TYPE_UNKNOWN: def('ANODYNE_E_CREDENTIAL_TYPE_UNKNOWN', 'invalid_input', 'Unknown credential type'),
  ANODYNE_E_CREDENTIAL_TYPE_MISMATCH: def('ANODYNE_E_CREDENTIAL_TYPE_MISMATCH', 'conflict', 'Credential exists with another type'),
  ANODYNE_E_CREDENTIAL_PARAMS_INVALID: def('ANODYNE_E_CREDENTIAL_PARAMS_INVALID', 'invalid_input', 'Invalid credential parameters'),
  ANODYNE_E_CREDENTIAL_CA_NOT_FOUND: def('ANODYNE_E_CREDENTIAL_CA_NOT_FOUND', 'invalid_input', 'Signing CA not found'),
  ANODYNE_E_CREDENTIAL_NAME_INVALID: def('ANODYNE_E_CREDENTIAL_NAME_INVALID', 'invalid_input', 'Invalid credential name'),
  ANODYNE_E_ENCRYPTION_KEY_MISSING: def(
    'ANODYNE_E_ENCRYPTION_KEY_MISSING',
    'precondition_failed',
    'The encryption key for a record is not available',
  ),
  ANODYNE_E_ENCRYPTION_KEY_INVALID: def('ANODYNE_E_ENCRYPTION_KEY_INVALID', 'invalid_input', 'The encryption key is invalid'),
  ANODYNE_E_DECRYPTION_FAILED: def('ANODYNE_E_DECRYPTION_FAILED', 'internal', 'A stored record could not be decrypted'),
  ANODYNE_E_CA_ROTATION_INVALID: def(
    'ANODYNE_E_CA_ROTATION_INVALID',
    'conflict',
    'The CA is not in a state that allows this rotation step',
  ),

  // release
  ANODYNE_E_RELEASE_NOT_FOUND: def('ANODYNE_E_RELEASE_NOT_FOUND', 'precondition_failed', 'The Kubernetes release has not been built'),
  ANODYNE_E_RELEASE_CORRUPT: def('ANODYNE_E_RELEASE_CORRUPT', 'precondition_failed', 'A release file does not match its manifest'),

  // director
  ANODYNE_E_MANIFEST_INVALID: def('ANODYNE_E_MANIFEST_INVALID', 'invalid_input', 'The deployment manifest is invalid'),
  ANODYNE_E_MANIFEST_VARIABLE_MISSING: def(
    'ANODYNE_E_MANIFEST_VARIABLE_MISSING',
    'invalid_input',
    'The manifest refers to a variable that is not defined',
  ),
  ANODYNE_E_JOB_UNKNOWN: def('ANODYNE_E_JOB_UNKNOWN', 'invalid_input', 'The manifest names a job that no release provides'),
  ANODYNE_E_TEMPLATE_INVALID: def('ANODYNE_E_TEMPLATE_INVALID', 'invalid_input', 'A job template refers to something that does not exist'),
  ANODYNE_E_DEPLOYMENT_NOT_FOUND: def('ANODYNE_E_DEPLOYMENT_NOT_FOUND', 'not_found', 'Deployment not found'),
  ANODYNE_E_DEPLOYMENT_LOCKED: def('ANODYNE_E_DEPLOYMENT_LOCKED', 'conflict', 'Another task is changing this deployment', true),
  ANODYNE_E_TASK_NOT_FOUND: def('ANODYNE_E_TASK_NOT_FOUND', 'not_found', 'Task not found'),
  ANODYNE_E_NOT_LEADER: def('ANODYNE_E_NOT_LEADER', 'conflict', 'This platform replica no longer leads, so it started nothing', true),
  ANODYNE_E_REPLICA_LOST: def(
    'ANODYNE_E_REPLICA_LOST',
    'unavailable',
    'The platform replica that ran the task stopped; the next change converges the deployment',
    true,
  ),
  ANODYNE_E_TASK_CANCELLED: def('ANODYNE_E_TASK_CANCELLED', 'cancelled', 'The task was cancelled'),
  ANODYNE_E_CANARY_FAILED: def('ANODYNE_E_CANARY_FAILED', 'internal', 'A canary instance did not become healthy'),
  ANODYNE_E_INSTANCE_UNHEALTHY: def('ANODYNE_E_INSTANCE_UNHEALTHY', 'internal', 'An instance did not become healthy within its watch time'),

  // providers
  ANODYNE_E_PROVIDER_NOT_ROOT: def('ANODYNE_E_PROVIDER_NOT_ROOT', 'precondition_failed', 'The local provider needs root privileges'),
  ANODYNE_E_PROVIDER_VM_TYPE_UNKNOWN: def('ANODYNE_E_PROVIDER_VM_TYPE_UNKNOWN', 'invalid_input', 'Unknown VM type'),
  ANODYNE_E_PROVIDER_NETWORK_IN_USE: def(
    'ANODYNE_E_PROVIDER_NETWORK_IN_USE',
    'precondition_failed',
    'Another host interface holds an address in the network range',
  ),
  ANODYNE_E_PROVIDER_IP_OUT_OF_RANGE: def('ANODYNE_E_PROVIDER_IP_OUT_OF_RANGE', 'invalid_input', 'IP address outside the network range'),
  ANODYNE_E_PROVIDER_IP_TAKEN: def('ANODYNE_E_PROVIDER_IP_TAKEN', 'conflict', 'IP address already in use'),
  ANODYNE_E_PROVIDER_IP_EXHAUSTED: def('ANODYNE_E_PROVIDER_IP_EXHAUSTED', 'unavailable', 'No free IP address in the network range'),
  ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED: def('ANODYNE_E_PROVIDER_SEGMENTS_EXHAUSTED', 'unavailable', 'No free network segment in the pool'),
  ANODYNE_E_PROVIDER_SEGMENT_IN_USE: def(
    'ANODYNE_E_PROVIDER_SEGMENT_IN_USE',
    'conflict',
    'VMs or load balancers are still on the network segment',
  ),
  ANODYNE_E_PROVIDER_VM_NOT_FOUND: def('ANODYNE_E_PROVIDER_VM_NOT_FOUND', 'not_found', 'VM not found'),
  ANODYNE_E_PROVIDER_DISK_NOT_FOUND: def('ANODYNE_E_PROVIDER_DISK_NOT_FOUND', 'not_found', 'Disk not found'),
  ANODYNE_E_PROVIDER_DISK_ATTACHED: def('ANODYNE_E_PROVIDER_DISK_ATTACHED', 'conflict', 'Disk is attached to another VM'),
  ANODYNE_E_PROVIDER_LB_NOT_FOUND: def('ANODYNE_E_PROVIDER_LB_NOT_FOUND', 'not_found', 'Load balancer not found'),
  ANODYNE_E_PROVIDER_INPUT_INVALID: def('ANODYNE_E_PROVIDER_INPUT_INVALID', 'invalid_input', 'Invalid provider request'),
  ANODYNE_E_PROVIDER_UNREACHABLE: def(
    'ANODYNE_E_PROVIDER_UNREACHABLE',
    'unavailable',
    'The infrastructure (its API endpoint) cannot be reached',
    true,
  ),
  ANODYNE_E_PROVIDER_MISCONFIGURED: def(
    'ANODYNE_E_PROVIDER_MISCONFIGURED',
    'precondition_failed',
    'The infrastructure is not set up as the configuration says (trust, project, storage pool)',
  ),
  ANODYNE_E_PROVIDER_REFUSED: def('ANODYNE_E_PROVIDER_REFUSED', 'internal', 'The infrastructure refused a request'),
  ANODYNE_E_PROVIDER_VM_CREATE_FAILED: def('ANODYNE_E_PROVIDER_VM_CREATE_FAILED', 'internal', 'Creating the VM failed', true),

  // identity
  ANODYNE_E_BAD_CREDENTIALS: def('ANODYNE_E_BAD_CREDENTIALS', 'unauthenticated', 'Bad user name, password or client credentials'),
  ANODYNE_E_ACCOUNT_LOCKED: def(
    'ANODYNE_E_ACCOUNT_LOCKED',
    'unauthenticated',
    'Too many failed logins; the account is locked for a while',
    true,
  ),
  ANODYNE_E_TOKEN_MISSING: def('ANODYNE_E_TOKEN_MISSING', 'unauthenticated', 'A bearer token is required'),
  ANODYNE_E_TOKEN_INVALID: def('ANODYNE_E_TOKEN_INVALID', 'unauthenticated', 'The token is not valid'),
  ANODYNE_E_TOKEN_EXPIRED: def('ANODYNE_E_TOKEN_EXPIRED', 'unauthenticated', 'The token has expired'),
  ANODYNE_E_GRANT_UNSUPPORTED: def('ANODYNE_E_GRANT_UNSUPPORTED', 'invalid_input', 'Unsupported grant type'),
  ANODYNE_E_GRANT_INVALID: def('ANODYNE_E_GRANT_INVALID', 'invalid_input', 'Authorization code unknown, used, expired or not matching'),
  ANODYNE_E_AUTHORIZE_INVALID: def('ANODYNE_E_AUTHORIZE_INVALID', 'invalid_input', 'Authorization request refused'),
  ANODYNE_E_SCOPE_REQUIRED: def('ANODYNE_E_SCOPE_REQUIRED', 'not_allowed', 'The token lacks the scope this call needs'),
  ANODYNE_E_USER_EXISTS: def('ANODYNE_E_USER_EXISTS', 'conflict', 'A user with this name exists'),
  ANODYNE_E_USER_NOT_FOUND: def('ANODYNE_E_USER_NOT_FOUND', 'not_found', 'User not found'),
  ANODYNE_E_CLIENT_EXISTS: def('ANODYNE_E_CLIENT_EXISTS', 'conflict', 'An OAuth client with this id exists'),
  ANODYNE_E_LDAP_UNAVAILABLE: def('ANODYNE_E_LDAP_UNAVAILABLE', 'unavailable', 'The LDAP server cannot be reached', true),
  ANODYNE_E_RATE_LIMITED: def('ANODYNE_E_RATE_LIMITED', 'quota_exceeded', 'Too many requests; slow down', true),

  // clusters and the API
  ANODYNE_E_CLUSTER_NOT_FOUND: def('ANODYNE_E_CLUSTER_NOT_FOUND', 'not_found', 'Cluster not found'),
  ANODYNE_E_CLUSTER_EXISTS: def('ANODYNE_E_CLUSTER_EXISTS', 'conflict', 'A cluster with this name exists'),
  ANODYNE_E_CLUSTER_BUSY: def('ANODYNE_E_CLUSTER_BUSY', 'conflict', 'The cluster has a task in progress', true),
  ANODYNE_E_DRAIN_TIMEOUT: def(
    'ANODYNE_E_DRAIN_TIMEOUT',
    'conflict',
    'A node could not be drained in time (a PodDisruptionBudget held pods back)',
  ),
  ANODYNE_E_ETCD_UNHEALTHY: def(
    'ANODYNE_E_ETCD_UNHEALTHY',
    'conflict',
    'An etcd member is not healthy, so a master was not stopped (or did not come back healthy)',
    true,
  ),
  ANODYNE_E_DISRUPTION_NOT_ALLOWED: def('ANODYNE_E_DISRUPTION_NOT_ALLOWED', 'conflict', 'A PodDisruptionBudget does not allow the change'),
  ANODYNE_E_KUBERNETES_VERSION_UNKNOWN: def(
    'ANODYNE_E_KUBERNETES_VERSION_UNKNOWN',
    'invalid_input',
    'No release of the requested Kubernetes version is offered',
  ),
  ANODYNE_E_VERSION_DOWNGRADE: def('ANODYNE_E_VERSION_DOWNGRADE', 'invalid_input', 'A Kubernetes minor version is never downgraded'),
  ANODYNE_E_VERSION_SKEW: def('ANODYNE_E_VERSION_SKEW', 'invalid_input', 'Kubernetes upgrades one minor version at a time'),
  ANODYNE_E_RELEASE_NOT_REGISTERED: def('ANODYNE_E_RELEASE_NOT_REGISTERED', 'not_found', 'No such release is registered'),
  ANODYNE_E_RELEASE_IN_USE: def('ANODYNE_E_RELEASE_IN_USE', 'conflict', 'The release is in use'),

  // backups
  ANODYNE_E_BACKUP_NOT_FOUND: def('ANODYNE_E_BACKUP_NOT_FOUND', 'not_found', 'No such backup or artifact'),
  ANODYNE_E_BACKUP_CORRUPT: def(
    'ANODYNE_E_BACKUP_CORRUPT',
    'invalid_input',
    'The backup artifact is damaged (checksum, size or authentication)',
  ),
  ANODYNE_E_BACKUP_WRONG_KEY: def(
    'ANODYNE_E_BACKUP_WRONG_KEY',
    'invalid_input',
    'The backup artifact was sealed with a key this platform does not have',
  ),
  ANODYNE_E_BACKUP_RECORD_GAP: def(
    'ANODYNE_E_BACKUP_RECORD_GAP',
    'conflict',
    'The record of changes after the backup does not reach the point asked for',
  ),
  ANODYNE_E_RESTORE_FAILED: def(
    'ANODYNE_E_RESTORE_FAILED',
    'conflict',
    'The restore failed; the cluster keeps the data it had (or says where it stopped)',
  ),
  ANODYNE_E_BACKUP_STORE_UNAVAILABLE: def('ANODYNE_E_BACKUP_STORE_UNAVAILABLE', 'unavailable', 'The backup store does not answer', true),
  ANODYNE_E_FLEET_UPGRADE_FAILED: def(
    'ANODYNE_E_FLEET_UPGRADE_FAILED',
    'internal',
    'A cluster of a fleet upgrade failed; later clusters were not started',
  ),
  ANODYNE_E_BINDING_CONFLICT: def('ANODYNE_E_BINDING_CONFLICT', 'conflict', 'A binding with this id exists with other attributes'),
  ANODYNE_E_NETWORK_PROFILE_NOT_FOUND: def('ANODYNE_E_NETWORK_PROFILE_NOT_FOUND', 'invalid_input', 'Unknown network profile'),
  ANODYNE_E_PLAN_NOT_FOUND: def('ANODYNE_E_PLAN_NOT_FOUND', 'invalid_input', 'Unknown plan'),
  ANODYNE_E_QUOTA_EXCEEDED: def('ANODYNE_E_QUOTA_EXCEEDED', 'quota_exceeded', "The request exceeds the owner's quota"),
  // Image registry
  ANODYNE_E_REGISTRY_PROJECT_NOT_FOUND: def('ANODYNE_E_REGISTRY_PROJECT_NOT_FOUND', 'not_found', 'No such registry project'),
  ANODYNE_E_REGISTRY_PROJECT_EXISTS: def('ANODYNE_E_REGISTRY_PROJECT_EXISTS', 'conflict', 'A registry project with this name exists'),
  ANODYNE_E_REGISTRY_PROJECT_NOT_EMPTY: def('ANODYNE_E_REGISTRY_PROJECT_NOT_EMPTY', 'conflict', 'The registry project still holds images'),
  ANODYNE_E_REGISTRY_QUOTA_EXCEEDED: def(
    'ANODYNE_E_REGISTRY_QUOTA_EXCEEDED',
    'quota_exceeded',
    "The push would take the project's stored bytes over its quota",
  ),
  ANODYNE_E_REGISTRY_UNAVAILABLE: def('ANODYNE_E_REGISTRY_UNAVAILABLE', 'unavailable', 'The image registry does not answer', true),
  ANODYNE_E_REGISTRY_DENIED: def('ANODYNE_E_REGISTRY_DENIED', 'not_allowed', 'The registry refused the operation'),
  ANODYNE_E_IMAGE_NOT_FOUND: def('ANODYNE_E_IMAGE_NOT_FOUND', 'not_found', 'No such image in the registry'),
  ANODYNE_E_IMAGE_ARCHIVE_INVALID: def(
    'ANODYNE_E_IMAGE_ARCHIVE_INVALID',
    'invalid_input',
    'The file is not an OCI image layout or docker-save archive',
  ),
  ANODYNE_E_IMAGE_REFERENCE_INVALID: def('ANODYNE_E_IMAGE_REFERENCE_INVALID', 'invalid_input', 'The image reference is not valid'),
  ANODYNE_E_ROUTE_NOT_FOUND: def('ANODYNE_E_ROUTE_NOT_FOUND', 'not_found', 'No such route'),
  ANODYNE_E_BODY_TOO_LARGE: def('ANODYNE_E_BODY_TOO_LARGE', 'invalid_input', 'The request body is too large'),
} as const satisfies Record<string, ErrorDefinition>;

export type ErrorCode = keyof typeof ErrorCodes;

export interface ErrorOptions {
  /** Structured, non-secret facts about the failure (bad path, offending value, limits). */
  details?: Record<string, unknown>;
  cause?: unknown;
  /** Overrides the catalogue's default. */
  retryable?: boolean;
}

/** Base of every error Anodyne raises on purpose. */
export class AnodyneError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message?: string, options: ErrorOptions = {}) {
    const definition: ErrorDefinition = ErrorCodes[code];
    super(message ?? definition.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.kind = definition.kind;
    this.retryable = options.retryable ?? definition.retryable;
    this.details = options.details ?? {};
  }

  /** The shape the API and CLI print: `{code, message, details}`. */
  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

function kindGuard(expected: ErrorKind[], code: ErrorCode): void {
  const kind = ErrorCodes[code].kind;
  if (!expected.includes(kind)) {
    throw new TypeError(`error code ${code} has kind ${kind}, expected ${expected.join(' or ')}`);
  }
}

/** The caller sent something that can never succeed as sent. */
export class InputError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_INVALID_INPUT', message?: string, options?: ErrorOptions) {
    kindGuard(['invalid_input'], code);
    super(code, message, options);
  }
}

export class NotFoundError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_NOT_FOUND', message?: string, options?: ErrorOptions) {
    kindGuard(['not_found'], code);
    super(code, message, options);
  }
}

export class ConflictError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_CONFLICT', message?: string, options?: ErrorOptions) {
    kindGuard(['conflict'], code);
    super(code, message, options);
  }
}

/** Authenticated, but not permitted. */
export class NotAllowedError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_NOT_ALLOWED', message?: string, options?: ErrorOptions) {
    kindGuard(['not_allowed'], code);
    super(code, message, options);
  }
}

/** A limit was reached: a quota, or a rate limit (retry later). */
export class QuotaError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_QUOTA_EXCEEDED', message?: string, options?: ErrorOptions) {
    kindGuard(['quota_exceeded'], code);
    super(code, message, options);
  }
}

export class UnauthenticatedError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_UNAUTHENTICATED', message?: string, options?: ErrorOptions) {
    kindGuard(['unauthenticated'], code);
    super(code, message, options);
  }
}

/** A dependency is down or overloaded; retrying later may succeed. */
export class UnavailableError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_UNAVAILABLE', message?: string, options?: ErrorOptions) {
    kindGuard(['unavailable', 'timeout'], code);
    super(code, message, options);
  }
}

export class PreconditionError extends AnodyneError {
  constructor(code: ErrorCode, message?: string, options?: ErrorOptions) {
    kindGuard(['precondition_failed'], code);
    super(code, message, options);
  }
}

export class InternalError extends AnodyneError {
  constructor(code: ErrorCode = 'ANODYNE_E_INTERNAL', message?: string, options?: ErrorOptions) {
    kindGuard(['internal'], code);
    super(code, message, options);
  }
}

export function isAnodyneError(err: unknown): err is AnodyneError {
  return err instanceof AnodyneError;
}

/** Whether `err` is an Anodyne error with the given code. */
export function hasCode(err: unknown, code: ErrorCode): err is AnodyneError {
  return err instanceof AnodyneError && err.code === code;
}

/** Wraps anything thrown into an AnodyneError, keeping Anodyne errors as they are. */
export function toAnodyneError(err: unknown): AnodyneError {
  if (err instanceof AnodyneError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError('ANODYNE_E_INTERNAL', message, { cause: err });
}
