import type { ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';

/** Stops a bench's gateway process (SIGTERM, waits for it) and deletes its keys under prefix. */
export async function stopGatewayChild(child: ChildProcess, redisUrl: string, prefix: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null)
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  const redis = new Redis(redisUrl);
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
}
