import type { BulkJobOptions, Job } from 'bullmq';
import type { AnatomyKeywords, RoutingRule } from '../config/schema.ts';
import { audit } from '../pipeline/audit-trail.ts';
import type { StudyIndex } from '../pipeline/study-index.ts';
import { jobId, type InferenceJob, type StudyCompleteJob } from '../pipeline/jobs.ts';
import { routingEvents } from './events.ts';
import { noModelDetail, routingRecords } from './decisions.ts';
import { planStudy, type RoutableModel } from './rules.ts';

export interface RoutingDeps {
  index: StudyIndex;
  /** Adds each job to its model's queue (queues.ts InferenceQueues.addBulk). */
  inferenceQueues: {
    addBulk(jobs: { data: InferenceJob; opts: BulkJobOptions }[]): Promise<unknown>;
  };
  models: () => Promise<RoutableModel[]>;
  rules: RoutingRule[];
  defaultDestination: string;
  /** Description keywords for the anatomy fallback (config routing.anatomyKeywords); defaults when unset. */
  anatomyKeywords?: AnatomyKeywords;
}

/** Processor of the study-complete queue: rules × study → inference jobs with idempotent ids. */
export function createRoutingProcessor(deps: RoutingDeps) {
  return async (job: Job<StudyCompleteJob>): Promise<{ run: number; jobs: string[] }> => {
    const { studyUid } = job.data;
    const instances = await deps.index.instances(studyUid);
    const models = await deps.models();
    const plan = planStudy(instances, models, deps.rules, deps.defaultDestination, {
      anatomyKeywords: deps.anatomyKeywords,
    });
    const work = plan.work;
    // A retried routing job reuses its run number, so its inference job ids, and so its SRs, stay the same.
    const run =
      typeof job.progress === 'number' && job.progress > 0
        ? job.progress
        : await deps.index.nextRun(studyUid);
    await job.updateProgress(run);
    // Whether the MPPS evidence or the quiet period decided, and what was still missing then.
    const completion = await deps.index.noteCompletion(studyUid, run);
    if (completion.incomplete)
      routingEvents.studyIncomplete(studyUid, run, completion.missing, completion.openSteps);
    const modalities = new Map(instances.map((i) => [i.seriesUid, i.modality]));
    const records = routingRecords(plan, run, deps.rules.length > 0, modalities);
    await deps.index.setSeriesRouting(studyUid, records);
    await audit.flushReceived(studyUid);
    if (work.length === 0) {
      // Its own state, with the reasons: an admin sees why no model ran, per series and model.
      const detail = noModelDetail(records, models.length);
      await deps.index.setState(studyUid, 'no-model', detail);
      await audit.record({
        type: 'routed',
        studyUid,
        run,
        instances: instances.length,
        jobs: [],
        detail,
      });
      routingEvents.studyRouted(studyUid, run, 0, instances.length);
      return { run, jobs: [] };
    }
    await deps.index.startRun(studyUid, run, work.length);
    // Turnaround counts from the study's first instance on its first run, else from when the run was asked.
    const summary = run === 1 ? await deps.index.get(studyUid) : undefined;
    const receivedAt = summary?.firstReceivedAt || job.timestamp;
    const ids: string[] = [];
    const jobs: { data: InferenceJob; opts: BulkJobOptions }[] = [];
    for (const w of work) {
      const data: InferenceJob = {
        studyUid,
        seriesUids: w.seriesUids,
        modelId: w.modelId,
        modelVersion: w.modelVersion,
        destinations: w.destinations,
        priority: w.priority,
        run,
        receivedAt,
        rules: w.rules,
      };
      const id = jobId.inference(data);
      jobs.push({ data, opts: { jobId: id, priority: w.priority } });
      ids.push(id);
    }
    // Each job to its model's queue (one addBulk per queue): only a worker with that model takes it.
    await deps.inferenceQueues.addBulk(jobs);
    await audit.record({
      type: 'routed',
      studyUid,
      run,
      instances: instances.length,
      jobs: work.map((w, i) => ({
        model: w.modelId,
        version: w.modelVersion,
        destinations: w.destinations,
        jobId: ids[i]!,
      })),
    });
    routingEvents.studyRouted(studyUid, run, ids.length, instances.length);
    return { run, jobs: ids };
  };
}
