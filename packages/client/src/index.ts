export * from './client.js';
export * as schemas from './schemas.js';
