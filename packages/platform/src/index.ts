export { startPlatform, agentTlsFromCredStore, type Platform, type PlatformOptions } from './platform.js';
export { runServer } from './server.js';
