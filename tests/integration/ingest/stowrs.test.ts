// STOW-RS ingest over real HTTP: instances stored byte for byte through the same acceptor as C-STORE, the
// PS3.18 response (ReferencedSOPSequence / FailedSOPSequence with FailureReason, 200/202/409), auth, media
// types, size limits and the free-disk watermark.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import express from 'express';
import { readInstanceHeader } from '../../../src/dicom/part10.ts';
import { InstanceAcceptor } from '../../../src/ingest/accept.ts';
import type { InstanceRecord } from '../../../src/pipeline/instance-record.ts';
import { DiskWatermark } from '../../../src/storage/disk-watermark.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { createStowRouter, type StowRouterOptions } from '../../../src/ingest/stowrs/index.ts';
import { SAMPLES, tempFiles } from '../../helpers/ingest.ts';

const CT = path.join(SAMPLES, 'compressed', 'same-ct-image');
const FILES = [
  path.join(CT, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm'),
  path.join(SAMPLES, 'xray', 'cr-extremity-mono1-fuji-wg04-RG3-j2k-lossless.dcm'),
  path.join(SAMPLES, 'compressed', 'vendor', 'sc-dclunie-image_dfl_1.2.840.10008.1.2.1.99_deflated.dcm'),
];
const J2K_CT = path.join(CT, 'ct_1.2.840.10008.1.2.4.90_jpeg2000-lossless.dcm');
const NO_META = path.join(SAMPLES, 'malformed', 'no-preamble-no-meta-ct_small.dcm');
const TOKEN = 'stow-test-token-0123456789';

interface Harness {
  url: string;
  store: FilesystemObjectStore;
  stored: InstanceRecord[];
  close(): Promise<void>;
}

const harnesses: Harness[] = [];

async function startStow(options: Partial<StowRouterOptions> = {}, minFreeBytes = 0): Promise<Harness> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-stow-'));
  const store = new FilesystemObjectStore(dataDir);
  await store.init();
  const stored: InstanceRecord[] = [];
  const disk = new DiskWatermark(dataDir, minFreeBytes);
  await disk.refresh();
  const acceptor = new InstanceAcceptor({ store, disk, onStored: async (i) => void stored.push(i) });
  const app = express();
  app.use(
    '/dicomweb',
    createStowRouter({
      acceptor,
      maxRequestBytes: 64 * 1024 ** 2,
      maxInstanceBytes: 16 * 1024 ** 2,
      ...options,
    }),
  );
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as { port: number };
  const h: Harness = {
    url: `http://127.0.0.1:${port}/dicomweb`,
    store,
    stored,
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  harnesses.push(h);
  return h;
}

const BOUNDARY = 'aigw-test-boundary-7f3a';

function multipart(parts: { body: Buffer; type?: string }[]): Buffer {
  const chunks: Buffer[] = [Buffer.from('preamble to ignore\r\n')];
  for (const p of parts) {
    chunks.push(Buffer.from(`--${BOUNDARY}\r\nContent-Type: ${p.type ?? 'application/dicom'}\r\n\r\n`));
    chunks.push(p.body, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(chunks);
}

async function post(url: string, body: Buffer, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'Content-Type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`,
      ...headers,
    },
    body: new Uint8Array(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    json: text.startsWith('{') ? (JSON.parse(text) as Record<string, { Value?: unknown[] }>) : {},
    text,
  };
}

type Item = Record<string, { Value?: unknown[] }>;
const seq = (json: Record<string, { Value?: unknown[] }>, tag: string) => (json[tag]?.Value ?? []) as Item[];
const val = (item: Item, tag: string) => item[tag]?.Value?.[0];

let h: Harness;
before(async () => {
  h = await startStow();
});
after(async () => {
  for (const x of harnesses) await x.close();
});

test('STOW-RS stores every part byte for byte and answers 200 with ReferencedSOPSequence', async () => {
  const bodies = await Promise.all(FILES.map((f) => readFile(f)));
  const r = await post(`${h.url}/studies`, multipart(bodies.map((body) => ({ body }))));
  assert.equal(r.status, 200, r.text);
  const refs = seq(r.json, '00081199');
  assert.equal(refs.length, FILES.length);
  for (const [i, file] of FILES.entries()) {
    const header = await readInstanceHeader(file);
    const ref = refs.find((x) => val(x, '00081155') === header.sopInstanceUid);
    assert.ok(ref, `reference for ${path.basename(file)}`);
    assert.equal(val(ref, '00081150'), header.sopClassUid);
    assert.match(
      String(val(ref, '00081190')),
      new RegExp(`/studies/${header.studyUid}/series/${header.seriesUid}/instances/`),
    );
    const inst = h.stored.find((s) => s.sopInstanceUid === header.sopInstanceUid);
    assert.ok(inst);
    assert.deepEqual(await h.store.get(objectKey.instance(inst)), bodies[i], 'stored as sent');
  }
  assert.equal(r.json['00081198'], undefined, 'no failures');
  assert.deepEqual(await tempFiles(h.store), []);
});

test('partial failure answers 202 with FailedSOPSequence reasons; all failed answers 409', async () => {
  const good = await readFile(FILES[0]!);
  const header = await readInstanceHeader(FILES[0]!);
  const mixed = await post(
    `${h.url}/studies/${header.studyUid}`,
    multipart([
      { body: good },
      { body: await readFile(NO_META) },
      { body: await readFile(FILES[2]!) }, // another study than the URL names
      { body: Buffer.from('{}'), type: 'application/json' },
    ]),
  );
  assert.equal(mixed.status, 202, mixed.text);
  assert.equal(seq(mixed.json, '00081199').length, 1);
  const reasons = seq(mixed.json, '00081198').map((x) => val(x, '00081197'));
  assert.deepEqual(reasons, [0xc000, 0xa900, 0xc000]);
  const mismatch = seq(mixed.json, '00081198')[1]!;
  assert.equal(val(mismatch, '00081155'), (await readInstanceHeader(FILES[2]!)).sopInstanceUid);
  assert.match(String(val(mixed.json as Item, '00081190')), new RegExp(`/studies/${header.studyUid}$`));

  const none = await post(`${h.url}/studies`, multipart([{ body: await readFile(NO_META) }]));
  assert.equal(none.status, 409, none.text);
  assert.deepEqual(
    seq(none.json, '00081198').map((x) => val(x, '00081197')),
    [0xc000],
  );
});

test('requests that are not multipart/related application/dicom are refused with 4xx', async () => {
  const body = multipart([{ body: await readFile(FILES[0]!) }]);
  const json = await fetch(`${h.url}/studies`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/dicom' },
    body: new Uint8Array(body),
  });
  assert.equal(json.status, 415);
  const meta = await post(`${h.url}/studies`, body, {
    'Content-Type': `multipart/related; type="application/dicom+json"; boundary=${BOUNDARY}`,
  });
  assert.equal(meta.status, 415);
  assert.equal(
    (await post(`${h.url}/studies`, body, { 'Content-Type': 'multipart/related; type="application/dicom"' }))
      .status,
    400,
  );
  assert.equal((await post(`${h.url}/studies/not-a-uid`, body)).status, 400);
  assert.equal((await post(`${h.url}/studies`, Buffer.from('no boundary anywhere'))).status, 400);
  const cut = body.subarray(0, body.length - 200);
  assert.equal((await post(`${h.url}/studies`, cut)).status, 400, 'body cut inside a part');
  assert.deepEqual(await tempFiles(h.store), []);
});

test('auth: bearer token or basic user when configured', async () => {
  const secured = await startStow({
    auth: { bearer: [TOKEN], basic: [{ username: 'pacs', password: 'pacs-password' }] },
  });
  const body = multipart([{ body: await readFile(J2K_CT) }]);
  const anonymous = await post(`${secured.url}/studies`, body);
  assert.equal(anonymous.status, 401);
  assert.equal(
    (await post(`${secured.url}/studies`, body, { Authorization: 'Bearer wrong-token-wrong-token' })).status,
    401,
  );
  assert.equal(
    (await post(`${secured.url}/studies`, body, { Authorization: `Bearer ${TOKEN}` })).status,
    200,
  );
  const basic = `Basic ${Buffer.from('pacs:pacs-password').toString('base64')}`;
  assert.equal((await post(`${secured.url}/studies`, body, { Authorization: basic })).status, 200);
  assert.equal(secured.stored.length, 2);
});

test('size limits: 413 for a request too large, A700 for an instance too large; 503 below the disk watermark', async () => {
  const small = await startStow({ maxRequestBytes: 500_000, maxInstanceBytes: 200_000 });
  const big = await readFile(FILES[0]!); // ~520 kB
  assert.equal((await post(`${small.url}/studies`, multipart([{ body: big }]))).status, 413);
  // Without Content-Length the limit is enforced while streaming.
  const streamed = await fetch(`${small.url}/studies`, {
    method: 'POST',
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}` },
    body: new Blob([new Uint8Array(multipart([{ body: big }]))]).stream(),
    duplex: 'half',
  } as RequestInit);
  assert.equal(streamed.status, 413);
  const j2k = await readFile(J2K_CT); // ~170 kB fits; the same padded to ~230 kB does not
  const tooBig = await post(
    `${small.url}/studies`,
    multipart([{ body: j2k }, { body: Buffer.concat([j2k, Buffer.alloc(60_000)]) }]),
  );
  assert.equal(tooBig.status, 202, tooBig.text);
  assert.deepEqual(
    seq(tooBig.json, '00081198').map((x) => val(x, '00081197')),
    [0xa700],
  );
  assert.deepEqual(await tempFiles(small.store), []);

  const full = await startStow({}, Number.MAX_SAFE_INTEGER);
  const refused = await post(`${full.url}/studies`, multipart([{ body: j2k }]));
  assert.equal(refused.status, 503);
  assert.match(refused.text, /watermark/);
  assert.equal(full.stored.length, 0);
});
