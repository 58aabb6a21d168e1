// The credstore package's door: the credential store, deployment variables, the encryption key ring and credential types.
export {
  CredStore,
  DeploymentVariables,
  type Actor,
  type Credential,
  type CredentialMeta,
  type CredStoreOptions,
  type ExpiringCertificate,
  type GenerateMode,
} from './credstore.js';
export { TrustRotation, type RotationPhase } from './rotation.js';
export { KeyRing, loadKeyFile, writeKeyFile, keyRingFromEnv, keyIdFor, newRandomKey, type EncryptionKey, type Sealed } from './keyring.js';
export {
  CREDENTIAL_TYPES,
  KEY_USAGES,
  EXTENDED_KEY_USAGES,
  normalizeName,
  type CredentialType,
  type CertificateParams,
  type CertificateValue,
  type PasswordParams,
  type UserParams,
  type UserValue,
  type RsaParams,
  type RsaValue,
  type SshParams,
  type SshValue,
  type ValueByType,
  type KeyUsage,
  type ExtendedKeyUsage,
} from './types.js';
