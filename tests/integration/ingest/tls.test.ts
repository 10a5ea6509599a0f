// DICOM TLS with dcmtk's storescu +tls: a throwaway CA, server and client certificates made with openssl for
// this run. The TLS listener stores like the plain one; without a client certificate it refuses the handshake.
// A client certificate requirement needs a CA of its own (never the public ones); a calling AE title bound to
// a certificate subject CN gets in only over TLS with that certificate; TLS older than 1.2 is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../../src/config/load.ts';
import { startDimseServer } from '../../../src/ingest/dimse/index.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { SAMPLES, dcmtk, startTestDimse, storeResponses, type TestDimse } from '../../helpers/ingest.ts';
import { makePki as makeTestPki } from '../../helpers/pki.ts';

const AE = 'AIGW_TEST';
const FILE = path.join(SAMPLES, 'xray', 'cr-cervical-lat-mono1-agfa-16x16.dcm');

let dir: string;
let t: TestDimse;
/** Requires client certificates, and binds two AE titles to certificate subjects; others get in too. */
let bound: TestDimse;

/** A CA, and a server and two client certificates it signed. */
const makePki = () => makeTestPki(dir, ['server', 'client', 'intruder']);

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
  bound = await startTestDimse({
    peers: [
      { aeTitle: 'BOUND_CT', certificateCN: 'aigw-test-client' },
      { aeTitle: 'BOUND_MR', certificateCN: 'aigw-test-someone-else' },
    ],
    promiscuous: true,
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
  await bound.close();
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

/** storescu over TLS to the bound server with the given certificate and calling AE title. */
function tlsStore(server: TestDimse, who: 'client' | 'intruder', aet: string) {
  return dcmtk('storescu', [
    '-v',
    '+tls',
    path.join(dir, `${who}.key`),
    path.join(dir, `${who}.pem`),
    '+cf',
    path.join(dir, 'ca.pem'),
    '-aet',
    aet,
    '-aec',
    AE,
    '127.0.0.1',
    String(server.server.tlsPort),
    FILE,
  ]);
}

test('requireClientCert without caFile refuses to start instead of trusting the public CAs', async () => {
  const tls = {
    certFile: path.join(dir, 'server.pem'),
    keyFile: path.join(dir, 'server.key'),
    requireClientCert: true,
  };
  assert.throws(
    () => loadConfig({ env: {}, overrides: { 'dimse.tls': tls } }),
    (e: unknown) => e instanceof ConfigError && /requireClientCert.*caFile/.test(e.message),
  );
  assert.doesNotThrow(() =>
    loadConfig({ env: {}, overrides: { 'dimse.tls': { ...tls, caFile: path.join(dir, 'ca.pem') } } }),
  );
  // The server itself refuses too, for callers that skip the configuration.
  const store = new FilesystemObjectStore(dir);
  await assert.rejects(
    startDimseServer({
      aeTitle: AE,
      host: '127.0.0.1',
      port: 0,
      maxPduLength: 262_144,
      store,
      dataDir: dir,
      onStored: async () => undefined,
      tls: {
        port: 0,
        cert: await readFile(tls.certFile),
        key: await readFile(tls.keyFile),
        requireClientCert: true,
      },
    }),
    /requireClientCert.*CA/,
  );
});

test('a certificate subject bound to an AE title needs TLS and a client certificate carrying that CN', async () => {
  const ok = await tlsStore(bound, 'client', 'BOUND_CT');
  assert.deepEqual(storeResponses(ok.out), ['Success'], ok.out);
  // The same AE title with another (valid, same CA) certificate, or without TLS: rejected.
  const intruder = await tlsStore(bound, 'intruder', 'BOUND_CT');
  assert.deepEqual(storeResponses(intruder.out), [], intruder.out);
  assert.match(intruder.out, /Association Rejected/i, intruder.out);
  const plain = await dcmtk('storescu', [
    '-v',
    '-aet',
    'BOUND_CT',
    '-aec',
    AE,
    '127.0.0.1',
    String(bound.server.port),
    FILE,
  ]);
  assert.deepEqual(storeResponses(plain.out), [], plain.out);
  assert.match(plain.out, /Association Rejected/i, plain.out);
  // A valid certificate does not open an AE title bound to someone else.
  const wrongAe = await tlsStore(bound, 'client', 'BOUND_MR');
  assert.deepEqual(storeResponses(wrongAe.out), [], wrongAe.out);
  // Titles bound to nobody still get in (promiscuous here), with any certificate the CA signed.
  const other = await tlsStore(bound, 'intruder', 'ANY_AE');
  assert.deepEqual(storeResponses(other.out), ['Success'], other.out);
  assert.equal(bound.stored.length, 2);
});

test('a certificate subject binding without required client certificates is a configuration error', () => {
  assert.throws(
    () =>
      loadConfig({
        env: {},
        overrides: { 'dimse.peers': [{ aeTitle: 'BOUND_CT', certificateCN: 'aigw-test-client' }] },
      }),
    (e: unknown) => e instanceof ConfigError && /certificateCN.*requireClientCert/.test(e.message),
  );
});

/** Handshake outcome of a node TLS client limited to `version`, at OpenSSL security level 0. */
function handshake(port: number, version: 'TLSv1.1' | 'TLSv1.2'): Promise<string> {
  return new Promise((resolve) => {
    const socket: TLSSocket = tlsConnect({
      host: '127.0.0.1',
      port,
      minVersion: 'TLSv1',
      maxVersion: version,
      // Level 0 lets this client offer TLS 1.1 at all: any refusal is the server's.
      ciphers: 'DEFAULT:@SECLEVEL=0',
      ca: [readFileSyncCache('ca.pem')],
      cert: readFileSyncCache('client.pem'),
      key: readFileSyncCache('client.key'),
      servername: 'localhost',
    });
    socket.once('secureConnect', () => {
      const protocol = socket.getProtocol() ?? 'unknown';
      socket.destroy();
      resolve(`connected ${protocol}`);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(`refused ${err.code ?? err.message}`));
  });
}

const pemCache = new Map<string, Buffer>();
function readFileSyncCache(name: string): Buffer {
  const b = pemCache.get(name);
  if (b === undefined) throw new Error(`${name} not loaded`);
  return b;
}

test('a TLS 1.1 client is refused; the same client at TLS 1.2 connects', async () => {
  for (const name of ['ca.pem', 'client.pem', 'client.key', 'server.pem', 'server.key'])
    pemCache.set(name, await readFile(path.join(dir, name)));
  // Control: this client can speak TLS 1.1 to a server that allows it, so only the gateway's floor refuses.
  const lenient = createTlsServer({
    cert: readFileSyncCache('server.pem'),
    key: readFileSyncCache('server.key'),
    minVersion: 'TLSv1',
    ciphers: 'DEFAULT:@SECLEVEL=0',
  });
  lenient.on('secureConnection', (s) => s.end());
  await new Promise<void>((r) => lenient.listen(0, '127.0.0.1', () => r()));
  try {
    assert.equal(await handshake((lenient.address() as AddressInfo).port, 'TLSv1.1'), 'connected TLSv1.1');
  } finally {
    await new Promise((r) => lenient.close(r));
  }
  const tlsPort = t.server.tlsPort!;
  assert.match(await handshake(tlsPort, 'TLSv1.1'), /^refused /);
  assert.equal(await handshake(tlsPort, 'TLSv1.2'), 'connected TLSv1.2');
});
