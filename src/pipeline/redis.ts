import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { GatewayConfig } from '../config/schema.ts';
import { pipelineEvents } from './events.ts';

export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
}

/** A connection for BullMQ workers and our own index: blocking commands must not time out. */
export function createRedis(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
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
export async function createIngestRedis(url: string): Promise<Redis> {
  const redis = new Redis(url, {
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

/** Whether a Redis answers PING at `url` within a second (no retries, no offline queue). */
export async function answers(url: string): Promise<boolean> {
  const probe = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

export interface RedisHandle {
  url: string;
  /** Set when we started a private redis-server; stop() ends it. */
  stop(): Promise<void>;
}

/**
 * Uses the Redis at the configured URL. When none answers and the URL is on loopback, starts a private
 * `redis-server` (append-only file in the data directory, so queued work survives a restart); otherwise
 * says exactly what is missing.
 */
export async function ensureRedis(config: GatewayConfig): Promise<RedisHandle> {
  const url = config.redis.url;
  if (await answers(url)) return { url, stop: async () => undefined };

  const parsed = new URL(url);
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(parsed.hostname);
  if (!config.redis.autoStart || !loopback) {
    throw new RedisUnavailableError(
      `Redis is not answering at ${url}. Start it, or set GATEWAY_REDIS_URL / redis.url to a Redis that answers.`,
    );
  }
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new RedisUnavailableError(
      `Redis is not answering at ${url}, and no redis-server is installed to start one. ` +
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
        url,
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
