// The backup package's door: artifact stores (a local directory; S3-compatible object stores) and sealed artifacts.
export { LocalArtifactStore, checkKey, type ArtifactStore, type StoredObject } from './store.js';
export { seal, open, sealedKeyId, type BackupKey, type BackupKeys } from './seal.js';
export { S3ArtifactStore, type S3StoreOptions } from './s3.js';
