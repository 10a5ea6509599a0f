// A PACS or token endpoint that misbehaves must not stall or swamp delivery: an OAuth2 token response
// that never ends is cut at 64 KiB and fails at once; a Retry-After of years (seconds or an HTTP date) is
// capped at one hour, and so is the retry delay it leads to.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TransientDeliveryError } from '../../../src/delivery/destination.ts';
import { deliveryDelay } from '../../../src/delivery/backoff.ts';
import { DicomwebDestination } from '../../../src/delivery/destinations/dicomweb.ts';

const STUDY = '2.25.600000000000000000000000000000000011';
const SOP = '2.25.600000000000000000000000000000000012';
const PART10 = Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), Buffer.alloc(16)]);
const HOUR_MS = 3_600_000;

let server: Server;
let base: string;
let retryAfter = '';
let tokenBytesSent = 0;

before(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/endless-token') {
        // A JSON body that never ends, sent as fast as the client reads (bounded at 1 GiB).
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write('{"access_token":"');
        const chunk = Buffer.alloc(64 * 1024, 'a');
        const pump = () => {
          while (!res.destroyed && tokenBytesSent < 1024 ** 3) {
            tokenBytesSent += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end();
        };
        pump();
        return;
      }
      if (req.url === '/dicom-web/studies') {
        res.writeHead(503, { 'Retry-After': retryAfter }).end('busy');
        return;
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

test('an OAuth2 token response that never ends fails fast and cleanly, read no further than 64 KiB', async (t) => {
  const dest = new DicomwebDestination('pacs', {
    url: `${base}/dicom-web`,
    timeoutMs: 15_000,
    auth: { type: 'oauth2', tokenUrl: `${base}/endless-token`, clientId: 'gw', clientSecret: 'secret' },
  });
  t.after(() => dest.close());
  const started = Date.now();
  await assert.rejects(dest.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }), (e: unknown) => {
    assert.ok(e instanceof TransientDeliveryError, String(e));
    assert.match((e as Error).message, /token response.*larger than 65536 bytes/);
    return true;
  });
  const took = Date.now() - started;
  assert.ok(took < 3000, `took ${took} ms: the body was read until the timeout`);
  // The server only sends what the client reads (plus socket buffers): far less than the 1 GiB bound.
  assert.ok(tokenBytesSent < 64 * 1024 ** 2, `${tokenBytesSent} bytes were pulled`);
});

for (const [what, value] of [
  ['a huge number of seconds', '999999999'],
  ['an HTTP date eighty years ahead', 'Fri, 01 Jan 2106 00:00:00 GMT'],
] as const) {
  test(`a Retry-After of ${what} is capped at one hour`, async (t) => {
    retryAfter = value;
    const dest = new DicomwebDestination('pacs', { url: `${base}/dicom-web`, timeoutMs: 5_000 });
    t.after(() => dest.close());
    await assert.rejects(dest.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }), (e: unknown) => {
      assert.ok(e instanceof TransientDeliveryError, String(e));
      assert.equal(e.retryAfterMs, HOUR_MS, `Retry-After ${value} → ${e.retryAfterMs} ms`);
      // The retry it schedules is no later either (even with a backoff cap configured above it).
      assert.equal(deliveryDelay(1, { baseMs: 1000, maxMs: 900_000 }, e.retryAfterMs), HOUR_MS);
      return true;
    });
  });
}

test('a Retry-After in the past or malformed gives no server delay', async (t) => {
  const dest = new DicomwebDestination('pacs', { url: `${base}/dicom-web`, timeoutMs: 5_000 });
  t.after(() => dest.close());
  for (const value of ['Thu, 01 Jan 1970 00:00:00 GMT', 'soon', '-5']) {
    retryAfter = value;
    await assert.rejects(dest.deliver(PART10, { studyUid: STUDY, sopInstanceUid: SOP }), (e: unknown) => {
      assert.ok(e instanceof TransientDeliveryError, String(e));
      assert.ok((e.retryAfterMs ?? 0) === 0, `Retry-After ${value} → ${e.retryAfterMs}`);
      return true;
    });
  }
});
