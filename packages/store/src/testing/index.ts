// The store's test door (`@anodyne/store/testing`): a throwaway PostgreSQL server and a free port.
export { startPostgres, freePort, type TestPostgres } from './postgres.js';
