// The common package's test door (`@anodyne/common/testing`): certificates made by openssl for tests.
export { caWithLeaves, selfSigned, type IssuedCertificate, type TestCertificate } from './certs.js';
