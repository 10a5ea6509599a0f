// The console's REST API: every page's data and every action, as JSON. Described in openapi.ts.
import express, { type Request, type Response } from 'express';
import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { audit, AUDIT_TYPES, auditToCsv, type AuditType } from '../pipeline/audit-trail.ts';
import { isValidUid } from '../dicom/uid.ts';
import { rearmStudyComplete } from '../pipeline/completion.ts';
import { STUDY_STATES, type StudyIndex, type StudyState } from '../pipeline/study-index.ts';
import { readInstanceHeader } from '../dicom/part10.ts';
import { errorMessage } from '../observability/error-message.ts';
import type { InstanceRecord } from '../pipeline/instance-record.ts';
import type { Queues } from '../pipeline/queues.ts';
import { TURNAROUND_WINDOW_MS, type TurnaroundSummary } from '../pipeline/turnaround.ts';
import { TREND_RANGES, type TrendRange, type TrendSeries } from '../pipeline/trends.ts';
import { principalOf } from './auth.ts';
import { PhiViewAuditor, visibleIdentity } from './phi.ts';
import { renderThumbnail, type Thumbnail } from '../imaging/thumbnail.ts';
import { adminEvents } from './events.ts';
import { objectKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import {
  jobsForStudy,
  listAssociations,
  listDestinations,
  listJobs,
  listStudies,
  listWorkers,
  pendingJobsForStudy,
  markBlockedJobs,
  modelWorkers,
  queueByName,
  queueOverview,
  studiesWaitingForWorkers,
  studyRow,
  worklist,
  StudyListCache,
  JOB_STATES,
  WORKLIST_SORTS,
  type StudyRow,
  type WorklistSort,
} from './queries.ts';

export interface ApiDeps {
  redis: Redis;
  prefix: string;
  index: StudyIndex;
  queues: Queues;
  destinations: { name: string; kind: string; isDefault: boolean }[];
  workerStaleMs: number;
  /** Where the spooled instances are (thumbnails are rendered from a local copy). */
  store: ObjectStore;
  /** The routing dry run (the routing stage's explainRouting, injected by the gateway role). */
  explainRouting?: RoutingExplainer;
  /** Receive → SR delivered over the last hour, and each rule's SLO (the gateway role's turnaround log). */
  turnaround?: () => Promise<TurnaroundSummary>;
  /** The trend charts' series over the last hour or day (the gateway role's trends reader). */
  trends?: (range: TrendRange) => Promise<TrendSeries>;
}

/** Which models would run on these instances, and why not: a JSON-serialisable explanation. */
export type RoutingExplainer = (instances: InstanceRecord[]) => Promise<unknown>;

/** A DICOM file posted to the dry run: its header is all that is read. */
const MAX_DRY_RUN_BYTES = 64 * 1024 * 1024;

class BadRequest extends Error {}

/** Thumbnails rendered at once (each decodes one image); further requests wait their turn. */
const THUMBNAIL_CONCURRENCY = 2;
/** Rendered thumbnails kept (about 20-60 KB each). */
const THUMBNAIL_CACHE = 256;

function offsetParam(value: unknown): number {
  if (value === undefined || value === '') return 0;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 10_000_000) throw new BadRequest('offset must be an integer ≥ 0');
  return n;
}

function stringParam(value: unknown, name: string, max = 64): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || value.length > max) throw new BadRequest(`${name} must be a short string`);
  return value;
}

function intParam(value: unknown, name: string, def: number, max: number): number {
  if (value === undefined || value === '') return def;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new BadRequest(`${name} must be an integer 1-${max}`);
  return n;
}

function timeParam(value: unknown, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw new BadRequest(`${name} must be a date`);
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (Number.isNaN(ms)) throw new BadRequest(`${name} must be an ISO 8601 date or milliseconds since 1970`);
  return ms;
}

function studyUidParam(req: Request): string {
  const uid = req.params.uid;
  if (typeof uid !== 'string' || !isValidUid(uid)) throw new BadRequest('not a valid DICOM UID');
  return uid;
}

/** Wraps a handler: bad input is a 400 with the reason, anything else a logged 500. */
function handle(fn: (req: Request, res: Response) => Promise<void>) {
  return async (req: Request, res: Response) => {
    try {
      await fn(req, res);
    } catch (err) {
      if (err instanceof BadRequest) {
        res.status(400).json({ error: err.message });
        return;
      }
      adminEvents.httpError(req.method, req.path, err);
      if (!res.headersSent) res.status(500).json({ error: errorMessage(err) });
    }
  };
}

export function createApiRouter(deps: ApiDeps): express.Router {
  const { redis, prefix, index, queues } = deps;
  const api = express.Router();
  const phiViews = new PhiViewAuditor();
  const studyList = new StudyListCache(index);

  /** The row with its identifying data as the caller may see it; a view of real PHI is audited. */
  async function shown<T extends StudyRow>(res: Response, rows: T[], target: string): Promise<T[]> {
    const who = principalOf(res);
    const out = rows.map((r) => ({ ...r, identity: visibleIdentity(r.identity, who) }));
    const withPhi = rows.filter((r) => r.identity);
    if (who.phi && withPhi.length > 0)
      await phiViews.viewed(
        who,
        target,
        rows.length === 1 ? rows[0]!.studyUid : undefined,
        rows.length === 1 ? undefined : `${withPhi.length} studies with identifying data`,
      );
    return out;
  }

  const thumbnails = new Map<string, Promise<Thumbnail>>();
  let rendering = 0;
  const waiting: (() => void)[] = [];
  /** The thumbnail of a stored instance, rendered from a local copy of it (released at once). */
  async function thumbnailOf(key: string): Promise<Thumbnail> {
    const cached = thumbnails.get(key);
    if (cached) return cached;
    const render = (async () => {
      if (rendering >= THUMBNAIL_CONCURRENCY) await new Promise<void>((r) => waiting.push(r));
      rendering++;
      try {
        const copy = await deps.store.localCopy(key);
        try {
          return await renderThumbnail(copy.path);
        } finally {
          await copy.release();
        }
      } finally {
        rendering--;
        waiting.shift()?.();
      }
    })();
    thumbnails.set(key, render);
    render.catch(() => thumbnails.delete(key));
    if (thumbnails.size > THUMBNAIL_CACHE) thumbnails.delete(thumbnails.keys().next().value!);
    return render;
  }

  /** Records an action with who did it, in the audit trail and the log, and answers with its outcome. */
  async function act(
    req: Request,
    res: Response,
    action: string,
    target: string,
    run: () => Promise<{ status?: number; body: Record<string, unknown>; studyUid?: string }>,
  ): Promise<void> {
    const who = principalOf(res);
    let outcome: { status?: number; body: Record<string, unknown>; studyUid?: string };
    try {
      outcome = await run();
    } catch (err) {
      if (err instanceof BadRequest) throw err;
      outcome = { status: 500, body: { error: errorMessage(err) } };
    }
    const status = outcome.status ?? 200;
    const result = status < 300 ? 'ok' : status < 500 ? 'refused' : 'error';
    const detail = typeof outcome.body.error === 'string' ? outcome.body.error : undefined;
    await audit.record({
      type: 'action',
      actor: who.name,
      role: who.role,
      action,
      target,
      studyUid: outcome.studyUid,
      result,
      detail,
    });
    adminEvents.action({ actor: who.name, action, target, studyUid: outcome.studyUid, result, detail });
    res.status(status).json({ action, target, actor: who.name, result, ...outcome.body });
  }

  api.get(
    '/whoami',
    handle(async (_req, res) => {
      const who = principalOf(res);
      res.json({ name: who.name, role: who.role, via: who.via, phi: who.phi });
    }),
  );

  api.get(
    '/overview',
    handle(async (_req, res) => {
      const [queueViews, workers, states, models] = await Promise.all([
        queueOverview(queues),
        listWorkers(redis, prefix, deps.workerStaleMs),
        index.states(1000),
        modelWorkers(redis, prefix, queues, deps.workerStaleMs),
      ]);
      const byState = Object.fromEntries(STUDY_STATES.map((s) => [s, 0])) as Record<StudyState, number>;
      for (const state of states) byState[state] = (byState[state] ?? 0) + 1;
      res.json({
        queues: queueViews,
        workersAlive: workers.filter((w) => w.alive).length,
        workersKnown: workers.length,
        studies: byState,
        // Per model queue: jobs waiting and live workers with the model; `problem` when none has it.
        models,
      });
    }),
  );

  api.get(
    '/studies',
    handle(async (req, res) => {
      const state = req.query.state;
      if (state !== undefined && state !== '' && !STUDY_STATES.includes(state as StudyState))
        throw new BadRequest(`state must be one of ${STUDY_STATES.join(', ')}`);
      const q = typeof req.query.q === 'string' ? req.query.q.slice(0, 128) : undefined;
      const limit = intParam(req.query.limit, 'limit', 200, 1000);
      const rows = await listStudies(redis, prefix, index, {
        state: (state || undefined) as StudyState,
        q,
        limit,
      });
      res.json(await shown(res, rows, 'study list'));
    }),
  );

  api.get(
    '/studies/:uid',
    handle(async (req, res) => {
      const uid = studyUidParam(req);
      const row = await studyRow(redis, prefix, index, uid);
      if (!row) {
        res.status(404).json({ error: 'unknown study' });
        return;
      }
      const [jobs, events, series, models, coverage] = await Promise.all([
        jobsForStudy(redis, prefix, queues, uid),
        // The study's own index, not a scan of the trail: this page is polled every 2 s.
        audit.studyEvents(uid),
        index.seriesRouting(uid),
        index.modelOutcomes(uid),
        modelWorkers(redis, prefix, queues, deps.workerStaleMs),
      ]);
      const [visible] = await shown(res, [row], uid);
      const marked = markBlockedJobs(jobs, coverage);
      // `no worker for model X` for each model whose job of this study waits without a worker.
      const waitingFor = [...new Set(marked.flatMap((j) => (j.blocked ? [j.blocked] : [])))];
      res.json({
        ...visible,
        series,
        models,
        jobs: marked,
        waitingFor,
        events,
        instances: await instanceViews(uid),
      });
    }),
  );

  /** The study's instances for its page: series, attributes, nothing identifying, no spool path. */
  async function instanceViews(uid: string) {
    return (await index.instances(uid))
      .map((i) => ({
        seriesUid: i.seriesUid,
        sopInstanceUid: i.sopInstanceUid,
        sopClassUid: i.sopClassUid,
        modality: i.modality,
        seriesDescription: i.seriesDescription,
        bodyPartExamined: i.bodyPartExamined,
        instanceNumber: i.instanceNumber,
        rows: i.rows,
        columns: i.columns,
        numberOfFrames: i.numberOfFrames,
        transferSyntaxUid: i.transferSyntaxUid,
      }))
      .sort(
        (a, b) => a.seriesUid.localeCompare(b.seriesUid) || (a.instanceNumber ?? 0) - (b.instanceNumber ?? 0),
      );
  }

  // The triage list: filters, sort and paging on the server, so the console fetches one page per poll.
  api.get(
    '/worklist',
    handle(async (req, res) => {
      const who = principalOf(res);
      const state = stringParam(req.query.state, 'state');
      if (state !== undefined && !STUDY_STATES.includes(state as StudyState))
        throw new BadRequest(`state must be one of ${STUDY_STATES.join(', ')}`);
      const sort = (stringParam(req.query.sort, 'sort') ?? 'received') as WorklistSort;
      if (!WORKLIST_SORTS.includes(sort))
        throw new BadRequest(`sort must be one of ${WORKLIST_SORTS.join(', ')}`);
      const dir = stringParam(req.query.dir, 'dir') ?? 'desc';
      if (dir !== 'asc' && dir !== 'desc') throw new BadRequest('dir must be asc or desc');
      const positive = stringParam(req.query.positive, 'positive');
      if (positive !== undefined && positive !== 'true' && positive !== 'false')
        throw new BadRequest('positive must be true or false');
      const list = await worklist(redis, prefix, studyList, {
        state: state as StudyState | undefined,
        modality: stringParam(req.query.modality, 'modality', 16),
        callingAe: typeof req.query.ae === 'string' ? (stringParam(req.query.ae, 'ae', 16) ?? '') : undefined,
        model: stringParam(req.query.model, 'model', 128),
        positive: positive === 'true',
        q: stringParam(req.query.q, 'q', 128),
        sort,
        desc: dir === 'desc',
        offset: offsetParam(req.query.offset),
        limit: intParam(req.query.limit, 'limit', 50, 500),
        phi: who.phi,
      });
      // A study whose inference jobs wait for a model no live worker has says so in its row.
      const waiting = await studiesWaitingForWorkers(
        queues,
        await modelWorkers(redis, prefix, queues, deps.workerStaleMs),
      );
      const rows = (await shown(res, list.rows, `study list from ${list.offset}`)).map((r) =>
        waiting.has(r.studyUid) ? { ...r, waitingFor: waiting.get(r.studyUid)! } : r,
      );
      res.json({ ...list, rows });
    }),
  );

  // A small PNG of one instance's first frame, rendered here from the stored instance (pixels only, no header).
  api.get(
    '/studies/:uid/instances/:sop/thumbnail.png',
    handle(async (req, res) => {
      const uid = studyUidParam(req);
      const sop = req.params.sop;
      if (typeof sop !== 'string' || !isValidUid(sop)) throw new BadRequest('not a valid SOP Instance UID');
      // Pixels may carry identifying data burned in (ultrasound, secondary capture): like the text fields,
      // shown only to users with the PHI permission, and each view audited.
      const who = principalOf(res);
      if (!who.phi) {
        res.status(403).json({ error: 'images may carry identifying data: the PHI permission is needed' });
        return;
      }
      const inst = (await index.instances(uid)).find((i) => i.sopInstanceUid === sop);
      if (!inst) {
        res.status(404).json({ error: 'unknown instance' });
        return;
      }
      await phiViews.viewed(who, `thumbnail ${uid}`, uid, 'thumbnail');
      let t: Thumbnail;
      try {
        t = await thumbnailOf(objectKey.instance(inst));
      } catch (err) {
        res.status(422).json({ error: `cannot render this image: ${errorMessage(err)}` });
        return;
      }
      res.setHeader('Content-Type', 'image/png');
      res.setHeader('Cache-Control', 'private, max-age=300');
      res.send(t.png);
    }),
  );

  // The rule tester: POST {"studyUid": "..."} for a study in the spool, or one DICOM file as
  // application/dicom. Nothing is queued; the answer says which models would run and why each did not.
  api.post(
    '/routing/explain',
    express.json({ limit: '16kb' }),
    express.raw({ type: 'application/dicom', limit: MAX_DRY_RUN_BYTES }),
    handle(async (req, res) => {
      const explain = deps.explainRouting;
      if (!explain) {
        res.status(503).json({ error: 'routing is not served by this process' });
        return;
      }
      let instances: InstanceRecord[];
      if (Buffer.isBuffer(req.body)) instances = [await instanceFromUpload(req.body)];
      else {
        const studyUid = (req.body as { studyUid?: unknown } | undefined)?.studyUid;
        if (typeof studyUid !== 'string' || !isValidUid(studyUid))
          throw new BadRequest('send {"studyUid": "<UID>"} as JSON, or one DICOM file as application/dicom');
        instances = await index.instances(studyUid);
        if (instances.length === 0) {
          res.status(404).json({ error: 'unknown study, or no instances indexed' });
          return;
        }
      }
      res.json(await explain(instances));
    }),
  );

  api.post(
    '/studies/:uid/reprocess',
    handle(async (req, res) => {
      const uid = studyUidParam(req);
      await act(req, res, 'reprocess', uid, async () => {
        const study = await index.get(uid);
        if (!study) return { status: 404, body: { error: 'unknown study' } };
        if (study.instanceCount === 0) return { status: 409, body: { error: 'the study has no instances' } };
        // A study-complete job now: the router starts a new run, superseding the previous results.
        await rearmStudyComplete(queues.studyComplete, uid, 0);
        return { status: 202, body: { queued: true }, studyUid: uid };
      });
    }),
  );

  api.post(
    '/studies/:uid/cancel',
    handle(async (req, res) => {
      const uid = studyUidParam(req);
      await act(req, res, 'cancel-study', uid, async () => {
        if (!(await index.get(uid))) return { status: 404, body: { error: 'unknown study' } };
        const pending = await pendingJobsForStudy(redis, prefix, queues, uid);
        const removed: string[] = [];
        for (const j of pending) {
          const queue = await queueByName(queues, j.queue);
          if (queue && (await queue.remove(j.id)) === 1) removed.push(`${j.queue}/${j.id}`);
        }
        const active = (await jobsForStudy(redis, prefix, queues, uid, ['active'])).map(
          (j) => `${j.queue}/${j.id}`,
        );
        await index.setState(uid, 'failed', `cancelled by ${principalOf(res).name}`);
        return { body: { removed, stillRunning: active }, studyUid: uid };
      });
    }),
  );

  api.post(
    '/studies/:uid/retry',
    handle(async (req, res) => {
      const uid = studyUidParam(req);
      await act(req, res, 'retry-study', uid, async () => {
        const failed = await jobsForStudy(redis, prefix, queues, uid, ['failed']);
        if (failed.length === 0) return { status: 409, body: { error: 'the study has no failed jobs' } };
        const retried: string[] = [];
        for (const j of failed) {
          const job = await (await queueByName(queues, j.queue))?.getJob(j.id);
          if (!job) continue;
          await job.retry('failed');
          retried.push(`${j.queue}/${j.id}`);
        }
        return { body: { retried }, studyUid: uid };
      });
    }),
  );

  api.get(
    '/queues',
    handle(async (_req, res) => {
      res.json(await queueOverview(queues));
    }),
  );

  api.get(
    '/queues/:queue/jobs',
    handle(async (req, res) => {
      const queue = await queueByName(queues, String(req.params.queue));
      if (!queue) {
        res.status(404).json({ error: 'unknown queue' });
        return;
      }
      const state = req.query.state ?? 'failed';
      if (!JOB_STATES.includes(state as (typeof JOB_STATES)[number]))
        throw new BadRequest(`state must be one of ${JOB_STATES.join(', ')}`);
      const limit = intParam(req.query.limit, 'limit', 100, 1000);
      res.json(await listJobs(queue, [state as (typeof JOB_STATES)[number]], limit));
    }),
  );

  for (const verb of ['pause', 'resume'] as const) {
    api.post(
      `/queues/:queue/${verb}`,
      handle(async (req, res) => {
        const name = String(req.params.queue);
        await act(req, res, `${verb}-queue`, name, async () => {
          const queue = await queueByName(queues, name);
          if (!queue) return { status: 404, body: { error: 'unknown queue' } };
          if (verb === 'pause') await queue.pause();
          else await queue.resume();
          return { body: { paused: await queue.isPaused() } };
        });
      }),
    );
  }

  // Retry a failed job; cancel (remove) one that is not running. Same lookup, audit and study link.
  const jobActions = {
    retry: async (job: Job, state: string) => {
      if (state !== 'failed')
        return { status: 409, body: { error: `job is ${state}; only failed jobs can be retried` } };
      await job.retry('failed');
      return { body: { state: await job.getState() } };
    },
    cancel: async (job: Job, state: string) => {
      // A running job cannot be stopped from here (it may run in another process): it is left alone.
      if (state === 'active')
        return { status: 409, body: { error: 'job is running; wait for it or pause the queue' } };
      await job.remove();
      return { body: { removed: true, was: state } };
    },
  };
  for (const verb of ['retry', 'cancel'] as const) {
    const action = jobActions[verb];
    api.post(
      `/queues/:queue/jobs/:id/${verb}`,
      handle(async (req, res) => {
        const name = String(req.params.queue);
        const id = String(req.params.id);
        await act(req, res, `${verb}-job`, `${name}/${id}`, async () => {
          const job = await (await queueByName(queues, name))?.getJob(id);
          if (!job) return { status: 404, body: { error: 'unknown queue or job' } };
          const studyUid = (job.data as { studyUid?: string }).studyUid;
          return { ...(await action(job, await job.getState())), studyUid };
        });
      }),
    );
  }

  api.get(
    '/workers',
    handle(async (_req, res) => {
      res.json(await listWorkers(redis, prefix, deps.workerStaleMs));
    }),
  );

  api.get(
    '/turnaround',
    handle(async (_req, res) => {
      const none: TurnaroundSummary = {
        windowSeconds: TURNAROUND_WINDOW_MS / 1000,
        lanes: [],
        models: [],
        slos: [],
      };
      res.json(deps.turnaround ? await deps.turnaround() : none);
    }),
  );

  api.get(
    '/trends',
    handle(async (req, res) => {
      const range = req.query.range ?? 'hour';
      if (typeof range !== 'string' || !Object.hasOwn(TREND_RANGES, range))
        throw new BadRequest(`range must be one of ${Object.keys(TREND_RANGES).join(', ')}`);
      if (!deps.trends) {
        res.status(404).json({ error: 'no trends in this role' });
        return;
      }
      res.json(await deps.trends(range as TrendRange));
    }),
  );

  api.get(
    '/destinations',
    handle(async (_req, res) => {
      res.json(await listDestinations(redis, prefix, queues, deps.destinations));
    }),
  );

  api.get(
    '/associations',
    handle(async (req, res) => {
      res.json(await listAssociations(redis, prefix, intParam(req.query.limit, 'limit', 100, 1000)));
    }),
  );

  api.get(
    '/audit',
    handle(async (req, res) => {
      const studyUid = req.query.studyUid;
      if (
        studyUid !== undefined &&
        studyUid !== '' &&
        (typeof studyUid !== 'string' || !isValidUid(studyUid))
      )
        throw new BadRequest('studyUid is not a valid DICOM UID');
      const type = req.query.type;
      if (type !== undefined && type !== '' && !AUDIT_TYPES.includes(type as AuditType))
        throw new BadRequest(`type must be one of ${AUDIT_TYPES.join(', ')}`);
      const format = req.query.format ?? 'json';
      if (format !== 'json' && format !== 'csv') throw new BadRequest('format must be csv or json');
      // The whole cluster's records from the Redis stream, this node's segments where it does not reach.
      const { records, source } = await audit.clusterQuery({
        studyUid: (studyUid as string) || undefined,
        type: (type as AuditType) || undefined,
        from: timeParam(req.query.from, 'from'),
        to: timeParam(req.query.to, 'to'),
        limit: intParam(req.query.limit, 'limit', 10_000, 100_000),
      });
      res.setHeader('X-Audit-Source', source);
      if (format === 'csv') {
        res.setHeader('Content-Type', 'text/csv; charset=utf-8');
        res.setHeader('Content-Disposition', 'attachment; filename="audit.csv"');
        res.send(auditToCsv(records));
      } else res.json(records);
    }),
  );

  return api;
}

/** The header of a posted DICOM file, as ingest would index it (the file is not kept). */
async function instanceFromUpload(body: Buffer): Promise<InstanceRecord> {
  {
    let h;
    try {
      // Parsed from the posted bytes in memory: nothing is written anywhere.
      const source = {
        size: body.length,
        read: async (offset: number, length: number) => body.subarray(offset, offset + length),
      };
      h = await readInstanceHeader(source);
    } catch (err) {
      throw new BadRequest(`not a readable DICOM file: ${errorMessage(err)}`);
    }
    if (!isValidUid(h.studyUid) || !isValidUid(h.seriesUid) || !isValidUid(h.sopInstanceUid))
      throw new BadRequest('the file lacks valid Study, Series or SOP Instance UIDs');
    return {
      ...h,
      studyUid: h.studyUid!,
      seriesUid: h.seriesUid!,
      sopInstanceUid: h.sopInstanceUid!,
      sopClassUid: h.sopClassUid ?? '',
      transferSyntaxUid: h.transferSyntaxUid ?? '',
      size: body.length,
      callingAe: '',
      callingAddress: '',
      receivedAt: 0,
    };
  }
}
