// The platform package's door: startPlatform (the composition root) and runServer (`anodyne server`).
export { CertificateRenewal, isDue, type RenewalReport, type PlatformCertificate } from './renewal.js';
export { startPlatform, agentTlsFromCredStore, type Platform, type PlatformOptions } from './platform.js';
export { runServer } from './server.js';
export { restorePlatform, type RestoredPlatform } from './restore.js';
