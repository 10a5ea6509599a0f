// Starts the roles of one process over one shared context, and closes them in order.
import path from 'node:path';
import { assertAuthForBinding } from '../admin/auth.ts';
import { audit } from '../pipeline/audit-trail.ts';
import { collectQueueDepths } from '../observability/metrics.ts';
import { allQueues, createQueues } from '../pipeline/queues.ts';
import { createRedis, ensureRedis } from '../pipeline/redis.ts';
import { StudyIndex } from '../pipeline/study-index.ts';
import { createObjectStore } from '../storage/create-object-store.ts';
import type { GatewayConfig } from '../config/schema.ts';
import type { Closer, RoleContext } from './context.ts';
import { processEvents } from './events.ts';
import { startGateway } from './gateway.ts';
import { startWorker, startWorkerHttp } from './worker.ts';
import { withDeadline } from '../util/deadline.ts';

/** One closer may take this long; past it shutdown moves on to the next (Redis may be gone). */
export const CLOSER_DEADLINE_MS = 3000;

/** Waits for one closing step, at most CLOSER_DEADLINE_MS; logs and moves on when it fails or hangs. */
async function bounded(step: string, closing: () => Promise<void>): Promise<void> {
  try {
    await withDeadline(closing(), CLOSER_DEADLINE_MS, step);
  } catch (err) {
    processEvents.shutdownError(step, err);
  }
}

export type Role = 'all' | 'gateway' | 'worker';

export async function startRoles(role: Role, config: GatewayConfig): Promise<{ close(): Promise<void> }> {
  const workerHttp = role === 'worker' && config.worker.httpPort !== undefined;
  if (role !== 'worker' || workerHttp) assertAuthForBinding(config.http);
  const redisHandle = await ensureRedis(config);
  const redis = createRedis(redisHandle.target);
  // The store answers before anything is accepted or run: a role never starts against missing storage.
  const store = createObjectStore(config);
  await store.init();
  const ctx: RoleContext = {
    config,
    redis,
    redisTarget: redisHandle.target,
    index: new StudyIndex(redis, config.redis.prefix),
    queues: createQueues(redis, config),
    store,
  };
  await audit.open({
    dir: path.join(config.dataDir, 'audit'),
    retentionDays: config.audit.retentionDays,
    streamMaxLen: config.audit.streamMaxLen,
    redis,
    prefix: config.redis.prefix,
  });
  collectQueueDepths(() => allQueues(ctx.queues));
  // One list of closers per role, closed in the reverse order of starting: the gateway (which stops
  // accepting first) before the workers, the worker's probes last.
  const roles: Closer[][] = [];
  // Listening first, so liveness holds while the models load and readiness says when they have.
  if (workerHttp) roles.push([await startWorkerHttp(ctx, config.worker.httpPort!)]);
  // Workers first: a gateway that accepts studies should find models ready.
  if (role === 'worker' || role === 'all') roles.push(await startWorker(ctx));
  if (role === 'gateway' || role === 'all') roles.push(await startGateway(ctx));
  const closers = roles.reverse().flat();
  processEvents.started({
    role,
    aeTitle: config.dimse.aeTitle,
    dimsePort: config.dimse.port,
    httpPort: config.http.port,
  });
  return {
    /** Every step is bounded, so this ends even while Redis is unreachable. */
    async close() {
      for (const [i, close] of closers.entries()) await bounded(`closer ${i}`, close);
      await bounded('audit trail', () => audit.close());
      await bounded('queues', () => ctx.queues.close());
      await bounded('object store', () => store.close());
      redis.disconnect();
      await bounded('redis-server', () => redisHandle.stop());
    },
  };
}
