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
  /** The in-process inference workers (one per loaded model), which /readyz counts as alive while they run. */
  localInference?: LocalInference;
  /**
   * Probes the storage the worker reads images from and writes reports to; while it fails the worker takes
   * no jobs and is not ready. Defaults to the object store's check().
   */
  storageCheck?: () => Promise<void>;
  /** How many models the in-process worker loaded. */
  loadedModels?: number;
}

/** Closes one thing a role started; called in order at shutdown. */
export type Closer = () => Promise<void>;

/** What the roles and probes see of the in-process inference workers. */
export interface LocalInference {
  /** Taking jobs: some queue's worker runs and the storage answers. */
  isRunning(): boolean;
  /** The storage gate's last probe. */
  storage(): { ok: boolean; reason: string };
}
