// The S3-compatible ObjectStore (AWS S3, MinIO, Ceph RGW): every key lives at <prefix><key> in one bucket
// that several gateways and workers may share. A staged write streams to a staging object
// <prefix>staging/<time>-<uuid> (multipart for large objects, memory bounded by partSize × queueSize) and
// becomes visible by a server-side CopyObject to its key, which also stamps the write time in the object's
// metadata; the staging object is deleted after. Nothing here assumes a single writer: staging names are
// unique per write, S3 replaces an object atomically, and retire() compares write times (see below).
import { HeadBytes } from './head-bytes.ts';
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, stat as statFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type HeadObjectCommandOutput,
} from '@aws-sdk/client-s3';
import {
  InstanceTooLargeError,
  ObjectNotFoundError,
  type FlowControl,
  type LocalCopy,
  type ObjectStore,
  type RetireOutcome,
  type StagedStream,
  type StagedWrite,
  type StoredObject,
} from './object-store.ts';

/** Largest object one CopyObject can copy (S3's limit): a bigger staged write could not be committed. */
export const S3_MAX_COPY_BYTES = 5 * 1024 ** 3;
/** The staged write keeps this many first bytes for the header parser. */
/** Object metadata (x-amz-meta-written-at) holding the epoch ms of the write that made the object. */
const WRITTEN_AT = 'written-at';
const STAGING = 'staging/';
const CONTENT_TYPE = 'application/dicom';
/** Local copies older than this are leftovers of a crashed process (a reader holds one for minutes). */
const STALE_CACHE_MS = 24 * 3600_000;
/** A HEAD's 404 is trusted without a HeadBucket this long after the bucket was last seen. */
const BUCKET_RECHECK_MS = 10_000;
/** DeleteObjects takes at most this many keys. */
const DELETE_BATCH = 1000;

/** The settings of storage.s3 (src/config/schema.ts) that the store uses, plus its local cache directory. */
export interface S3StoreOptions {
  bucket: string;
  /** http(s) URL of MinIO / Ceph RGW / another S3-compatible server; unset: AWS S3 for the region. */
  endpoint?: string;
  region: string;
  /** '' or a prefix ending in '/' put in front of every key. */
  prefix: string;
  /** Unset: on when endpoint is set (MinIO, Ceph). */
  forcePathStyle?: boolean;
  /** Both or neither; neither: the AWS default credential chain. */
  accessKeyId?: string;
  secretAccessKey?: string;
  partSizeBytes: number;
  queueSize: number;
  /** Socket inactivity allowed per request. */
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  maxAttempts: number;
  /** Local directory for localCopy() files (<dataDir>/cache). */
  cacheDir: string;
}

/** An S3 failure described for an operator: what failed, where, and the likely cause. Never holds secrets. */
export class S3StoreError extends Error {
  constructor(
    message: string,
    /** 'bucket-missing' | 'access-denied' | 'unreachable' | 'timeout' | 'no-credentials' | 'other' */
    readonly reason: S3FailureReason,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'S3StoreError';
  }
}

export type S3FailureReason =
  'bucket-missing' | 'access-denied' | 'unreachable' | 'timeout' | 'no-credentials' | 'other';

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
]);

function statusOf(err: unknown): number | undefined {
  return (err as SdkError | undefined)?.$metadata?.httpStatusCode;
}

function nameOf(err: unknown): string {
  return (err as SdkError | undefined)?.name ?? '';
}

function isNotFound(err: unknown): boolean {
  const name = nameOf(err);
  return name === 'NoSuchKey' || name === 'NotFound' || (statusOf(err) === 404 && name !== 'NoSuchBucket');
}

/**
 * Switches off the AWS SDK's NodeVersionSupportWarning (SDK releases from 2027 will need Node 22; this
 * project pins its SDK version) through the SDK's own variable, unless the operator set it. Every other
 * warning is left alone. Call before creating an S3Client.
 */
export function silenceSdkNodeVersionWarning(): void {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}

/** A new client for one store. */
function createClient(o: S3StoreOptions): S3Client {
  silenceSdkNodeVersionWarning();
  return new S3Client({
    region: o.region,
    ...(o.endpoint !== undefined ? { endpoint: o.endpoint } : {}),
    forcePathStyle: o.forcePathStyle ?? o.endpoint !== undefined,
    ...(o.accessKeyId !== undefined && o.secretAccessKey !== undefined
      ? { credentials: { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey } }
      : {}),
    maxAttempts: o.maxAttempts,
    // MinIO, Ceph and older S3-compatible servers reject the aws-chunked trailing checksums the SDK
    // otherwise adds to every upload; parts carry Content-MD5-free plain bodies and S3 still checks
    // Content-Length and the signature.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Node http handler settings: connect timeout, and socket inactivity allowed per request.
    requestHandler: { connectionTimeout: o.connectTimeoutMs, socketTimeout: o.requestTimeoutMs },
  });
}

export class S3ObjectStore implements ObjectStore {
  readonly kind = 's3' as const;
  readonly location: string;
  readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  /** Where the bucket is, for messages: the endpoint's origin (no userinfo), or AWS and the region. */
  private readonly where: string;
  private readonly attempts = new Map<string, number>();
  private readonly operations = new Map<string, number>();
  /** Cleared when the server answered a conditional DeleteObject with NotImplemented. */
  private conditionalDelete = true;
  private closed = false;
  /** When HeadBucket last answered (see head()). */
  private bucketSeenAt = 0;
  /** Idle multipart part buffers (partSizeBytes each), reused by every staged write of this store. */
  private readonly idleParts: Buffer[] = [];
  private partBuffersAllocated = 0;

  constructor(private readonly opts: S3StoreOptions) {
    if (opts.prefix !== '' && !opts.prefix.endsWith('/'))
      throw new Error(`S3 key prefix '${opts.prefix}' must end with '/'`);
    this.bucket = opts.bucket;
    this.prefix = opts.prefix;
    this.location = `s3://${opts.bucket}/${opts.prefix}`;
    this.where = opts.endpoint !== undefined ? safeOrigin(opts.endpoint) : `AWS S3 (${opts.region})`;
    this.client = createClient(opts);
    // Operations, and HTTP attempts (retries included), by operation: the request-count figures.
    const count = (counts: Map<string, number>, name: unknown): void => {
      const op = String(name ?? 'unknown').replace(/Command$/, '');
      counts.set(op, (counts.get(op) ?? 0) + 1);
    };
    this.client.middlewareStack.add(
      (next, context) => (args) => {
        count(this.operations, context.commandName);
        return next(args);
      },
      { step: 'initialize', name: 'aigwOperationCounter' },
    );
    this.client.middlewareStack.add(
      (next, context) => (args) => {
        count(this.attempts, context.commandName);
        return next(args);
      },
      { step: 'deserialize', name: 'aigwRequestCounter' },
    );
    // DeleteObjects must carry an integrity header. The SDK sends only x-amz-checksum-crc32, which some
    // S3-compatible servers (older MinIO and Ceph releases among them) do not accept in place of the
    // Content-MD5 that S3 long required; S3 accepts both.
    this.client.middlewareStack.add(
      (next, context) => (args) => {
        const request = args.request as { headers?: Record<string, string>; body?: unknown };
        if (context.commandName === 'DeleteObjectsCommand' && request.headers !== undefined) {
          const body = request.body;
          if (typeof body === 'string' || body instanceof Uint8Array)
            request.headers['content-md5'] = createHash('md5').update(body).digest('base64');
        }
        return next(args);
      },
      { step: 'build', name: 'aigwDeleteObjectsContentMd5' },
    );
  }

  /** HTTP requests sent so far by operation (PutObject, CopyObject, ...), retries included. */
  requestCounts(): Record<string, number> {
    return sortedRecord(this.attempts);
  }

  /** Operations called so far (a retried request counts once). */
  operationCounts(): Record<string, number> {
    return sortedRecord(this.operations);
  }

  async init(): Promise<void> {
    await mkdir(this.opts.cacheDir, { recursive: true });
    await this.sweepCache();
    await this.check();
  }

  async check(): Promise<void> {
    // Readiness must answer quickly: bounded by 5 s (or connect + request timeout when shorter), retries
    // included.
    const limit = Math.min(5_000, this.opts.connectTimeoutMs + this.opts.requestTimeoutMs);
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), {
        abortSignal: AbortSignal.timeout(limit),
      });
    } catch (err) {
      throw this.describe(err, 'HeadBucket', undefined, limit);
    }
  }

  stage(maxBytes = Number.MAX_SAFE_INTEGER, flow?: FlowControl): StagedWrite {
    const stagingKey = `${this.prefix}${STAGING}${Date.now()}-${randomUUID()}`;
    return new S3StagedWrite(this, stagingKey, Math.min(maxBytes, S3_MAX_COPY_BYTES), flow);
  }

  async put(key: string, bytes: Buffer): Promise<void> {
    const full = this.fullKey(key);
    await this.send('PutObject', key, () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: full,
          Body: bytes,
          ContentLength: bytes.length,
          ContentType: CONTENT_TYPE,
          Metadata: { [WRITTEN_AT]: String(Date.now()) },
        }),
      ),
    );
  }

  async get(key: string): Promise<Buffer> {
    const full = this.fullKey(key);
    // The body is read inside send(): a connection lost mid-download is described like any failure.
    return this.send('GetObject', key, async () => {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: full }));
      return bodyBytes(res.Body);
    });
  }

  async localCopy(key: string): Promise<LocalCopy> {
    const full = this.fullKey(key);
    await mkdir(this.opts.cacheDir, { recursive: true });
    const file = path.join(this.opts.cacheDir, `${Date.now()}-${randomUUID()}-${path.posix.basename(key)}`);
    const res = await this.send('GetObject', key, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: full })),
    );
    try {
      const body = res.Body instanceof Readable ? res.Body : Readable.from([]);
      await pipeline(body, createWriteStream(file, { flags: 'wx', mode: 0o640 }));
    } catch (err) {
      await unlinkQuietly(file);
      throw this.describe(err, 'GetObject', key);
    }
    let released = false;
    return {
      path: file,
      release: async () => {
        if (released) return;
        released = true;
        await unlinkQuietly(file);
      },
    };
  }

  async stat(key: string): Promise<StoredObject | undefined> {
    const head = await this.head(key);
    if (head === undefined) return undefined;
    return { key, size: head.ContentLength ?? 0, modifiedAt: writtenAt(head) };
  }

  /**
   * Committed objects under prefix in key order. modifiedAt is the server's LastModified (whole seconds):
   * the listing does not carry metadata, and a HEAD per object would multiply the cost; stat() gives the
   * exact write time.
   */
  async *list(prefix: string): AsyncIterable<StoredObject> {
    const staging = this.prefix + STAGING;
    for await (const page of this.pages(prefix)) {
      for (const o of page) {
        if (o.Key === undefined || o.Key.startsWith(staging)) continue;
        yield {
          key: o.Key.slice(this.prefix.length),
          size: o.Size ?? 0,
          modifiedAt: o.LastModified?.getTime() ?? 0,
        };
      }
    }
  }

  async delete(key: string): Promise<void> {
    const full = this.fullKey(key);
    // S3 answers 204 for an absent key too.
    await this.send('DeleteObject', key, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: full })),
    );
  }

  async deletePrefix(prefix: string): Promise<number> {
    const staging = this.prefix + STAGING;
    let removed = 0;
    for await (const page of this.pages(prefix)) {
      const keys = page
        .map((o) => o.Key)
        .filter((k): k is string => k !== undefined && !k.startsWith(staging));
      removed += await this.deleteKeys(keys);
    }
    return removed;
  }

  /**
   * Removes key if the copy there was written no later than writtenBy. The write time is the metadata the
   * gateway stamped when it wrote the object (its own clock, like writtenBy), else LastModified.
   *
   * Race: a newer copy may be committed between the HEAD and the DELETE. The DELETE carries If-Match with
   * the ETag the HEAD saw, so S3 (conditional deletes) and servers that honour it refuse to delete a copy
   * with different bytes (412: 'kept'). A byte-identical re-send has the same ETag and can still be removed
   * in that one-round-trip window, as can any copy on a server that ignores If-Match; a server that
   * answers NotImplemented gets plain DELETEs from then on.
   */
  async retire(key: string, writtenBy: number): Promise<RetireOutcome> {
    const head = await this.head(key);
    if (head === undefined) return 'absent';
    if (writtenAt(head) > writtenBy) return 'kept';
    const full = this.fullKey(key);
    if (this.conditionalDelete && head.ETag !== undefined) {
      try {
        await this.client.send(
          new DeleteObjectCommand({ Bucket: this.bucket, Key: full, IfMatch: head.ETag }),
        );
        return 'removed';
      } catch (err) {
        const status = statusOf(err);
        if (status === 412 || nameOf(err) === 'PreconditionFailed') return 'kept';
        if (isNotFound(err)) return 'absent';
        if (status !== 501 && nameOf(err) !== 'NotImplemented') throw this.describe(err, 'DeleteObject', key);
        this.conditionalDelete = false;
      }
    }
    await this.delete(key);
    return 'removed';
  }

  /**
   * Deletes staging objects (writes finished but never committed nor discarded: a crash between the two)
   * and aborts multipart uploads under staging/ (a crash mid-upload) started more than olderThanMs ago,
   * by any gateway sharing the bucket. Ages come from the server's clock against ours, so keep olderThanMs
   * far above any clock skew (the default is an hour). Also sweeps stale local copies.
   */
  async cleanupStaging(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    const stagingPrefix = this.prefix + STAGING;
    let removed = 0;
    for await (const page of this.pages(STAGING, true)) {
      const stale = page
        .filter((o) => o.Key?.startsWith(stagingPrefix) && (o.LastModified?.getTime() ?? 0) <= cutoff)
        .map((o) => o.Key!);
      removed += await this.deleteKeys(stale);
    }
    removed += await this.abortStaleUploads(stagingPrefix, cutoff);
    await this.sweepCache();
    return removed;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }

  // ---- internals shared with the staged write ----

  /** <prefix><key>, after checking that key is a relative object key outside the staging area. */
  fullKey(key: string): string {
    if (
      key === '' ||
      key.startsWith('/') ||
      key.startsWith(STAGING) ||
      key.split('/').some((s) => s === '' || s === '.' || s === '..')
    )
      throw new Error(`not an object key: ${JSON.stringify(key)}`);
    return this.prefix + key;
  }

  get bucketName(): string {
    return this.bucket;
  }

  get options(): S3StoreOptions {
    return this.opts;
  }

  /** A part buffer of partSizeBytes (contents undefined): an idle one when there is one, else a new one. */
  takePartBuffer(): Buffer {
    const idle = this.idleParts.pop();
    if (idle !== undefined) return idle;
    this.partBuffersAllocated++;
    return Buffer.allocUnsafeSlow(this.opts.partSizeBytes);
  }

  /** Gives back a part buffer nothing reads any more; at most queueSize + 1 are kept idle. */
  releasePartBuffer(buffer: Buffer): void {
    if (this.idleParts.length <= this.opts.queueSize && !this.idleParts.includes(buffer))
      this.idleParts.push(buffer);
  }

  /** Part buffers allocated so far and those idle now (the pool's reuse, for tests and diagnostics). */
  partBufferCounts(): { allocated: number; idle: number } {
    return { allocated: this.partBuffersAllocated, idle: this.idleParts.length };
  }

  /** Runs an SDK call, turning its failure into an operator-readable error (ObjectNotFoundError for 404). */
  async send<T>(op: string, key: string | undefined, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw this.describe(err, op, key);
    }
  }

  describe(err: unknown, op: string, key?: string, timeoutMs?: number): Error {
    if (err instanceof S3StoreError || err instanceof ObjectNotFoundError) return err;
    const name = nameOf(err);
    const status = statusOf(err);
    const code = (err as SdkError | undefined)?.code ?? '';
    const what = `S3 ${op}${key !== undefined ? ` of ${key}` : ''} in bucket '${this.bucket}' at ${this.where}`;
    if (name === 'NoSuchBucket' || (op === 'HeadBucket' && status === 404))
      return new S3StoreError(
        `S3 bucket '${this.bucket}' does not exist at ${this.where} (create it, or fix storage.s3.bucket)`,
        'bucket-missing',
        { cause: err },
      );
    if (key !== undefined && isNotFound(err)) return new ObjectNotFoundError(key);
    if (name === 'InvalidAccessKeyId')
      return new S3StoreError(
        `${what} failed: access denied, the access key id is not known to the server (InvalidAccessKeyId); ` +
          'check storage.s3.accessKeyId or the AWS credentials in use',
        'access-denied',
        { cause: err },
      );
    if (name === 'SignatureDoesNotMatch')
      return new S3StoreError(
        `${what} failed: access denied, the secret access key does not match the access key id ` +
          '(SignatureDoesNotMatch); check storage.s3.secretAccessKey',
        'access-denied',
        { cause: err },
      );
    if (
      status === 403 ||
      name === 'AccessDenied' ||
      name === 'Forbidden' ||
      name === 'ExpiredToken' ||
      name === 'InvalidToken'
    )
      return new S3StoreError(
        `${what} failed: access denied (${name && name !== 'Unknown' ? name : `HTTP ${status}`}); the credentials lack permission on the bucket ` +
          '(see the bucket policy in docs/scale-out.md) or have expired',
        'access-denied',
        { cause: err },
      );
    if (name === 'CredentialsProviderError')
      return new S3StoreError(
        `${what} failed: no S3 credentials found; set storage.s3.accessKeyId and secretAccessKey ` +
          '(or GATEWAY_STORAGE_S3_ACCESS_KEY_ID / GATEWAY_STORAGE_S3_SECRET_ACCESS_KEY), or give the host an ' +
          'AWS role',
        'no-credentials',
        { cause: err },
      );
    if (NETWORK_CODES.has(code) || NETWORK_CODES.has(name))
      return new S3StoreError(
        `${what} failed: the S3 server is unreachable (${code || name}${code === 'ECONNREFUSED' ? ': connection refused' : ''})`,
        'unreachable',
        { cause: err },
      );
    if (name === 'TimeoutError' || name === 'AbortError' || code === 'ETIMEDOUT')
      return new S3StoreError(
        `${what} failed: the S3 server did not answer in time (${
          timeoutMs !== undefined
            ? `${timeoutMs} ms`
            : `${this.opts.connectTimeoutMs} ms to connect, ${this.opts.requestTimeoutMs} ms of silence`
        })`,
        'timeout',
        { cause: err },
      );
    const detail = err instanceof Error ? err.message : String(err);
    return new S3StoreError(`${what} failed: ${name ? `${name}: ` : ''}${detail}`, 'other', { cause: err });
  }

  /**
   * HeadObject, undefined when absent. A HEAD answer has no body, so a missing bucket looks like a missing
   * object (404): before saying absent (retention would then forget the instance), the bucket is checked,
   * at most once per BUCKET_RECHECK_MS.
   */
  private async head(key: string): Promise<HeadObjectCommandOutput | undefined> {
    const full = this.fullKey(key);
    try {
      return await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: full }));
    } catch (err) {
      if (!isNotFound(err)) throw this.describe(err, 'HeadObject', key);
    }
    if (Date.now() - this.bucketSeenAt > BUCKET_RECHECK_MS) {
      await this.check();
      this.bucketSeenAt = Date.now();
    }
    return undefined;
  }

  /** ListObjectsV2 pages under <prefix><relPrefix>; raw keys. */
  private async *pages(relPrefix: string, staging = false) {
    if (!staging && (relPrefix.startsWith('/') || relPrefix.split('/').includes('..')))
      throw new Error(`not a key prefix: ${JSON.stringify(relPrefix)}`);
    let token: string | undefined;
    do {
      const res = await this.send('ListObjectsV2', undefined, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + relPrefix,
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      yield res.Contents ?? [];
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** DeleteObjects in batches of 1000 full keys; returns how many went. */
  private async deleteKeys(keys: string[]): Promise<number> {
    let removed = 0;
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const res = await this.send('DeleteObjects', undefined, () =>
        this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
        ),
      );
      const failed = res.Errors ?? [];
      if (failed.length > 0) {
        const first = failed[0]!;
        throw new S3StoreError(
          `S3 DeleteObjects in bucket '${this.bucket}' at ${this.where} failed for ${failed.length} of ` +
            `${batch.length} keys (first: ${first.Key ?? '?'}: ${first.Code ?? ''} ${first.Message ?? ''})`,
          first.Code === 'AccessDenied' ? 'access-denied' : 'other',
        );
      }
      removed += batch.length;
    }
    return removed;
  }

  /**
   * Aborts multipart uploads under staging/ initiated before cutoff. A server without
   * ListMultipartUploads (NotImplemented) has nothing to abort that we could find: 0. The bucket's
   * lifecycle rule (docs/scale-out.md) covers what is missed.
   */
  private async abortStaleUploads(stagingPrefix: string, cutoff: number): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: stagingPrefix,
            ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
            ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
          }),
        );
      } catch (err) {
        if (statusOf(err) === 501 || nameOf(err) === 'NotImplemented') return aborted;
        throw this.describe(err, 'ListMultipartUploads');
      }
      for (const u of res.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined) continue;
        if ((u.Initiated?.getTime() ?? 0) > cutoff) continue;
        const { Key, UploadId } = u;
        await this.send('AbortMultipartUpload', undefined, () =>
          this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })),
        ).catch((err: unknown) => {
          if (!isNotFound(err) && nameOf((err as S3StoreError).cause) !== 'NoSuchUpload') throw err;
        });
        aborted++;
      }
      keyMarker = res.IsTruncated ? res.NextKeyMarker : undefined;
      uploadIdMarker = res.IsTruncated ? res.NextUploadIdMarker : undefined;
    } while (keyMarker !== undefined);
    return aborted;
  }

  /** Removes local copies a crashed process left behind. */
  private async sweepCache(): Promise<void> {
    const entries = await readdir(this.opts.cacheDir).catch(() => [] as string[]);
    const cutoff = Date.now() - STALE_CACHE_MS;
    for (const name of entries) {
      const file = path.join(this.opts.cacheDir, name);
      const info = await statFile(file).catch(() => undefined);
      if (info?.isFile() && info.mtimeMs < cutoff) await unlinkQuietly(file);
    }
  }
}

/** The write time stamped at commit/put; LastModified (whole seconds, server clock) for foreign objects. */
function writtenAt(head: HeadObjectCommandOutput): number {
  const stamped = Number(head.Metadata?.[WRITTEN_AT]);
  if (Number.isSafeInteger(stamped) && stamped > 0) return stamped;
  return head.LastModified?.getTime() ?? 0;
}

/** A GetObject body as one Buffer (no copy). */
async function bodyBytes(body: { transformToByteArray(): Promise<Uint8Array> } | undefined): Promise<Buffer> {
  if (body === undefined) return Buffer.alloc(0);
  const bytes = await body.transformToByteArray();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function sortedRecord(counts: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...counts].sort(([a], [b]) => (a < b ? -1 : 1)));
}

function safeOrigin(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    return 'the configured endpoint';
  }
}

async function unlinkQuietly(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

function encodeCopySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

type Phase = 'writing' | 'staged' | 'committing' | 'committed' | 'discarded';

/** A write staged in <prefix>staging/…; see ObjectStore.stage. */
class S3StagedWrite implements StagedWrite {
  readonly stream: S3StagingStream;
  private phase: Phase = 'writing';

  constructor(
    private readonly store: S3ObjectStore,
    private readonly stagingKey: string,
    maxBytes: number,
    flow: FlowControl | undefined,
  ) {
    this.stream = new S3StagingStream(store, stagingKey, maxBytes, flow);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (!this.stream.writableFinished)
      throw new Error('staged bytes are readable only after the stream finished');
    const size = this.stream.bytesWritten;
    const end = Math.min(offset + length, size);
    if (offset >= end) return Buffer.alloc(0);
    const head = this.stream.head;
    // The header parser mostly asks for what the head already holds: no request then.
    if (end <= head.length) return Buffer.from(head.subarray(offset, end));
    return this.store.send('GetObject', undefined, async () => {
      const res = await this.store.client.send(
        new GetObjectCommand({
          Bucket: this.store.bucketName,
          Key: this.stagingKey,
          Range: `bytes=${offset}-${end - 1}`,
        }),
      );
      return bodyBytes(res.Body);
    });
  }

  async commit(key: string): Promise<void> {
    if (this.phase !== 'staged') {
      if (this.phase === 'writing' && this.stream.writableFinished) this.phase = 'staged';
      else throw new Error(`cannot commit a staged write that is ${this.phase}`);
    }
    const full = this.store.fullKey(key);
    if (this.stream.bytesWritten > S3_MAX_COPY_BYTES) throw new InstanceTooLargeError(S3_MAX_COPY_BYTES);
    this.phase = 'committing';
    const bucket = this.store.bucketName;
    try {
      // Taken before the copy: a time recorded after commit() (the index's receivedAt) is never earlier.
      const writtenAtMs = Date.now();
      await this.store.send('CopyObject', key, () =>
        this.store.client.send(
          new CopyObjectCommand({
            Bucket: bucket,
            Key: full,
            CopySource: encodeCopySource(bucket, this.stagingKey),
            MetadataDirective: 'REPLACE',
            Metadata: { [WRITTEN_AT]: String(writtenAtMs) },
            ContentType: CONTENT_TYPE,
          }),
        ),
      );
    } catch (err) {
      this.phase = 'staged';
      throw err;
    }
    this.phase = 'committed';
    // The object is committed; a staging object that fails to go now is swept by cleanupStaging later.
    await this.store.client
      .send(new DeleteObjectCommand({ Bucket: bucket, Key: this.stagingKey }))
      .catch(() => undefined);
  }

  async discard(): Promise<void> {
    if (this.phase === 'committed' || this.phase === 'committing' || this.phase === 'discarded') return;
    this.phase = 'discarded';
    try {
      if (!this.stream.destroyed) this.stream.destroy();
      // Waits for the requests in flight, so nothing lands after the delete below; the stream aborts its
      // multipart upload itself once they ended.
      await this.stream.settled;
      await this.store.client.send(
        new DeleteObjectCommand({ Bucket: this.store.bucketName, Key: this.stagingKey }),
      );
    } catch {
      // Never rejects: what is left is swept by cleanupStaging.
    }
  }
}

type WriteCallback = (error: Error | null | undefined) => void;

/** S3 numbers parts 1..10000. */
const MAX_PARTS = 10_000;

interface UploadedPart {
  PartNumber: number;
  ETag: string;
  ChecksumCRC32?: string;
  ChecksumCRC32C?: string;
  ChecksumCRC64NVME?: string;
  ChecksumSHA1?: string;
  ChecksumSHA256?: string;
}

/**
 * Writes the staging object in parts of partSizeBytes, copied into part buffers taken from the store's pool
 * and given back once the request that sent them has ended (retries included): at most queueSize parts are
 * in flight and one is being filled, so a write holds at most (queueSize + 1) × partSizeBytes, and the
 * buffers are reused rather than left to the garbage collector. An object smaller than one part goes as one
 * PutObject; a larger one as a multipart upload, created when the first part is full. A write whose part
 * finds no free slot waits for one (back-pressure; with flow, the source is paused while this stream's own
 * buffer is full). 'finish' comes only after the PutObject or CompleteMultipartUpload is acknowledged
 * (_final). A failure stops everything, waits for the parts in flight and aborts the multipart upload (best
 * effort: cleanupStaging and the bucket's lifecycle rule remove what an unreachable server keeps); the
 * failure itself is what the stream reports.
 */
class S3StagingStream extends Writable implements StagedStream {
  bytesWritten = 0;
  /** Resolves (never rejects) once the upload ended, either way, and nothing is in flight any more. */
  readonly settled: Promise<void>;
  private resolveSettled!: () => void;
  private readonly partSize: number;
  private readonly queueSize: number;
  /** The part being filled, and how many of its bytes are. */
  private current: Buffer | undefined;
  private filled = 0;
  private partsStarted = 0;
  private readonly parts: UploadedPart[] = [];
  /** Requests in flight (CreateMultipartUpload, UploadPart, PutObject, Complete); none ever rejects. */
  private readonly inFlight = new Set<Promise<void>>();
  private partsInFlight = 0;
  private createUpload: Promise<string> | undefined;
  private uploadId: string | undefined;
  private failure: Error | undefined;
  /** A write waiting for a part slot. */
  private waiter: (() => void) | undefined;
  /** The PutObject or CompleteMultipartUpload was acknowledged. */
  private completed = false;
  private stopping: Promise<void> | undefined;
  /** The first bytes written, so the header can be parsed without reading the object back. */
  private readonly headBytes = new HeadBytes();

  constructor(
    private readonly store: S3ObjectStore,
    private readonly stagingKey: string,
    private readonly maxBytes: number,
    private readonly flow?: FlowControl,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.partSize = store.options.partSizeBytes;
    this.queueSize = store.options.queueSize;
    this.settled = new Promise<void>((resolve) => (this.resolveSettled = resolve));
    if (flow !== undefined) {
      this.on('drain', () => flow.resume());
      this.on('close', () => flow.resume());
    }
  }

  override write(chunk: unknown, encoding?: BufferEncoding | WriteCallback, cb?: WriteCallback): boolean {
    const ok = typeof encoding === 'string' ? super.write(chunk, encoding, cb) : super.write(chunk, encoding);
    // A failed or ended stream drains nothing: pausing the source then would stall it for good.
    if (this.destroyed || this.writableEnded) return true;
    if (!ok) this.flow?.pause();
    return ok;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.failure !== undefined) return done(this.failure);
    if (this.bytesWritten + chunk.length > this.maxBytes)
      return done(new InstanceTooLargeError(this.maxBytes));
    this.bytesWritten += chunk.length;
    this.headBytes.note(chunk);
    this.fill(chunk, 0, done);
  }

  /** Copies chunk[offset..] into part buffers, sending each full part once more bytes follow it. */
  private fill(chunk: Buffer, offset: number, done: (err?: Error | null) => void): void {
    while (offset < chunk.length) {
      if (this.failure !== undefined) return done(this.failure);
      if (this.destroyed) return;
      if (this.current !== undefined && this.filled === this.partSize) {
        if (this.partsInFlight >= this.queueSize) {
          this.waiter = () => this.fill(chunk, offset, done);
          return;
        }
        this.sendPart(this.current, this.filled);
        this.current = undefined;
      }
      if (this.current === undefined) {
        this.current = this.store.takePartBuffer();
        this.filled = 0;
      }
      const n = chunk.copy(this.current, this.filled, offset);
      this.filled += n;
      offset += n;
    }
    done();
  }

  /** Runs requests; a failure stops the upload. The returned promise never rejects. */
  private track(run: () => Promise<void>): Promise<void> {
    const p = run().catch((err: unknown) => this.fail(err));
    this.inFlight.add(p);
    void p.then(() => this.inFlight.delete(p));
    return p;
  }

  /** The first failure stops the upload; a write waiting for a slot fails with it. */
  private fail(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = this.store.describe(err, (err as { s3Op?: string } | undefined)?.s3Op ?? 'upload');
    void this.stop();
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  private startUpload(): Promise<string> {
    this.createUpload ??= this.store.client
      .send(new CreateMultipartUploadCommand({ Bucket: this.store.bucketName, Key: this.stagingKey }))
      .then(
        (res) => {
          if (res.UploadId === undefined) throw new Error('CreateMultipartUpload returned no UploadId');
          this.uploadId = res.UploadId;
          return res.UploadId;
        },
        (err: unknown) => {
          throw tagOp(err, 'CreateMultipartUpload');
        },
      );
    return this.createUpload;
  }

  private sendPart(buffer: Buffer, length: number): void {
    const partNumber = ++this.partsStarted;
    this.partsInFlight++;
    void this.track(async () => {
      try {
        if (partNumber > MAX_PARTS) throw new Error(`more than ${MAX_PARTS} parts`);
        const uploadId = await this.startUpload();
        if (this.failure !== undefined || this.destroyed) return;
        const res = await this.store.client
          .send(
            new UploadPartCommand({
              Bucket: this.store.bucketName,
              Key: this.stagingKey,
              UploadId: uploadId,
              PartNumber: partNumber,
              Body: buffer.subarray(0, length),
              ContentLength: length,
            }),
          )
          .catch((err: unknown) => {
            throw tagOp(err, 'UploadPart');
          });
        if (res.ETag === undefined) throw tagOp(new Error(`part ${partNumber} has no ETag`), 'UploadPart');
        this.parts.push({
          PartNumber: partNumber,
          ETag: res.ETag,
          ...(res.ChecksumCRC32 !== undefined && { ChecksumCRC32: res.ChecksumCRC32 }),
          ...(res.ChecksumCRC32C !== undefined && { ChecksumCRC32C: res.ChecksumCRC32C }),
          ...(res.ChecksumCRC64NVME !== undefined && { ChecksumCRC64NVME: res.ChecksumCRC64NVME }),
          ...(res.ChecksumSHA1 !== undefined && { ChecksumSHA1: res.ChecksumSHA1 }),
          ...(res.ChecksumSHA256 !== undefined && { ChecksumSHA256: res.ChecksumSHA256 }),
        });
      } finally {
        // The request has ended (send() settles after the response or the last failed attempt): nothing
        // reads the buffer any more.
        this.partsInFlight--;
        this.store.releasePartBuffer(buffer);
      }
    }).then(() => this.wake());
  }

  /** Waits until no request is in flight. */
  private async quiet(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  /** Stops the upload: no new request, waits for those in flight, aborts the multipart upload. */
  private stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.quiet();
      if (this.current !== undefined) {
        this.store.releasePartBuffer(this.current);
        this.current = undefined;
      }
      if (this.uploadId !== undefined && !this.completed)
        await this.store.client
          .send(
            new AbortMultipartUploadCommand({
              Bucket: this.store.bucketName,
              Key: this.stagingKey,
              UploadId: this.uploadId,
            }),
          )
          .catch(() => undefined);
    })().finally(() => this.resolveSettled());
    return this.stopping;
  }

  private async complete(): Promise<void> {
    const bucket = this.store.bucketName;
    if (this.partsStarted === 0) {
      const buffer = this.current;
      const length = this.filled;
      await this.track(async () => {
        try {
          await this.store.client
            .send(
              new PutObjectCommand({
                Bucket: bucket,
                Key: this.stagingKey,
                Body: buffer !== undefined ? buffer.subarray(0, length) : Buffer.alloc(0),
                ContentLength: buffer !== undefined ? length : 0,
              }),
            )
            .catch((err: unknown) => {
              throw tagOp(err, 'PutObject');
            });
        } finally {
          if (buffer !== undefined && this.current === buffer) {
            this.current = undefined;
            this.store.releasePartBuffer(buffer);
          }
        }
      });
      return;
    }
    if (this.current !== undefined && this.filled > 0) {
      this.sendPart(this.current, this.filled);
      this.current = undefined;
    }
    await this.quiet();
    if (this.failure !== undefined || this.destroyed) return;
    const uploadId = await this.startUpload();
    const parts = [...this.parts].sort((a, b) => a.PartNumber - b.PartNumber);
    await this.track(() =>
      this.store.client
        .send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: this.stagingKey,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
        )
        .then(
          () => undefined,
          (err: unknown) => {
            throw tagOp(err, 'CompleteMultipartUpload');
          },
        ),
    );
  }

  get head(): Buffer {
    return this.headBytes.bytes;
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.failure !== undefined) return done(this.failure);
    // complete() never rejects: its requests are tracked, and their failure is this.failure.
    void this.complete().then(() => {
      if (this.failure !== undefined) return done(this.failure);
      if (this.destroyed) return done(new Error('staged write discarded'));
      this.completed = true;
      this.resolveSettled();
      done();
    });
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // Unfinished: stop sending, wait for the requests in flight, abort the multipart upload (settled then
    // resolves). A finished upload stays as it is (discard deletes it).
    this.waiter = undefined;
    if (!this.completed) void this.stop();
    done(err);
  }
}

/** Marks which S3 operation an SDK error came from, for describe(). */
function tagOp(err: unknown, op: string): unknown {
  if (err !== null && typeof err === 'object' && !('s3Op' in err))
    Object.defineProperty(err, 's3Op', { value: op, enumerable: false });
  return err;
}
