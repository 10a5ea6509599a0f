// Named log events of the inference stage (worker): one function per event, so every line has the same
// fields. Model ids, providers, UIDs, counts and reasons only, never patient data.
import { errorMessage } from '../observability/error-message.ts';
import { log } from '../observability/log.ts';

const inferenceLog = log.child({ component: 'inference' });

export const inferenceEvents = {
  modelSkipped(problem: string): void {
    inferenceLog.warn({ event: 'inference.model.skipped', problem }, 'model skipped');
  },
  modelLoaded(model: string, version: string, provider: string): void {
    inferenceLog.info({ event: 'inference.model.loaded', model, version, provider }, 'model loaded');
  },
  storageUnreachable(reason: string): void {
    inferenceLog.error(
      { event: 'inference.storage.unreachable', reason },
      'storage unreachable: taking no inference jobs until it answers',
    );
  },
  storageReachable(): void {
    inferenceLog.info({ event: 'inference.storage.reachable' }, 'storage reachable again: taking jobs');
  },
  legacyJobForwarded(jobId: string | undefined, queue: string): void {
    inferenceLog.info(
      { event: 'inference.legacy.forwarded', jobId, queue },
      'job of the legacy inference queue forwarded to its model queue',
    );
  },
  noModels(modelsDir: string): void {
    inferenceLog.warn({ event: 'inference.no_models', modelsDir }, 'no usable model found');
  },
  decodeThreads(threads: number): void {
    inferenceLog.info({ event: 'inference.decode_threads', threads }, 'decode threads started');
  },
  decodeThreadDied(why: string, pending: number, restartInMs: number): void {
    inferenceLog.error(
      { event: 'inference.decode_thread.died', why, pending, restartInMs },
      'decode thread died; starting another',
    );
  },
  providerBound(model: string, provider: string, deviceId: number, fallbacks: unknown[]): void {
    inferenceLog.info(
      { event: 'inference.provider.bound', model, provider, deviceId, fallbacks },
      'execution provider bound',
    );
  },
  providerFailed(model: string, provider: string, deviceId: number, error: string): void {
    inferenceLog.warn(
      { event: 'inference.provider.failed', model, provider, deviceId, error },
      'execution provider failed; trying the next',
    );
  },
  imagesSkipped(model: string, reasons: string[]): void {
    inferenceLog.warn(
      { event: 'inference.images.skipped', model, count: reasons.length, reasons: reasons.slice(0, 10) },
      'images skipped',
    );
  },
  modelRan(model: string, provider: string, images: number, ms: number): void {
    inferenceLog.info(
      { event: 'inference.model.ran', model, provider, images, ms: Math.round(ms) },
      'model ran',
    );
  },
  volumeAssembled(model: string, slices: number, sliceSpacingMm: number, counts: unknown): void {
    inferenceLog.info(
      {
        event: 'inference.volume.assembled',
        model,
        slices,
        sliceSpacingMm: Number(sliceSpacingMm.toFixed(3)),
        counts,
      },
      'volume segmented',
    );
  },
  done(fields: {
    studyUid: string;
    jobId?: string;
    model: string;
    provider: string;
    instances: number;
    inferenceMs: number;
    srUid: string;
  }): void {
    inferenceLog.info(
      { event: 'inference.done', ...fields, inferenceMs: Math.round(fields.inferenceMs) },
      'report written',
    );
  },
  heartbeatFailed(err: unknown): void {
    inferenceLog.warn(
      { event: 'inference.heartbeat.failed', err: errorMessage(err) },
      'heartbeat not written',
    );
  },
  heartbeatPruned(workers: string[]): void {
    inferenceLog.info(
      { event: 'inference.heartbeat.pruned', workers },
      'removed long-dead workers from the list',
    );
  },
};
