import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import path from 'node:path';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import express from 'express';
import type { Redis } from 'ioredis';
import { audit } from '../pipeline/audit-trail.ts';
import type { GatewayConfig } from '../config/schema.ts';
import type { StudyIndex } from '../pipeline/study-index.ts';
import type { LeaseHolder } from '../pipeline/maintenance-lease.ts';
import { errorMessage } from '../observability/error-message.ts';
import { metrics } from '../observability/metrics.ts';
import { allQueues, type Queues } from '../pipeline/queues.ts';
import { createApiRouter, type RoutingExplainer } from './api.ts';
import type { TurnaroundSummary } from '../pipeline/turnaround.ts';
import type { TrendRange, TrendSeries } from '../pipeline/trends.ts';
import { principalOf, requireAdminForActions, requireAuth } from './auth.ts';
import { adminEvents } from './events.ts';
import { readiness, WORKER_STALE_MS } from './health.ts';
import { openapiDocument } from './openapi.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { modelWorkers } from './queries.ts';

export interface AdminDeps {
  config: GatewayConfig;
  redis: Redis;
  index: StudyIndex;
  queues: Queues;
  /** A local directory on the data disk: /readyz probes that it is writable and watches its free space. */
  spoolDir: string;
  /** The object store: /readyz asks it to answer (check()), the console renders thumbnails from it. */
  store: ObjectStore;
  /** Who holds the maintenance lease (gateway role), shown in /readyz; it does not make it fail. */
  maintenance?: () => Promise<LeaseHolder>;
  /** Role 'all': the in-process inference worker counts as alive for /readyz while it runs. */
  localWorkerRunning?: () => boolean;
  /** Extra routers (for example STOW-RS ingest) mounted on the same listener; they do their own auth. */
  routers?: { path: string; router: express.Router }[];
  /** Risky settings chosen explicitly (from the stages), shown in /readyz; they do not make it fail. */
  warnings?: string[];
  /** The configured destinations (built-in folder included), for the console. */
  destinations: { name: string; kind: string; isDefault: boolean }[];
  /** The routing dry run behind POST /api/routing/explain (gateway role). */
  explainRouting?: RoutingExplainer;
  /** GET /api/turnaround: the last hour's turnaround and SLOs (gateway role). */
  turnaround?: () => Promise<TurnaroundSummary>;
  /** GET /api/trends: the console's charts (gateway role). */
  trends?: (range: TrendRange) => Promise<TrendSeries>;
}

/** How often bull-board's queue list is re-read from the set of known inference queues. */
const BOARD_SYNC_MS = 5000;

export const PUBLIC_DIR = path.join(import.meta.dirname, 'public');
/** uPlot (npm `uplot`), the console's chart library, served from node_modules: no CDN, works offline. */
const UPLOT_DIR = path.dirname(createRequire(import.meta.url).resolve('uplot'));

/**
 * Admin HTTP: health (open), then behind auth: /metrics, the REST API (/api, described at
 * /api/openapi.json), bull-board (/admin/queues) and the console's static pages (/).
 */
export function createAdminApp(deps: AdminDeps): express.Express {
  const { config } = deps;
  const prefix = config.redis.prefix;
  const app = express();
  app.disable('x-powered-by');
  // The console must not be framed by another site (clickjacking of its action buttons), and nothing it
  // serves may be sniffed into another type.
  app.use((_req, res, next) => {
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Content-Security-Policy', "frame-ancestors 'none'");
    res.setHeader('X-Content-Type-Options', 'nosniff');
    next();
  });

  // Probes stay open: orchestrators call them without credentials, and they reveal no study data.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', uptimeSeconds: Math.round(process.uptime()) });
  });

  app.get('/readyz', async (_req, res) => {
    const result = await readiness({
      redis: deps.redis,
      prefix,
      spoolDir: deps.spoolDir,
      store: deps.store,
      minFreeBytes: config.spool.minFreeBytes,
      workerStaleMs: WORKER_STALE_MS,
      localWorkerRunning: deps.localWorkerRunning,
      modelWorkers: () => modelWorkers(deps.redis, prefix, deps.queues, WORKER_STALE_MS),
    });
    if (!result.ready) {
      const failing = Object.entries(result.checks)
        .filter(([name, c]) => !c.ok && !result.advisory.includes(name))
        .map(([name, c]) => `${name}: ${c.reason}`);
      adminEvents.notReady(failing);
    }
    // Which gateway runs the cluster-wide maintenance; unknown while Redis does not answer.
    const maintenance = deps.maintenance
      ? await deps.maintenance().catch((err: unknown) => ({ error: errorMessage(err) }))
      : undefined;
    res.status(result.ready ? 200 : 503).json({
      status: result.ready ? 'ready' : 'not ready',
      checks: result.checks,
      ...(maintenance !== undefined ? { maintenance } : {}),
      warnings: [...(deps.warnings ?? []), ...result.warnings],
      ...(result.models ? { models: result.models } : {}),
    });
  });

  // Ingest routers authenticate their own clients (modalities, PACS), not admins.
  for (const r of deps.routers ?? []) app.use(r.path, r.router);

  app.use(requireAuth(config.http.auth));

  app.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', metrics.contentType);
    res.send(await metrics.metrics());
  });

  app.get('/api/openapi.json', (_req, res) => {
    res.json(openapiDocument);
  });
  app.use(
    '/api',
    createApiRouter({
      redis: deps.redis,
      prefix,
      index: deps.index,
      queues: deps.queues,
      destinations: deps.destinations,
      workerStaleMs: WORKER_STALE_MS,
      store: deps.store,
      explainRouting: deps.explainRouting,
      turnaround: deps.turnaround,
      trends: deps.trends,
    }),
  );
  app.use('/api', (_req, res) => {
    res.status(404).json({ error: 'no such API route; see /api/openapi.json' });
  });

  const board = new ExpressAdapter();
  board.setBasePath('/admin/queues');
  const bullBoard = createBullBoard({
    queues: [deps.queues.studyComplete, deps.queues.inference.legacy, deps.queues.delivery].map(
      (q) => new BullMQAdapter(q),
    ),
    // @bull-board/express pins its own copy of @bull-board/api; the two are the same shape at runtime.
    serverAdapter: board as unknown as Parameters<typeof createBullBoard>[0]['serverAdapter'],
  });
  // The per-model inference queues come with the models: the board's list is brought up to date from the
  // set of known queues before a request (at most every few seconds), so a new model's queue shows up.
  let boardQueues = '';
  let boardSyncedAt = 0;
  const syncBoard: express.RequestHandler = (_req, _res, next) => {
    if (Date.now() - boardSyncedAt < BOARD_SYNC_MS) return next();
    boardSyncedAt = Date.now();
    allQueues(deps.queues)
      .then((queues) => {
        const names = queues.map((q) => q.name).join('\n');
        if (names !== boardQueues) {
          boardQueues = names;
          bullBoard.replaceQueues(queues.map((q) => new BullMQAdapter(q)));
        }
      })
      // Redis away: the board keeps its last list and shows the outage itself.
      .catch(() => undefined)
      .finally(() => next());
  };
  // bull-board's own actions (edit, clean, obliterate...) bypass the console's safeguards: role admin only,
  // and audited like ours.
  app.use('/admin/queues', requireAdminForActions('bull-board'));
  app.use('/admin/queues', (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.on('finish', () => {
        const who = principalOf(res);
        void audit.record({
          type: 'action',
          actor: who.name,
          role: who.role,
          action: `bull-board ${req.method}`,
          target: req.originalUrl,
          result: res.statusCode < 400 ? 'ok' : 'error',
        });
      });
    }
    next();
  });
  app.use('/admin/queues', syncBoard, board.getRouter() as express.Router);

  app.use(express.static(PUBLIC_DIR, { index: 'index.html', maxAge: 0 }));
  // Static files, not API routes: uPlot's dist folder (the console loads uPlot.iife.min.js and its CSS).
  app.use('/vendor', express.static(UPLOT_DIR, { index: false, maxAge: 3600_000 }));
  return app;
}

/** Slowest upload rate a whole request is given time for (a modality on a poor link). */
export const MIN_UPLOAD_BYTES_PER_SECOND = 1024 ** 2;
/** Node's own default requestTimeout; never less. */
const DEFAULT_REQUEST_TIMEOUT_MS = 300_000;
/** All headers of a request within this. */
export const HEADERS_TIMEOUT_MS = 60_000;
/** A connection that sends or receives nothing for this long is closed, however long its request may take. */
export const IDLE_TIMEOUT_MS = 120_000;

/**
 * Timeouts of the HTTP server: a whole request may take as long as the largest body it may carry needs at
 * MIN_UPLOAD_BYTES_PER_SECOND (an 8 GiB STOW-RS upload: 8192 s), while slowloris clients are still cut by
 * the headers and idle timeouts.
 */
export function httpTimeouts(largestBodyBytes: number): {
  requestTimeout: number;
  headersTimeout: number;
  timeout: number;
} {
  const upload = Math.ceil(largestBodyBytes / MIN_UPLOAD_BYTES_PER_SECOND) * 1000 + HEADERS_TIMEOUT_MS;
  return {
    requestTimeout: Math.max(DEFAULT_REQUEST_TIMEOUT_MS, upload),
    headersTimeout: HEADERS_TIMEOUT_MS,
    timeout: IDLE_TIMEOUT_MS,
  };
}

/** PEM files of the HTTPS listener (config http.tls, paths already resolved). */
export interface HttpsFiles {
  certFile: string;
  keyFile: string;
  caFile?: string;
  requireClientCert: boolean;
}

/**
 * `largestBodyBytes`: the largest request body a mounted router accepts (STOW-RS), for the timeouts. With
 * `tls` the listener speaks HTTPS only (TLS 1.2 or later), for the console, the API and STOW-RS alike.
 */
export function listen(
  app: express.Express,
  host: string,
  port: number,
  largestBodyBytes = 0,
  tls?: HttpsFiles,
): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server: Server = tls
      ? createHttpsServer(
          {
            cert: readFileSync(tls.certFile),
            key: readFileSync(tls.keyFile),
            ...(tls.caFile ? { ca: readFileSync(tls.caFile) } : {}),
            requestCert: tls.requireClientCert,
            rejectUnauthorized: tls.requireClientCert,
            minVersion: 'TLSv1.2',
          },
          app,
        )
      : createHttpServer(app);
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      adminEvents.listening(host, (server.address() as { port: number }).port, server.requestTimeout);
      resolve(server);
    });
    const t = httpTimeouts(largestBodyBytes);
    server.requestTimeout = t.requestTimeout;
    server.headersTimeout = t.headersTimeout;
    server.setTimeout(t.timeout);
  });
}
