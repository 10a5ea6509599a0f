// Every broken file in ../shared/dicom-samples/malformed, sent by storescu (or, where storescu itself refuses
// to read the file, by a raw C-STORE of its bytes) and by STOW-RS: each gets one clear outcome, the same on
// both paths, and the server keeps serving. Plus hostile data sets built here: sequences nested 10,000 deep,
// and the free-disk watermark.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import express from 'express';
import { part10DatasetOffset, readInstanceHeader, encodeFileMetaHeader } from '../../../src/dicom/part10.ts';
import { InstanceAcceptor } from '../../../src/ingest/accept.ts';
import { DiskWatermark } from '../../../src/storage/disk-watermark.ts';
import { createStowRouter } from '../../../src/ingest/stowrs/index.ts';
import {
  SAMPLES,
  dcmtk,
  rawStore,
  startTestDimse,
  storeResponses,
  tempFiles,
  type TestDimse,
} from '../../helpers/ingest.ts';

const AE = 'AIGW_TEST';
const MALFORMED = path.join(SAMPLES, 'malformed');
const SC_CLASS = '1.2.840.10008.5.1.4.1.1.7';
const STORESCU_PROPOSAL: Record<string, string> = {
  '1.2.840.10008.1.2': '-xi',
  '1.2.840.10008.1.2.1': '-xe',
  '1.2.840.10008.1.2.4.90': '-xv',
  '1.2.840.10008.1.2.4.91': '-xw',
};
// dcmtk's names for our failure statuses, and the codes STOW-RS reports for them.
const DCMTK_STATUS: Record<string, number> = {
  Success: 0,
  'Error: CannotUnderstand': 0xc000,
  'Refused: OutOfResources': 0xa700,
  'Error: DataSetDoesNotMatchSOPClass': 0xa900,
};

let dimse: TestDimse;
let stowUrl: string;
let http: Server;

before(async () => {
  dimse = await startTestDimse();
  const disk = new DiskWatermark(dimse.dataDir, 0);
  await disk.refresh();
  const app = express();
  const acceptor = new InstanceAcceptor({ store: dimse.store, disk, onStored: async () => undefined });
  app.use(
    '/dicomweb',
    createStowRouter({ acceptor, maxRequestBytes: 64 * 1024 ** 2, maxInstanceBytes: 64 * 1024 ** 2 }),
  );
  http = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  stowUrl = `http://127.0.0.1:${(http.address() as { port: number }).port}/dicomweb/studies`;
});

after(async () => {
  await new Promise<void>((r) => http.close(() => r()));
  await dimse.close();
});

/** STOW-RS outcome of one file: 0 when stored, else its FailureReason. */
async function stow(file: Buffer): Promise<number> {
  const boundary = 'malformed-test-boundary';
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const res = await fetch(stowUrl, {
    method: 'POST',
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}` },
    body: new Uint8Array(body),
  });
  const json = (await res.json()) as Record<string, { Value?: Record<string, { Value?: number[] }>[] }>;
  if (res.status === 200) return 0;
  assert.equal(res.status, 409, JSON.stringify(json));
  const reason = json['00081198']?.Value?.[0]?.['00081197']?.Value?.[0];
  assert.equal(typeof reason, 'number');
  return reason!;
}

/** DIMSE outcome: storescu where it can read the file, else a raw C-STORE of the file's data set bytes. */
async function cStore(file: string, bytes: Buffer): Promise<{ status: number; by: string }> {
  const header = await readInstanceHeader(file).catch(() => undefined);
  const proposal =
    header?.transferSyntaxUid !== undefined ? STORESCU_PROPOSAL[header.transferSyntaxUid] : undefined;
  const run = await dcmtk('storescu', [
    '-v',
    '-R',
    ...(proposal ? [proposal] : []),
    '-aec',
    AE,
    '127.0.0.1',
    String(dimse.server.port),
    file,
  ]);
  const responses = storeResponses(run.out);
  if (responses.length === 1) {
    const status = DCMTK_STATUS[responses[0]!];
    assert.notEqual(status, undefined, `unexpected storescu status ${responses[0]}`);
    return { status: status!, by: 'storescu' };
  }
  assert.equal(responses.length, 0, run.out);
  assert.match(run.out, /^[EWF]: /m, 'storescu said why it did not send');
  let dataset = bytes;
  try {
    dataset = bytes.subarray(part10DatasetOffset(bytes));
  } catch {
    // no Part-10 header: the bytes are the data set
  }
  const status = await rawStore(
    dimse.server.port,
    'RAW_SCU',
    AE,
    header?.sopClassUid ?? SC_CLASS,
    header?.sopInstanceUid ?? '1.2.826.0.1.3680043.10.1.99',
    dataset,
  );
  assert.notEqual(status, undefined, `no C-STORE response for ${path.basename(file)}`);
  return { status: status!, by: 'raw C-STORE' };
}

test('every malformed sample gets one clear outcome by C-STORE and by STOW-RS, and they agree', async () => {
  const outcomes: Record<string, { dimse: number; stow: number; by: string }> = {};
  for (const name of (await readdir(MALFORMED)).sort()) {
    const file = path.join(MALFORMED, name);
    const bytes = await readFile(file);
    const viaDimse = await cStore(file, bytes);
    const viaStow = await stow(bytes);
    outcomes[name] = { dimse: viaDimse.status, stow: viaStow, by: viaDimse.by };
  }
  const hex = (n: number) => `0x${n.toString(16).toUpperCase()}`;
  for (const [name, o] of Object.entries(outcomes)) {
    assert.ok([0, 0xa700, 0xa900, 0xc000].includes(o.dimse), `${name}: ${hex(o.dimse)}`);
    // One shared acceptor behind both doors: the same bytes get the same verdict.
    assert.equal(hex(o.stow), hex(o.dimse), `${name}: DIMSE (${o.by}) and STOW-RS disagree`);
  }
  // Nearly every element VR UN: dcmtk gives up, but the UIDs decode from UN, so it is kept (as Orthanc does).
  assert.equal(outcomes['all-elements-vr-UN-tcia.dcm']?.stow, 0);
  // Valid enough to keep: real headers whose pixel data is odd or missing, an invalid IS value.
  for (const name of [
    'bad-IS-value-number-of-frames.dcm',
    'j2k-nonconformant-jp2-header.dcm',
    'j2k-pixelrep-mismatch.dcm',
    'no-pixeldata-cr-canon.dcm',
    'no-pixeldata-dx-agfa.dcm',
    'no-pixeldata-enhanced-mr-philips.dcm',
  ]) {
    assert.equal(outcomes[name]?.dimse, 0, `${name} stored by C-STORE`);
    assert.equal(outcomes[name]?.stow, 0, `${name} stored by STOW-RS`);
  }
  // Not storable: absurd dimensions, truncation, no header at all.
  for (const name of [
    'oversized-dimensions-46341x46341.dcm',
    'truncated-pixeldata-MR_truncated.dcm',
    'truncated-mid-element-rtplan.dcm',
    'no-preamble-no-meta-ct_small.dcm',
    'meta-missing-transfer-syntax.dcm',
  ]) {
    assert.equal(outcomes[name]?.stow, 0xc000, `${name} refused by STOW-RS`);
    assert.notEqual(outcomes[name]?.dimse, 0, `${name} refused by C-STORE`);
  }
  // After all that, a normal sender is served as usual and nothing is left half-written.
  const normal = await dcmtk('storescu', [
    '-v',
    '-aec',
    AE,
    '127.0.0.1',
    String(dimse.server.port),
    path.join(SAMPLES, 'xray', 'cr-cervical-lat-mono1-agfa-16x16.dcm'),
  ]);
  assert.deepEqual(storeResponses(normal.out), ['Success']);
  assert.deepEqual(await tempFiles(dimse.store), []);
});

/** Explicit VR LE data set whose private sequence (7777,0010) nests `depth` levels, undefined lengths. */
function deeplyNested(depth: number, sopInstance: string): Buffer {
  const el = (group: number, element: number, vr: string, value: Buffer) => {
    const head = Buffer.alloc(8);
    head.writeUInt16LE(group, 0);
    head.writeUInt16LE(element, 2);
    head.write(vr, 4, 'ascii');
    head.writeUInt16LE(value.length, 6);
    return Buffer.concat([head, value]);
  };
  const uid = (u: string) => Buffer.from(u.length % 2 ? `${u}\0` : u, 'ascii');
  const sqOpen = Buffer.from([0x77, 0x77, 0x10, 0x00, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  const itemOpen = Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
  const itemClose = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
  const sqClose = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
  const open: Buffer[] = [];
  const close: Buffer[] = [];
  for (let i = 0; i < depth; i++) {
    open.push(sqOpen, itemOpen);
    close.push(itemClose, sqClose);
  }
  return Buffer.concat([
    el(0x0008, 0x0016, 'UI', uid(SC_CLASS)),
    el(0x0008, 0x0018, 'UI', uid(sopInstance)),
    el(0x0020, 0x000d, 'UI', uid('1.2.826.0.1.3680043.10.1.1')),
    el(0x0020, 0x000e, 'UI', uid('1.2.826.0.1.3680043.10.1.2')),
    el(0x0029, 0x0010, 'LO', Buffer.from('AIGW TEST ')), // private creator for group 7777 is not checked here
    ...open,
    ...close.reverse(),
  ]);
}

test('sequences nested 10,000 deep are refused on both paths before the parser recurses', async () => {
  const sop = '1.2.826.0.1.3680043.10.1.3';
  const dataset = deeplyNested(10_000, sop);
  const status = await rawStore(dimse.server.port, 'NESTER', AE, SC_CLASS, sop, dataset);
  assert.equal(status, 0xc000);
  const file = Buffer.concat([
    encodeFileMetaHeader({
      sopClassUid: SC_CLASS,
      sopInstanceUid: sop,
      transferSyntaxUid: '1.2.840.10008.1.2.1',
    }),
    dataset,
  ]);
  assert.equal(await stow(file), 0xc000);
  // A shallow one of the same shape is fine.
  const shallow = deeplyNested(8, '1.2.826.0.1.3680043.10.1.4');
  assert.equal(
    await rawStore(dimse.server.port, 'NESTER', AE, SC_CLASS, '1.2.826.0.1.3680043.10.1.4', shallow),
    0,
  );
});

test('below the free-disk watermark, C-STOREs get 0xA700 and nothing is written', async () => {
  const full = await startTestDimse({ minFreeBytes: Number.MAX_SAFE_INTEGER });
  try {
    const run = await dcmtk('storescu', [
      '-v',
      '-aec',
      AE,
      '127.0.0.1',
      String(full.server.port),
      path.join(SAMPLES, 'xray', 'cr-cervical-lat-mono1-agfa-16x16.dcm'),
    ]);
    assert.deepEqual(storeResponses(run.out), ['Refused: OutOfResources'], run.out);
    assert.equal(full.stored.length, 0);
    assert.deepEqual(await full.store.spool.listStudies(), []);
    assert.deepEqual(await tempFiles(full.store), []);
  } finally {
    await full.close();
  }
});
