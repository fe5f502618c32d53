#!/usr/bin/env node
// Calling the KMS from Node.js with @grpc/grpc-js over mutual TLS (see README.md beside this file).
//
//   node kms_example.js --profile PROFILE demo --key ENCRYPT_KEY --sign-key SM2_KEY
//   node kms_example.js --profile PROFILE seal --key ENCRYPT_KEY [--context K=V ...] IN OUT
//   node kms_example.js --profile PROFILE open [--context K=V ...] IN OUT
//
// `demo` runs every call once and prints one JSON line per step. `seal` and `open` are envelope
// encryption of a file that fits in memory, in the same layout as examples/python (each opens
// what the other sealed). @grpc/proto-loader reads proto/kms/v1/*.proto at start: no generated
// code. SM4-GCM and SM2 verification outside the KMS come from sm-crypto-v2, because the OpenSSL
// inside Node 20 has no SM4-GCM and no way to set the SM2 distinguishing ID; AES-256-GCM is
// Node's own.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { sm2, sm4 } = require('sm-crypto-v2');

const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');
// Every call gets a deadline: a KMS that does not answer must not hang the application.
const TIMEOUT_MS = 10_000;

// The sealed-file layout:
//   algorithm (1 byte: 1 = SM4-GCM, 2 = AES-256-GCM) | length of the encrypted data key (u16, big
//   endian) | encrypted data key | nonce (12 bytes) | ciphertext | tag (16 bytes)
// Everything before the nonce is the AEAD's associated data, so a header swapped from another
// file does not open. The encryption context is bound by the KMS to the encrypted data key.
const ALGORITHMS = { 1: ['SM4-GCM', 'sm4'], 2: ['AES-256-GCM', 'aes-256'] };
const NONCE_LEN = 12;
const TAG_LEN = 16;

class NotAuthentic extends Error {}

function fail(message) {
  process.stderr.write(`kms_example.js: ${message}\n`);
  process.exit(1);
}

function emit(fields) {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

// The Crypto and KeyAdmin clients on one mTLS channel, from a KMS CLI profile (endpoint, ca,
// cert, key; paths relative to the profile). The profile is TOML, but only `name = "string"`
// lines: enough to read without a TOML library.
function connect(profilePath) {
  const profile = {};
  for (const line of fs.readFileSync(profilePath, 'utf8').split('\n')) {
    const m = line.match(/^\s*([a-z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(#.*)?$/);
    if (m) profile[m[1]] = JSON.parse(`"${m[2]}"`);
  }
  if ((profile.tls ?? 'standard') !== 'standard') {
    fail(`${profilePath} asks for tls = "${profile.tls}"; this example speaks standard TLS 1.3: ` +
      'use a profile without a tls line');
  }
  for (const field of ['endpoint', 'ca', 'cert', 'key']) {
    if (!profile[field]) fail(`${profilePath} has no ${field}`);
  }
  const read = (field) => fs.readFileSync(path.resolve(path.dirname(profilePath), profile[field]));
  const credentials = grpc.credentials.createSsl(read('ca'), read('key'), read('cert'));

  const definition = protoLoader.loadSync(['kms/v1/crypto.proto', 'kms/v1/admin.proto'], {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names as in the .proto: key_id, key_spec, …
    longs: String,
    enums: String,
    defaults: true, // absent fields read as their proto3 defaults (false, 0, empty)
  });
  const v1 = grpc.loadPackageDefinition(definition).kms.v1;
  const target = profile.endpoint.replace(/^https:\/\//, '');
  const cryptoClient = new v1.Crypto(target, credentials);
  // Both clients share the one channel (and TLS session).
  const admin = new v1.KeyAdmin(target, credentials, { channelOverride: cryptoClient.getChannel() });
  // grpc-js calls take callbacks; `call('Encrypt', request)` returns a promise.
  const call = (client) => (method, request) => new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + TIMEOUT_MS }, (err, response) =>
      (err ? reject(err) : resolve(response)));
  });
  return { crypto: call(cryptoClient), admin: call(admin), close: () => cryptoClient.close() };
}

// Runs a call that must fail; returns the gRPC status code's name and the message.
async function refused(promise) {
  try {
    await promise;
    return { code: 'OK', message: 'the call succeeded' };
  } catch (err) {
    return { code: grpc.status[err.code], message: err.details };
  }
}

function parseContext(pairs) {
  const context = {};
  for (const pair of pairs ?? []) {
    const at = pair.indexOf('=');
    if (at < 0) fail(`--context takes KEY=VALUE, not ${JSON.stringify(pair)}`);
    context[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return context;
}

// --- envelope encryption with a data key ----------------------------------------------------

function aeadEncrypt(algorithm, key, nonce, aad, plaintext) {
  if (algorithm === 1) {
    const { output, tag } = sm4.encrypt(plaintext, key, {
      mode: 'gcm', iv: nonce, associatedData: aad, output: 'array', outputTag: true,
    });
    return Buffer.concat([output, tag]);
  }
  const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

// The plaintext, or null when the data does not authenticate.
function aeadDecrypt(algorithm, key, nonce, aad, sealed) {
  const body = sealed.subarray(0, -TAG_LEN);
  const tag = sealed.subarray(-TAG_LEN);
  try {
    if (algorithm === 1) {
      return Buffer.from(sm4.decrypt(body, key, {
        mode: 'gcm', iv: nonce, associatedData: aad, tag, output: 'array',
      }));
    }
    const decipher = crypto.createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    return null;
  }
}

// Envelope-encrypts `plaintext`: the data key's algorithm follows the master key's.
async function seal(kms, key, context, plaintext) {
  const described = await kms.admin('DescribeKey', { key });
  const algorithm = described.key.algorithm === 'aes-256-gcm' ? 2 : 1;
  const dataKey = await kms.crypto('GenerateDataKey', {
    key, key_spec: ALGORITHMS[algorithm][1], context,
  });
  const header = Buffer.alloc(3 + dataKey.ciphertext.length);
  header.writeUInt8(algorithm, 0);
  header.writeUInt16BE(dataKey.ciphertext.length, 1);
  dataKey.ciphertext.copy(header, 3);
  const nonce = crypto.randomBytes(NONCE_LEN);
  const sealed = aeadEncrypt(algorithm, dataKey.plaintext, nonce, header, plaintext);
  dataKey.plaintext.fill(0); // the plaintext data key is not needed any more
  return { sealed: Buffer.concat([header, nonce, sealed]), algorithm: ALGORITHMS[algorithm][0] };
}

// The plaintext of a sealed file; throws NotAuthentic when the file was changed.
async function openSealed(kms, context, blob) {
  if (blob.length < 3) throw new NotAuthentic('too short for a sealed file');
  const algorithm = blob.readUInt8(0);
  const keyLen = blob.readUInt16BE(1);
  if (!ALGORITHMS[algorithm] || blob.length < 3 + keyLen + NONCE_LEN + TAG_LEN) {
    throw new NotAuthentic('not a sealed file');
  }
  const header = blob.subarray(0, 3 + keyLen);
  const nonce = blob.subarray(3 + keyLen, 3 + keyLen + NONCE_LEN);
  // Decrypt opens the data key (the blob names its master key); the context must match.
  const dataKey = await kms.crypto('Decrypt', { ciphertext: header.subarray(3), context });
  const plaintext = aeadDecrypt(algorithm, dataKey.plaintext, nonce, header,
    blob.subarray(3 + keyLen + NONCE_LEN));
  dataKey.plaintext.fill(0);
  if (plaintext === null) throw new NotAuthentic('the file does not authenticate');
  return plaintext;
}

// --- the commands -----------------------------------------------------------------------------

async function demo(kms, key, signKey) {
  // 1. Encrypt and decrypt up to 64 KiB, with an encryption context bound to the ciphertext.
  const secret = Buffer.from('card 6222 0000 1111 2222');
  const context = { order: '42' };
  const enc = await kms.crypto('Encrypt', { key, plaintext: secret, context });
  emit({
    step: 'encrypt', key_id: enc.key_id, key_version: enc.key_version,
    ciphertext_bytes: enc.ciphertext.length,
  });
  const dec = await kms.crypto('Decrypt', { ciphertext: enc.ciphertext, context });
  emit({ step: 'decrypt', round_trip: dec.plaintext.equals(secret), key_id: dec.key_id });

  // 2. Another context, or a changed ciphertext, is refused (INVALID_ARGUMENT).
  emit({
    step: 'decrypt with another context',
    ...await refused(kms.crypto('Decrypt', { ciphertext: enc.ciphertext, context: { order: '43' } })),
  });
  const tampered = Buffer.from(enc.ciphertext);
  tampered[tampered.length - 1] ^= 1;
  emit({
    step: 'decrypt tampered ciphertext',
    ...await refused(kms.crypto('Decrypt', { ciphertext: tampered, context })),
  });

  // 3. Envelope encryption: 1 MiB, more than Encrypt takes, under a data key.
  const documentBytes = crypto.randomBytes(1 << 20);
  const docContext = { file: 'report.pdf' };
  const { sealed, algorithm } = await seal(kms, key, docContext, documentBytes);
  emit({
    step: 'envelope seal', algorithm, bytes: documentBytes.length, sealed_bytes: sealed.length,
  });
  const opened = await openSealed(kms, docContext, sealed);
  emit({ step: 'envelope open', round_trip: opened.equals(documentBytes) });
  const changed = Buffer.from(sealed);
  changed[changed.length - 100] ^= 1;
  try {
    await openSealed(kms, docContext, changed);
    emit({ step: 'envelope open tampered', refused: false });
  } catch (err) {
    if (!(err instanceof NotAuthentic)) throw err;
    emit({ step: 'envelope open tampered', refused: true, message: err.message });
  }

  // 4. SM2 sign and verify (SM3 with the default ID 1234567812345678, DER signature).
  const message = Buffer.from('transfer 100.00 CNY to 6222 0000 3333 4444');
  const signed = await kms.crypto('Sign', { key: signKey, message });
  emit({ step: 'sign', key_id: signed.key_id, signature_bytes: signed.signature.length });
  for (const [step, msg] of [['verify', message], ['verify altered message', Buffer.concat([message, Buffer.from('0')])]]) {
    const verified = await kms.crypto('Verify', { key: signKey, message: msg, signature: signed.signature });
    emit({ step, valid: verified.valid });
  }

  // 5. Anyone with the public key verifies outside the KMS, here with sm-crypto-v2.
  const pub = await kms.crypto('GetPublicKey', { key: signKey });
  // An SM2 SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
  const point = pub.public_key_der.subarray(-65);
  const valid = point[0] === 4 && sm2.doVerifySignature(message, signed.signature.toString('hex'),
    point.toString('hex'), { der: true, hash: true, userId: '1234567812345678' });
  emit({ step: 'verify outside the KMS', tool: 'sm-crypto-v2', algorithm: pub.algorithm, valid });
}

const USAGE = 'usage: kms_example.js --profile PROFILE demo --key KEY --sign-key SM2_KEY\n' +
  '       kms_example.js --profile PROFILE seal --key KEY [--context K=V ...] IN OUT\n' +
  '       kms_example.js --profile PROFILE open [--context K=V ...] IN OUT';

async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        profile: { type: 'string' },
        key: { type: 'string' },
        'sign-key': { type: 'string' },
        context: { type: 'string', multiple: true },
      },
    });
  } catch (err) {
    fail(`${err.message}\n${USAGE}`);
  }
  const { values, positionals: [command, input, output] } = args;
  const ok = values.profile && (
    (command === 'demo' && values.key && values['sign-key'])
    || (command === 'seal' && values.key && output)
    || (command === 'open' && output));
  if (!ok) fail(USAGE);

  const kms = connect(values.profile);
  try {
    if (command === 'demo') {
      await demo(kms, values.key, values['sign-key']);
    } else if (command === 'seal') {
      const { sealed, algorithm } = await seal(kms, values.key, parseContext(values.context),
        fs.readFileSync(input));
      fs.writeFileSync(output, sealed);
      emit({ step: 'seal', algorithm, sealed_bytes: sealed.length });
    } else {
      const plaintext = await openSealed(kms, parseContext(values.context), fs.readFileSync(input));
      fs.writeFileSync(output, plaintext);
      emit({ step: 'open', bytes: plaintext.length });
    }
  } catch (err) {
    if (err instanceof NotAuthentic) fail(err.message);
    if (err.code !== undefined && err.details !== undefined) {
      fail(`the KMS said ${grpc.status[err.code]}: ${err.details}`);
    }
    throw err;
  } finally {
    kms.close();
  }
}

main();
