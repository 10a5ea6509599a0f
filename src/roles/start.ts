// Starts the roles of one process over one shared context, and closes them in order.
import path from 'node:path';
import { assertAuthForBinding } from '../admin/auth.ts';
import { audit } from '../pipeline/audit-trail.ts';
import { collectQueueDepths } from '../observability/metrics.ts';
import { createQueues } from '../pipeline/queues.ts';
import { createRedis, ensureRedis } from '../pipeline/redis.ts';
import { StudyIndex } from '../pipeline/study-index.ts';
import type { GatewayConfig } from '../config/schema.ts';
import type { Closer, RoleContext } from './context.ts';
import { processEvents } from './events.ts';
import { startGateway } from './gateway.ts';
import { startWorker, startWorkerHttp } from './worker.ts';

export type Role = 'all' | 'gateway' | 'worker';

export async function startRoles(role: Role, config: GatewayConfig): Promise<{ close(): Promise<void> }> {
  const workerHttp = role === 'worker' && config.worker.httpPort !== undefined;
  if (role !== 'worker' || workerHttp) assertAuthForBinding(config.http);
  const redisHandle = await ensureRedis(config);
  const redis = createRedis(redisHandle.url);
  const ctx: RoleContext = {
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
  collectQueueDepths([ctx.queues.studyComplete, ctx.queues.inference, ctx.queues.delivery]);
  const closers: Closer[] = [];
  // Listening first, so liveness holds while the models load and readiness says when they have.
  if (workerHttp) closers.push(await startWorkerHttp(ctx, config.worker.httpPort!));
  // Workers first: a gateway that accepts studies should find models ready.
  if (role === 'worker' || role === 'all') closers.push(...(await startWorker(ctx)));
  if (role === 'gateway' || role === 'all') closers.push(...(await startGateway(ctx)));
  processEvents.started({
    role,
    aeTitle: config.dimse.aeTitle,
    dimsePort: config.dimse.port,
    httpPort: config.http.port,
  });
  return {
    async close() {
      for (const close of closers) await close().catch((err: unknown) => processEvents.shutdownError(err));
      await audit.close();
      await ctx.queues.close();
      redis.disconnect();
      await redisHandle.stop();
    },
  };
}
