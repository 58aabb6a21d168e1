export { startPostgres, freePort, type TestPostgres } from './postgres.js';
