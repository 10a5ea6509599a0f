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
import { InferenceSlots } from '../inference/runtime/slots.ts';
import { dataDirCheck, StorageGate } from '../inference/runtime/storage-gate.ts';
import { loadModels } from '../models/registry.ts';
import { observeStageTimings } from '../observability/metrics.ts';
import { markStudiesFailedOnFinalFailure } from '../pipeline/failed-jobs.ts';
import { QUEUE, inferenceQueueName, type InferenceJob } from '../pipeline/jobs.ts';
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
  // session.run and decoding can hold this thread past the job's lock; a thread of its own renews it
  // (for every queue), so the stalled-job check of another worker does not run the same model twice.
  const lockDurationMs = config.worker.lockDurationMs;
  const renewer = new LockRenewer({
    redisTarget: ctx.redisTarget,
    prefix: config.redis.prefix,
    lockDurationMs,
  });
  // One name for this process in the heartbeat and on every job it takes (BullMQ keeps it as the job's
  // processedBy), so an operator, or a test, sees which worker holds a running job.
  const workerId = `${hostname()}:${process.pid}`;
  // One queue per loaded model: this worker takes only jobs it can run. One budget over them all.
  const slots = new InferenceSlots(config.worker.concurrency);
  const gate = new StorageGate({
    // The local data dir (local copies of inputs, the filesystem store) and the object store must answer.
    check: ctx.storageCheck ?? storageCheck(ctx),
    // The heartbeat follows the gate at once: a worker whose storage fails is not counted for its models.
    onChange: () => void heartbeat.beatNow().catch((err: unknown) => inferenceEvents.heartbeatFailed(err)),
  });
  const modelQueues = [...sessions.values()].map((s) =>
    inferenceQueueName(s.model.manifest.id, s.model.manifest.version),
  );
  // Known before any job is added, so the gateway lists (and counts workers for) these queues at once.
  await queues.inference.register(modelQueues);
  const heartbeat = new WorkerHeartbeatPublisher({
    workerId,
    redis: ctx.redis,
    prefix: config.redis.prefix,
    concurrency: config.worker.concurrency,
    providers: Object.fromEntries([...sessions.values()].map((m) => [m.model.manifest.id, m.provider])),
    models: [...sessions.keys()],
    accepting: () => gate.status,
  });
  const workers: Worker[] = [];
  for (const queueName of modelQueues) {
    const worker = new Worker<InferenceJob>(
      queueName,
      (job, token) =>
        renewer.hold(queueName, job.id, token, () =>
          // Taken just as the storage failed: put back without running and without using an attempt.
          slots.run(job.opts.priority ?? 0, () => gate.guard(job, token, () => infer(job))),
        ),
      {
        connection: ctx.redis,
        prefix: config.redis.prefix,
        // Each queue may fill the whole budget (the slots share it): an idle model does not hold slots.
        concurrency: config.worker.concurrency,
        lockDuration: lockDurationMs,
        // A dead worker's job is looked for as often as its lock lasts (BullMQ's default is every 30 s
        // whatever the lock), so lockDurationMs bounds how long the job waits for another worker.
        stalledInterval: lockDurationMs,
        name: workerId,
        // The gate starts it once the storage answers.
        autorun: false,
      },
    );
    markStudiesFailedOnFinalFailure(worker, index, 'inference', {
      redis: ctx.redis,
      prefix: ctx.config.redis.prefix,
    });
    observeStageTimings(worker, 'inference');
    worker.on('completed', (_job, result: { images?: number } | undefined) =>
      heartbeat.recordJob(result?.images ?? 0),
    );
    workers.push(worker);
  }
  // Jobs an older gateway put in the single inference queue go on to their model's queue (same job id,
  // priority and data), where a worker with the model takes them; forwarding needs no model.
  const legacy = new Worker<InferenceJob>(
    QUEUE.inference,
    async (job) => {
      const forwarded = await queues.inference.add(job.data, {
        ...(job.id ? { jobId: job.id } : {}),
        ...(job.opts.priority ? { priority: job.opts.priority } : {}),
      });
      inferenceEvents.legacyJobForwarded(job.id, forwarded.queueName);
      return { forwardedTo: forwarded.queueName };
    },
    { connection: ctx.redis, prefix: config.redis.prefix, concurrency: 1, autorun: false },
  );
  markStudiesFailedOnFinalFailure(legacy, index, 'inference', {
    redis: ctx.redis,
    prefix: ctx.config.redis.prefix,
  });
  workers.push(legacy);
  for (const worker of workers) gate.attach(worker);
  ctx.localInference = {
    isRunning: () => gate.status.ok && workers.some((w) => w.isRunning()),
    storage: () => gate.status,
  };
  await gate.start();
  await heartbeat.start();
  return [
    async () => gate.stop(),
    () => heartbeat.stop(),
    async () => {
      await Promise.all(workers.map((w) => closeWorker(w, ctx.redis)));
    },
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
    storage: () => ctx.localInference?.storage(),
    models: () => ctx.loadedModels,
  });
  const http = await listen(app, ctx.config.http.host, port, 0, ctx.config.http.tls);
  return () => new Promise<void>((resolve) => http.close(() => resolve()));
}

/** The worker's storage answers: its data dir takes a write (fsync'd, removed), and the store answers. */
function storageCheck(ctx: RoleContext): () => Promise<void> {
  const dataDir = dataDirCheck(ctx.config.dataDir);
  return async () => {
    await dataDir();
    await ctx.store.check();
  };
}
