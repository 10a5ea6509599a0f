// A private redis-server on a free loopback port with no persistence, for tests that take Redis away (SIGKILL,
// as a crash would) and bring it back empty.
import { spawn, type ChildProcess } from 'node:child_process';
import { answers } from '../../src/pipeline/redis.ts';
import { freePort } from './dicom-tools.ts';

export interface PrivateRedis {
  port: number;
  url: string;
  /** SIGKILL: the server's data is gone with it. */
  kill(): Promise<void>;
  /** Starts a fresh, empty server on the same port. */
  start(): Promise<void>;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const handle: PrivateRedis = {
    port,
    url,
    async start() {
      child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--daemonize',
          'no',
        ],
        { stdio: 'ignore' },
      );
      for (let i = 0; i < 100; i++) {
        if (await answers(url)) return;
        if (child.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`redis-server on port ${port} did not answer`);
    },
    async kill() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGKILL');
      });
    },
  };
  await handle.start();
  return handle;
}
