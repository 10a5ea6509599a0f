// Real redis-server processes on free loopback ports for the topologies the gateway meets beyond one
// Redis: a Cluster-enabled node, and a master with a replica watched by three sentinels.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { answers } from '../../src/pipeline/redis.ts';
import { freePort } from './dicom-tools.ts';

export interface RedisProcess {
  port: number;
  /** SIGKILL, as a crash would; resolves once it has exited. */
  kill(): Promise<void>;
}

async function startServer(port: number, args: string[]): Promise<RedisProcess> {
  const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  const handle: RedisProcess = {
    port,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      });
    },
  };
  for (let i = 0; i < 100; i++) {
    if (await answers(`redis://127.0.0.1:${port}`)) return handle;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await handle.kill();
  throw new Error(`redis-server ${args.join(' ')} did not answer on port ${port}`);
}

const EPHEMERAL = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'];

/** A redis-server with cluster mode on (no cluster formed: INFO cluster says cluster_enabled:1). */
export async function startClusterNode(): Promise<RedisProcess & { dispose(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-cluster-'));
  const port = await freePort();
  const node = await startServer(port, [
    '--port',
    String(port),
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    path.join(dir, 'nodes.conf'),
    '--dir',
    dir,
    ...EPHEMERAL,
  ]);
  return {
    ...node,
    async dispose() {
      await node.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface SentinelSet {
  masterName: string;
  master: RedisProcess;
  replica: RedisProcess;
  sentinels: RedisProcess[];
  /** The port of the server the sentinels name as master now. */
  currentMasterPort(): Promise<number>;
  dispose(): Promise<void>;
}

/**
 * One master, one replica and three sentinels (quorum 2) on loopback, with short timeouts: a master that
 * stops answering is failed over in a few seconds.
 */
export async function startSentinelSet(masterName = 'aigw'): Promise<SentinelSet> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sentinel-'));
  const started: RedisProcess[] = [];
  try {
    const masterPort = await freePort();
    const master = await startServer(masterPort, ['--port', String(masterPort), ...EPHEMERAL]);
    started.push(master);
    const replicaPort = await freePort();
    const replica = await startServer(replicaPort, [
      '--port',
      String(replicaPort),
      '--replicaof',
      '127.0.0.1',
      String(masterPort),
      ...EPHEMERAL,
    ]);
    started.push(replica);
    const sentinels: RedisProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      // A sentinel rewrites its configuration file: each gets one of its own.
      const conf = path.join(dir, `sentinel-${i}.conf`);
      await writeFile(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 2`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 3000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      const s = await startServer(port, [conf, '--sentinel']);
      started.push(s);
      sentinels.push(s);
    }
    // Ready once every sentinel knows the replica (and so can fail over to it).
    const deadline = Date.now() + 15_000;
    for (const s of sentinels) {
      const client = new Redis({ host: '127.0.0.1', port: s.port, lazyConnect: true });
      try {
        for (;;) {
          const replicas = (await client.call('SENTINEL', 'REPLICAS', masterName)) as unknown[];
          if (replicas.length > 0) break;
          if (Date.now() > deadline) throw new Error('the sentinels never saw the replica');
          await new Promise((r) => setTimeout(r, 200));
        }
      } finally {
        client.disconnect();
      }
    }
    return {
      masterName,
      master,
      replica,
      sentinels,
      async currentMasterPort() {
        const client = new Redis({ host: '127.0.0.1', port: sentinels[0]!.port, lazyConnect: true });
        try {
          const [, port] = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as string[];
          return Number(port);
        } finally {
          client.disconnect();
        }
      },
      async dispose() {
        for (const p of started.reverse()) await p.kill();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const p of started.reverse()) await p.kill();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
