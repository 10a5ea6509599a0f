// Re-runs supersede: the gateway (real CLI child process, role `all`) reports on a CT study; a late
// instance re-opens the study and the new report, in the same SR series with a new UID, names the first
// one in PredecessorDocumentsSequence. Retrying the finished inference job writes no second report.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { inferenceQueueName, jobId, QUEUE } from '../../src/pipeline/jobs.ts';
import { dciodvfy, parseDicom } from '../helpers/dicom-tools.ts';
import {
  makeModelsDir,
  REDIS_URL,
  SHARED,
  startGateway,
  waitFor,
  type GatewayProcess,
} from '../helpers/gateway.ts';

const CT = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
const FIRST = ['I10.dcm', 'I20.dcm', 'I30.dcm'];
const LATE = 'I40.dcm';

type Ds = Record<string, unknown>;
const first = <T>(v: T | T[]): T => (Array.isArray(v) ? v[0]! : v);

let gateway: GatewayProcess;
let studyUid: string;
let redis: Redis;

before(async () => {
  studyUid = parseDicom(await readFile(path.join(CT, FIRST[0]!))).StudyInstanceUID as string;
  gateway = await startGateway({ modelsDir: await makeModelsDir(['uniformity']) });
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
});

after(async () => {
  redis?.disconnect();
  await gateway?.dispose();
});

/** SRs the built-in folder destination received for the study, parsed, by SOP Instance UID. */
async function delivered(): Promise<Map<string, { ds: Ds; file: string }>> {
  const dir = path.join(gateway.dataDir, 'results', studyUid);
  const files = (await readdir(dir).catch(() => [])).filter((f) => f.endsWith('.dcm'));
  const out = new Map<string, { ds: Ds; file: string }>();
  for (const f of files) {
    const file = path.join(dir, f);
    const ds = parseDicom(await readFile(file));
    if (ds.Modality === 'SR') out.set(ds.SOPInstanceUID as string, { ds, file });
  }
  return out;
}

async function send(files: string[]): Promise<void> {
  const r = await gateway.store(files.map((f) => path.join(CT, f)));
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
}

test('a late instance re-runs the model; the new SR supersedes the first; a retried job adds no SR', async () => {
  await send(FIRST);
  const one = await waitFor('the first SR', async () => {
    const srs = await delivered();
    return srs.size === 1 ? [...srs.values()][0] : undefined;
  });
  assert.equal(one.ds.PredecessorDocumentsSequence, undefined, 'the first report supersedes nothing');
  assert.equal(one.ds.InstanceNumber, 1);

  await send([LATE]);
  const two = await waitFor('the second SR', async () => {
    const srs = await delivered();
    return srs.size === 2
      ? [...srs.values()].find((s) => s.ds.SOPInstanceUID !== one.ds.SOPInstanceUID)
      : undefined;
  });
  assert.notEqual(two.ds.SOPInstanceUID, one.ds.SOPInstanceUID, 'a new UID');
  assert.equal(two.ds.SeriesInstanceUID, one.ds.SeriesInstanceUID, 'the same SR series');
  assert.equal(two.ds.InstanceNumber, 2);
  const pred = first(two.ds.PredecessorDocumentsSequence as Ds | Ds[]);
  assert.equal(pred.StudyInstanceUID, studyUid);
  const predSeries = first(pred.ReferencedSeriesSequence as Ds | Ds[]);
  assert.equal(predSeries.SeriesInstanceUID, one.ds.SeriesInstanceUID);
  const predSop = first(predSeries.ReferencedSOPSequence as Ds | Ds[]);
  assert.equal(predSop.ReferencedSOPInstanceUID, one.ds.SOPInstanceUID);
  assert.equal(predSop.ReferencedSOPClassUID, one.ds.SOPClassUID);
  // The new report covers the late instance too.
  const evidence = first(two.ds.CurrentRequestedProcedureEvidenceSequence as Ds | Ds[]);
  const refs = (first(evidence.ReferencedSeriesSequence as Ds | Ds[]).ReferencedSOPSequence as Ds[]).length;
  assert.equal(refs, FIRST.length + 1);
  const v = await dciodvfy(two.file);
  assert.deepEqual(v.errors, [], v.output);

  // Retry the finished inference job of run 2, as BullMQ would after a crash: same SR UID, no third SR.
  const inference = new Queue(inferenceQueueName('image-uniformity', '1.0.0'), {
    connection: redis,
    prefix: gateway.prefix,
  });
  const delivery = new Queue(QUEUE.delivery, { connection: redis, prefix: gateway.prefix });
  try {
    const id = jobId.inference({ studyUid, modelId: 'image-uniformity', modelVersion: '1.0.0', run: 2 });
    const job = await inference.getJob(id);
    assert.ok(job, `inference job ${id} is kept`);
    const finishedBefore = job.finishedOn;
    await job.retry('completed');
    await waitFor('the retried inference job to finish', async () => {
      const j = await inference.getJob(id);
      return j && (await j.isCompleted()) && j.finishedOn !== finishedBefore ? true : undefined;
    });
    const srs = await delivered();
    assert.deepEqual([...srs.keys()].sort(), [one.ds.SOPInstanceUID, two.ds.SOPInstanceUID].sort());
    // The retried run wrote the same report again, still superseding run 1 (not itself).
    const rewritten = parseDicom(
      await readFile(
        path.join(gateway.dataDir, 'outbox', studyUid, `${two.ds.SOPInstanceUID as string}.dcm`),
      ),
    );
    const again = first(
      first(first(rewritten.PredecessorDocumentsSequence as Ds | Ds[]).ReferencedSeriesSequence as Ds | Ds[])
        .ReferencedSOPSequence as Ds | Ds[],
    );
    assert.equal(again.ReferencedSOPInstanceUID, one.ds.SOPInstanceUID);
    // One delivery job per report and destination, whatever the retries.
    const jobs = await delivery.getJobs(['completed', 'waiting', 'delayed', 'active', 'failed']);
    assert.deepEqual(
      jobs.map((j) => j.id).sort(),
      [one.ds.SOPInstanceUID, two.ds.SOPInstanceUID]
        .map((u) => jobId.delivery(u as string, 'local-folder'))
        .sort(),
    );
    // The retry settles once: the study does not stay 'delivering' with a delivery that never comes.
    const study = await waitFor('the study to settle after the retry', async () => {
      const s = await gateway.api<{ state: string }>(`/api/studies/${studyUid}`);
      return s.state === 'done' ? s : undefined;
    });
    assert.equal(study.state, 'done');
  } finally {
    await inference.close();
    await delivery.close();
  }
});
