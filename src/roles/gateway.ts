// Composition root of the gateway role: ingest, routing, delivery, retention and the admin HTTP, wired
// over the shared context. No business logic here: each piece lives in its stage or in pipeline/.
import path from 'node:path';
import { Worker } from 'bullmq';
import { createAdminApp, listen } from '../admin/app.ts';
import { startIngest } from '../ingest/front-door.ts';
import { createDeliveryProcessor } from '../delivery/processor.ts';
import { createDestinations, defaultDestinationName, destinationSummaries } from '../delivery/registry.ts';
import { deliveryBackoffStrategy } from '../delivery/backoff.ts';
import { DestinationBreakers } from '../delivery/breaker.ts';
import { loadModels } from '../models/registry.ts';
import { collectHealth, collectSloStatus, observeStageTimings } from '../observability/metrics.ts';
import { markStudiesFailedOnFinalFailure } from '../pipeline/failed-jobs.ts';
import { QUEUE } from '../pipeline/jobs.ts';
import { closeWorker, createStudyCompleteQueue } from '../pipeline/queues.ts';
import { reconcileSpool } from '../pipeline/reconcile.ts';
import { clusterMaintenance } from '../pipeline/maintenance.ts';
import { MaintenanceLease } from '../pipeline/maintenance-lease.ts';
import { pruneDeadWorkers } from '../inference/runtime/heartbeat.ts';
import { CompletionArmer } from '../pipeline/completion.ts';
import { MppsStore } from '../pipeline/mpps.ts';
import { CountRules } from '../pipeline/counts.ts';
import { createInstanceRecorder } from '../pipeline/record-instance.ts';
import { retentionPolicy } from '../pipeline/retention.ts';
import { allQueues } from '../pipeline/queues.ts';
import { createIngestRedis } from '../pipeline/redis.ts';
import { StudyIndex } from '../pipeline/study-index.ts';
import { sloTargets, TurnaroundLog } from '../pipeline/turnaround.ts';
import { readTrends, sampleQueueDepths, TrendCounter } from '../pipeline/trends.ts';
import { listWorkers, modelWorkers } from '../admin/queries.ts';
import { watchModelWorkers, WORKER_STALE_MS } from '../admin/health.ts';
import { freeBytesOf } from '../storage/disk-watermark.ts';
import { RESULTS_DIR } from '../storage/layout.ts';
import { explainRouting } from '../routing/dry-run.ts';
import { createRoutingProcessor } from '../routing/processor.ts';
import { ingestPriority } from '../routing/rules.ts';
import type { Closer, RoleContext } from './context.ts';

export async function startGateway(ctx: RoleContext): Promise<Closer[]> {
  const { config, index, queues } = ctx;
  const connection = ctx.redis;
  const prefix = config.redis.prefix;
  const { store } = ctx;
  // Per node, before this gateway accepts anything, lease or not: only abandoned staged writes go (another
  // gateway sharing this store may be writing the younger ones), and whatever is in the store but not in the
  // index is indexed again.
  await store.cleanupStaging(config.spool.staleTempAfterMs);
  await reconcileSpool(store, index, queues.studyComplete, config.study.quietPeriodMs);

  // The ingest path has its own fail-fast connection: during a Redis outage a sender is answered at once
  // (C-STORE A700, STOW-RS 503) instead of waiting in an offline queue. BullMQ workers keep ctx.redis.
  const ingestRedis = await createIngestRedis(ctx.redisTarget);
  const ingestIndex = new StudyIndex(ingestRedis, prefix);
  const ingestStudyComplete = createStudyCompleteQueue(ingestRedis, config);

  const destinations = createDestinations(config);
  const catalogue = await loadModels(config.modelsDir);
  const routing = new Worker(
    QUEUE.studyComplete,
    createRoutingProcessor({
      index,
      inferenceQueues: queues.inference,
      models: async () => catalogue.models.map((m) => m.manifest),
      rules: config.routing.rules,
      anatomyKeywords: config.routing.anatomyKeywords,
      defaultDestination: defaultDestinationName(config),
    }),
    { connection, prefix, concurrency: 4 },
  );
  markStudiesFailedOnFinalFailure(routing, index, 'routing', { redis: ctx.redis, prefix });
  observeStageTimings(routing, 'routing');
  const breakers = new DestinationBreakers(ctx.redis, prefix, {
    threshold: config.delivery.breakerThreshold,
    cooldownMs: config.delivery.breakerCooldownMs,
  });
  // Receive → SR delivered per minute in Redis: the console's p50/p95 and each rule's SLO alert.
  const turnaround = new TurnaroundLog(ctx.redis, prefix, sloTargets(config.routing.rules));
  const delivery = new Worker(
    QUEUE.delivery,
    createDeliveryProcessor({ destinations, store, index, breakers, turnaround }),
    {
      connection,
      prefix,
      concurrency: 4,
      settings: {
        backoffStrategy: deliveryBackoffStrategy({
          baseMs: config.delivery.backoffMs,
          maxMs: config.delivery.maxBackoffMs,
        }),
      },
    },
  );
  markStudiesFailedOnFinalFailure(delivery, index, 'delivery', { redis: ctx.redis, prefix });
  observeStageTimings(delivery, 'delivery');
  // Cluster-wide maintenance (retention, the periodic and after-outage reconcile, the stale staging sweep,
  // dead-worker pruning) runs only on the gateway holding the maintenance lease; the lease is renewed over
  // the fail-fast connection, so an outage stops it here at once.
  const lease = new MaintenanceLease({
    redis: ingestRedis,
    prefix,
    ttlMs: config.maintenance.leaseTtlMs,
    onAcquired: clusterMaintenance({
      retention: {
        index,
        store,
        deliveryQueue: queues.delivery,
        queues: () => allQueues(queues),
        resultsDir: path.join(config.dataDir, RESULTS_DIR),
        policy: retentionPolicy(config),
      },
      retentionIntervalMs: config.retention.intervalMinutes * 60_000,
      reconcile: {
        store,
        index: ingestIndex,
        studyCompleteQueue: ingestStudyComplete,
        quietPeriodMs: config.study.quietPeriodMs,
        redis: ingestRedis,
        intervalMs: config.study.reconcileIntervalMs,
      },
      sweepTemp: () => store.cleanupStaging(config.spool.staleTempAfterMs),
      pruneWorkers: () => pruneDeadWorkers(ingestRedis, prefix),
      sweepIntervalMs: config.maintenance.sweepIntervalMs,
    }),
  });
  lease.start();

  // DIMSE (plain + TLS) and STOW-RS share one path: spool commit, then the recorder. One armer re-arms
  // completion for stored instances and completes studies at once on the modality's evidence (MPPS).
  const armer = new CompletionArmer(ingestStudyComplete, config.study.quietPeriodMs);
  // Instances and new studies per minute for the console's charts: counted in memory, flushed every few s.
  const trendCounter = new TrendCounter(ingestRedis, prefix);
  trendCounter.start();
  const ingest = await startIngest(
    config,
    store,
    createInstanceRecorder({
      index: ingestIndex,
      studyCompleteQueue: ingestStudyComplete,
      quietPeriodMs: config.study.quietPeriodMs,
      armer,
      // Completion from the counts the images carry, where a rule's completeWhen says which series.
      countRules: new CountRules(config.routing.rules),
      priorityOf: ingestPriority(config.routing.rules, { anatomyKeywords: config.routing.anatomyKeywords }),
      trends: trendCounter,
    }),
    ingestRedis,
    // Completion from evidence: the modality's performed procedure steps (N-CREATE / N-SET).
    new MppsStore(ingestRedis, prefix, armer),
  );

  // Read over the fail-fast connection, like the console: an outage answers at once.
  const turnaroundReader = new TurnaroundLog(ingestRedis, prefix, sloTargets(config.routing.rules));
  collectSloStatus(async () => (await turnaroundReader.summary()).slos);
  // What the alerts read (deploy/prometheus/alerts.yml): workers alive, breakers, spool disk.
  const destinationNames = destinationSummaries(config).map((d) => d.name);
  collectHealth({
    workersAlive: async () =>
      (await listWorkers(ingestRedis, prefix, WORKER_STALE_MS)).filter((w) => w.alive).length,
    breakers: () => breakers.openStates(destinationNames),
    spool: async () => ({
      // The local data disk (with S3: the staging disk).
      freeBytes: await freeBytesOf(config.dataDir),
      minFreeBytes: config.spool.minFreeBytes,
    }),
    // Per model queue: live workers with the model, and jobs waiting for it (the no-worker alert).
    modelWorkers: () => modelWorkers(ingestRedis, prefix, queues, WORKER_STALE_MS),
  });
  // `no worker for model X` in the log when jobs start to wait for a model no live worker has.
  const stopModelWatch = watchModelWorkers(() => modelWorkers(ingestRedis, prefix, queues, WORKER_STALE_MS));
  // Queue depths for the charts, sampled into the per-minute trends.
  const stopQueueSampler = sampleQueueDepths(ingestRedis, prefix, () => allQueues(queues));

  // HTTP last: /readyz answering means every listener is up.
  const localWorker = ctx.localInference;
  const app = createAdminApp({
    config,
    // Fail-fast reads: during an outage /readyz and the console answer at once; ready means ingest is.
    redis: ingestRedis,
    index: ingestIndex,
    queues,
    spoolDir: path.resolve(config.dataDir),
    store,
    maintenance: () => lease.holder(),
    localWorkerRunning: localWorker ? () => localWorker.isRunning() : undefined,
    routers: ingest.routers,
    warnings: ingest.warnings,
    destinations: destinationSummaries(config),
    turnaround: () => turnaroundReader.summary(),
    trends: (range) => readTrends(ingestRedis, prefix, range),
    explainRouting: async (instances) =>
      explainRouting(
        instances,
        catalogue.models.map((m) => m.manifest),
        {
          rules: config.routing.rules,
          defaultDestination: defaultDestinationName(config),
          anatomyKeywords: config.routing.anatomyKeywords,
        },
      ),
  });
  const largestBody = config.stowrs.enabled ? config.stowrs.maxRequestBytes : 0;
  const http = await listen(app, config.http.host, config.http.port, largestBody, config.http.tls);
  return [
    () => new Promise<void>((resolve) => http.close(() => resolve())),
    () => ingest.close(),
    () => lease.stop(),
    () => closeWorker(routing, ctx.redis),
    () => closeWorker(delivery, ctx.redis),
    () => ingestStudyComplete.close(),
    async () => stopQueueSampler(),
    async () => stopModelWatch(),
    () => trendCounter.close().catch(() => undefined),
    async () => ingestRedis.disconnect(),
  ];
}
