import { statfs } from 'node:fs/promises';
import type { Server } from 'node:http';
import express from 'express';
import type { Redis } from 'ioredis';
import type { StudyIndex } from '../ingest/studies.ts';
import { log } from '../log.ts';
import { isValidUid } from '../dicom/uid.ts';

export interface AdminDeps {
  redis: Redis;
  index: StudyIndex;
  spoolDir: string;
  /** Extra routers (for example STOW-RS ingest) mounted on the same listener. */
  routers?: { path: string; router: express.Router }[];
}

/** Admin HTTP: health checks and the study status API. */
export function createAdminApp(deps: AdminDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    const checks: Record<string, { ok: boolean; reason?: string }> = {};
    try {
      checks.redis = { ok: (await deps.redis.ping()) === 'PONG' };
    } catch (err) {
      checks.redis = { ok: false, reason: `Redis does not answer: ${(err as Error).message}` };
    }
    try {
      const fs = await statfs(deps.spoolDir);
      checks.disk = { ok: fs.bavail * fs.bsize > 0 };
    } catch (err) {
      checks.disk = { ok: false, reason: `spool not accessible: ${(err as Error).message}` };
    }
    const ready = Object.values(checks).every((c) => c.ok);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks });
  });

  app.get('/api/studies', async (_req, res) => {
    res.json(await deps.index.list(200));
  });

  app.get('/api/studies/:uid', async (req, res) => {
    if (!isValidUid(req.params.uid)) {
      res.status(400).json({ error: 'not a valid DICOM UID' });
      return;
    }
    const study = await deps.index.get(req.params.uid);
    if (!study) res.status(404).json({ error: 'unknown study' });
    else res.json(study);
  });

  for (const r of deps.routers ?? []) app.use(r.path, r.router);
  return app;
}

export function listen(app: express.Express, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host, (err?: Error) => {
      if (err) return reject(err);
      log.info(
        { event: 'http.listening', host, port: (server.address() as { port: number }).port },
        'admin HTTP listening',
      );
      resolve(server);
    });
  });
}
