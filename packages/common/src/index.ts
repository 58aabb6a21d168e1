// The common package's door: errors, logging, clocks, configuration, running commands and test skipping.
export * from './errors.js';
export * from './logger.js';
export * from './clock.js';
export * from './config.js';
export * from './exec.js';
export * from './skip.js';
