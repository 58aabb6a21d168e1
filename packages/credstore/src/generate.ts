// Credential generation: passwords, RSA and SSH key pairs, and X.509 certificates (CAs and leaves) with @peculiar/x509.
import 'reflect-metadata';
import { createHash, generateKeyPair, randomBytes, randomInt, webcrypto, createPrivateKey, createPublicKey } from 'node:crypto';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import {
  parseAlternativeName,
  type CertificateParams,
  type CertificateValue,
  type ExtendedKeyUsage,
  type KeyUsage,
  type PasswordParams,
  type RsaValue,
  type SshValue,
} from './types.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const generateKeyPairAsync = promisify(generateKeyPair);

const UPPER = 'ABCDEFGHJKLMNPQRSTUVWXYZ';
const LOWER = 'abcdefghijkmnopqrstuvwxyz';
const DIGITS = '23456789';
const SPECIAL = '!#%+-.:=?@^_~';

/** A random password from the classes asked for; at least one character of each class. */
export function generatePassword(params: PasswordParams = {}): string {
  const length = params.length ?? 30;
  const classes = [
    params.exclude_upper ? '' : UPPER,
    params.exclude_lower ? '' : LOWER,
    params.exclude_number ? '' : DIGITS,
    params.include_special ? SPECIAL : '',
  ].filter((c) => c.length > 0);
  const all = classes.join('');
  const chars = classes.map((c) => c[randomInt(c.length)]!);
  while (chars.length < length) chars.push(all[randomInt(all.length)]!);
  // Fisher–Yates, so the guaranteed characters are not always first.
  for (let i = chars.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [chars[i], chars[j]] = [chars[j]!, chars[i]!];
  }
  return chars.slice(0, length).join('');
}

export async function generateRsa(bits = 2048): Promise<RsaValue> {
  const { publicKey, privateKey } = await generateKeyPairAsync('rsa', {
    modulusLength: bits,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { public_key: publicKey, private_key: privateKey };
}

function sshString(buf: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(buf.length);
  return Buffer.concat([len, buf]);
}

function sshMpint(b64url: string): Buffer {
  let bytes = Buffer.from(b64url, 'base64url');
  while (bytes.length > 1 && bytes[0] === 0) bytes = bytes.subarray(1);
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return sshString(bytes);
}

/** An RSA key pair with the public key in OpenSSH `authorized_keys` form. */
export async function generateSsh(bits = 2048, comment = ''): Promise<SshValue> {
  const rsa = await generateRsa(bits);
  const jwk = createPublicKey(rsa.public_key).export({ format: 'jwk' });
  const blob = Buffer.concat([sshString(Buffer.from('ssh-rsa')), sshMpint(jwk.e!), sshMpint(jwk.n!)]);
  const fingerprint = 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
  return {
    public_key: `ssh-rsa ${blob.toString('base64')}${comment ? ' ' + comment : ''}`,
    private_key: rsa.private_key,
    public_key_fingerprint: fingerprint,
  };
}

const KEY_USAGE_FLAGS: Record<KeyUsage, number> = {
  digital_signature: x509.KeyUsageFlags.digitalSignature,
  non_repudiation: x509.KeyUsageFlags.nonRepudiation,
  key_encipherment: x509.KeyUsageFlags.keyEncipherment,
  data_encipherment: x509.KeyUsageFlags.dataEncipherment,
  key_agreement: x509.KeyUsageFlags.keyAgreement,
  key_cert_sign: x509.KeyUsageFlags.keyCertSign,
  crl_sign: x509.KeyUsageFlags.cRLSign,
  encipher_only: x509.KeyUsageFlags.encipherOnly,
  decipher_only: x509.KeyUsageFlags.decipherOnly,
};

const EKU_OIDS: Record<ExtendedKeyUsage, string> = {
  server_auth: x509.ExtendedKeyUsage.serverAuth,
  client_auth: x509.ExtendedKeyUsage.clientAuth,
  code_signing: x509.ExtendedKeyUsage.codeSigning,
  email_protection: x509.ExtendedKeyUsage.emailProtection,
  timestamping: x509.ExtendedKeyUsage.timeStamping,
};

type Algorithm = RsaHashedKeyGenParams | EcKeyGenParams;

function algorithmFor(params: CertificateParams): Algorithm {
  if (params.key_algorithm === 'ecdsa') return { name: 'ECDSA', namedCurve: 'P-256' };
  return {
    name: 'RSASSA-PKCS1-v1_5',
    hash: 'SHA-256',
    publicExponent: new Uint8Array([1, 0, 1]),
    modulusLength: params.key_length ?? 2048,
  };
}

function signingAlgorithm(alg: Algorithm): Algorithm | EcdsaParams {
  return alg.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : alg;
}

/** What signs a certificate: the CA's certificate and private key, PEM. */
export interface Signer {
  certificate: string;
  privateKey: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

async function importSigningKey(privatePem: string): Promise<{ key: CryptoKey; alg: Algorithm | EcdsaParams }> {
  const key = createPrivateKey(privatePem);
  const der = key.export({ type: 'pkcs8', format: 'der' });
  if (key.asymmetricKeyType === 'ec') {
    const k = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    return { key: k, alg: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams };
  }
  const k = await webcrypto.subtle.importKey('pkcs8', der, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']);
  return { key: k, alg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as RsaHashedImportParams as Algorithm };
}

function subjectName(params: CertificateParams): x509.JsonName {
  const name: x509.JsonName = [];
  const orgs = params.organization === undefined ? [] : Array.isArray(params.organization) ? params.organization : [params.organization];
  for (const o of orgs) name.push({ O: [o] });
  if (params.organization_unit) name.push({ OU: [params.organization_unit] });
  if (params.common_name) name.push({ CN: [params.common_name] });
  return name;
}

/**
 * Generates a certificate and its key. CAs (is_ca) get basicConstraints CA:true and
 * keyCertSign/cRLSign; leaves get what was asked, defaulting to digitalSignature +
 * keyEncipherment. With a signer the issuer and authority key id come from its certificate;
 * otherwise the certificate is self-signed.
 */
export async function generateCertificate(
  params: CertificateParams,
  signer: Signer | undefined,
  now: Date,
): Promise<Omit<CertificateValue, 'ca' | 'ca_name'> & { notAfter: Date }> {
  const alg = algorithmFor(params);
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const notBefore = new Date(now.getTime() - 60_000); // tolerate small clock skew between nodes
  const notAfter = new Date(now.getTime() + (params.duration ?? 365) * 86_400_000);
  const isCa = params.is_ca === true;
  const usages = (
    params.key_usage ?? (isCa ? ['key_cert_sign', 'crl_sign', 'digital_signature'] : ['digital_signature', 'key_encipherment'])
  ).reduce((acc, u) => acc | KEY_USAGE_FLAGS[u], 0);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(isCa, undefined, true),
    new x509.KeyUsagesExtension(usages, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (params.extended_key_usage && params.extended_key_usage.length > 0) {
    extensions.push(
      new x509.ExtendedKeyUsageExtension(
        params.extended_key_usage.map((u) => EKU_OIDS[u]),
        false,
      ),
    );
  }
  if (params.alternative_names && params.alternative_names.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        params.alternative_names.map((n) => parseAlternativeName(n)),
        false,
      ),
    );
  }
  const serialNumber = randomBytes(16);
  serialNumber[0] = serialNumber[0]! & 0x7f; // positive
  const common = {
    serialNumber: serialNumber.toString('hex'),
    subject: subjectName(params),
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
  };
  let cert: x509.X509Certificate;
  if (signer) {
    const issuer = new x509.X509Certificate(signer.certificate);
    const { key, alg: signAlg } = await importSigningKey(signer.privateKey);
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer, false));
    cert = await x509.X509CertificateGenerator.create({
      ...common,
      issuer: issuer.subjectName,
      signingKey: key,
      signingAlgorithm: signAlg,
      extensions,
    });
  } else {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey, false));
    cert = await x509.X509CertificateGenerator.create({
      ...common,
      issuer: subjectName(params),
      signingKey: keys.privateKey,
      signingAlgorithm: signingAlgorithm(alg),
      extensions,
    });
  }
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certificate: cert.toString('pem') + '\n', private_key: pem('PRIVATE KEY', pkcs8), notAfter };
}
