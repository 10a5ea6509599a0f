import express from 'express';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from '../config/schema.ts';
import { metrics } from '../observability/metrics.ts';
import { requireAuth } from './auth.ts';
import { checkRedis, type CheckResult } from './health.ts';

// The HTTP of a `worker` process (no gateway in it): probes and /metrics only, so that an orchestrator
// can probe a split-out worker and Prometheus can scrape its inference and provider metrics. Same
// binding rule and auth as the admin console; no study data is served.

export interface WorkerAppDeps {
  config: GatewayConfig;
  redis: Redis;
  /** Whether the BullMQ workers are taking jobs. */
  workerRunning: () => boolean;
  /** The storage gate's last probe; undefined while the worker starts. */
  storage?: () => { ok: boolean; reason: string } | undefined;
  /** How many models are loaded; undefined while they load. */
  models: () => number | undefined;
}

export function createWorkerApp(deps: WorkerAppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', role: 'worker', uptimeSeconds: Math.round(process.uptime()) });
  });

  app.get('/readyz', async (_req, res) => {
    const loaded = deps.models();
    const storage = deps.storage?.();
    const checks: Record<string, CheckResult> = {
      redis: await checkRedis(deps.redis),
      // Images are read and reports written there: unreachable, the worker takes no job (storage-gate.ts).
      storage: storage ?? { ok: false, reason: 'the storage has not been probed yet' },
      worker: deps.workerRunning()
        ? { ok: true, reason: 'taking inference jobs' }
        : {
            ok: false,
            reason:
              storage && !storage.ok
                ? 'paused: the storage is unreachable'
                : 'the inference worker is not running',
          },
      models:
        loaded === undefined
          ? { ok: false, reason: 'the models are loading' }
          : loaded > 0
            ? { ok: true, reason: `${loaded} model(s) loaded` }
            : { ok: false, reason: `no usable model in ${deps.config.modelsDir}` },
    };
    const ready = Object.values(checks).every((c) => c.ok);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks });
  });

  app.use(requireAuth(deps.config.http.auth));
  app.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', metrics.contentType);
    res.send(await metrics.metrics());
  });
  app.use((_req, res) => {
    res.status(404).json({ error: 'a worker serves /healthz, /readyz and /metrics only' });
  });
  return app;
}
