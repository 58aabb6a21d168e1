export { buildServer, type ServerOptions } from './server.js';
export { errorBody, statusOf } from './errors.js';
