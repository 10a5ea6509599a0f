// The admin listener over HTTPS (http.tls): the console, the API and STOW-RS speak TLS 1.2+ only, with a
// certificate made for this run. A request forwarded by a proxy never counts as a loopback caller, and the
// console may not be framed or sniffed.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { Redis } from 'ioredis';
import { Agent, fetch as undiciFetch } from 'undici';
import { ConfigError, loadConfig } from '../../../src/config/load.ts';
import { startRoles } from '../../../src/roles/start.ts';
import { freePort } from '../../helpers/dicom-tools.ts';
import { REDIS_URL, SHARED } from '../../helpers/gateway.ts';
import { makePki } from '../../helpers/pki.ts';

const CT_SLICE = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm/I10.dcm');
let dir: string;
let port: number;
let agent: Agent;
let gateway: { close(): Promise<void> } | undefined;
const prefix = `aigw-https-${randomBytes(4).toString('hex')}`;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-https-'));
  await makePki(dir, ['server']);
  port = await freePort();
  await writeFile(
    path.join(dir, 'gateway.yaml'),
    JSON.stringify({
      http: { host: '127.0.0.1', port, tls: { certFile: 'server.pem', keyFile: 'server.key' } },
      dimse: { host: '127.0.0.1', port: await freePort() },
      redis: { url: REDIS_URL, prefix, autoStart: false },
      dataDir: 'data',
      modelsDir: 'models',
    }),
  );
  const config = loadConfig({ env: {}, configPath: path.join(dir, 'gateway.yaml') });
  gateway = await startRoles('gateway', config);
  agent = new Agent({ connect: { ca: readFileSync(path.join(dir, 'ca.pem')) } });
});

after(async () => {
  await gateway?.close();
  await agent?.close();
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

const https = (p: string, init: Parameters<typeof undiciFetch>[1] = {}) =>
  undiciFetch(`https://127.0.0.1:${port}${p}`, { ...init, dispatcher: agent });

test('console, API and STOW-RS answer over HTTPS with the configured certificate; plain HTTP gets nothing', async () => {
  assert.equal((await https('/healthz')).status, 200);
  assert.equal((await https('/api/studies')).status, 200);
  const stow = await https('/dicomweb/studies', {
    method: 'POST',
    headers: { 'content-type': 'multipart/related; type="application/dicom"; boundary=XyZ' },
    body: Buffer.concat([
      Buffer.from('--XyZ\r\nContent-Type: application/dicom\r\n\r\n'),
      readFileSync(CT_SLICE),
      Buffer.from('\r\n--XyZ--\r\n'),
    ]),
  });
  assert.equal(stow.status, 200, await stow.text());
  await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'no plain HTTP on the TLS port');
});

test('TLS 1.1 is refused by the HTTPS listener', async () => {
  const outcome = await new Promise<string>((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      maxVersion: 'TLSv1.1',
      minVersion: 'TLSv1',
      ciphers: 'DEFAULT:@SECLEVEL=0',
      rejectUnauthorized: false,
    });
    socket.once('secureConnect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err) => resolve(err.message));
  });
  assert.notEqual(outcome, 'connected');
});

test('a forwarded request is not a loopback caller; the console sends anti-framing and nosniff headers', async () => {
  for (const header of ['x-forwarded-for', 'forwarded', 'x-real-ip']) {
    const proxied = await https('/api/studies', { headers: { [header]: '203.0.113.7' } });
    assert.equal(proxied.status, 403, header);
    assert.match(((await proxied.json()) as { error: string }).error, /proxied request/);
  }
  const proxiedStow = await https('/dicomweb/studies', {
    method: 'POST',
    headers: {
      'content-type': 'multipart/related; type="application/dicom"',
      'x-forwarded-for': '203.0.113.7',
    },
    body: 'x',
  });
  assert.equal(proxiedStow.status, 403, 'STOW-RS without credentials: loopback callers only');
  const page = await https('/');
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
});

test('http.tls.requireClientCert without a CA of its own refuses to start', () => {
  assert.throws(
    () =>
      loadConfig({
        env: {},
        overrides: { 'http.tls': { certFile: 'a.pem', keyFile: 'a.key', requireClientCert: true } },
      }),
    (err: unknown) => err instanceof ConfigError && /caFile/.test(err.message),
  );
});
