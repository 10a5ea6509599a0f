// Composition root of the worker role: models, decode threads, the inference processor (with the reports
// stage injected as its result writer), the heartbeat, and the worker's own probe HTTP when asked for.
import { hostname } from 'node:os';
import { Worker } from 'bullmq';
import { listen } from '../admin/app.ts';
import { createWorkerApp } from '../admin/worker-app.ts';
import { inferenceEvents } from '../inference/events.ts';
import { createInferenceProcessor } from '../inference/processor.ts';
import { openModel, type LoadedModelSession } from '../inference/run-model.ts';
import { DecodePool, defaultDecodeThreads } from '../inference/runtime/decode-pool.ts';
import { LockRenewer } from '../inference/runtime/lock-renewer.ts';
import { limitsForMaxImageBytes, setDecodeLimits } from '../imaging/decode.ts';
import { WorkerHeartbeatPublisher } from '../inference/runtime/heartbeat.ts';
import { loadModels } from '../models/registry.ts';
import { observeStageTimings } from '../observability/metrics.ts';
import { markStudiesFailedOnFinalFailure } from '../pipeline/failed-jobs.ts';
import { QUEUE, type InferenceJob } from '../pipeline/jobs.ts';
import { closeWorker } from '../pipeline/queues.ts';
import { writeModelResults } from '../reports/write-results.ts';
import type { Closer, RoleContext } from './context.ts';

export async function startWorker(ctx: RoleContext): Promise<Closer[]> {
  const { config, index, queues } = ctx;
  const catalogue = await loadModels(config.modelsDir);
  for (const problem of catalogue.problems) inferenceEvents.modelSkipped(problem);
  const sessions = new Map<string, LoadedModelSession>();
  // No model, nothing to decode: threads cost memory (codec WebAssembly), so none are started then.
  const decodeThreads =
    catalogue.models.length > 0 ? (config.worker.decodeThreads ?? defaultDecodeThreads()) : 0;
  // The image size cap holds on this thread (decodes without a pool) and in every decode thread.
  const decodeLimits = limitsForMaxImageBytes(config.worker.maxDecodedImageBytes);
  setDecodeLimits(decodeLimits);
  const decodePool = decodeThreads > 0 ? new DecodePool(decodeThreads, decodeLimits) : undefined;
  inferenceEvents.decodeThreads(decodeThreads);
  for (const model of catalogue.models) {
    const opened = await openModel(
      model,
      {
        executionProviders: config.worker.executionProviders,
        deviceId: config.worker.deviceId,
        strict: config.worker.strict,
        ...(config.worker.intraOpThreads ? { intraOpThreads: config.worker.intraOpThreads } : {}),
      },
      decodePool,
    );
    sessions.set(`${model.manifest.id}@${model.manifest.version}`, opened);
    inferenceEvents.modelLoaded(model.manifest.id, model.manifest.version, opened.provider);
  }
  if (sessions.size === 0) inferenceEvents.noModels(config.modelsDir);
  ctx.loadedModels = sessions.size;
  const { store } = ctx;
  const infer = createInferenceProcessor({
    index,
    deliveryQueue: queues.delivery,
    store,
    sessions,
    writeResults: (r) => writeModelResults({ ...r, index, store }),
  });
  // session.run and decoding can hold this thread past the job's lock; a thread of its own renews it,
  // so the stalled-job check of another worker does not run the same model twice.
  const lockDurationMs = config.worker.lockDurationMs;
  const renewer = new LockRenewer({
    redisTarget: ctx.redisTarget,
    prefix: config.redis.prefix,
    queueName: QUEUE.inference,
    lockDurationMs,
  });
  // One name for this process in the heartbeat and on every job it takes (BullMQ keeps it as the job's
  // processedBy), so an operator, or a test, sees which worker holds a running job.
  const workerId = `${hostname()}:${process.pid}`;
  const worker = new Worker<InferenceJob>(
    QUEUE.inference,
    (job, token) => renewer.hold(job.id, token, () => infer(job)),
    {
      connection: ctx.redis,
      prefix: config.redis.prefix,
      concurrency: config.worker.concurrency,
      lockDuration: lockDurationMs,
      // A dead worker's job is looked for as often as its lock lasts (BullMQ's default is every 30 s
      // whatever the lock), so lockDurationMs bounds how long the job waits for another worker.
      stalledInterval: lockDurationMs,
      name: workerId,
    },
  );
  markStudiesFailedOnFinalFailure(worker, index, 'inference', {
    redis: ctx.redis,
    prefix: ctx.config.redis.prefix,
  });
  observeStageTimings(worker, 'inference');
  ctx.localInference = worker;
  const heartbeat = new WorkerHeartbeatPublisher({
    workerId,
    redis: ctx.redis,
    prefix: config.redis.prefix,
    concurrency: config.worker.concurrency,
    providers: Object.fromEntries([...sessions.values()].map((m) => [m.model.manifest.id, m.provider])),
  });
  await heartbeat.start();
  worker.on('completed', (_job, result: { images?: number } | undefined) =>
    heartbeat.recordJob(result?.images ?? 0),
  );
  return [
    () => heartbeat.stop(),
    () => closeWorker(worker, ctx.redis),
    () => renewer.close(),
    async () => {
      for (const session of sessions.values()) await session.close();
      await decodePool?.close();
    },
  ];
}

/** A worker on its own answers probes and serves its metrics (the gateway's HTTP does in role `all`). */
export async function startWorkerHttp(ctx: RoleContext, port: number): Promise<Closer> {
  const app = createWorkerApp({
    config: ctx.config,
    redis: ctx.redis,
    workerRunning: () => ctx.localInference?.isRunning() ?? false,
    models: () => ctx.loadedModels,
  });
  const http = await listen(app, ctx.config.http.host, port, 0, ctx.config.http.tls);
  return () => new Promise<void>((resolve) => http.close(() => resolve()));
}
