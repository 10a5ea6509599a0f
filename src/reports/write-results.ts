// Turns one model run into the DICOM objects a viewer shows: always a TID 1500 SR, plus a SEG for
// segmentation models. UIDs derive from study + model + version + run, so a retried job rewrites the
// same objects; a new run (late instances, reprocess) gets new UIDs and its SR names the previous
// run's SR in PredecessorDocumentsSequence.
import { readNaturalizedHeader } from '../dicom/part10.ts';
import { uidFromName } from '../dicom/uid.ts';
import type { ReportRecord, StudyIndex } from '../pipeline/study-index.ts';
import { objectKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import {
  UnbuildableReportError,
  type ModelResult,
  type ResultToReport,
  type SegmentationResult,
  type WrittenObject,
} from '../pipeline/findings.ts';
import { errorMessage } from '../observability/error-message.ts';
import { reportsEvents } from './events.ts';
import { buildSegmentation } from './seg/segmentation.ts';
import { buildMeasurementReport, COMPREHENSIVE_SR_SOP_CLASS } from './sr/tid1500.ts';
import { readSrFindings, topFinding } from './sr/read-findings.ts';
import { isPositiveRow } from '../pipeline/study-index.ts';
import { reportsWritten } from '../observability/metrics.ts';

export const SR_SERIES_NUMBER = 9000;
export const SEG_SERIES_NUMBER = 9001;

export interface WriteResultsInput extends ResultToReport {
  index: StudyIndex;
  /** Objects are kept here, under their outbox keys, until every delivery has landed. */
  store: ObjectStore;
}

/** Stable per study + model (not version), so every run's SR lands in the same series. */
export const srSeriesUid = (studyUid: string, modelId: string) =>
  uidFromName(`sr-series|${studyUid}|${modelId}`);
export const srUid = (studyUid: string, modelId: string, version: string, run: number) =>
  uidFromName(`sr|${studyUid}|${modelId}@${version}|${run}`);

export async function writeModelResults(input: WriteResultsInput): Promise<WrittenObject[]> {
  const { result, studyUid, modelId, modelVersion, run, index } = input;
  const objects: WrittenObject[] = [];
  const sopInstanceUid = srUid(studyUid, modelId, modelVersion, run);
  const seriesUid = srSeriesUid(studyUid, modelId);

  // Which report this one supersedes: the last one written, unless that is this run's own (a retry),
  // in which case the retry references what the first attempt referenced.
  const last = await index.lastReport(studyUid, modelId);
  let predecessor: Omit<ReportRecord, 'predecessor'> | undefined;
  if (last && last.sopInstanceUid === sopInstanceUid) predecessor = last.predecessor;
  else if (last && last.run < run) {
    const { seriesUid: s, sopClassUid, sopInstanceUid: uid, run: r } = last;
    predecessor = { seriesUid: s, sopClassUid, sopInstanceUid: uid, run: r };
  }

  const sourcePath = result.sources[0]?.file;
  if (!sourcePath) throw new Error('the model result references no source instance');
  // Each source file's header is read once, for the SR and the SEG alike (frames of one multi-frame
  // image share a file).
  const headers = new Map<string, ReturnType<typeof readNaturalizedHeader>>();
  const headerOf = (file: string) => {
    const header = headers.get(file) ?? readNaturalizedHeader(file);
    headers.set(file, header);
    return header;
  };
  const sourceHeader = await headerOf(sourcePath);
  let sr: Buffer;
  try {
    sr = buildMeasurementReport({
      result,
      sourceHeader,
      sopInstanceUid,
      seriesInstanceUid: seriesUid,
      seriesNumber: SR_SERIES_NUMBER,
      instanceNumber: run,
      predecessor: predecessor && {
        studyUid,
        seriesUid: predecessor.seriesUid,
        sopInstanceUid: predecessor.sopInstanceUid,
        sopClassUid: predecessor.sopClassUid,
      },
    });
  } catch (err) {
    // Building is a pure function of the result and the source header: what failed once fails on every
    // try, so the job is not retried.
    throw new UnbuildableReportError(`the SR cannot be built: ${buildFailure(err)}`, { cause: err });
  }
  const srKey = objectKey.outbox(studyUid, sopInstanceUid);
  await input.store.put(srKey, sr);
  objects.push({ kind: 'sr', sopInstanceUid, key: srKey });

  if (result.segmentation) {
    const seg = await writeSegmentation(input, { ...result, segmentation: result.segmentation }, headerOf);
    if (seg) objects.push(seg);
  }

  // Recorded last: a crash before this point retries with the same predecessor. A late retry of an
  // older run must not make the newer report look superseded.
  if (!last || last.run <= run) {
    // The console's findings table, read back from the SR just built: what the PACS will show.
    const rows = readSrFindings(sr);
    const positive = rows.some(isPositiveRow);
    await index.setReportFindings(studyUid, {
      model: modelId,
      version: modelVersion,
      run,
      srUid: sopInstanceUid,
      rows,
      top: topFinding(rows),
      positive,
    });
    reportsWritten.inc({ model: modelId, positive: String(positive) });
    await index.setLastReport(studyUid, modelId, {
      sopInstanceUid,
      seriesUid,
      sopClassUid: COMPREHENSIVE_SR_SOP_CLASS,
      run,
      predecessor,
    });
  }
  return objects;
}

async function writeSegmentation(
  input: WriteResultsInput,
  result: ModelResult & { segmentation: SegmentationResult },
  headerOf: (file: string) => ReturnType<typeof readNaturalizedHeader>,
): Promise<WrittenObject | undefined> {
  const { studyUid, modelId, modelVersion, run } = input;
  const sopInstanceUid = uidFromName(`seg|${studyUid}|${modelId}@${modelVersion}|${run}`);
  const sourceHeaders = await Promise.all(result.sources.map((s) => headerOf(s.file)));
  let seg: Buffer | undefined;
  try {
    seg = buildSegmentation({
      result,
      sourceHeaders,
      sopInstanceUid,
      seriesInstanceUid: uidFromName(`seg-series|${studyUid}|${modelId}`),
      seriesNumber: SEG_SERIES_NUMBER,
      instanceNumber: run,
    });
  } catch (err) {
    // Building is a pure function of its input: images without usable geometry (or any other reason the
    // SEG cannot be built) will not change on a retry. The SR still goes out.
    reportsEvents.segSkipped(studyUid, `${modelId}@${modelVersion}`, buildFailure(err));
    return undefined;
  }
  if (!seg) {
    reportsEvents.segEmpty(studyUid, `${modelId}@${modelVersion}`);
    return undefined;
  }
  const segKey = objectKey.outbox(studyUid, sopInstanceUid);
  await input.store.put(segKey, seg);
  return { kind: 'seg', sopInstanceUid, key: segKey };
}

/**
 * Why a build failed, for the job's failure reason and the log: dcmjs quotes the offending value in its
 * length errors, and a value copied from the source may be patient data.
 */
function buildFailure(err: unknown): string {
  return errorMessage(err).replace(/(Value exceeds max length, vr: \w+), value: .*/s, '$1');
}
