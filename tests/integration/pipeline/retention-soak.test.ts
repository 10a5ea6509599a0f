// Retention keeps disk and Redis flat: waves of tiny synthetic studies go through the real ingest path
// (acceptor → spool commit → index), reach 'done', leave SRs in the outbox and files in the results folder;
// after a retention pass the spool, the outbox, the results folder and the study keys in Redis are back
// where they started, wave after wave. AIGW_SOAK_STUDIES sets the studies per wave (npm run soak:retention:
// 10,000 a wave, 20,000 in all).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import dcmjs from 'dcmjs';
import { Redis } from 'ioredis';
import { InstanceAcceptor } from '../../../src/ingest/accept.ts';
import { QUEUE, type DeliveryJob } from '../../../src/pipeline/jobs.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { runRetention, type RetentionPolicy } from '../../../src/pipeline/retention.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { DiskWatermark } from '../../../src/storage/disk-watermark.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { finished } from 'node:stream/promises';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const STUDIES_PER_WAVE = Number(process.env.AIGW_SOAK_STUDIES ?? 500);
const prefix = `aigw-test-soak-${randomBytes(4).toString('hex')}`;
const redis = new Redis(REDIS_URL);
const HOUR = 3_600_000;

after(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  for (let i = 0; i < keys.length; i += 1_000) await redis.del(...keys.slice(i, i + 1_000));
  redis.disconnect();
});

/** A tiny 4×4 CT-like Part-10 image with the given UIDs. */
function tinyInstance(studyUid: string, seriesUid: string, sopInstanceUid: string): Buffer {
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const sopClass = '1.2.840.10008.5.1.4.1.1.2';
  const dict = new DicomDict(
    DicomMetaDictionary.denaturalizeDataset({
      FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
      MediaStorageSOPClassUID: sopClass,
      MediaStorageSOPInstanceUID: sopInstanceUid,
      TransferSyntaxUID: '1.2.840.10008.1.2.1',
      ImplementationClassUID: '2.25.2',
    }),
  );
  dict.dict = DicomMetaDictionary.denaturalizeDataset({
    SOPClassUID: sopClass,
    SOPInstanceUID: sopInstanceUid,
    StudyInstanceUID: studyUid,
    SeriesInstanceUID: seriesUid,
    Modality: 'CT',
    Rows: 4,
    Columns: 4,
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    BitsAllocated: 16,
    BitsStored: 16,
    HighBit: 15,
    PixelRepresentation: 0,
    PixelData: [new Uint16Array(16).buffer],
    _vrMap: { PixelData: 'OW' },
  });
  return Buffer.from(dict.write());
}

async function countFiles(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.length;
}

/**
 * Keys per study. The one changed-studies set the console reads is not a per-study key: retention trims it
 * by Redis time (an hour), which this test cannot fast-forward; its size is checked on its own.
 */
const studyKeyCount = async () =>
  (await redis.keys(`${prefix}:stud*`)).filter((k) => k !== keys.studiesChanged(prefix)).length +
  (await redis.keys(`${prefix}:audit:*`)).length;

test(`retention brings disk and Redis back to a flat line (${STUDIES_PER_WAVE} studies per wave)`, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-soak-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = new FilesystemObjectStore(dir);
  await store.init();
  const spool = store.spool;
  const disk = new DiskWatermark(dir, 0);
  await disk.refresh();
  const index = new StudyIndex(redis, prefix);
  const deliveryQueue = new Queue<DeliveryJob>(QUEUE.delivery, { connection: redis, prefix });
  t.after(() => deliveryQueue.close());
  const acceptor = new InstanceAcceptor({
    store,
    disk,
    onStored: async (inst) => {
      await index.recordInstance(inst);
    },
  });
  const outboxDir = path.join(dir, 'outbox');
  const resultsDir = path.join(dir, 'results');
  const policy: RetentionPolicy = {
    spoolMs: HOUR,
    outboxMs: HOUR,
    failedMs: 2 * HOUR,
    failedJobMs: HOUR,
    resultsMs: HOUR,
    studyRecordMs: 2 * HOUR,
  };
  const flat = { spool: await countFiles(spool.studiesDir), keys: await studyKeyCount() };

  for (const wave of [1, 2]) {
    for (let i = 0; i < STUDIES_PER_WAVE; i++) {
      const studyUid = `2.25.${wave}${String(i).padStart(6, '0')}`;
      const staged = store.stage();
      staged.stream.end(tinyInstance(studyUid, `${studyUid}.1`, `${studyUid}.1.1`));
      await finished(staged.stream);
      const outcome = await acceptor.accept(staged, {
        path: 'dimse',
        callingAe: 'SOAK',
        address: '127.0.0.1',
      });
      assert.ok(outcome.ok, `stored ${studyUid}`);
      // One in ten studies fails; the rest are delivered.
      await index.startRun(studyUid, 1, 1);
      if (i % 10 === 0) await index.setState(studyUid, 'failed', 'inference: test');
      else {
        await index.inferenceDone(studyUid, 1, 1);
        await index.deliveryDone(studyUid, 1);
      }
      await store.put(objectKey.outbox(studyUid, `${studyUid}.9`), Buffer.from('x'));
      const result = path.join(resultsDir, studyUid, 'sr.dcm');
      await mkdir(path.dirname(result), { recursive: true });
      await writeFile(result, 'x');
      const old = new Date(Date.now() - 2 * HOUR);
      await utimes(result, old, old);
    }
    assert.equal(await countFiles(spool.studiesDir), STUDIES_PER_WAVE * 3, 'study dir, series dir, file');
    assert.ok((await studyKeyCount()) >= STUDIES_PER_WAVE * 2);

    const pass = await runRetention({
      index,
      store,
      deliveryQueue,
      queues: [deliveryQueue],
      resultsDir,
      policy,
      now: () => Date.now() + 3 * HOUR,
    });
    assert.equal(pass.files, STUDIES_PER_WAVE, `wave ${wave}: every spooled image went`);
    assert.equal(pass.forgotten, STUDIES_PER_WAVE, `wave ${wave}: every study record went`);
    assert.equal(pass.resultFiles, STUDIES_PER_WAVE);
    assert.equal(await countFiles(spool.studiesDir), flat.spool, `wave ${wave}: spool back to flat`);
    assert.equal(await countFiles(outboxDir), 0, `wave ${wave}: outbox empty`);
    assert.equal(await countFiles(resultsDir), 0, `wave ${wave}: results folder empty`);
    assert.equal(await studyKeyCount(), flat.keys, `wave ${wave}: Redis study keys back to flat`);
    // Every study of this test changed within the hour: all of them are noted, none more.
    assert.ok((await redis.zcard(keys.studiesChanged(prefix))) <= 2 * STUDIES_PER_WAVE);
  }
});
