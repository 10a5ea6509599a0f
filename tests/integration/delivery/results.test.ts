// What a model run writes for delivery: the SR (superseding the previous run's), and a SEG for
// segmentation models, with the predecessor bookkeeping in the study index (Redis).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { srSeriesUid, srUid, writeModelResults } from '../../../src/reports/write-results.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { dciodvfy, parseDicom } from '../../helpers/dicom-tools.ts';
import { whiteMatterResult } from '../../helpers/reports.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-results-${randomBytes(4).toString('hex')}`;
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });

after(async () => {
  const keys = await connection.keys(`${prefix}:*`);
  if (keys.length) await connection.del(...keys);
  connection.disconnect();
});

type Ds = Record<string, unknown>;
const first = <T>(v: T | T[]): T => (Array.isArray(v) ? v[0]! : v);
const predecessorOf = (ds: Ds): string | undefined => {
  const seq = ds.PredecessorDocumentsSequence as Ds | Ds[] | undefined;
  if (!seq) return undefined;
  const series = first(first(seq).ReferencedSeriesSequence as Ds | Ds[]);
  return first(series.ReferencedSOPSequence as Ds | Ds[]).ReferencedSOPInstanceUID as string;
};

test('segmentation run: SR + SEG written; re-runs supersede; retries keep their predecessor', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-results-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  const store = new FilesystemObjectStore(dataDir);
  const index = new StudyIndex(connection, prefix);
  const { result, studyUid } = whiteMatterResult(15, 18);
  const run = (n: number) =>
    writeModelResults({
      result,
      studyUid,
      modelId: 'meshnet-brain-gwm',
      modelVersion: '1.0',
      run: n,
      index,
      store,
    });

  const one = await run(1);
  assert.deepEqual(
    one.map((o) => o.kind),
    ['sr', 'seg'],
  );
  // Relative keys under the outbox, derived from the UIDs: no host path leaves the writer.
  for (const o of one) assert.equal(o.key, objectKey.outbox(studyUid, o.sopInstanceUid));
  const sr1 = parseDicom(await store.get(one[0]!.key));
  const seg1 = parseDicom(await store.get(one[1]!.key));
  assert.equal(sr1.SOPInstanceUID, srUid(studyUid, 'meshnet-brain-gwm', '1.0', 1));
  assert.equal(sr1.SeriesInstanceUID, srSeriesUid(studyUid, 'meshnet-brain-gwm'));
  assert.equal(predecessorOf(sr1), undefined);
  assert.equal(seg1.Modality, 'SEG');
  assert.equal(seg1.StudyInstanceUID, studyUid);
  assert.notEqual(seg1.SeriesInstanceUID, sr1.SeriesInstanceUID);
  const v = await dciodvfy((await store.localCopy(one[1]!.key)).path);
  assert.deepEqual(v.errors, [], v.output);

  const two = await run(2);
  const sr2 = parseDicom(await store.get(two[0]!.key));
  assert.equal(predecessorOf(sr2), sr1.SOPInstanceUID);
  assert.notEqual(two[1]!.sopInstanceUid, one[1]!.sopInstanceUid, 'a new SEG per run too');

  // A retry of run 2 rebuilds the same SR, still superseding run 1 (not itself).
  const retry = await run(2);
  assert.deepEqual(
    retry.map((o) => o.sopInstanceUid),
    two.map((o) => o.sopInstanceUid),
  );
  assert.equal(predecessorOf(parseDicom(await store.get(retry[0]!.key))), sr1.SOPInstanceUID);
  // A late retry of run 1 neither gains a predecessor nor makes run 2 look superseded.
  const late = await run(1);
  assert.equal(predecessorOf(parseDicom(await store.get(late[0]!.key))), undefined);
  assert.equal((await index.lastReport(studyUid, 'meshnet-brain-gwm'))?.sopInstanceUid, sr2.SOPInstanceUID);
  const three = await run(3);
  assert.equal(predecessorOf(parseDicom(await store.get(three[0]!.key))), sr2.SOPInstanceUID);
});

test('an empty label map writes the SR only', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-results-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  const store = new FilesystemObjectStore(dataDir);
  const index = new StudyIndex(connection, `${prefix}-empty`);
  t.after(async () => {
    const keys = await connection.keys(`${prefix}-empty:*`);
    if (keys.length) await connection.del(...keys);
  });
  const { result, studyUid } = whiteMatterResult(15, 18, { empty: true });
  const objects = await writeModelResults({
    result,
    studyUid,
    modelId: 'meshnet-brain-gwm',
    modelVersion: '1.0',
    run: 1,
    index,
    store,
  });
  assert.deepEqual(
    objects.map((o) => o.kind),
    ['sr'],
  );
});
