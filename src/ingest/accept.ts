// The one step every ingest path shares (DIMSE C-STORE, STOW-RS): a Part-10 object staged in the object
// store is checked (readable header, valid UIDs, what the sender claimed, sane dimensions), committed under
// its key, and indexed (onStored). Only then may the sender hear Success.
import { InflatedTooLargeError, readInstanceHeader, type InstanceHeader } from '../dicom/part10.ts';
import { INGEST_TRANSFER_SYNTAXES } from '../dicom/transfer-syntax.ts';
import { isValidUid, trimUid } from '../dicom/uid.ts';
import { errorMessage } from '../observability/error-message.ts';
import { bytesReceived, instancesReceived } from '../observability/metrics.ts';
import type { DiskWatermark } from '../storage/disk-watermark.ts';
import { objectKey } from '../storage/object-keys.ts';
import {
  InstanceTooLargeError,
  STAGED_SEALED,
  type ObjectStore,
  type StagedWrite,
} from '../storage/object-store.ts';
import type { InstanceRecord } from '../pipeline/instance-record.ts';

// Failure statuses shared by C-STORE (PS3.4 Table B.2-1) and STOW-RS FailureReason (PS3.18 Table 10.5.3-2).
export const STATUS_OUT_OF_RESOURCES = 0xa700;
export const STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xa900;
export const STATUS_CANNOT_UNDERSTAND = 0xc000;
/** STOW-RS: Referenced Transfer Syntax not supported (PS3.18 Table 10.5.3-2). */
export const STATUS_TRANSFER_SYNTAX_NOT_SUPPORTED = 0xc122;
/** STOW-RS only: the instance belongs to another study than the one in the URL (PS3.18 10.5.3). */
export const STATUS_STUDY_UID_MISMATCH = 0xa900;

/** Uncompressed pixel bytes beyond this are not an image anyone sends: refuse before anyone decodes it. */
export const MAX_PIXEL_BYTES = 4 * 1024 ** 3;

export type IngestPath = 'dimse' | 'stowrs';

/** Indexes a stored instance (study index, completion timer); if it throws, the sender is told to resend. */
export type OnStored = (inst: InstanceRecord) => Promise<void>;

export interface IngestSource {
  path: IngestPath;
  callingAe: string;
  address: string;
}

/** What the sender announced beside the data set; the data set must agree. */
export interface Expected {
  sopInstanceUid?: string;
  sopClassUid?: string;
  studyUid?: string;
}

export type AcceptOutcome =
  | { ok: true; instance: InstanceRecord }
  | {
      ok: false;
      status: number;
      reason: string;
      /** 'refused': the data set is at fault; 'failed': we are (disk, Redis): the sender may retry. */
      kind: 'refused' | 'failed';
      sopInstanceUid?: string;
      sopClassUid?: string;
      error?: unknown;
    };

export interface InstanceAcceptorOptions {
  store: ObjectStore;
  onStored: OnStored;
  /** The local data disk's watermark (with S3, the local staging disk: see docs/storage.md). */
  disk: DiskWatermark;
}

/**
 * A header read from a staged stream's first bytes before the stream finished, and the stream's size then.
 * Undefined header: it could not be read from those bytes alone (accept() reads it the usual way).
 */
export interface EarlyHeader {
  size: number;
  header: InstanceHeader | undefined;
}

/** Stands in for reading back from staging, which is only allowed once the stream finished. */
class NeedsReadBack extends Error {}

export class InstanceAcceptor {
  readonly store: ObjectStore;
  readonly disk: DiskWatermark;
  private readonly onStored: OnStored;

  constructor(opts: InstanceAcceptorOptions) {
    this.store = opts.store;
    this.disk = opts.disk;
    this.onStored = opts.onStored;
  }

  /**
   * The staged write could not be written whole: it is discarded. An instance over the size limit is the
   * sender's fault (refused); anything else is ours (failed, the sender may retry). Never rejects.
   */
  async writeFailed(staged: StagedWrite, error: unknown): Promise<Extract<AcceptOutcome, { ok: false }>> {
    await staged.discard().catch(() => undefined);
    return error instanceof InstanceTooLargeError
      ? refused(STATUS_OUT_OF_RESOURCES, error.message, {})
      : failed(STATUS_OUT_OF_RESOURCES, 'cannot write to storage', {}, error);
  }

  /**
   * Reads the header while the staged stream is still finishing: called once the stream was ended, it parses
   * when the stream has taken its last byte ('sealed'; 'finish' for stores that cannot tell), so that
   * parsing, CPU on the event loop, overlaps the fdatasync running in the thread pool instead of following
   * it. Only the stream's first bytes are used; never rejects.
   */
  readHeaderEarly(staged: StagedWrite): Promise<EarlyHeader> {
    const { stream } = staged;
    return new Promise((resolve) => {
      const parse = () => {
        stream.off(STAGED_SEALED, parse).off('finish', parse).off('close', parse);
        const size = stream.bytesWritten;
        readStagedHeader(staged, size, () => Promise.reject(new NeedsReadBack())).then(
          (header) => resolve({ size, header }),
          () => resolve({ size, header: undefined }),
        );
      };
      if (stream.writableFinished || stream.destroyed) return parse();
      stream.once(STAGED_SEALED, parse).once('finish', parse).once('close', parse);
    });
  }

  /**
   * Takes ownership of the staged write (its stream finished without error): it ends up committed or
   * discarded, whatever the outcome. Never rejects. `early`: from readHeaderEarly, used when the stream's
   * size has not changed since.
   */
  async accept(
    staged: StagedWrite,
    source: IngestSource,
    expected: Expected = {},
    early?: Promise<EarlyHeader>,
  ): Promise<AcceptOutcome> {
    let committed = false;
    const size = staged.stream.bytesWritten;
    try {
      let header: InstanceHeader;
      try {
        const ready = await early;
        // Parsed from the head the stream kept; read back from staging only when the header is longer.
        header =
          ready?.header !== undefined && ready.size === size
            ? ready.header
            : await readStagedHeader(staged, size, (offset, length) => staged.read(offset, length));
      } catch (err) {
        // A deflate bomb is refused as too large, like an instance over the size limit.
        if (err instanceof InflatedTooLargeError)
          return refused(STATUS_OUT_OF_RESOURCES, err.message, expected);
        return refused(STATUS_CANNOT_UNDERSTAND, `unparseable data set: ${errorMessage(err)}`, expected);
      }
      const checked = checkHeader(header, expected);
      if (!checked.ok) return checked;

      try {
        await staged.commit(objectKey.instance(checked.key));
        committed = true;
      } catch (err) {
        return failed(STATUS_OUT_OF_RESOURCES, 'cannot store instance', checked.key, err);
      }
      const instance: InstanceRecord = {
        ...header,
        ...checked.key,
        size,
        callingAe: source.callingAe,
        callingAddress: source.address,
        receivedAt: Date.now(),
      };
      try {
        await this.onStored(instance);
      } catch (err) {
        // The object stays in the store (a resend overwrites it; reconciliation indexes it).
        return failed(STATUS_OUT_OF_RESOURCES, 'cannot index instance', checked.key, err);
      }
      instancesReceived.inc({ path: source.path });
      bytesReceived.inc({ path: source.path }, size);
      return { ok: true, instance };
    } finally {
      // Whatever was not committed goes (discard is a no-op after a commit).
      if (!committed) await staged.discard().catch(() => undefined);
    }
  }
}

/** The header from the head the staged stream kept; `read` serves what lies beyond it. */
function readStagedHeader(
  staged: StagedWrite,
  size: number,
  read: (offset: number, length: number) => Promise<Buffer>,
): Promise<InstanceHeader> {
  return readInstanceHeader({ size, read }, { prefix: { bytes: staged.stream.head, fileSize: size } });
}

type CheckedKey = Pick<
  InstanceRecord,
  'studyUid' | 'seriesUid' | 'sopInstanceUid' | 'sopClassUid' | 'transferSyntaxUid'
>;

type Checked = { ok: true; key: CheckedKey } | Extract<AcceptOutcome, { ok: false }>;

/** The data set must carry valid UIDs that agree with the command or URL, and dimensions a scanner makes. */
export function checkHeader(header: InstanceHeader, expected: Expected): Checked {
  const { studyUid, seriesUid, sopInstanceUid, sopClassUid, transferSyntaxUid } = header;
  const ids = {
    sopInstanceUid: sopInstanceUid ?? expected.sopInstanceUid,
    sopClassUid: sopClassUid ?? expected.sopClassUid,
  };
  const refuse = (status: number, reason: string) => refused(status, reason, ids);
  if (!isValidUid(studyUid)) return refuse(STATUS_CANNOT_UNDERSTAND, 'invalid or missing StudyInstanceUID');
  if (!isValidUid(seriesUid)) return refuse(STATUS_CANNOT_UNDERSTAND, 'invalid or missing SeriesInstanceUID');
  if (!isValidUid(sopInstanceUid))
    return refuse(STATUS_CANNOT_UNDERSTAND, 'invalid or missing SOPInstanceUID');
  if (!isValidUid(sopClassUid)) return refuse(STATUS_CANNOT_UNDERSTAND, 'invalid or missing SOPClassUID');
  if (!isValidUid(transferSyntaxUid)) return refuse(STATUS_CANNOT_UNDERSTAND, 'invalid transfer syntax');
  // DIMSE negotiation already limits the syntax; STOW-RS parts carry their own (PS3.18 Table 10.5.3-2).
  if (!INGEST_TRANSFER_SYNTAXES.has(transferSyntaxUid))
    return refuse(STATUS_TRANSFER_SYNTAX_NOT_SUPPORTED, `transfer syntax ${transferSyntaxUid} not accepted`);
  if (expected.sopInstanceUid !== undefined && sopInstanceUid !== trimUid(expected.sopInstanceUid)) {
    return refuse(STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS, 'SOPInstanceUID differs from the command');
  }
  if (expected.sopClassUid !== undefined && sopClassUid !== trimUid(expected.sopClassUid)) {
    return refuse(STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS, 'SOPClassUID differs from the command');
  }
  if (expected.studyUid !== undefined && studyUid !== expected.studyUid) {
    return refuse(STATUS_STUDY_UID_MISMATCH, 'StudyInstanceUID differs from the request URL');
  }
  const pixelBytes = declaredPixelBytes(header);
  if (pixelBytes > MAX_PIXEL_BYTES) {
    return refuse(
      STATUS_CANNOT_UNDERSTAND,
      `absurd image size ${header.rows}x${header.columns}x${header.numberOfFrames ?? 1}`,
    );
  }
  return { ok: true, key: { studyUid, seriesUid, sopInstanceUid, sopClassUid, transferSyntaxUid } };
}

/** Bytes the declared Rows × Columns × Frames × Samples × BitsAllocated would take uncompressed. */
export function declaredPixelBytes(h: InstanceHeader): number {
  if (h.rows === undefined || h.columns === undefined) return 0;
  const frames = h.numberOfFrames !== undefined && h.numberOfFrames > 0 ? h.numberOfFrames : 1;
  const samples = h.samplesPerPixel ?? 1;
  const bits = h.bitsAllocated ?? 16;
  return (h.rows * h.columns * frames * samples * bits) / 8;
}

function refused(
  status: number,
  reason: string,
  ids: { sopInstanceUid?: string; sopClassUid?: string },
): Extract<AcceptOutcome, { ok: false }> {
  return { ok: false, kind: 'refused', status, reason, ...ids };
}

function failed(
  status: number,
  reason: string,
  ids: { sopInstanceUid?: string; sopClassUid?: string },
  error: unknown,
): Extract<AcceptOutcome, { ok: false }> {
  return { ok: false, kind: 'failed', status, reason, error, ...ids };
}
