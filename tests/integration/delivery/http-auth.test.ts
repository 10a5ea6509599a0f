// DICOMweb destination security: OAuth2 client credentials (token cached until expiry, renewed after a
// 401, refused credentials are permanent) over HTTPS with a private CA given in the configuration.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configSchema } from '../../../src/config/schema.ts';
import { PermanentDeliveryError, TransientDeliveryError } from '../../../src/delivery/destination.ts';
import { DicomwebDestination } from '../../../src/delivery/destinations/dicomweb.ts';
import { createDestinations } from '../../../src/delivery/registry.ts';
import { runTool } from '../../helpers/dicom-tools.ts';

const STUDY = '2.25.600000000000000000000000000000000001';
const SOP = '2.25.600000000000000000000000000000000002';
/** The smallest thing the delivery input check accepts: a preamble and the DICM prefix. */
const PART10 = Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), Buffer.alloc(16)]);

let dir: string;
let server: Server;
let base: string;
let caFile: string;
const seen = { tokenRequests: 0, stowAuth: [] as string[], tokenBodies: [] as string[] };
let tokenLifetimeS = 3600;
let revoked = new Set<string>();

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-tls-'));
  caFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  const r = await runTool('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    caFile,
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  server = createServer({ key: await readFile(keyFile), cert: await readFile(caFile) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (req.url === '/token' && req.method === 'POST') {
        seen.tokenRequests++;
        seen.tokenBodies.push(body);
        const expected = `Basic ${Buffer.from('gateway:s3cret').toString('base64')}`;
        if (req.headers.authorization !== expected) {
          res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"error":"invalid_client"}');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(
          JSON.stringify({
            access_token: `tok-${seen.tokenRequests}`,
            token_type: 'Bearer',
            expires_in: tokenLifetimeS,
          }),
        );
        return;
      }
      if (req.url === '/dicom-web/studies' && req.method === 'POST') {
        const auth = req.headers.authorization ?? '';
        seen.stowAuth.push(auth);
        if (!/^Bearer tok-\d+$/.test(auth) || revoked.has(auth.slice(7))) {
          res.writeHead(401).end('token rejected');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/dicom+json' });
        res.end(
          JSON.stringify({ '00081199': { vr: 'SQ', Value: [{ '00081155': { vr: 'UI', Value: [SOP] } }] } }),
        );
        return;
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => server?.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

function oauthDestination(clientSecret = 's3cret', scope?: string) {
  const config = configSchema.parse({
    destinations: {
      pacs: {
        kind: 'dicomweb',
        url: `${base}/dicom-web`,
        caFile,
        auth: { type: 'oauth2', tokenUrl: `${base}/token`, clientId: 'gateway', clientSecret, scope },
      },
    },
    defaultDestination: 'pacs',
  });
  return createDestinations(config).get('pacs') as DicomwebDestination;
}

test('OAuth2 client credentials over a private CA: one token for many deliveries', async (t) => {
  tokenLifetimeS = 3600;
  const dest = oauthDestination('s3cret', 'dicomweb.write');
  t.after(() => dest.close());
  const before = seen.tokenRequests;
  for (let i = 0; i < 3; i++)
    assert.equal((await dest.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP })).status, 200);
  assert.equal(seen.tokenRequests - before, 1, 'the token is cached');
  const body = new URLSearchParams(seen.tokenBodies.at(-1));
  assert.equal(body.get('grant_type'), 'client_credentials');
  assert.equal(body.get('scope'), 'dicomweb.write');
  assert.deepEqual(seen.stowAuth.slice(-3), Array(3).fill(`Bearer tok-${seen.tokenRequests}`));
});

test('an expiring token is renewed; a token the server rejects is dropped and renewed on the retry', async (t) => {
  // expires_in within the safety margin: every delivery needs a new token.
  tokenLifetimeS = 10;
  const dest = oauthDestination();
  t.after(() => dest.close());
  let before = seen.tokenRequests;
  await dest.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP });
  await dest.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP });
  assert.equal(seen.tokenRequests - before, 2);

  tokenLifetimeS = 3600;
  const fresh = oauthDestination();
  t.after(() => fresh.close());
  await fresh.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP });
  revoked = new Set([`tok-${seen.tokenRequests}`]);
  before = seen.tokenRequests;
  await assert.rejects(
    fresh.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }),
    TransientDeliveryError,
  );
  assert.equal((await fresh.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP })).status, 200);
  assert.equal(seen.tokenRequests - before, 1, 'one new token after the 401');
});

test('refused client credentials are permanent; a server outside the trusted CA is not reached', async (t) => {
  const wrong = oauthDestination('not-the-secret');
  t.after(() => wrong.close());
  await assert.rejects(wrong.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }), (e: unknown) => {
    assert.ok(e instanceof PermanentDeliveryError, String(e));
    assert.match((e as Error).message, /refused the client credentials: HTTP 401 \(invalid_client\)/);
    assert.doesNotMatch((e as Error).message, /not-the-secret/);
    return true;
  });
  // Without the CA the self-signed server is not trusted: nothing is sent.
  const stowsBefore = seen.stowAuth.length;
  const untrusted = new DicomwebDestination('untrusted', {
    url: `${base}/dicom-web`,
    timeoutMs: 5_000,
    auth: { type: 'bearer', token: 'static' },
  });
  await assert.rejects(untrusted.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }), (e: unknown) => {
    assert.ok(e instanceof TransientDeliveryError);
    assert.match((e as Error).message, /certificate|self.signed/i);
    return true;
  });
  assert.equal(seen.stowAuth.length, stowsBefore);
  // A static bearer token, with the CA: the header is sent as configured (and refused by this server).
  const bearer = new DicomwebDestination('bearer', {
    url: `${base}/dicom-web`,
    timeoutMs: 5_000,
    auth: { type: 'bearer', token: 'static' },
    ca: await readFile(caFile),
  });
  t.after(() => bearer.close());
  await assert.rejects(bearer.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }), (e: unknown) => {
    assert.ok(e instanceof PermanentDeliveryError);
    assert.match((e as Error).message, /HTTP 401 Unauthorized: the PACS refused the bearer credentials/);
    return true;
  });
  assert.equal(seen.stowAuth.at(-1), 'Bearer static');
});

test('config: auth kinds are validated', () => {
  const parse = (auth: unknown) =>
    configSchema.safeParse({ destinations: { p: { kind: 'dicomweb', url: 'http://x/dicom-web', auth } } })
      .success;
  assert.equal(parse({ type: 'none' }), true);
  assert.equal(parse({ type: 'basic', user: 'u', password: 'p' }), true);
  assert.equal(parse({ type: 'bearer', token: 't' }), true);
  assert.equal(
    parse({ type: 'oauth2', tokenUrl: 'https://idp/token', clientId: 'c', clientSecret: 's' }),
    true,
  );
  assert.equal(parse({ type: 'oauth2', tokenUrl: 'not a url', clientId: 'c', clientSecret: 's' }), false);
  assert.equal(parse({ type: 'basic', user: 'u' }), false);
  assert.equal(parse({ type: 'kerberos' }), false);
});
