import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import { ConfigError } from '../config/load.ts';
import { REDIS_CLUSTER_REFUSED, type GatewayConfig } from '../config/schema.ts';
import { pipelineEvents } from './events.ts';

export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
}

/** The Redis answers, but is a kind this gateway refuses to run on (Redis Cluster). */
export class RedisRefusedError extends ConfigError {
  override name = 'RedisRefusedError';
}

/**
 * Where Redis is: one URL, or the sentinels that know the current master of `name`. Plain data, so a
 * worker thread can be handed it and open its own connection through the same factory.
 */
export interface RedisTarget {
  url: string;
  sentinels?: { host: string; port: number }[];
  name?: string;
  password?: string;
  sentinelPassword?: string;
}

export function redisTarget(config: GatewayConfig): RedisTarget {
  const r = config.redis;
  if (!r.sentinels) return { url: r.url };
  return {
    url: r.url,
    sentinels: r.sentinels.map((s) => ({ host: s.host, port: s.port })),
    ...(r.name !== undefined ? { name: r.name } : {}),
    ...(r.password !== undefined ? { password: r.password } : {}),
    ...(r.sentinelPassword !== undefined ? { sentinelPassword: r.sentinelPassword } : {}),
  };
}

/** For messages: the URL without credentials, or the sentinels and master name. */
export function describeTarget(target: RedisTarget | string): string {
  const t = typeof target === 'string' ? { url: target } : target;
  if (t.sentinels) {
    return `master "${t.name}" via sentinels ${t.sentinels.map((s) => `${s.host}:${s.port}`).join(', ')}`;
  }
  try {
    const u = new URL(t.url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return 'the configured redis.url';
  }
}

/**
 * The one place a Redis connection is made: every other module (BullMQ included, which is handed these
 * connections or duplicates of them) goes through here, so a URL and Sentinel behave alike everywhere.
 */
export function connectRedis(target: RedisTarget | string, options: RedisOptions = {}): Redis {
  const t = typeof target === 'string' ? { url: target } : target;
  if (!t.sentinels) return new Redis(t.url, options);
  return new Redis({
    ...options,
    sentinels: t.sentinels,
    name: t.name!,
    ...(t.password !== undefined ? { password: t.password } : {}),
    ...(t.sentinelPassword !== undefined ? { sentinelPassword: t.sentinelPassword } : {}),
    // Moves to the new master as soon as the sentinels announce +switch-master, not only on a lost socket.
    failoverDetector: true,
  });
}

/** A connection for BullMQ workers and our own index: blocking commands must not time out. */
export function createRedis(target: RedisTarget | string): Redis {
  return connectRedis(target, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

/**
 * Redis's clock, in milliseconds since the epoch. Times that processes on several hosts compare (worker
 * heartbeats) are written and judged on this one clock, so a host whose clock is off does not matter.
 */
export async function redisTimeMs(redis: Redis): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/** How long one ingest-path Redis command may take before the sender is told to retry. */
export const INGEST_COMMAND_TIMEOUT_MS = 2000;

/**
 * A connection for the ingest path (index writes, completion re-arm): while Redis is unreachable, commands
 * fail at once instead of waiting in ioredis' offline queue, so a C-STORE is answered A700 and STOW-RS 503
 * rather than left hanging. Reconnects on its own; resolves once it is ready.
 */
export async function createIngestRedis(target: RedisTarget | string): Promise<Redis> {
  const redis = connectRedis(target, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: INGEST_COMMAND_TIMEOUT_MS,
    enableReadyCheck: true,
    lazyConnect: true,
    // Back within a second of Redis answering again.
    retryStrategy: (times) => Math.min(times * 100, 1000),
  });
  // Connection errors are reported by the commands that meet them (and by /readyz); not fatal here.
  redis.on('error', () => undefined);
  await redis.connect();
  return redis;
}

/** A connection for a short look (no retries, no offline queue), connected; undefined when none answers. */
async function probe(target: RedisTarget | string): Promise<Redis | undefined> {
  const redis = connectRedis(target, {
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    sentinelRetryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    if ((await redis.ping()) === 'PONG') return redis;
  } catch {
    // not answering
  }
  redis.disconnect();
  return undefined;
}

/** Whether a Redis answers PING at `target` within a second (no retries, no offline queue). */
export async function answers(target: RedisTarget | string): Promise<boolean> {
  const redis = await probe(target);
  redis?.disconnect();
  return redis !== undefined;
}

/**
 * Refuses a Redis Cluster node: the study index's Lua scripts and MULTI transactions touch several keys of
 * a study (and shared sets) that Cluster would hash to different slots.
 */
export async function refuseCluster(target: RedisTarget | string): Promise<void> {
  const redis = await probe(target);
  if (!redis) return;
  try {
    const info = await redis.info('cluster');
    if (/^cluster_enabled:1\s*$/m.test(info)) {
      throw new RedisRefusedError(
        `${describeTarget(target)} is a Redis Cluster node (INFO cluster: cluster_enabled:1). ${REDIS_CLUSTER_REFUSED}`,
      );
    }
  } finally {
    redis.disconnect();
  }
}

export interface RedisHandle {
  /** Where Redis answers (a private redis-server's URL when one was started). */
  target: RedisTarget;
  /** Set when we started a private redis-server; stop() ends it. */
  stop(): Promise<void>;
}

/**
 * Uses the Redis at the configured URL (or the master the configured sentinels name). When none answers
 * and the URL is on loopback, starts a private `redis-server` (append-only file in the data directory, so
 * queued work survives a restart); otherwise says exactly what is missing. Refuses a Redis Cluster.
 */
export async function ensureRedis(config: GatewayConfig): Promise<RedisHandle> {
  const target = redisTarget(config);
  if (await answers(target)) {
    await refuseCluster(target);
    return { target, stop: async () => undefined };
  }
  if (target.sentinels) {
    throw new RedisUnavailableError(
      `Redis is not answering: no ${describeTarget(target)} could be reached. ` +
        `Check redis.sentinels, redis.name and the passwords.`,
    );
  }
  const url = target.url;
  const parsed = new URL(url);
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(parsed.hostname);
  if (!config.redis.autoStart || !loopback) {
    throw new RedisUnavailableError(
      `Redis is not answering at ${describeTarget(url)}. Start it, or set GATEWAY_REDIS_URL / redis.url to a Redis that answers.`,
    );
  }
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new RedisUnavailableError(
      `Redis is not answering at ${describeTarget(url)}, and no redis-server is installed to start one. ` +
        `Install it (Debian/Ubuntu: apt-get install redis-server), or set GATEWAY_REDIS_URL to a running Redis.`,
    );
  }
  const port = parsed.port || '6379';
  const dir = path.join(config.dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      port,
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--save',
      '',
      '--daemonize',
      'no',
    ],
    { stdio: 'ignore' },
  );
  pipelineEvents.redisStarted(port, dir);
  for (let i = 0; i < 50; i++) {
    if (await answers(url)) {
      return {
        target,
        stop: () =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new RedisUnavailableError(
    `started redis-server on port ${port}, but it did not answer (is the port in use?)`,
  );
}
