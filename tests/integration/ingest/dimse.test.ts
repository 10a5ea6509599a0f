// The DIMSE front door against real senders: dcmtk echoscu/storescu/dcmsend push real X-rays and one CT slice
// in many transfer syntaxes; the stored files are checked byte for byte (or attribute for attribute where the
// sender itself re-encodes) against the source files. Hostile commands come from a dcmjs-dimse client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dimse from 'dcmjs-dimse';
import {
  IMPLEMENTATION_CLASS_UID,
  Part10Error,
  part10DatasetOffset,
  readInstanceHeader,
  readNaturalizedHeader,
} from '../../../src/dicom/part10.ts';
import { startDimseServer, type DimseServer, type InstanceRecord } from '../../../src/ingest/dimse/index.ts';
import type { Spool } from '../../../src/storage/spool.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { leftoverTempFiles } from '../../helpers/ingest.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const samples = path.join(path.resolve(repoRoot, '../shared'), 'dicom-samples');
const XRAY_DIR = path.join(samples, 'xray');
const CT_TS_DIR = path.join(samples, 'compressed', 'same-ct-image');

const AE = 'AIGW_TEST';
const DEFLATED = '1.2.840.10008.1.2.1.99';

// storescu proposes a file's compressed transfer syntax only when told to: one option per syntax.
const STORESCU_PROPOSAL: Record<string, string> = {
  '1.2.840.10008.1.2': '-xi',
  '1.2.840.10008.1.2.1': '-xe',
  '1.2.840.10008.1.2.2': '-xb',
  '1.2.840.10008.1.2.1.99': '-xd',
  '1.2.840.10008.1.2.4.50': '-xy',
  '1.2.840.10008.1.2.4.51': '-xx',
  '1.2.840.10008.1.2.4.70': '-xs',
  '1.2.840.10008.1.2.4.80': '-xt',
  '1.2.840.10008.1.2.4.81': '-xu',
  '1.2.840.10008.1.2.4.90': '-xv',
  '1.2.840.10008.1.2.4.91': '-xw',
  '1.2.840.10008.1.2.5': '-xr',
};

interface Run {
  code: number;
  out: string;
}

/** Runs a dcmtk tool; never rejects on a non-zero exit. TCP_NODELAY=1 keeps dcmtk from waiting on Nagle. */
function dcmtk(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, TCP_NODELAY: '1' }, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(err);
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, out: `${stdout}${stderr}` });
      },
    );
  });
}

let dataDir: string;
let spool: Spool;
let server: DimseServer;
const recorded: InstanceRecord[] = [];
let indexFailure: Error | undefined;

before(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-dimse-'));
  const store = new FilesystemObjectStore(dataDir);
  await store.init();
  spool = store.spool;
  server = await startDimseServer({
    aeTitle: AE,
    host: '127.0.0.1',
    port: 0,
    maxPduLength: 65536,
    store,
    dataDir,
    onStored: async (inst) => {
      if (indexFailure) throw indexFailure;
      recorded.push(inst);
    },
  });
});

after(async () => {
  await server?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

function storescu(file: string, ts: string, callingAe: string, calledAe = AE): Promise<Run> {
  const proposal = STORESCU_PROPOSAL[ts];
  assert.ok(proposal, `no storescu proposal option for ${ts}`);
  return dcmtk('storescu', [
    '-R',
    proposal,
    '-aet',
    callingAe,
    '-aec',
    calledAe,
    '127.0.0.1',
    String(server.port),
    file,
  ]);
}

/** dcmdump of the data set only, without the encoding details a sender may legitimately change. */
async function datasetDump(file: string): Promise<string[]> {
  const { code, out } = await dcmtk('dcmdump', ['-q', '+L', file]);
  assert.equal(code, 0, out);
  const lines = out.split('\n');
  return (
    lines
      .slice(lines.findIndex((l) => l.startsWith('# Dicom-Data-Set')))
      // Group lengths and delimiters are encoding, which dcmtk recomputes when it sends.
      .filter((l) => !/Delimitation/.test(l) && !/^\s*\([0-9a-f]{4},0000\) UL/.test(l))
      .map((l) =>
        l
          .replace(/\((Sequence|Item) with (explicit|undefined) length #=\d+\)/, '($1)')
          .replace(/\s+#.*$/, '')
          .trimEnd(),
      )
  );
}

/**
 * Whether dcmtk sends this file's data set without re-encoding it: it rewrites undefined-length sequences
 * with explicit lengths, pads odd-length values, and re-deflates deflated data sets.
 */
async function senderKeepsBytes(file: string, ts: string): Promise<boolean> {
  if (ts === DEFLATED) return false;
  const { out } = await dcmtk('dcmdump', [file]);
  return !/undefined length|is odd|not a multiple of 2/.test(out);
}

/** Sends one file with storescu (or dcmsend where storescu cannot propose its syntax) and checks the result. */
/** storescu -v as modality XRAY_MOD: the log shows each store response's status. */
function storeVerbose(file: string) {
  return dcmtk('storescu', [
    '-v',
    '-R',
    '-aet',
    'XRAY_MOD',
    '-aec',
    AE,
    '127.0.0.1',
    String(server.port),
    file,
  ]);
}

async function sendAndVerify(file: string, callingAe: string): Promise<{ byteIdentical: boolean }> {
  const source = await readInstanceHeader(file);
  const ts = source.transferSyntaxUid!;
  const before = recorded.length;
  const run =
    ts in STORESCU_PROPOSAL
      ? await storescu(file, ts, callingAe)
      : await dcmtk('dcmsend', [
          '-dn',
          '-aet',
          callingAe,
          '-aec',
          AE,
          '127.0.0.1',
          String(server.port),
          file,
        ]);
  assert.equal(run.code, 0, `${path.basename(file)}: ${run.out}`);
  assert.equal(recorded.length, before + 1, `${path.basename(file)} was not indexed exactly once`);
  const inst = recorded.at(-1)!;

  // What onStored saw.
  assert.equal(inst.studyUid, source.studyUid);
  assert.equal(inst.seriesUid, source.seriesUid);
  assert.equal(inst.sopInstanceUid, source.sopInstanceUid);
  assert.equal(inst.sopClassUid, source.sopClassUid);
  assert.equal(inst.transferSyntaxUid, ts, 'stored in the transfer syntax it was sent in');
  assert.equal(inst.modality, source.modality);
  assert.equal(inst.rows, source.rows);
  assert.equal(inst.columns, source.columns);
  assert.equal(inst.callingAe, callingAe);
  assert.equal(inst.callingAddress.replace(/^::ffff:/, ''), '127.0.0.1');
  assert.ok(Number.isFinite(inst.receivedAt) && inst.receivedAt > 0);
  assert.equal('path' in inst, false, 'the record carries no host path');
  const storedPath = spool.instancePath(inst);

  // The stored file: a valid Part-10 file with our meta header and the sender's data set.
  const stored = await readFile(storedPath);
  assert.equal(inst.size, stored.length);
  const storedHeader = await readInstanceHeader(storedPath);
  assert.equal(storedHeader.transferSyntaxUid, ts);
  const meta = await dcmtk('dcmdump', [
    '-M',
    '+P',
    '0002,0012',
    '+P',
    '0002,0016',
    '+P',
    '0002,0013',
    storedPath,
  ]);
  assert.match(meta.out, new RegExp(`\\[${IMPLEMENTATION_CLASS_UID.replace(/\./g, '\\.')}\\]`));
  assert.match(meta.out, new RegExp(`AE \\[${callingAe}\\]`));
  assert.match(meta.out, /SH \[AIGW_0_1\]/);

  assert.deepEqual(
    await datasetDump(storedPath),
    await datasetDump(file),
    `${path.basename(file)}: data set differs`,
  );
  const src = await readFile(file);
  const byteIdentical = stored
    .subarray(part10DatasetOffset(stored))
    .equals(src.subarray(part10DatasetOffset(src)));
  if (await senderKeepsBytes(file, ts)) {
    assert.ok(byteIdentical, `${path.basename(file)}: stored data set bytes differ from the source`);
  }
  return { byteIdentical };
}

test('C-ECHO succeeds', async () => {
  const run = await dcmtk('echoscu', ['-aet', 'ECHOER', '-aec', AE, '127.0.0.1', String(server.port)]);
  assert.equal(run.code, 0, run.out);
});

test('a wrong called AE title is rejected', async () => {
  const run = await dcmtk('echoscu', [
    '-v',
    '-aet',
    'ECHOER',
    '-aec',
    'NOT_US',
    '127.0.0.1',
    String(server.port),
  ]);
  assert.notEqual(run.code, 0);
  assert.match(run.out, /Called AE Title Not Recognized/i);
  const store = await storescu(
    path.join(XRAY_DIR, 'cr-cervical-lat-mono1-agfa-16x16.dcm'),
    '1.2.840.10008.1.2.1',
    'XR1',
    'NOT_US',
  );
  assert.notEqual(store.code, 0);
});

test('real chest and extremity X-rays are stored as sent', async () => {
  const files = (await readdir(XRAY_DIR)).filter((f) => f.endsWith('.dcm')).sort();
  assert.ok(files.length >= 4);
  let identical = 0;
  for (const f of files) {
    if ((await sendAndVerify(path.join(XRAY_DIR, f), 'XRAY_MOD')).byteIdentical) identical++;
  }
  assert.ok(identical >= 2, 'the uncompressed radiographs must be byte-identical');
});

test('one CT slice in every transfer syntax is stored in that syntax', async () => {
  const files = (await readdir(CT_TS_DIR)).filter((f) => f.endsWith('.dcm')).sort();
  assert.ok(files.length >= 13);
  const seenTs = new Set<string>();
  let identical = 0;
  for (const f of files) {
    const { byteIdentical } = await sendAndVerify(path.join(CT_TS_DIR, f), 'CT_MOD');
    if (byteIdentical) identical++;
    seenTs.add(recorded.at(-1)!.transferSyntaxUid);
  }
  assert.equal(seenTs.size, files.length, 'each file kept its own transfer syntax');
  assert.ok(identical >= 8, `only ${identical} data sets were byte-identical`);
  // Lossless transcodings kept the SOP Instance UID: their resends replaced one file instead of adding files.
  const ct = recorded.slice(-files.length);
  const distinct = new Set(ct.map((i) => spool.instancePath(i)));
  assert.ok(distinct.size < files.length, 'some files share a SOP instance');
  const series = await spool.listInstances(ct[0]!.studyUid);
  assert.equal(series.length, 1);
  assert.deepEqual(series[0]!.paths, [...distinct].sort());
  assert.deepEqual(await leftoverTempFiles(spool), [], 'no temp files left behind');
});

test('an onStored failure answers 0xA700 and the server keeps serving', async () => {
  const file = path.join(XRAY_DIR, 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
  const before = recorded.length;
  indexFailure = new Error('study index unavailable');
  try {
    const failed = await storeVerbose(file);
    // storescu exits 0 on a refused store; its log shows the status.
    assert.match(failed.out, /Received Store Response \(Refused: OutOfResources\)/, failed.out);
    assert.doesNotMatch(failed.out, /Received Store Response \(Success\)/);
  } finally {
    indexFailure = undefined;
  }
  assert.equal(recorded.length, before);
  await sendAndVerify(file, 'XRAY_MOD');
});

test('a spool write failure answers 0xA700 and the next store succeeds', async () => {
  const file = path.join(XRAY_DIR, 'cr-cervical-lat-mono1-agfa-16x16.dcm');
  const before = recorded.length;
  // Without its temp directory the spool cannot open a file: the same path as a full or failed disk.
  await rm(spool.tmpDir, { recursive: true });
  const failed = await storeVerbose(file);
  assert.match(failed.out, /Received Store Response \(Refused: OutOfResources\)/, failed.out);
  assert.equal(recorded.length, before);
  await spool.init();
  await sendAndVerify(file, 'XRAY_MOD');
});

test('parallel associations each store a whole CT series', async () => {
  const seriesDir = path.join(samples, 'ct-series', 'philips-ingenuity-head-phantom-5mm');
  const files = (await readdir(seriesDir)).filter((f) => f.endsWith('.dcm')).sort();
  const before = recorded.length;
  const senders = ['CT_A', 'CT_B', 'CT_C'].map((aet, i) =>
    dcmtk('storescu', [
      '-R',
      '-aet',
      aet,
      '-aec',
      AE,
      '127.0.0.1',
      String(server.port),
      ...files.filter((_, j) => j % 3 === i).map((f) => path.join(seriesDir, f)),
    ]),
  );
  for (const run of await Promise.all(senders)) assert.equal(run.code, 0, run.out);
  const stored = recorded.slice(before);
  assert.equal(stored.length, files.length);
  assert.equal(new Set(stored.map((i) => i.sopInstanceUid)).size, files.length);
  assert.deepEqual(new Set(stored.map((i) => i.callingAe)), new Set(['CT_A', 'CT_B', 'CT_C']));
  const series = await spool.listInstances(stored[0]!.studyUid);
  assert.equal(series.length, 1);
  assert.equal(series[0]!.paths.length, files.length);
  const bySop = new Map(stored.map((i) => [i.sopInstanceUid, i]));
  for (const f of files) {
    const file = path.join(seriesDir, f);
    const inst = bySop.get((await readInstanceHeader(file)).sopInstanceUid!);
    assert.ok(inst, `${f} was not stored`);
    const [src, dst] = [await readFile(file), await readFile(spool.instancePath(inst))];
    if (await senderKeepsBytes(file, inst.transferSyntaxUid)) {
      assert.ok(dst.subarray(part10DatasetOffset(dst)).equals(src.subarray(part10DatasetOffset(src))), f);
    } else {
      assert.deepEqual(await datasetDump(spool.instancePath(inst)), await datasetDump(file), f);
    }
  }
});

// Hostile or broken C-STORE commands, sent with the dcmjs-dimse client so that we control every field.
const { Client, Dataset } = dimse;
const { CStoreRequest } = dimse.requests;

function sendWithClient(
  elements: Record<string, unknown>,
  adjust: (req: InstanceType<typeof CStoreRequest>) => void = () => undefined,
): Promise<{ status: number; comment: string }> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const request = new CStoreRequest(new Dataset(elements, '1.2.840.10008.1.2.1'));
    adjust(request);
    let result: { status: number; comment: string } | undefined;
    request.on('response', (response: InstanceType<typeof dimse.responses.CStoreResponse>) => {
      result = { status: response.getStatus(), comment: response.getErrorComment() ?? '' };
    });
    client.addRequest(request);
    client.on('networkError', (err: Error) => reject(err));
    client.on('closed', () => (result ? resolve(result) : reject(new Error('no C-STORE response'))));
    client.send('127.0.0.1', server.port, 'HOSTILE', AE);
  });
}

function secondaryCapture(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    SOPClassUID: '1.2.840.10008.5.1.4.1.1.7',
    SOPInstanceUID: '1.2.826.0.1.3680043.99.1.1',
    StudyInstanceUID: '1.2.826.0.1.3680043.99.1',
    SeriesInstanceUID: '1.2.826.0.1.3680043.99.1.2',
    Modality: 'OT',
    ...overrides,
  };
}

test('hostile and inconsistent data sets are refused without touching the spool', async () => {
  const before = recorded.length;
  const traversal = await sendWithClient(secondaryCapture({ StudyInstanceUID: '../../etc' }));
  assert.equal(traversal.status, 0xc000);
  assert.match(traversal.comment, /StudyInstanceUID/);

  const noSeries = await sendWithClient(secondaryCapture({ SeriesInstanceUID: undefined }));
  assert.equal(noSeries.status, 0xc000);

  const mismatch = await sendWithClient(secondaryCapture(), (req) =>
    req.setAffectedSopInstanceUid('1.2.826.0.1.3680043.99.1.999'),
  );
  assert.equal(mismatch.status, 0xa900);

  const badCommand = await sendWithClient(secondaryCapture(), (req) => req.setAffectedSopInstanceUid('../x'));
  assert.equal(badCommand.status, 0xc000);

  assert.equal(recorded.length, before);
  assert.ok(!(await spool.listStudies()).includes('1.2.826.0.1.3680043.99.1'));
  assert.deepEqual(await leftoverTempFiles(spool), [], 'refused data sets leave no temp files');
  assert.deepEqual((await readdir(dataDir)).sort(), ['outbox', 'spool']);
  assert.deepEqual((await readdir(spool.root)).sort(), ['studies', 'tmp']);

  // And a well-formed one on the same path is accepted.
  const ok = await sendWithClient(secondaryCapture());
  assert.equal(ok.status, 0x0000);
  assert.equal(recorded.at(-1)?.callingAe, 'HOSTILE');
});

// The SCP trusts readInstanceHeader to turn any file into either attributes or a Part10Error.
test('readInstanceHeader: broken files fail cleanly, deflated and pixel-less files are read', async () => {
  const malformed = path.join(samples, 'malformed');
  await assert.rejects(
    readInstanceHeader(path.join(malformed, 'no-preamble-no-meta-ct_small.dcm')),
    Part10Error,
  );
  await assert.rejects(
    readInstanceHeader(path.join(malformed, 'meta-missing-transfer-syntax.dcm')),
    Part10Error,
  );
  await assert.rejects(
    readInstanceHeader(path.join(XRAY_DIR, 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'), {
      maxHeaderBytes: 256,
    }),
    /does not fit in 256 bytes/,
  );

  const deflated = await readInstanceHeader(path.join(CT_TS_DIR, 'ct_1.2.840.10008.1.2.1.99_deflated.dcm'));
  const plain = await readInstanceHeader(path.join(CT_TS_DIR, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm'));
  assert.deepEqual({ ...deflated, transferSyntaxUid: undefined }, { ...plain, transferSyntaxUid: undefined });
  assert.equal(deflated.transferSyntaxUid, DEFLATED);
  assert.equal(plain.rows, 512);

  // An SR has no Pixel Data: the whole file is the header.
  const sr = await readInstanceHeader(path.join(samples, 'sr', 'tid1500-highdicom-measurement-report.dcm'));
  assert.equal(sr.modality, 'SR');
  assert.ok(sr.studyUid && sr.sopInstanceUid);

  const natural = await readNaturalizedHeader(
    path.join(XRAY_DIR, 'cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm'),
  );
  assert.equal(natural.Modality, 'CR');
  assert.equal(natural.Rows, 1955);
  assert.ok(!('PixelData' in natural));
});
