// The registry package's door: the image registry run by the platform (CNCF Distribution behind a front
// server), its tokens, projects, grants, quotas and images.
export { RegistryProcess, type RegistryProcessOptions, type GcReport } from './process.js';
export { RegistryFront, type RegistryFrontOptions } from './front.js';
export {
  RegistryService,
  CLUSTER_USER_PREFIX,
  defaultProjectOf,
  projectOf,
  samePassword,
  usageOf,
  type RegistryCaller,
  type RegistryActor,
  type RegistryServiceOptions,
  type ProjectView,
  type ImageView,
} from './service.js';
export { RegistryTokenSigner, parseScopes, tokenSubject, type TokenAccess, type SigningCertificate } from './tokens.js';
export { socketUpstream } from './upstream.js';
