import path from 'node:path';
import type { ModelResult, SegmentationResult, SourceInstanceRef } from '../../src/pipeline/findings.ts';
import { buildMeasurementReport } from '../../src/reports/sr/tid1500.ts';
import { instanceKeyOf, mrSlices, sourcesOf } from './dicom-tools.ts';

// Model results over real sample series for the SR, SEG and delivery tests: a TID 1500 SR with one
// positive 'hemorrhage' finding over CT slices (built with the project's own SR builder), and a brain
// volume result with a label map over MR slices.

const CT_SERIES = path.resolve(
  import.meta.dirname,
  '../../../shared/dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm',
);

export function hemorrhageReport(opts: {
  /** File names in the CT series, e.g. 'I10.dcm'; the first one's patient and study go into the SR. */
  slices: string[];
  sopInstanceUid: string;
  seriesInstanceUid: string;
  now?: Date;
}): { sr: Buffer; studyUid: string } {
  const sources = sourcesOf(opts.slices.map((f) => path.join(CT_SERIES, f)));
  const header = sources[0]!.header;
  const result: ModelResult = {
    model: { id: 'm', name: 'Test model', version: '1', manufacturer: 'Lab', uid: '2.25.12345' },
    findings: [
      {
        kind: 'classification',
        label: 'hemorrhage',
        concept: { value: '50960005', scheme: 'SCT', meaning: 'Hemorrhage' },
        probability: 0.75,
        threshold: 0.5,
        positive: true,
      },
    ],
    sources: sources.map((s) => s.ref),
    provider: 'cpu',
    inferenceMs: 1,
  };
  const sr = buildMeasurementReport({
    result,
    sourceHeader: header,
    sopInstanceUid: opts.sopInstanceUid,
    seriesInstanceUid: opts.seriesInstanceUid,
    ...(opts.now ? { now: opts.now } : {}),
  });
  return { sr, studyUid: header.StudyInstanceUID as string };
}

/**
 * A volume model's result over the real MR slices `from`..`to` (exclusive): one white-matter volume
 * finding and, on every slice, a label map with a block of white matter (all background when `empty`),
 * as the brain model would give it; for SR + SEG writing and delivery tests.
 */
export function whiteMatterResult(
  from: number,
  to: number,
  opts: { empty?: boolean } = {},
): {
  result: ModelResult & { segmentation: SegmentationResult };
  headers: Record<string, unknown>[];
  studyUid: string;
} {
  const mr = sourcesOf(mrSlices(from, to));
  const headers = mr.map((x) => x.header);
  return {
    headers,
    studyUid: headers[0]!.StudyInstanceUID as string,
    result: whiteMatterResultOver(
      headers,
      mr.map((x) => x.ref),
      opts,
    ),
  };
}

/** The white-matter segmentation result over these headers and their files (e.g. edited copies). */
export function whiteMatterResultOver(
  headers: Record<string, unknown>[],
  sources: SourceInstanceRef[] | string[],
  opts: { empty?: boolean } = {},
): ModelResult & { segmentation: SegmentationResult } {
  const rows = headers[0]!.Rows as number;
  const columns = headers[0]!.Columns as number;
  const wm = { value: '33999003', scheme: 'SCT', meaning: 'White matter' };
  return {
    model: {
      id: 'meshnet-brain-gwm',
      name: 'MeshNet',
      version: '1.0',
      manufacturer: 'brainchop',
      uid: '2.25.77',
    },
    findings: [{ kind: 'volume', label: 'white matter', concept: wm, volumeMl: 3.25, voxelCount: 800 }],
    sources: sources.map((src, i) =>
      typeof src === 'string'
        ? {
            sopClassUid: headers[i]!.SOPClassUID as string,
            sopInstanceUid: headers[i]!.SOPInstanceUID as string,
            seriesUid: headers[i]!.SeriesInstanceUID as string,
            key: instanceKeyOf(headers[i]!),
            file: src,
          }
        : src,
    ),
    provider: 'cpu',
    inferenceMs: 1,
    segmentation: {
      rows,
      columns,
      slices: headers.map(() => new Uint8Array(rows * columns).fill(opts.empty ? 0 : 1, 5000, 6000)),
      segments: [{ labelValue: 1, label: 'White Matter', concept: wm }],
    },
  };
}
