import path from 'node:path';
import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from './config/schema.ts';
import { createAdminApp, listen } from './admin/app.ts';
import { createWorkerApp } from './admin/worker-app.ts';
import { assertAuthForBinding } from './admin/auth.ts';
import { audit } from './audit/trail.ts';
import { collectQueueDepths, observeStageTimings } from './metrics.ts';
import { touchStudy } from './ingest/completion.ts';
import type { StoredInstance } from './ingest/dimse/index.ts';
import { startIngest } from './ingest/front-door.ts';
import { reconcileSpool } from './ingest/reconcile.ts';
import { Spool } from './ingest/spool.ts';
import { StudyIndex } from './ingest/studies.ts';
import { log } from './log.ts';
import { loadModels } from './models/registry.ts';
import { QUEUE } from './queue/jobs.ts';
import { createQueues, type Queues } from './queue/queues.ts';
import { createRedis, ensureRedis } from './queue/redis.ts';
import { createDeliveryProcessor } from './results/delivery-processor.ts';
import { createDestinations, defaultDestinationName } from './results/delivery/registry.ts';
import { deliveryBackoffStrategy } from './results/delivery/backoff.ts';
import { DestinationBreakers } from './results/delivery/breaker.ts';
import { cleanupDeliveredStudies } from './results/spool-cleanup.ts';
import { createRouter } from './routing/router.ts';
import { createInferenceProcessor } from '../workers/inference/processor.ts';
import { openModel, type LoadedModelSession } from '../workers/inference/run-model.ts';
import { DecodePool, defaultDecodeThreads } from '../workers/runtime/decode-pool.ts';
import { WorkerHeartbeatPublisher } from '../workers/runtime/heartbeat.ts';

export type Role = 'all' | 'gateway' | 'worker';

interface Shared {
  config: GatewayConfig;
  redis: Redis;
  index: StudyIndex;
  queues: Queues;
  /** The in-process inference worker, which /readyz counts as alive while it runs. */
  localInference?: Worker;
  /** How many models the in-process worker loaded. */
  loadedModels?: number;
}

type Closer = () => Promise<void>;

/** A job that will not be tried again marks its study failed, with the reason, for the dashboard. */
function markFailedStudies(worker: Worker, index: StudyIndex, stage: string): void {
  worker.on('failed', (job: Job | undefined, err: Error) => {
    if (!job) return;
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    const studyUid = (job.data as { studyUid?: string }).studyUid;
    log.warn(
      {
        event: `${stage}.failed`,
        jobId: job.id,
        studyUid,
        attempt: job.attemptsMade,
        final,
        reason: err.message,
      },
      `${stage} job failed`,
    );
    if (final && studyUid) {
      void index.setState(studyUid, 'failed', `${stage}: ${err.message}`).catch(() => undefined);
      void audit.record({ type: 'failed', studyUid, stage, reason: err.message, jobId: String(job.id) });
    }
  });
}

/** Spool retention (off unless delivery.spoolRetentionHours is set): a pass now and every few minutes. */
function scheduleSpoolCleanup(config: GatewayConfig, index: StudyIndex, queues: Queues): () => void {
  const hours = config.delivery.spoolRetentionHours;
  if (hours === undefined) return () => undefined;
  const retentionMs = hours * 3_600_000;
  const pass = () =>
    void cleanupDeliveredStudies({ index, deliveryQueue: queues.delivery, retentionMs }).catch(
      (err: unknown) =>
        log.warn({ event: 'spool.cleanup_failed', err: (err as Error).message }, 'spool cleanup failed'),
    );
  pass();
  const timer = setInterval(pass, Math.min(Math.max(retentionMs / 10, 1_000), 300_000));
  timer.unref();
  return () => clearInterval(timer);
}

async function startGateway(s: Shared): Promise<Closer[]> {
  const { config, index, queues } = s;
  const connection = s.redis;
  const prefix = config.redis.prefix;
  const spool = new Spool(config.dataDir);
  await spool.init();
  await spool.cleanupTemp();
  await reconcileSpool(spool, index, queues.studyComplete, config.study.quietPeriodMs);

  const destinations = createDestinations(config);
  const catalogue = await loadModels(config.modelsDir);
  const router = new Worker(
    QUEUE.studyComplete,
    createRouter({
      index,
      inferenceQueue: queues.inference,
      models: async () => catalogue.models.map((m) => m.manifest),
      rules: config.routing.rules,
      defaultDestination: defaultDestinationName(config),
    }),
    { connection, prefix, concurrency: 4 },
  );
  markFailedStudies(router, index, 'routing');
  observeStageTimings(router, 'routing');
  const breakers = new DestinationBreakers(s.redis, prefix, {
    threshold: config.delivery.breakerThreshold,
    cooldownMs: config.delivery.breakerCooldownMs,
  });
  const delivery = new Worker(QUEUE.delivery, createDeliveryProcessor({ destinations, index, breakers }), {
    connection,
    prefix,
    concurrency: 4,
    settings: {
      backoffStrategy: deliveryBackoffStrategy({
        baseMs: config.delivery.backoffMs,
        maxMs: config.delivery.maxBackoffMs,
      }),
    },
  });
  markFailedStudies(delivery, index, 'delivery');
  observeStageTimings(delivery, 'delivery');
  const stopSpoolCleanup = scheduleSpoolCleanup(config, index, queues);

  // DIMSE (plain + TLS) and STOW-RS share one path: spool commit, then this onStored.
  const ingest = await startIngest(
    config,
    spool,
    async (inst: StoredInstance) => {
      await index.recordInstance({ ...inst, receivedAt: Date.parse(inst.receivedAt) });
      audit.noteReceived(inst.studyUid, inst.callingAe, inst.callingAddress, inst.size);
      await touchStudy(queues.studyComplete, inst.studyUid, config.study.quietPeriodMs);
    },
    s.redis,
  );

  // HTTP last: /readyz answering means every listener is up.
  const localWorker = s.localInference;
  const app = createAdminApp({
    config,
    redis: s.redis,
    index,
    queues,
    spoolDir: spool.root,
    localWorkerRunning: localWorker ? () => localWorker.isRunning() : undefined,
    routers: ingest.routers,
  });
  const http = await listen(app, config.http.host, config.http.port);
  return [
    () => new Promise<void>((resolve) => http.close(() => resolve())),
    () => ingest.close(),
    () => router.close(),
    () => delivery.close(),
    async () => stopSpoolCleanup(),
  ];
}

async function startWorker(s: Shared): Promise<Closer[]> {
  const { config, index, queues } = s;
  const catalogue = await loadModels(config.modelsDir);
  for (const problem of catalogue.problems) log.warn({ event: 'model.skipped', problem }, 'model skipped');
  const sessions = new Map<string, LoadedModelSession>();
  // No model, nothing to decode: threads cost memory (codec WebAssembly), so none are started then.
  const decodeThreads =
    catalogue.models.length > 0 ? (config.worker.decodeThreads ?? defaultDecodeThreads()) : 0;
  const decodePool = decodeThreads > 0 ? new DecodePool(decodeThreads) : undefined;
  log.info({ event: 'worker.decode_threads', threads: decodeThreads }, 'decode threads started');
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
    log.info(
      {
        event: 'model.loaded',
        model: model.manifest.id,
        version: model.manifest.version,
        provider: opened.provider,
      },
      'model loaded',
    );
  }
  if (sessions.size === 0)
    log.warn({ event: 'worker.no_models', modelsDir: config.modelsDir }, 'no usable model found');
  s.loadedModels = sessions.size;
  const worker = new Worker(
    QUEUE.inference,
    createInferenceProcessor({
      index,
      deliveryQueue: queues.delivery,
      sessions,
      reportsDir: path.join(config.dataDir, 'reports'),
    }),
    { connection: s.redis, prefix: config.redis.prefix, concurrency: config.worker.concurrency },
  );
  markFailedStudies(worker, index, 'inference');
  observeStageTimings(worker, 'inference');
  s.localInference = worker;
  const heartbeat = new WorkerHeartbeatPublisher({
    redis: s.redis,
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
    () => worker.close(),
    async () => {
      for (const session of sessions.values()) await session.close();
      await decodePool?.close();
    },
  ];
}

async function startWorkerHttp(s: Shared, port: number): Promise<Closer> {
  const app = createWorkerApp({
    config: s.config,
    redis: s.redis,
    workerRunning: () => s.localInference?.isRunning() ?? false,
    models: () => s.loadedModels,
  });
  const http = await listen(app, s.config.http.host, port);
  return () => new Promise<void>((resolve) => http.close(() => resolve()));
}

export async function startRoles(role: Role, config: GatewayConfig): Promise<{ close(): Promise<void> }> {
  const workerHttp = role === 'worker' && config.worker.httpPort !== undefined;
  if (role !== 'worker' || workerHttp) assertAuthForBinding(config.http);
  const redisHandle = await ensureRedis(config);
  const redis = createRedis(redisHandle.url);
  const shared: Shared = {
    config,
    redis,
    index: new StudyIndex(redis, config.redis.prefix),
    queues: createQueues(redis, config),
  };
  await audit.open({
    dir: path.join(config.dataDir, 'audit'),
    retentionDays: config.audit.retentionDays,
    redis,
    prefix: config.redis.prefix,
  });
  collectQueueDepths([shared.queues.studyComplete, shared.queues.inference, shared.queues.delivery]);
  const closers: Closer[] = [];
  // A worker on its own can answer probes and serve its metrics (the gateway's HTTP does in `all`):
  // listening first, so liveness holds while the models load and readiness says when they have.
  if (workerHttp) closers.push(await startWorkerHttp(shared, config.worker.httpPort!));
  // Workers first: a gateway that accepts studies should find models ready.
  if (role === 'worker' || role === 'all') closers.push(...(await startWorker(shared)));
  if (role === 'gateway' || role === 'all') closers.push(...(await startGateway(shared)));
  log.info(
    {
      event: 'started',
      role,
      aeTitle: config.dimse.aeTitle,
      dimsePort: config.dimse.port,
      httpPort: config.http.port,
    },
    'dicom-ai-gateway started',
  );
  return {
    async close() {
      for (const close of closers)
        await close().catch((err: unknown) =>
          log.error({ event: 'shutdown.error', err }, 'error while closing'),
        );
      await audit.close();
      await shared.queues.close();
      redis.disconnect();
      await redisHandle.stop();
    },
  };
}
