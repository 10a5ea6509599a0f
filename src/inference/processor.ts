import { UnrecoverableError, type Job, type Queue } from 'bullmq';
import { audit } from '../pipeline/audit-trail.ts';
import type { InstanceRecord, StudyIndex } from '../pipeline/study-index.ts';
import { jobId, type DeliveryJob, type InferenceJob } from '../pipeline/jobs.ts';
import { UnbuildableReportError, type ResultWriter, type SourceInstanceRef } from '../pipeline/findings.ts';
import { NoUsableImagesError, runModel, type LoadedModelSession } from './run-model.ts';
import { inferenceEvents } from './events.ts';
import { objectKey } from '../storage/object-keys.ts';
import type { LocalCopy, ObjectStore } from '../storage/object-store.ts';
import { STAT_PRIORITY } from '../config/schema.ts';

export interface InferenceDeps {
  index: StudyIndex;
  deliveryQueue: Queue<DeliveryJob>;
  /** Where the study's instances are: local copies are made for the decoders and the report's headers. */
  store: ObjectStore;
  /** Open sessions keyed by `<id>@<version>`. */
  sessions: Map<string, LoadedModelSession>;
  /** The reports stage: writes the SR (and a SEG for segmentation models) and says where they are. */
  writeResults: ResultWriter;
}

/** Series first, then instance number, so the report lists images in the order a viewer shows them. */
function byPosition(a: InstanceRecord, b: InstanceRecord): number {
  return a.seriesUid.localeCompare(b.seriesUid) || (a.instanceNumber ?? 0) - (b.instanceNumber ?? 0);
}

/**
 * Processor of the inference queue: one model over the routed series of one study → a TID 1500 SR in the
 * source study → one delivery job per destination. UIDs derive from the job, so a retry makes the same SR.
 */
export function createInferenceProcessor(deps: InferenceDeps) {
  return async (job: Job<InferenceJob>) => {
    const { studyUid, seriesUids, modelId, modelVersion, run } = job.data;
    const session = deps.sessions.get(`${modelId}@${modelVersion}`);
    if (!session) throw new Error(`model ${modelId}@${modelVersion} is not loaded on this worker`);
    // A job of an earlier run (superseded meanwhile) leaves the current run's state alone.
    if (run === (await deps.index.currentRun(studyUid))) await deps.index.setState(studyUid, 'inferring');

    const instances = (await deps.index.instances(studyUid))
      .filter((i) => seriesUids.includes(i.seriesUid))
      .sort(byPosition);
    if (instances.length === 0) throw new UnrecoverableError('the routed series hold no instances');
    // The decoders and the SR builder read files: each instance as a local file (the store's own on the
    // filesystem backend), released once the job is done with them, whatever happens.
    const copies: LocalCopy[] = [];
    try {
      const sources = await materialise(deps.store, instances, copies);
      return await inferAndReport(job, sources);
    } finally {
      await Promise.all(copies.map((c) => c.release().catch(() => undefined)));
    }
  };

  async function inferAndReport(job: Job<InferenceJob>, sources: SourceInstanceRef[]) {
    const { studyUid, modelId, modelVersion, run, destinations, priority } = job.data;
    const session = deps.sessions.get(`${modelId}@${modelVersion}`)!;
    let result;
    try {
      result = await runModel(session, sources, { urgent: priority <= STAT_PRIORITY });
    } catch (err) {
      // Images the model cannot read will not become readable on a retry.
      if (err instanceof NoUsableImagesError) {
        await deps.index.setModelOutcome(studyUid, `${modelId}@${modelVersion}`, {
          run,
          images: 0,
          skipped: sources.length,
          reasons: [err.message],
        });
        throw new UnrecoverableError(err.message);
      }
      throw err;
    }

    // SR (superseding the previous run's) and, for segmentation models, a SEG; same destinations.
    let objects;
    try {
      objects = await deps.writeResults({ result, studyUid, modelId, modelVersion, run });
    } catch (err) {
      // A report that cannot be built from this result will not build on a retry either.
      if (err instanceof UnbuildableReportError) throw new UnrecoverableError(err.message);
      throw err;
    }
    const srUid = objects[0]!.sopInstanceUid;
    for (const object of objects) {
      for (const destination of destinations) {
        await deps.deliveryQueue.add(
          'deliver',
          {
            studyUid,
            run,
            sopInstanceUid: object.sopInstanceUid,
            destination,
            kind: object.kind,
            model: modelId,
            priority,
            ...(job.data.receivedAt !== undefined ? { receivedAt: job.data.receivedAt } : {}),
            ...(job.data.rules ? { rules: job.data.rules } : {}),
          },
          // The study's priority holds at delivery too: a STAT report overtakes a routine backlog.
          { jobId: jobId.delivery(object.sopInstanceUid, destination), priority },
        );
      }
    }
    // Images the model could not use are shown per model, with why, not only logged.
    const skipped = result.skipped ?? [];
    await deps.index.setModelOutcome(studyUid, `${modelId}@${modelVersion}`, {
      run,
      images: new Set(result.sources.map((s) => s.sopInstanceUid)).size,
      skipped: skipped.length,
      reasons: skipped.slice(0, 10),
    });
    await deps.index.inferenceDone(studyUid, run, destinations.length * objects.length, job.id);
    // A volume lists each frame of a multi-frame image as a source; count images once.
    const imageCount = new Set(result.sources.map((s) => s.sopInstanceUid)).size;
    await audit.record({
      type: 'inferred',
      studyUid,
      run,
      model: modelId,
      version: modelVersion,
      provider: result.provider,
      srUid,
      instances: imageCount,
      inferenceMs: Math.round(result.inferenceMs),
      jobId: String(job.id),
    });
    inferenceEvents.done({
      studyUid,
      jobId: job.id,
      model: `${modelId}@${modelVersion}`,
      provider: result.provider,
      instances: imageCount,
      inferenceMs: result.inferenceMs,
      srUid,
    });
    // inferenceMs (the model's own run: decode, preprocessing, batched runs) lets the latency bench take it out.
    return {
      srUid,
      provider: result.provider,
      findings: result.findings,
      images: imageCount,
      inferenceMs: result.inferenceMs,
    };
  }
}

/** Local copies fetched at once, at most this many at a time (a study may have thousands of images). */
const COPY_CONCURRENCY = 8;

/**
 * Each instance's local copy, in the instances' order; every copy made is pushed to `copies` as soon as it
 * exists, so the caller releases them all even when a later one fails.
 */
async function materialise(
  store: ObjectStore,
  instances: InstanceRecord[],
  copies: LocalCopy[],
): Promise<SourceInstanceRef[]> {
  const sources: SourceInstanceRef[] = new Array(instances.length);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < instances.length; i = next++) {
      const inst = instances[i]!;
      const key = objectKey.instance(inst);
      const copy = await store.localCopy(key);
      copies.push(copy);
      sources[i] = {
        sopClassUid: inst.sopClassUid,
        sopInstanceUid: inst.sopInstanceUid,
        seriesUid: inst.seriesUid,
        key,
        file: copy.path,
      };
    }
  };
  await Promise.all(Array.from({ length: Math.min(COPY_CONCURRENCY, instances.length) }, lane));
  return sources;
}
