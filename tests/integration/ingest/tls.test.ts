// DICOM TLS with dcmtk's storescu +tls: a throwaway CA, server and client certificate made with openssl for
// this run. The TLS listener stores like the plain one; without a client certificate it refuses the handshake.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SAMPLES, dcmtk, startTestDimse, storeResponses, type TestDimse } from '../../helpers/ingest.ts';

const run = promisify(execFile);
const AE = 'AIGW_TEST';
const FILE = path.join(SAMPLES, 'xray', 'cr-cervical-lat-mono1-agfa-16x16.dcm');

let dir: string;
let t: TestDimse;

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

/** A CA, and a server and a client certificate it signed (RSA 2048, one day). */
async function makePki(): Promise<void> {
  await openssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=aigw-test-ca',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
  ]);
  await writeFile(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const who of ['server', 'client']) {
    await openssl([
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=aigw-test-${who}`,
      '-keyout',
      `${who}.key`,
      '-out',
      `${who}.csr`,
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      `${who}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '1',
      ...(who === 'server' ? ['-extfile', 'server.ext'] : []),
      '-out',
      `${who}.pem`,
    ]);
  }
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-tls-'));
  await makePki();
  t = await startTestDimse({
    tls: {
      port: 0,
      cert: await readFile(path.join(dir, 'server.pem')),
      key: await readFile(path.join(dir, 'server.key')),
      ca: await readFile(path.join(dir, 'ca.pem')),
      requireClientCert: true,
    },
  });
});

after(async () => {
  await t.close();
  await rm(dir, { recursive: true, force: true });
});

test('storescu +tls with a client certificate stores over the TLS listener', async () => {
  assert.ok(t.server.tlsPort !== undefined && t.server.tlsPort !== t.server.port);
  const r = await dcmtk('storescu', [
    '-v',
    '+tls',
    path.join(dir, 'client.key'),
    path.join(dir, 'client.pem'),
    '+cf',
    path.join(dir, 'ca.pem'),
    '-aec',
    AE,
    '127.0.0.1',
    String(t.server.tlsPort),
    FILE,
  ]);
  assert.deepEqual(storeResponses(r.out), ['Success'], r.out);
  assert.equal(t.stored.length, 1);
});

test('without a client certificate, or without TLS, the TLS port stores nothing; the plain port still works', async () => {
  const anonymous = await dcmtk('storescu', [
    '-v',
    '+tla',
    '+cf',
    path.join(dir, 'ca.pem'),
    '-aec',
    AE,
    '127.0.0.1',
    String(t.server.tlsPort),
    FILE,
  ]);
  assert.deepEqual(storeResponses(anonymous.out), [], anonymous.out);
  const plainToTls = await dcmtk('storescu', [
    '-v',
    '-to',
    '5',
    '-aec',
    AE,
    '127.0.0.1',
    String(t.server.tlsPort),
    FILE,
  ]);
  assert.deepEqual(storeResponses(plainToTls.out), [], plainToTls.out);
  const plain = await dcmtk('storescu', ['-v', '-aec', AE, '127.0.0.1', String(t.server.port), FILE]);
  assert.deepEqual(storeResponses(plain.out), ['Success'], plain.out);
});
