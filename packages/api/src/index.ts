// The api package's door: the Fastify server builder and the error-to-HTTP-status mapping.
export { buildServer, type ServerOptions } from './server.js';
export { errorBody, statusOf } from './errors.js';
export { Metrics, type PlatformGauges } from './metrics.js';
