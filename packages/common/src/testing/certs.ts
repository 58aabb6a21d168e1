// Test certificates made by openssl: self-signed ones, and a CA with the leaves it signs (P-256 keys, one day).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exec } from '../exec.js';

/** A certificate and its key, PEM (also in `dir` as `<name>.pem` and `<name>.key`). */
export interface TestCertificate {
  cert: string;
  key: string;
}

/** A certificate a CA signed, with that CA's certificate: what a TLS client or server is given. */
export interface IssuedCertificate extends TestCertificate {
  ca: string;
}

const openssl = (dir: string, ...args: string[]) => exec(['openssl', ...args], { cwd: dir });
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

function read(dir: string, name: string): TestCertificate {
  return { cert: readFileSync(join(dir, `${name}.pem`), 'utf8'), key: readFileSync(join(dir, `${name}.key`), 'utf8') };
}

/**
 * A self-signed certificate in `dir` (`<name>.pem`, `<name>.key`), subject CN=`name` (openssl's
 * defaults make it a CA too). `sans` are subjectAltName entries (`DNS:x`, `IP:1.2.3.4`).
 */
export async function selfSigned(dir: string, name: string, sans: string[] = []): Promise<TestCertificate> {
  const ext = sans.length ? ['-addext', `subjectAltName=${sans.join(',')}`] : [];
  await openssl(
    dir,
    'req',
    '-x509',
    ...NEW_KEY,
    '-days',
    '1',
    '-subj',
    `/CN=${name}`,
    ...ext,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
  );
  return read(dir, name);
}

/**
 * A CA (`ca.pem`, `ca.key` in `dir`) and one leaf per entry, signed by it, each usable by a server
 * and a client (`<name>.pem`, `<name>.key`), with its subjectAltName entries and the CA's certificate.
 */
export async function caWithLeaves(
  dir: string,
  leaves: { name: string; sans: string[] }[],
): Promise<{ ca: TestCertificate; leaves: Record<string, IssuedCertificate> }> {
  const ca = await selfSigned(dir, 'ca');
  const out: Record<string, IssuedCertificate> = {};
  for (const { name, sans } of leaves) {
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${sans.join(',')}\nextendedKeyUsage=serverAuth,clientAuth\n`);
    await openssl(dir, 'req', ...NEW_KEY, '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    await openssl(
      dir,
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    );
    out[name] = { ...read(dir, name), ca: ca.cert };
  }
  return { ca, leaves: out };
}
