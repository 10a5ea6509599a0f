import path from 'node:path';
import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from './config/schema.ts';
import { createAdminApp, listen } from './admin/app.ts';
import { touchStudy } from './ingest/completion.ts';
import { startDimseServer, type StoredInstance } from './ingest/dimse/index.ts';
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
import { createRouter } from './routing/router.ts';
import { createInferenceProcessor } from '../workers/inference/processor.ts';
import { openModel, type LoadedModelSession } from '../workers/inference/run-model.ts';

export type Role = 'all' | 'gateway' | 'worker';

interface Shared {
  config: GatewayConfig;
  redis: Redis;
  index: StudyIndex;
  queues: Queues;
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
    if (final && studyUid)
      void index.setState(studyUid, 'failed', `${stage}: ${err.message}`).catch(() => undefined);
  });
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
  const delivery = new Worker(QUEUE.delivery, createDeliveryProcessor({ destinations, index }), {
    connection,
    prefix,
    concurrency: 4,
  });
  markFailedStudies(delivery, index, 'delivery');

  const dimse = await startDimseServer({
    aeTitle: config.dimse.aeTitle,
    host: config.dimse.host,
    port: config.dimse.port,
    maxPduLength: config.dimse.maxPduLength,
    spool,
    onStored: async (inst: StoredInstance) => {
      await index.recordInstance({ ...inst, receivedAt: Date.parse(inst.receivedAt) });
      await touchStudy(queues.studyComplete, inst.studyUid, config.study.quietPeriodMs);
    },
  });

  // HTTP last: /readyz answering means every listener is up.
  const app = createAdminApp({ redis: s.redis, index, spoolDir: spool.root });
  const http = await listen(app, config.http.host, config.http.port);
  return [
    () => new Promise<void>((resolve) => http.close(() => resolve())),
    () => dimse.close(),
    () => router.close(),
    () => delivery.close(),
  ];
}

async function startWorker(s: Shared): Promise<Closer[]> {
  const { config, index, queues } = s;
  const catalogue = await loadModels(config.modelsDir);
  for (const problem of catalogue.problems) log.warn({ event: 'model.skipped', problem }, 'model skipped');
  const sessions = new Map<string, LoadedModelSession>();
  for (const model of catalogue.models) {
    const opened = await openModel(model, {
      executionProviders: config.worker.executionProviders,
      deviceId: config.worker.deviceId,
      strict: config.worker.strict,
    });
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
  return [
    () => worker.close(),
    async () => {
      for (const session of sessions.values()) await session.close();
    },
  ];
}

export async function startRoles(role: Role, config: GatewayConfig): Promise<{ close(): Promise<void> }> {
  const redisHandle = await ensureRedis(config);
  const redis = createRedis(redisHandle.url);
  const shared: Shared = {
    config,
    redis,
    index: new StudyIndex(redis, config.redis.prefix),
    queues: createQueues(redis, config),
  };
  const closers: Closer[] = [];
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
      await shared.queues.close();
      redis.disconnect();
      await redisHandle.stop();
    },
  };
}
