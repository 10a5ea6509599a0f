// The storage seam: every byte the gateway keeps (spooled instances, SR/SEG in the outbox) goes through an
// ObjectStore, addressed by a relative key (storage/keys.ts), never by a host path. Two backends: the local
// filesystem (the zero-config default, storage/filesystem-store.ts) and S3-compatible object storage
// (storage/s3-store.ts). Redis and job data hold keys, or the UIDs the keys derive from, so any node that
// reaches the same store can read what another node wrote.
import type { Writable } from 'node:stream';

/**
 * Emitted by a staged stream that has taken its last byte and begun making it durable (the filesystem
 * spool's fdatasync): its size and head are final from then on. Streams that cannot tell only 'finish'.
 */
export const STAGED_SEALED = 'sealed';

/** A stream that remembers its first bytes and counts what it was given. */
export interface StagedStream extends Writable {
  /** The first bytes written (at most 64 KiB): the header is parsed from them without reading back. */
  readonly head: Buffer;
  readonly bytesWritten: number;
}

/** The source feeding a stream, paused while storage is behind (for writers that ignore write()'s result). */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

/**
 * Bytes on their way in. They land in a staging area first (a temp file, a staging prefix) and are never
 * visible under a key, nor listed, until commit(): a half-written object is never indexed. The stream
 * finishing without error means the bytes are durable in staging (fdatasync'd; the PUT acknowledged).
 */
export interface StagedWrite {
  readonly stream: StagedStream;
  /**
   * Reads back staged bytes [offset, offset + length) (fewer at the end), for a header that does not fit
   * in `stream.head`. Only after the stream finished.
   */
  read(offset: number, length: number): Promise<Buffer>;
  /** Makes the staged bytes durable and visible at key, replacing an earlier copy atomically. */
  commit(key: string): Promise<void>;
  /** Drops the staged bytes; never rejects, idempotent, a no-op after commit. */
  discard(): Promise<void>;
}

export interface StoredObject {
  key: string;
  size: number;
  /** Epoch ms of the last write. */
  modifiedAt: number;
}

/** A local file with the object's bytes, for readers that need a path (decoders, dcmtk); release() after. */
export interface LocalCopy {
  path: string;
  release(): Promise<void>;
}

export type RetireOutcome = 'removed' | 'kept' | 'absent';

export interface ObjectStore {
  readonly kind: 'filesystem' | 's3';
  /** Human-readable location for logs and /readyz (a directory, or s3://bucket/prefix); no secrets. */
  readonly location: string;

  /** Creates what the store needs (directories; checks the bucket). Idempotent. Rejects when unusable. */
  init(): Promise<void>;

  /**
   * Starts a staged write, synchronously (stream factories such as dcmjs-dimse's cannot await). Writing
   * more than maxBytes fails the stream with InstanceTooLargeError. With flow, the source is paused while
   * more than a bounded amount waits to be written, so memory stays flat for any object size.
   */
  stage(maxBytes?: number, flow?: FlowControl): StagedWrite;

  /** Writes a whole object durably (replacing any earlier one); resolves once it is on stable storage. */
  put(key: string, bytes: Buffer): Promise<void>;
  /** The whole object; rejects with ObjectNotFoundError when absent. */
  get(key: string): Promise<Buffer>;
  /** The object's bytes in a local file; the filesystem store hands out its own file (release is a no-op). */
  localCopy(key: string): Promise<LocalCopy>;
  /** Size and time of an object, or undefined when absent. */
  stat(key: string): Promise<StoredObject | undefined>;
  /** Every committed object whose key starts with prefix, in key order; staged writes are never listed. */
  list(prefix: string): AsyncIterable<StoredObject>;
  /** Removes one object; absent is not an error. */
  delete(key: string): Promise<void>;
  /** Removes every object under prefix (a study's outbox, say); returns how many went. */
  deletePrefix(prefix: string): Promise<number>;
  /**
   * Removes key only if its copy was written no later than writtenBy (epoch ms): a copy re-sent after the
   * cut-off stays. Retention uses it so that it never deletes an instance that arrived again meanwhile.
   */
  retire(key: string, writtenBy: number): Promise<RetireOutcome>;
  /** Deletes staged writes older than olderThanMs left by a crash (this or another process). */
  cleanupStaging(olderThanMs: number): Promise<number>;
  /** Resolves when the store answers (readiness); rejects with the reason otherwise. Cheap. */
  check(): Promise<void>;
  close(): Promise<void>;
}

export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`no object at ${key}`);
    this.name = 'ObjectNotFoundError';
  }
}

export class InstanceTooLargeError extends Error {
  constructor(readonly maxBytes: number) {
    super(`instance larger than ${maxBytes} bytes`);
    this.name = 'InstanceTooLargeError';
  }
}
