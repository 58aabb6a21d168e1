export { buildServer, type ServerOptions } from './server.js';
export { errorBody, statusOf } from './errors.js';
export { startPlatform, type Platform, type PlatformOptions } from './platform.js';
