import type { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from '../config/schema.ts';
import type { Queues } from '../pipeline/queues.ts';
import type { RedisTarget } from '../pipeline/redis.ts';
import type { StudyIndex } from '../pipeline/study-index.ts';
import type { ObjectStore } from '../storage/object-store.ts';

/**
 * What every role of one process shares: settings, the Redis connection, the study index, the queues, and
 * the object store every byte the gateway keeps goes through (instances, SRs and SEGs).
 */
export interface RoleContext {
  config: GatewayConfig;
  redis: Redis;
  /** Where Redis answers (a private redis-server's URL when one was started, or the sentinels). */
  redisTarget: RedisTarget;
  index: StudyIndex;
  queues: Queues;
  /** init()'d before any role starts, closed after they all stopped. */
  store: ObjectStore;
  /** The in-process inference worker, which /readyz counts as alive while it runs. */
  localInference?: Worker;
  /** How many models the in-process worker loaded. */
  loadedModels?: number;
}

/** Closes one thing a role started; called in order at shutdown. */
export type Closer = () => Promise<void>;
