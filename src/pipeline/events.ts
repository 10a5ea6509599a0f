// Named log events of the pipeline (study index, completion, reconcile, retention, audit trail, private
// Redis, job failures): one
// function per event, so every line has the same fields. UIDs, counts and reasons only, never patient data.
import { errorMessage } from '../observability/error-message.ts';
import { log } from '../observability/log.ts';

const pipelineLog = log.child({ component: 'pipeline' });

export const pipelineEvents = {
  mppsCreated(mppsUid: string, studies: string[], announced: number): void {
    pipelineLog.info(
      { event: 'pipeline.mpps.created', mppsUid, studies, announced },
      'performed procedure step started',
    );
  },
  mppsUpdated(mppsUid: string, state: string, studies: string[]): void {
    pipelineLog.debug(
      { event: 'pipeline.mpps.updated', mppsUid, state, studies },
      'performed procedure step updated',
    );
  },
  mppsEnded(mppsUid: string, state: string, studyUid: string, awaiting: number, reason?: string): void {
    pipelineLog.info(
      { event: 'pipeline.mpps.ended', mppsUid, state, studyUid, awaiting, ...(reason ? { reason } : {}) },
      state === 'COMPLETED'
        ? 'performed procedure step completed: the study completes when its announced instances are in'
        : 'performed procedure step discontinued: the study closes with what arrived',
    );
  },
  studyCompleteByEvidence(studyUid: string, evidence: string): void {
    pipelineLog.info(
      { event: 'pipeline.study.complete_by_evidence', studyUid, evidence },
      'study complete by evidence, without waiting for the quiet period',
    );
  },
  reconcileUnreadable(studyUid: string, key: string, err: unknown): void {
    pipelineLog.error(
      { event: 'pipeline.reconcile.unreadable', studyUid, key, err: errorMessage(err) },
      'stored instance unreadable',
    );
  },
  reconcileDone(studies: number, reindexed: number, rearmed: number): void {
    pipelineLog.info(
      { event: 'pipeline.reconcile.done', studies, reindexed, rearmed },
      'spool reconciled with the index',
    );
  },
  reconcileFailed(trigger: string, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.reconcile.failed', trigger, err: errorMessage(err) },
      'spool reconciliation failed; the next pass retries',
    );
  },
  redisBack(): void {
    pipelineLog.info(
      { event: 'pipeline.redis.back', trigger: 'redis-back' },
      'Redis answers again: reconciling the spool with the index',
    );
  },
  retentionCleaned(studyUid: string, files: number): void {
    pipelineLog.info(
      { event: 'pipeline.retention.cleaned', studyUid, files },
      'spooled images removed after retention',
    );
  },
  retentionError(studyUid: string, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.retention.error', studyUid, err: errorMessage(err) },
      'a spooled image could not be removed',
    );
  },
  retentionPass(files: number, studiesForgotten: number, resultFiles: number, failedJobs: number): void {
    if (files + studiesForgotten + resultFiles + failedJobs === 0) return;
    pipelineLog.info(
      { event: 'pipeline.retention.pass', files, studiesForgotten, resultFiles, failedJobs },
      'retention pass removed what had aged out',
    );
  },
  retentionFailed(err: unknown): void {
    pipelineLog.warn({ event: 'pipeline.retention.failed', err: errorMessage(err) }, 'retention pass failed');
  },
  redisStarted(port: string, dir: string): void {
    pipelineLog.info({ event: 'pipeline.redis.started', port, dir }, 'started a private redis-server');
  },
  auditWriteFailed(segment: string, err: unknown): void {
    pipelineLog.error(
      { event: 'pipeline.audit.write_failed', segment, err: errorMessage(err) },
      'audit trail write failed',
    );
  },
  auditSummaryFailed(studyUid: string, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.audit.summary_failed', studyUid, err: errorMessage(err) },
      'audit summary not kept',
    );
  },
  studyJobNoteFailed(studyUid: string, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.study_jobs.note_failed', studyUid, err: errorMessage(err) },
      'job queued, but not noted in the study job set (the study page may miss it)',
    );
  },
  auditIndexFailed(studyUid: string, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.audit.index_failed', studyUid, err: errorMessage(err) },
      'audit event written, but not indexed for the study page (its page falls back to the segments)',
    );
  },
  leaseAcquired(holder: string, ttlMs: number): void {
    pipelineLog.info(
      { event: 'pipeline.maintenance.lease_acquired', holder, ttlMs },
      'this gateway holds the maintenance lease: cluster-wide maintenance runs here',
    );
  },
  leaseLost(holder: string, reason: string): void {
    pipelineLog.warn(
      { event: 'pipeline.maintenance.lease_lost', holder, reason },
      'maintenance lease lost: cluster-wide maintenance stopped here (another gateway takes over after expiry)',
    );
  },
  leaseReleased(holder: string): void {
    pipelineLog.info(
      { event: 'pipeline.maintenance.lease_released', holder },
      'maintenance lease released: another gateway may take over at once',
    );
  },
  maintenanceStepFailed(step: string, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.maintenance.step_failed', step, err: errorMessage(err) },
      'a maintenance step failed; the next one retries',
    );
  },
  associationSlotsUnavailable(err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.association_slots.unavailable', err: errorMessage(err) },
      'cluster-wide association limits not checked (Redis did not answer in time): this process applied its local limits only',
    );
  },
  auditStreamDropped(dropped: number, err: unknown): void {
    pipelineLog.warn(
      { event: 'pipeline.audit.stream_dropped', dropped, err: errorMessage(err) },
      "audit records not added to the cluster stream (they are in this node's segments)",
    );
  },
  auditPruned(segments: string[]): void {
    pipelineLog.info({ event: 'pipeline.audit.pruned', segments }, 'old audit segments deleted');
  },
  jobFailed(
    stage: string,
    job: { jobId?: string; studyUid?: string; attempt: number; final: boolean },
    err: unknown,
  ): void {
    pipelineLog.warn(
      { event: `${stage}.job.failed`, ...job, reason: errorMessage(err) },
      `${stage} job failed`,
    );
  },
};
