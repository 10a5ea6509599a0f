// Study completion from the counts the images carry, against a real Redis: the index script counts each new
// instance against its series (Number of Series Related Instances, Images in Acquisition, an enhanced
// multi-frame object) and completes the study only when every series is whole AND a rule's completeWhen for
// the sender holds. The counts come from real files (a sample with the attributes set by dcmodify).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { configSchema } from '../../../src/config/schema.ts';
import { readInstanceHeader, type InstanceHeader } from '../../../src/dicom/part10.ts';
import { CountRules } from '../../../src/pipeline/counts.ts';
import type { StudyCompleteJob } from '../../../src/pipeline/jobs.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { createInstanceRecorder } from '../../../src/pipeline/record-instance.ts';
import { StudyIndex, type InstanceRecord } from '../../../src/pipeline/study-index.ts';
import { runTool } from '../../helpers/dicom-tools.ts';
import { SHARED } from '../../helpers/gateway.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-${randomBytes(4).toString('hex')}`;
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const queue = new Queue<StudyCompleteJob>('study-complete', { connection: redis, prefix });
const index = new StudyIndex(redis, prefix);
const FUJI_CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');

after(async () => {
  await queue.obliterate({ force: true });
  await queue.close();
  const found = await redis.keys(`${prefix}:*`);
  if (found.length) await redis.del(...found);
  redis.disconnect();
});

const rules = new CountRules(
  configSchema.parse({
    routing: {
      rules: [
        { name: 'no-completion', models: ['*'] },
        {
          name: 'ct-room',
          match: { callingAE: 'CT_ROOM' },
          models: ['*'],
          completeWhen: { series: [{ Modality: 'CT', SeriesDescription: '*AXIAL*' }] },
        },
        { name: 'mr-room', match: { callingAE: 'MR_ROOM' }, models: ['*'], completeWhen: {} },
        {
          name: 'two-series',
          match: { callingAE: 'XA_ROOM' },
          models: ['*'],
          completeWhen: { minSeries: 2 },
        },
      ],
    },
  }).routing.rules,
);

let n = 0;
const uid = () => `1.2.826.0.1.3680043.99.7.${process.pid}.${++n}`;

function instance(
  studyUid: string,
  seriesUid: string,
  callingAe: string,
  header: InstanceHeader = {},
): InstanceRecord {
  const sopInstanceUid = uid();
  return {
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    modality: 'CT',
    ...header,
    studyUid,
    seriesUid,
    sopInstanceUid,
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1,
    callingAe,
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  };
}

/** The completion evidence (whether the study is new is the trends test's). */
const record = async (inst: InstanceRecord) => {
  const { newStudy, ...evidence } = await index.recordInstance(inst, rules.forInstance(inst));
  void newStudy;
  return evidence;
};

test('a series with Number of Series Related Instances = 3 completes the study at its 3rd instance', async () => {
  const study = uid();
  const axial = uid();
  const h = { seriesDescription: 'Thorax AXIAL 1mm', seriesRelatedInstances: 3 };
  const [a, b, c] = [0, 1, 2].map(() => instance(study, axial, 'CT_ROOM', h));
  assert.deepEqual(await record(a!), { evidenceComplete: false });
  assert.deepEqual(await record(b!), { evidenceComplete: false });
  // A resend of b is not a new instance: it neither counts nor completes.
  assert.deepEqual(await record({ ...b!, receivedAt: Date.now() }), { evidenceComplete: false });
  assert.deepEqual(await record(c!), { evidenceComplete: true, evidence: 'counts' });
  const completion = await index.noteCompletion(study, 1);
  assert.equal(completion.by, 'counts');
  assert.equal(completion.incomplete, false);
});

test('the same series from a sender with no completeWhen rule waits for the quiet period', async () => {
  const study = uid();
  const axial = uid();
  const h = { seriesDescription: 'AXIAL', seriesRelatedInstances: 2 };
  assert.equal((await record(instance(study, axial, 'OTHER', h))).evidenceComplete, false);
  assert.equal((await record(instance(study, axial, 'OTHER', h))).evidenceComplete, false);
  assert.equal((await index.noteCompletion(study, 1)).by, 'quiet-period');
});

test('a study with an unfinished second series waits; its last instance completes the study', async () => {
  const study = uid();
  const [axial, coronal] = [uid(), uid()];
  const ax = { seriesDescription: 'AXIAL', seriesRelatedInstances: 2 };
  const cor = { seriesDescription: 'CORONAL MPR', seriesRelatedInstances: 2 };
  assert.equal((await record(instance(study, axial, 'CT_ROOM', ax))).evidenceComplete, false);
  assert.equal((await record(instance(study, coronal, 'CT_ROOM', cor))).evidenceComplete, false);
  // The required axial series is whole, but the coronal one is not: wait.
  assert.equal((await record(instance(study, axial, 'CT_ROOM', ax))).evidenceComplete, false);
  assert.equal((await index.noteCompletion(study, 1)).by, 'quiet-period');
  assert.deepEqual(await record(instance(study, coronal, 'CT_ROOM', cor)), {
    evidenceComplete: true,
    evidence: 'counts',
  });
});

test('every series whole but the required one absent: the study waits', async () => {
  const study = uid();
  const scout = uid();
  const h = { seriesDescription: 'Topogram', seriesRelatedInstances: 1 };
  assert.equal((await record(instance(study, scout, 'CT_ROOM', h))).evidenceComplete, false);
  // A series with no count at all keeps the study open even once the required series is whole.
  const study2 = uid();
  assert.equal((await record(instance(study2, uid(), 'CT_ROOM', {}))).evidenceComplete, false);
  const axial = uid();
  const ax = { seriesDescription: 'AXIAL', seriesRelatedInstances: 1 };
  assert.equal((await record(instance(study2, axial, 'CT_ROOM', ax))).evidenceComplete, false);
});

test('Images in Acquisition: each acquisition full; a new acquisition re-opens the series', async () => {
  const study = uid();
  const series = uid();
  const acq = (number: number) => ({
    seriesDescription: 'AXIAL',
    imagesInAcquisition: 2,
    acquisitionNumber: number,
  });
  assert.equal((await record(instance(study, series, 'CT_ROOM', acq(1)))).evidenceComplete, false);
  assert.equal((await record(instance(study, series, 'CT_ROOM', acq(1)))).evidenceComplete, true);
  // A second acquisition starts: the series is not whole until it is full too.
  assert.equal((await record(instance(study, series, 'CT_ROOM', acq(2)))).evidenceComplete, false);
  assert.equal((await index.noteCompletion(study, 1)).by, 'quiet-period');
  assert.deepEqual(await record(instance(study, series, 'CT_ROOM', acq(2))), {
    evidenceComplete: true,
    evidence: 'counts',
  });
  const counts = await redis.hgetall(keys.studyCounts(prefix, study));
  assert.equal(counts[`ao:${series}`], '0');
  assert.equal(counts[`n:${series}`], '4');
});

test('an enhanced multi-frame object is a whole series; minSeries asks for more than one', async () => {
  const enhanced = { sopClassUid: '1.2.840.10008.5.1.4.1.1.4.1', modality: 'MR', numberOfFrames: 10 };
  const study = uid();
  assert.deepEqual(await record(instance(study, uid(), 'MR_ROOM', enhanced)), {
    evidenceComplete: true,
    evidence: 'counts',
  });
  // One frame is not a volume: no evidence.
  assert.equal(
    (await record(instance(uid(), uid(), 'MR_ROOM', { ...enhanced, numberOfFrames: 1 }))).evidenceComplete,
    false,
  );
  const two = uid();
  assert.equal((await record(instance(two, uid(), 'XA_ROOM', enhanced))).evidenceComplete, false);
  assert.deepEqual(await record(instance(two, uid(), 'XA_ROOM', enhanced)), {
    evidenceComplete: true,
    evidence: 'counts',
  });
});

test('the recorder completes the study at once: its study-complete job is due now, not in 10 minutes', async () => {
  const recorder = createInstanceRecorder({
    index,
    studyCompleteQueue: queue,
    quietPeriodMs: 600_000,
    countRules: rules,
  });
  const study = uid();
  const series = uid();
  const h = { seriesDescription: 'AXIAL', seriesRelatedInstances: 2 };
  const delay = async () => {
    const jobs = await queue.getJobs(['delayed', 'waiting', 'prioritized']);
    return jobs.find((j) => j?.data.studyUid === study)?.delay;
  };
  await recorder(instance(study, series, 'CT_ROOM', h));
  assert.ok((await delay())! >= 600_000, 'the first instance arms the quiet period');
  await recorder(instance(study, series, 'CT_ROOM', h));
  assert.equal(await delay(), 0, 'the second, last instance makes it due now');
});

test('readInstanceHeader reads the counts from a real file; forgetting a study forgets its counts', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-counts-'));
  try {
    const file = path.join(dir, 'cr.dcm');
    await copyFile(FUJI_CHEST, file);
    const before = await readInstanceHeader(file);
    assert.equal(before.seriesRelatedInstances, undefined);
    const edit = await runTool('dcmodify', [
      '-nb',
      '-i',
      '(0020,1209)=1',
      '-i',
      '(0020,1002)=1',
      '-i',
      '(0020,0012)=7',
      file,
    ]);
    assert.equal(edit.code, 0, edit.stderr);
    const h = await readInstanceHeader(file);
    assert.equal(h.seriesRelatedInstances, 1);
    assert.equal(h.imagesInAcquisition, 1);
    assert.equal(h.acquisitionNumber, 7);
    // A count of 0 or a non-number says nothing.
    assert.equal((await runTool('dcmodify', ['-nb', '-m', '(0020,1209)=0', file])).code, 0);
    assert.equal((await readInstanceHeader(file)).seriesRelatedInstances, undefined);

    const study = uid();
    const rec = instance(study, uid(), 'MR_ROOM', { ...h, seriesRelatedInstances: 1 });
    assert.equal((await record(rec)).evidence, 'counts');
    assert.ok(await redis.exists(keys.studyCounts(prefix, study)));
    assert.equal(await index.forgetStudy(study, rec.receivedAt), true);
    assert.equal(await redis.exists(keys.studyCounts(prefix, study)), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
