import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { UnrecoverableError } from 'bullmq';
import { DicomwebDestination } from '../../../src/delivery/destinations/dicomweb.ts';
import { FolderDestination } from '../../../src/delivery/destinations/folder.ts';
import { PermanentDeliveryError, TransientDeliveryError } from '../../../src/delivery/destination.ts';
import { createDestinations, LOCAL_FOLDER_DESTINATION } from '../../../src/delivery/registry.ts';
import { configSchema } from '../../../src/config/schema.ts';
import { startOrthanc, type OrthancInstance } from '../../helpers/orthanc.ts';
import { hemorrhageReport } from '../../helpers/reports.ts';
import { multipartParts } from '../../helpers/sr-content.ts';
import { freePort, parseDicom } from '../../helpers/dicom-tools.ts';

type Ds = Record<string, unknown>;

const SR_UID = '2.25.200000000000000000000000000000000001';
const SR_SERIES = '2.25.200000000000000000000000000000000002';
let orthanc: OrthancInstance;
let sr: Buffer;
let studyUid: string;
const meta = () => ({ studyUid, sopInstanceUid: SR_UID });

before(async () => {
  orthanc = await startOrthanc();
  ({ sr, studyUid } = hemorrhageReport({
    slices: ['I10.dcm', 'I20.dcm'],
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    now: new Date(2024, 0, 2, 3, 4, 5),
  }));
});

after(async () => {
  await orthanc?.stop();
});

async function qidoInstances(): Promise<Ds[]> {
  const res = await orthanc.rest(`/dicom-web/studies/${studyUid}/instances`, {
    headers: { Accept: 'application/dicom+json' },
  });
  assert.equal(res.status, 200);
  return (await res.json()) as Ds[];
}

test('STOW-RS delivers the SR to Orthanc; QIDO finds it and WADO returns the same instance', async () => {
  const dest = new DicomwebDestination('orthanc', { url: orthanc.dicomwebUrl, timeoutMs: 30_000 });
  const receipt = await dest.deliver(sr, meta());
  assert.equal(receipt.status, 200);
  assert.deepEqual(receipt.warnings, []);

  const found = (await qidoInstances()).filter((i) => (i['00080018'] as Ds)?.Value?.toString() === SR_UID);
  assert.equal(found.length, 1);

  const res = await orthanc.rest(`/dicom-web/studies/${studyUid}/series/${SR_SERIES}/instances/${SR_UID}`, {
    headers: { Accept: 'multipart/related; type="application/dicom"' },
  });
  assert.equal(res.status, 200);
  const parts = multipartParts(Buffer.from(await res.arrayBuffer()), res.headers.get('content-type') ?? '');
  assert.equal(parts.length, 1);
  const back = parseDicom(parts[0]!);
  assert.equal(back.SOPInstanceUID, SR_UID);
  assert.equal(back.StudyInstanceUID, studyUid);
  assert.equal(back.Modality, 'SR');
});

test('delivering the same SR again is idempotent: still one instance', async () => {
  const dest = new DicomwebDestination('orthanc', { url: orthanc.dicomwebUrl, timeoutMs: 30_000 });
  await dest.deliver(sr, meta());
  await dest.deliver(sr, meta());
  const found = (await qidoInstances()).filter((i) => (i['00080018'] as Ds)?.Value?.toString() === SR_UID);
  assert.equal(found.length, 1);
  const stats = await orthanc.restJson<{ CountInstances: number }>('/statistics');
  assert.equal(stats.CountInstances, 1);
});

test('a 404 from a wrong path is a permanent (unrecoverable) failure', async () => {
  const dest = new DicomwebDestination('wrong', {
    url: `${orthanc.url}/no-such-dicomweb`,
    timeoutMs: 30_000,
  });
  await assert.rejects(dest.deliver(sr, meta()), (e: unknown) => {
    assert.ok(e instanceof PermanentDeliveryError);
    assert.ok(e instanceof UnrecoverableError, 'BullMQ must see it as unrecoverable');
    assert.equal(e.status, 404);
    return true;
  });
});

test('Orthanc rejecting an unreadable object is permanent', async () => {
  const junk = Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), Buffer.from('this is not a data set')]);
  const dest = new DicomwebDestination('orthanc', { url: orthanc.dicomwebUrl, timeoutMs: 30_000 });
  await assert.rejects(dest.deliver(junk, meta()), (e: unknown) => {
    assert.ok(e instanceof PermanentDeliveryError, String(e));
    return true;
  });
});

test('connection refused is transient, not unrecoverable', async () => {
  const port = await freePort();
  const dest = new DicomwebDestination('down', {
    url: `http://127.0.0.1:${port}/dicom-web`,
    timeoutMs: 5_000,
  });
  await assert.rejects(dest.deliver(sr, meta()), (e: unknown) => {
    assert.ok(e instanceof TransientDeliveryError, String(e));
    assert.ok(!(e instanceof UnrecoverableError));
    assert.match(e.message, /ECONNREFUSED/);
    return true;
  });
});

test('a Part-10 check and UID validation happen before anything is sent', async () => {
  const dest = new DicomwebDestination('orthanc', { url: orthanc.dicomwebUrl, timeoutMs: 30_000 });
  await assert.rejects(dest.deliver(Buffer.from('nope'), meta()), PermanentDeliveryError);
  await assert.rejects(dest.deliver(sr, { studyUid, sopInstanceUid: '1.2.x' }), PermanentDeliveryError);
});

// A scripted peer for STOW-RS answers Orthanc does not give on demand (5xx, 429, 202, failures).
interface Captured {
  method?: string;
  url?: string;
  headers?: IncomingMessage['headers'];
  body?: Buffer;
}
async function scriptedPeer(
  respond: (res: ServerResponse) => void,
): Promise<{ url: string; captured: Captured; close(): Promise<void> }> {
  const captured: Captured = {};
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      Object.assign(captured, {
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks),
      });
      respond(res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/dicomweb/`,
    captured,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const sopRef = (uid: string, extra: Ds = {}) => ({
  '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.88.33'] },
  '00081155': { vr: 'UI', Value: [uid] },
  ...extra,
});
const json =
  (status: number, body: unknown, headers: Record<string, string> = {}) =>
  (res: ServerResponse) => {
    res.writeHead(status, { 'Content-Type': 'application/dicom+json', ...headers });
    res.end(JSON.stringify(body));
  };

test('the STOW-RS request is a well-formed multipart/related POST to /studies', async (t) => {
  const peer = await scriptedPeer(json(200, { '00081199': { vr: 'SQ', Value: [sopRef(SR_UID)] } }));
  t.after(() => peer.close());
  const dest = new DicomwebDestination('peer', {
    url: peer.url,
    timeoutMs: 10_000,
    headers: { Authorization: 'Bearer t0k' },
  });
  const receipt = await dest.deliver(sr, meta());
  assert.equal(receipt.status, 200);
  const c = peer.captured;
  assert.equal(c.method, 'POST');
  assert.equal(c.url, '/dicomweb/studies');
  assert.equal(c.headers?.accept, 'application/dicom+json');
  assert.equal(c.headers?.authorization, 'Bearer t0k');
  const ct = c.headers?.['content-type'] ?? '';
  assert.match(ct, /^multipart\/related; type="application\/dicom"; boundary=/);
  const parts = multipartParts(c.body!, ct);
  assert.equal(parts.length, 1);
  assert.ok(parts[0]!.equals(sr), 'the part is exactly the Part-10 file');
});

test('STOW-RS answers are classified: transient vs permanent vs success with warnings', async (t) => {
  const cases: Array<{
    name: string;
    respond: (res: ServerResponse) => void;
    check: (p: Promise<unknown>) => Promise<void>;
  }> = [
    {
      name: '503',
      respond: json(503, {}),
      check: (p) =>
        assert.rejects(p, (e: unknown) => e instanceof TransientDeliveryError && e.status === 503),
    },
    {
      name: '408',
      respond: json(408, {}),
      check: (p) => assert.rejects(p, TransientDeliveryError),
    },
    {
      name: '429 with Retry-After',
      respond: json(429, {}, { 'Retry-After': '7' }),
      check: (p) =>
        assert.rejects(p, (e: unknown) => e instanceof TransientDeliveryError && e.retryAfterMs === 7000),
    },
    {
      name: '409 with FailedSOPSequence',
      respond: json(409, {
        '00081198': { vr: 'SQ', Value: [sopRef(SR_UID, { '00081197': { vr: 'US', Value: [0xc000] } })] },
      }),
      check: (p) =>
        assert.rejects(p, (e: unknown) => e instanceof PermanentDeliveryError && /0xC000/.test(e.message)),
    },
    {
      name: '200 with FailedSOPSequence',
      respond: json(200, {
        '00081198': { vr: 'SQ', Value: [sopRef(SR_UID, { '00081197': { vr: 'US', Value: [0x0122] } })] },
      }),
      check: (p) =>
        assert.rejects(
          p,
          (e: unknown) => e instanceof UnrecoverableError && /0x0122/.test((e as Error).message),
        ),
    },
    {
      name: '200 that does not list our instance',
      respond: json(200, { '00081199': { vr: 'SQ', Value: [sopRef('1.2.3')] } }),
      check: (p) => assert.rejects(p, PermanentDeliveryError),
    },
    {
      name: '400 with a text body',
      respond: (res) => {
        res.writeHead(400, { 'Content-Type': 'text/plain' });
        res.end('bad multipart\u0000\u0007 body');
      },
      check: (p) =>
        assert.rejects(
          p,
          (e: unknown) =>
            e instanceof PermanentDeliveryError && e.status === 400 && /bad multipart body/.test(e.message),
        ),
    },
    {
      name: 'redirect',
      respond: (res) => {
        res.writeHead(302, { Location: 'http://127.0.0.1:1/elsewhere' });
        res.end();
      },
      check: (p) => assert.rejects(p, PermanentDeliveryError),
    },
    {
      name: '202 with a warning',
      respond: json(202, {
        '00081199': { vr: 'SQ', Value: [sopRef(SR_UID, { '00081196': { vr: 'US', Value: [0xb000] } })] },
      }),
      check: async (p) => {
        const r = (await p) as { status: number; warnings: string[] };
        assert.equal(r.status, 202);
        assert.ok(
          r.warnings.some((w) => w.includes('0xB000')),
          r.warnings.join(),
        );
      },
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const peer = await scriptedPeer(c.respond);
      try {
        const dest = new DicomwebDestination('peer', { url: peer.url, timeoutMs: 10_000 });
        await c.check(dest.deliver(sr, meta()));
      } finally {
        await peer.close();
      }
    });
  }
});

test('a peer that never answers times out as a transient failure', async (t) => {
  const peer = await scriptedPeer(() => undefined);
  t.after(() => peer.close());
  const dest = new DicomwebDestination('slow', { url: peer.url, timeoutMs: 300 });
  await assert.rejects(dest.deliver(sr, meta()), (e: unknown) => {
    assert.ok(e instanceof TransientDeliveryError);
    assert.match(e.message, /timed out/);
    return true;
  });
});

test('folder destination writes <study>/<sop>.dcm atomically and idempotently', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'aigw-folder-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const dest = new FolderDestination('archive', root);
  const receipt = await dest.deliver(sr, meta());
  const expected = path.join(root, studyUid, `${SR_UID}.dcm`);
  // The receipt names the destination, not the host path (it is kept in Redis as the job's return value).
  assert.equal(receipt.location, `folder://archive/${studyUid}/${SR_UID}.dcm`);
  assert.ok((await readFile(expected)).equals(sr));
  await dest.deliver(sr, meta());
  assert.deepEqual(await readdir(path.join(root, studyUid)), [`${SR_UID}.dcm`], 'no temp files left behind');

  // UIDs never become path traversal.
  await assert.rejects(
    dest.deliver(sr, { studyUid: '../../etc', sopInstanceUid: SR_UID }),
    PermanentDeliveryError,
  );
  assert.deepEqual(await readdir(root), [studyUid]);

  // A write that cannot happen is transient (an operator can fix the disk) and leaves nothing.
  const blocked = path.join(root, 'blocked');
  await writeFile(blocked, 'a file where the study folder should be');
  const other = new FolderDestination('blocked', blocked);
  await assert.rejects(other.deliver(sr, meta()), TransientDeliveryError);
  assert.deepEqual((await readdir(root)).sort(), ['blocked', studyUid].sort());
});

test('registry builds configured destinations plus the built-in local folder', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-reg-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  const config = configSchema.parse({
    dataDir,
    destinations: {
      pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl },
      archive: { kind: 'folder', path: path.join(dataDir, 'archive') },
    },
    defaultDestination: 'pacs',
  });
  const map = createDestinations(config);
  assert.deepEqual([...map.keys()].sort(), ['archive', LOCAL_FOLDER_DESTINATION, 'pacs'].sort());
  assert.equal(map.get('pacs')!.kind, 'dicomweb');
  assert.equal(map.get('archive')!.kind, 'folder');
  const local = map.get(LOCAL_FOLDER_DESTINATION)!;
  const receipt = await local.deliver(sr, meta());
  assert.equal(receipt.location, `folder://${LOCAL_FOLDER_DESTINATION}/${studyUid}/${SR_UID}.dcm`);
  // Written under <dataDir>/results; the receipt (kept in Redis) names it without the host path.
  assert.deepEqual(await readFile(path.join(dataDir, 'results', studyUid, `${SR_UID}.dcm`)), sr);

  assert.throws(
    () => createDestinations(configSchema.parse({ dataDir, defaultDestination: 'missing' })),
    /missing/,
  );
});

test('Orthanc keeps delivered data across restart()', async () => {
  await orthanc.restart();
  const found = (await qidoInstances()).filter((i) => (i['00080018'] as Ds)?.Value?.toString() === SR_UID);
  assert.equal(found.length, 1);
});

test('STOW-RS with configured headers reaches an Orthanc that requires authentication', async (t) => {
  const secured = await startOrthanc({ auth: { user: 'gw', password: 's3cret' }, aet: 'SECURED' });
  t.after(() => secured.stop());
  assert.equal((await fetch(`${secured.url}/system`)).status, 401);
  const anonymous = new DicomwebDestination('anon', { url: secured.dicomwebUrl, timeoutMs: 30_000 });
  await assert.rejects(
    anonymous.deliver(sr, meta()),
    (e: unknown) => e instanceof PermanentDeliveryError && e.status === 401,
  );
  const dest = new DicomwebDestination('secured', {
    url: secured.dicomwebUrl,
    timeoutMs: 30_000,
    headers: secured.authHeaders,
  });
  assert.equal((await dest.deliver(sr, meta())).status, 200);
  const stats = await secured.restJson<{ CountInstances: number }>('/statistics');
  assert.equal(stats.CountInstances, 1);
});
