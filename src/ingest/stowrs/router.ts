// STOW-RS receiver (PS3.18 §10.5): POST /studies and /studies/{StudyInstanceUID}, multipart/related with
// application/dicom parts. Each part streams to a staged write in the object store and goes through the same InstanceAcceptor
// as a C-STORE (checks, commit, index, completion timer); the answer lists what was stored and what was not.
import type { IncomingMessage } from 'node:http';
import express from 'express';
import { isValidUid } from '../../dicom/uid.ts';
import { errorMessage } from '../../observability/error-message.ts';
import {
  STATUS_CANNOT_UNDERSTAND,
  STATUS_OUT_OF_RESOURCES,
  type AcceptOutcome,
  type EarlyHeader,
  type InstanceAcceptor,
} from '../accept.ts';
import { authorize, type StowAuth } from './auth.ts';
import * as events from './events.ts';
import { MultipartError, boundaryOf, parameterOf, readMultipart } from './multipart.ts';

export interface StowRouterOptions {
  acceptor: InstanceAcceptor;
  /** Largest request body (all parts together). */
  maxRequestBytes: number;
  /** Largest single instance. */
  maxInstanceBytes: number;
  auth?: StowAuth;
}

class RequestTooLargeError extends Error {
  constructor(limit: number) {
    super(`request body larger than ${limit} bytes`);
    this.name = 'RequestTooLargeError';
  }
}

type PartResult =
  | AcceptOutcome
  | {
      ok: false;
      status: number;
      reason: string;
      kind: 'refused';
      sopInstanceUid?: undefined;
      sopClassUid?: undefined;
    };

export function createStowRouter(opts: StowRouterOptions): express.Router {
  const router = express.Router();
  const handle = (req: express.Request, res: express.Response, studyUid: string | undefined) =>
    store(opts, req, res, studyUid).catch((err: unknown) => {
      // Only a client that went away mid-body ends up here; nobody is left to answer.
      events.requestRejected(address(req), 499, errorMessage(err));
      if (!res.headersSent) res.status(400).json({ error: errorMessage(err) });
    });
  router.post('/studies', (req, res) => handle(req, res, undefined));
  router.post('/studies/:uid', (req, res) => handle(req, res, req.params.uid));
  return router;
}

async function store(
  opts: StowRouterOptions,
  req: express.Request,
  res: express.Response,
  studyUid: string | undefined,
): Promise<void> {
  const started = Date.now();
  const from = address(req);
  const reject = (status: number, reason: string, headers: Record<string, string> = {}) => {
    events.requestRejected(from, status, reason);
    // A refused body is not read: close the connection instead of draining gigabytes.
    res
      .set({ ...headers, Connection: 'close' })
      .status(status)
      .json({ error: reason });
  };

  const who = authorize(req, opts.auth);
  if (!who.ok) {
    return reject(
      who.status,
      who.message,
      who.status === 401 ? { 'WWW-Authenticate': 'Bearer, Basic realm="stow-rs"' } : {},
    );
  }
  if (studyUid !== undefined && !isValidUid(studyUid)) return reject(400, 'not a valid StudyInstanceUID');
  const contentType = req.headers['content-type'] ?? '';
  if (!/^multipart\/related\s*(;|$)/i.test(contentType)) {
    return reject(415, 'Content-Type must be multipart/related; type="application/dicom"');
  }
  const type = parameterOf(contentType, 'type');
  if (type !== undefined && type !== 'application/dicom') {
    return reject(415, `multipart type ${type} is not supported; send application/dicom parts`);
  }
  const boundary = boundaryOf(contentType);
  if (boundary === undefined) return reject(400, 'multipart boundary missing');
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > opts.maxRequestBytes) {
    return reject(413, `request body larger than ${opts.maxRequestBytes} bytes`);
  }
  if (await opts.acceptor.disk.isBelowNow()) {
    return reject(503, 'spool disk below free-space watermark', { 'Retry-After': '60' });
  }

  const results: PartResult[] = [];
  try {
    for await (const part of readMultipart(limitBytes(req, opts.maxRequestBytes), boundary)) {
      results.push(await storePart(opts, part.headers, part.body, from, studyUid));
    }
  } catch (err) {
    if (err instanceof RequestTooLargeError) return reject(413, err.message);
    if (err instanceof MultipartError) return reject(400, `malformed multipart body: ${err.message}`);
    throw err;
  }
  if (results.length === 0) return reject(400, 'no parts in the multipart body');

  const stored = results.filter((r): r is Extract<AcceptOutcome, { ok: true }> => r.ok);
  const failed = results.filter((r) => !r.ok);
  // Nothing stored, and only through our fault (not committed or not indexed, e.g. Redis down): it may be resent
  // as it is, so say so (PS3.18 10.5.3: 503 Busy) rather than 409.
  const busy = stored.length === 0 && failed.every((r) => r.kind === 'failed');
  const httpStatus = failed.length === 0 ? 200 : busy ? 503 : stored.length === 0 ? 409 : 202;
  if (busy) res.set('Retry-After', '30');
  const base = `${req.protocol}://${req.get('host') ?? 'localhost'}${req.baseUrl}/studies`;
  const response: Record<string, unknown> = {};
  const studies = new Set(stored.map((r) => r.instance.studyUid));
  const responseStudy = studyUid ?? (studies.size === 1 ? [...studies][0] : undefined);
  if (responseStudy !== undefined) response['00081190'] = { vr: 'UR', Value: [`${base}/${responseStudy}`] };
  if (failed.length > 0) {
    response['00081198'] = {
      vr: 'SQ',
      Value: failed.map((r) => ({
        ...uidItem('00081150', r.sopClassUid),
        ...uidItem('00081155', r.sopInstanceUid),
        '00081197': { vr: 'US', Value: [r.status] },
      })),
    };
  }
  if (stored.length > 0) {
    response['00081199'] = {
      vr: 'SQ',
      Value: stored.map(({ instance: i }) => ({
        '00081150': { vr: 'UI', Value: [i.sopClassUid] },
        '00081155': { vr: 'UI', Value: [i.sopInstanceUid] },
        '00081190': {
          vr: 'UR',
          Value: [`${base}/${i.studyUid}/series/${i.seriesUid}/instances/${i.sopInstanceUid}`],
        },
      })),
    };
  }
  events.requestDone(
    from,
    who.user,
    httpStatus,
    { stored: stored.length, failed: failed.length },
    Date.now() - started,
  );
  res.status(httpStatus).type('application/dicom+json').send(JSON.stringify(response));
}

async function storePart(
  opts: StowRouterOptions,
  headers: Record<string, string>,
  body: AsyncIterable<Buffer>,
  from: string,
  studyUid: string | undefined,
): Promise<PartResult> {
  const partType = (headers['content-type'] ?? 'application/dicom').split(';')[0]?.trim().toLowerCase();
  const refuse = async (status: number, reason: string): Promise<PartResult> => {
    for await (const chunk of body) void chunk; // skip the part, keep reading the next ones
    events.partRefused(from, status, reason);
    return { ok: false, kind: 'refused', status, reason };
  };
  if (partType !== 'application/dicom')
    return refuse(STATUS_CANNOT_UNDERSTAND, `part type ${partType} not supported`);
  if (opts.acceptor.disk.isBelow())
    return refuse(STATUS_OUT_OF_RESOURCES, 'spool disk below free-space watermark');

  const staged = opts.acceptor.store.stage(opts.maxInstanceBytes);
  const { stream } = staged;
  let writeError: Error | undefined;
  stream.on('error', (err: Error) => (writeError ??= err));
  const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  let early: Promise<EarlyHeader> | undefined;
  try {
    for await (const chunk of body) {
      if (writeError !== undefined) continue; // keep consuming the part so the next one can be read
      if (!stream.write(chunk)) {
        await new Promise<void>((resolve) => {
          stream.once('drain', resolve);
          void closed.then(resolve);
        });
      }
    }
    if (writeError === undefined) {
      stream.end();
      // As on the C-STORE path: the header is read while the part's fdatasync runs.
      early = opts.acceptor.readHeaderEarly(staged);
    }
    await closed;
  } catch (err) {
    stream.destroy();
    await closed;
    await staged.discard();
    throw err;
  }
  if (writeError !== undefined) {
    const r = await opts.acceptor.writeFailed(staged, writeError);
    if (r.kind === 'refused') events.partRefused(from, r.status, r.reason);
    else events.partFailed(from, r.status, r.reason, r.error);
    return { ok: false, kind: 'refused', status: r.status, reason: r.reason };
  }
  const outcome = await opts.acceptor.accept(
    staged,
    { path: 'stowrs', callingAe: '', address: from },
    studyUid !== undefined ? { studyUid } : {},
    early,
  );
  if (!outcome.ok) {
    if (outcome.kind === 'refused')
      events.partRefused(from, outcome.status, outcome.reason, outcome.sopInstanceUid);
    else events.partFailed(from, outcome.status, outcome.reason, outcome.error);
  }
  return outcome;
}

/** The request body as chunks, failing once more than `limit` bytes have arrived. */
async function* limitBytes(req: IncomingMessage, limit: number): AsyncGenerator<Buffer> {
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) throw new RequestTooLargeError(limit);
    yield chunk;
  }
}

function uidItem(tag: string, uid: string | undefined): Record<string, unknown> {
  return uid !== undefined && isValidUid(uid) ? { [tag]: { vr: 'UI', Value: [uid] } } : {};
}

function address(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? '';
}
