// The client package's door: the typed API client and, as `schemas`, the API's request and response schemas.
export * from './client.js';
export * as schemas from './schemas.js';
