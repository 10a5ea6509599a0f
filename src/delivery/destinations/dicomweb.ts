// DICOMweb destination: STOW-RS (PS3.18 §10.5) of one Part-10 object per request. The response
// is untrusted input: it is size-limited, parsed defensively, and must acknowledge our SOP UID.
import { randomBytes } from 'node:crypto';
import { Agent, fetch as undiciFetch } from 'undici';
import {
  isTransientHttpStatus,
  checkDeliveryInput,
  PermanentDeliveryError,
  TransientDeliveryError,
  type DeliveryMeta,
  type DeliveryReceipt,
  type Destination,
} from '../destination.ts';
import { createHttpAuth, type FetchLike, type HttpAuth, type HttpAuthConfig } from './http-auth.ts';
import { statusHex } from '../../dicom/status.ts';
import { deliveryEvents } from '../events.ts';
import { readBodyCapped } from './response-body.ts';

const MAX_RESPONSE_BYTES = 1 << 20;
const TAG = {
  failureReason: '00081197',
  failedSOPSequence: '00081198',
  referencedSOPSequence: '00081199',
  warningReason: '00081196',
  referencedSOPInstanceUID: '00081155',
} as const;

export interface DicomwebOptions {
  /** Base URL of the DICOMweb service, e.g. http://pacs:8042/dicom-web */
  url: string;
  timeoutMs: number;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Authorization; default none. */
  auth?: HttpAuthConfig;
  /** PEM CA certificate(s) that sign the server's certificate, for a private PKI. */
  ca?: string | Buffer;
}

// undici's own fetch, so that a custom-CA Agent from the same undici version can be passed as dispatcher.
const fetchWithDispatcher = undiciFetch as unknown as FetchLike;

export class DicomwebDestination implements Destination {
  readonly kind = 'dicomweb';
  private readonly endpoint: string;
  private readonly auth: HttpAuth;
  private readonly dispatcher?: Agent;

  constructor(
    readonly name: string,
    private readonly opts: DicomwebOptions,
  ) {
    const base = new URL(opts.url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new Error(`destination ${name}: DICOMweb URL must be http or https`);
    }
    this.endpoint = `${base.href.replace(/\/+$/, '')}/studies`;
    if (opts.ca !== undefined) this.dispatcher = new Agent({ connect: { ca: opts.ca } });
    this.auth = createHttpAuth(name, opts.auth ?? { type: 'none' }, {
      fetch: fetchWithDispatcher,
      timeoutMs: opts.timeoutMs,
      dispatcher: this.dispatcher,
    });
  }

  /** Releases the custom-CA connection pool, if any. */
  async close(): Promise<void> {
    await this.dispatcher?.close();
  }

  async deliver(part10: Buffer, meta: DeliveryMeta): Promise<DeliveryReceipt> {
    const { sopInstanceUid } = checkDeliveryInput(this.name, part10, meta);
    const { body, contentType } = multipartRelated(part10);
    const headers: Record<string, string> = {
      ...this.opts.headers,
      'Content-Type': contentType,
      Accept: 'application/dicom+json',
    };
    const authorization = await this.auth.header();
    if (authorization !== undefined) headers.Authorization = authorization;

    let res: Response;
    let text: string;
    try {
      res = await fetchWithDispatcher(this.endpoint, {
        method: 'POST',
        headers,
        body: new Uint8Array(body.buffer as ArrayBuffer, body.byteOffset, body.byteLength),
        // A redirect on POST is a misconfiguration; following it could turn the POST into a GET.
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs),
        dispatcher: this.dispatcher,
      });
      text = await readBodyCapped(res, MAX_RESPONSE_BYTES, 'truncate');
    } catch (e) {
      throw new TransientDeliveryError(
        `STOW-RS to ${this.name} failed: ${describeNetworkError(e)}`,
        this.name,
        undefined,
        undefined,
        { cause: e },
      );
    }

    const status = res.status;
    if (isTransientHttpStatus(status)) {
      throw new TransientDeliveryError(
        `STOW-RS to ${this.name}: HTTP ${status}: ${snippet(text)}`,
        this.name,
        status,
        retryAfterMs(res.headers.get('retry-after')),
      );
    }
    if (status === 401 && this.auth.type === 'oauth2') {
      // The cached token may have been revoked early: fetch a new one on the next attempt.
      this.auth.invalidate();
      throw new TransientDeliveryError(
        `STOW-RS to ${this.name}: HTTP 401 with an OAuth2 token; a new token will be requested`,
        this.name,
        status,
      );
    }
    if (status === 401 || status === 403) {
      throw new PermanentDeliveryError(
        `STOW-RS to ${this.name}: HTTP ${status} ${status === 401 ? 'Unauthorized' : 'Forbidden'}: ` +
          `the PACS refused the ${this.auth.type === 'none' ? 'unauthenticated request' : `${this.auth.type} credentials`}; ` +
          `check destinations.${this.name}.auth`,
        this.name,
        status,
      );
    }
    const payload = parseStowResponse(text, res.headers.get('content-type'));
    if (status < 200 || status >= 300) {
      const reason = payload ? failureFor(payload, sopInstanceUid) : undefined;
      throw new PermanentDeliveryError(
        `STOW-RS to ${this.name}: HTTP ${status}${reason ? ` (${reason})` : ''}: ${snippet(text)}`,
        this.name,
        status,
      );
    }
    if (payload === undefined) {
      throw new PermanentDeliveryError(
        `STOW-RS to ${this.name}: HTTP ${status} without a readable response: ${snippet(text)}`,
        this.name,
        status,
      );
    }
    const failure = failureFor(payload, sopInstanceUid);
    if (failure !== undefined) {
      if (failure.transient) {
        throw new TransientDeliveryError(`STOW-RS to ${this.name}: ${failure}`, this.name, status);
      }
      throw new PermanentDeliveryError(`STOW-RS to ${this.name}: ${failure}`, this.name, status);
    }
    const ref = findRef(payload, TAG.referencedSOPSequence, sopInstanceUid);
    if (ref === undefined) {
      throw new PermanentDeliveryError(
        `STOW-RS to ${this.name}: HTTP ${status} but the response does not list ${sopInstanceUid}`,
        this.name,
        status,
      );
    }
    const warnings: string[] = [];
    const warning = firstNumber(ref[TAG.warningReason]);
    if (warning !== undefined) warnings.push(`warning reason ${statusHex(warning)}`);
    if (status === 202) warnings.push('HTTP 202: stored with warnings');
    if (warnings.length > 0) {
      deliveryEvents.warning(this.name, sopInstanceUid, status, warnings);
    }
    return { destination: this.name, kind: this.kind, location: this.endpoint, status, warnings };
  }
}

/** One-part multipart/related body with a boundary that does not occur in the payload. */
export function multipartRelated(part10: Buffer): { body: Buffer; contentType: string; boundary: string } {
  let boundary: string;
  do boundary = `aigw-${randomBytes(18).toString('hex')}`;
  while (part10.includes(boundary, 0, 'latin1'));
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1'),
    part10,
    Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'),
  ]);
  return { body, contentType: `multipart/related; type="application/dicom"; boundary=${boundary}`, boundary };
}

type JsonDataset = Record<string, unknown>;

/** The STOW-RS response dataset (DICOM JSON; some servers wrap it in an array), or undefined. */
export function parseStowResponse(text: string, contentType: string | null): JsonDataset | undefined {
  if (text.trim() === '') return undefined;
  if (contentType && !/json/i.test(contentType)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (Array.isArray(parsed)) parsed = parsed[0];
  return isObject(parsed) ? parsed : undefined;
}

interface Failure {
  transient: boolean;
  toString(): string;
}

function failureFor(payload: JsonDataset, sopInstanceUid: string): Failure | undefined {
  const failed = findRef(payload, TAG.failedSOPSequence, sopInstanceUid);
  if (failed === undefined) return undefined;
  const code = firstNumber(failed[TAG.failureReason]);
  const hex = code === undefined ? 'unknown' : statusHex(code);
  // A7xx "Refused: Out of Resources" is the one failure class that can clear up by itself.
  const transient = code !== undefined && code >= 0xa700 && code <= 0xa7ff;
  return { transient, toString: () => `instance ${sopInstanceUid} failed, failure reason ${hex}` };
}

function findRef(payload: JsonDataset, seqTag: string, sopInstanceUid: string): JsonDataset | undefined {
  const seq = payload[seqTag];
  if (!isObject(seq) || !Array.isArray(seq.Value)) return undefined;
  for (const item of seq.Value) {
    if (!isObject(item)) continue;
    const uid = item[TAG.referencedSOPInstanceUID];
    if (isObject(uid) && Array.isArray(uid.Value) && uid.Value[0] === sopInstanceUid) return item;
  }
  return undefined;
}

function firstNumber(element: unknown): number | undefined {
  if (!isObject(element) || !Array.isArray(element.Value)) return undefined;
  const v = element.Value[0];
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff ? v : undefined;
}

function isObject(v: unknown): v is JsonDataset {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function snippet(text: string): string {
  let clean = '';
  for (const ch of text.slice(0, 2000)) clean += ch.charCodeAt(0) < 0x20 || ch === '\x7f' ? ' ' : ch;
  clean = clean.replace(/ +/g, ' ').trim();
  return clean.length > 300 ? `${clean.slice(0, 300)}…` : clean || '(empty body)';
}

/** A server may ask us to wait, but not for longer than this: a hostile or broken one would stall delivery. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Math.min(Number(value) * 1000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.min(Math.max(0, at - Date.now()), MAX_RETRY_AFTER_MS);
}

function describeNetworkError(e: unknown): string {
  if (e instanceof Error) {
    if (e.name === 'TimeoutError') return 'timed out';
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ? `${e.message} (${cause.code})` : e.message;
  }
  return String(e);
}
