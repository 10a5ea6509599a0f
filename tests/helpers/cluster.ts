// Several "machines" on one host: gateway and worker processes (the real CLI, role `gateway` or `worker`),
// each with a data directory and a models directory of its own, that share nothing but Redis (through
// Sentinel: one master, one replica, three sentinels) and an S3 server (s3rver in a process of its own,
// tests/helpers/s3-server.ts).
// Tests kill one node (SIGKILL, as a power cut would), wipe its data directory (the machine is lost), start
// it again, and get every node's log when something fails.
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../../src/pipeline/redis.ts';
import { makeModelsDir, startGateway, type GatewayProcess } from './gateway.ts';
import { startSentinelSet, type SentinelSet } from './redis-topology.ts';
import { startS3Server, type S3TestServer } from './s3-server.ts';

/** Keys of the objects in a bucket under prefix (s3rver answers an anonymous ListObjects), every page. */
export async function listS3Keys(endpoint: string, bucket: string, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  let marker = '';
  for (;;) {
    const q = new URLSearchParams({ prefix, ...(marker ? { marker } : {}) });
    const res = await fetch(`${endpoint}/${bucket}?${q}`);
    if (!res.ok) throw new Error(`listing s3://${bucket}/${prefix}: ${res.status}`);
    const xml = await res.text();
    const page = [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
    keys.push(...page);
    if (!/<IsTruncated>true<\/IsTruncated>/.test(xml) || page.length === 0) return keys;
    marker = page[page.length - 1]!;
  }
}

export interface ClusterNode extends GatewayProcess {
  /** 'gateway-1', 'worker-2', ... */
  name: string;
  role: 'gateway' | 'worker';
  /** SIGKILL, then removes its data directory: the machine and its disk are gone. */
  lose(): Promise<void>;
}

export interface Cluster {
  prefix: string;
  /** The storage prefix inside the bucket. */
  storagePrefix: string;
  sentinels: SentinelSet;
  redisTarget: RedisTarget;
  s3: S3TestServer;
  bucket: string;
  /** Keys of the bucket's objects under prefix. */
  listKeys(prefix?: string): Promise<string[]>;
  gateways: ClusterNode[];
  workers: ClusterNode[];
  /** A Redis client on the current master (through the sentinels); closed by dispose(). */
  redis: Redis;
  /** The node whose process has this pid. */
  byPid(pid: number): ClusterNode | undefined;
  /** The last `chars` of every node's log, headed by its name, for failure messages. */
  logs(chars?: number): Promise<string>;
  /** Runs `what`; when it throws, the error message gets every node's log appended. */
  explain<T>(what: () => Promise<T>): Promise<T>;
  dispose(): Promise<void>;
}

export interface ClusterOptions {
  gateways: number;
  workers: number;
  /** The models every worker has (each its own directory); gateways route with the same manifests. */
  models: ('cxr' | 'uniformity' | 'brain')[];
  /** Configuration for every node (destinations, study, dimse peers...). */
  config?: Record<string, unknown>;
  /** Added for gateways / for workers only. */
  gatewayConfig?: Record<string, unknown>;
  workerConfig?: Record<string, unknown>;
}

function merge(...parts: (Record<string, unknown> | undefined)[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const part of parts) {
    for (const [k, v] of Object.entries(part ?? {})) {
      const prev = out[k];
      out[k] =
        v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object'
          ? merge(prev as Record<string, unknown>, v as Record<string, unknown>)
          : v;
    }
  }
  return out;
}

/**
 * Starts the shared services (Sentinel set, s3rver) and the nodes: gateways first (they create the
 * queues), then workers. Every node gets the same Redis prefix, sentinels and S3 bucket/prefix, and a data
 * directory and models directory of its own.
 */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const cleanups: (() => Promise<void>)[] = [];
  const runCleanups = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  };
  try {
    const prefix = `aigw-cluster-${randomBytes(4).toString('hex')}`;
    const storagePrefix = `${prefix}/`;
    const sentinels = await startSentinelSet(`aigw-${randomBytes(3).toString('hex')}`);
    cleanups.push(() => sentinels.dispose());
    const bucket = 'aigw-cluster';
    const s3 = await startS3Server({ buckets: [bucket] });
    cleanups.push(() => s3.dispose());
    const redisTarget: RedisTarget = {
      url: 'redis://unused.invalid:1',
      sentinels: sentinels.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
      name: sentinels.masterName,
    };
    const shared = {
      redis: { sentinels: redisTarget.sentinels, name: redisTarget.name },
      storage: {
        backend: 's3',
        s3: {
          bucket,
          endpoint: s3.endpoint,
          region: s3.region,
          prefix: storagePrefix,
          forcePathStyle: true,
          accessKeyId: s3.accessKeyId,
          secretAccessKey: s3.secretAccessKey,
        },
      },
    };
    const nodes: ClusterNode[] = [];
    const start = async (role: 'gateway' | 'worker', n: number): Promise<ClusterNode> => {
      const name = `${role}-${n}`;
      const modelsDir = await makeModelsDir(opts.models);
      cleanups.push(() => rm(modelsDir, { recursive: true, force: true }));
      let gateway: GatewayProcess;
      try {
        gateway = await startGateway({
          role,
          prefix,
          modelsDir,
          config: merge(
            shared,
            opts.config,
            role === 'gateway' ? opts.gatewayConfig : opts.workerConfig,
            // startGateway adds its prefix to these; the sentinels' redis has no key to clean up here.
            { redis: { prefix } },
          ),
        });
      } catch (err) {
        throw new Error(`${name} did not start: ${(err as Error).message}`, { cause: err });
      }
      cleanups.push(() => gateway.dispose());
      const node: ClusterNode = Object.assign(gateway, {
        name,
        role,
        async lose() {
          await gateway.stop('SIGKILL');
          await rm(gateway.dataDir, { recursive: true, force: true });
        },
      });
      nodes.push(node);
      return node;
    };
    // Gateways one after the other (the first creates what the others find); workers alongside.
    const gateways: ClusterNode[] = [];
    for (let i = 1; i <= opts.gateways; i++) gateways.push(await start('gateway', i));
    const workers = await Promise.all(Array.from({ length: opts.workers }, (_, i) => start('worker', i + 1)));
    const redis = connectRedis(redisTarget, { maxRetriesPerRequest: 3 });
    cleanups.push(async () => redis.disconnect());

    const logs = async (chars = 4000): Promise<string> => {
      const parts: string[] = [];
      for (const node of nodes) {
        const text = await readFile(node.logPath, 'utf8').catch(() => '(no log)');
        parts.push(`----- ${node.name} (pid ${node.pid ?? 'stopped'}) -----\n${text.slice(-chars)}`);
      }
      // Whether the shared services still answer: a failure may be theirs.
      const s3state = await fetch(`${s3.endpoint}/${bucket}`).then(
        (r) => `answers ${r.status}`,
        (err: unknown) => `does not answer (${(err as Error).cause ?? (err as Error).message})`,
      );
      const master = await sentinels.currentMasterPort().then(
        (p) => `master on port ${p}`,
        (err: unknown) => `sentinels do not answer (${(err as Error).message})`,
      );
      parts.push(`----- shared services: s3rver ${s3state}; ${master} -----`);
      if (s3.unexpectedExit()) parts.push(s3.unexpectedExit());
      return parts.join('\n');
    };
    return {
      prefix,
      storagePrefix,
      sentinels,
      redisTarget,
      s3,
      bucket,
      listKeys: (p = '') => listS3Keys(s3.endpoint, bucket, p),
      gateways,
      workers,
      redis,
      byPid: (pid) => nodes.find((n) => n.pid === pid),
      logs,
      async explain(what) {
        try {
          return await what();
        } catch (err) {
          const e = err instanceof Error ? err : new Error(String(err));
          e.message = `${e.message}\n${await logs()}`;
          throw e;
        }
      },
      dispose: runCleanups,
    };
  } catch (err) {
    await runCleanups();
    throw err;
  }
}
