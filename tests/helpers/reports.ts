import path from 'node:path';
import type { ModelResult } from '../../src/results/findings.ts';
import { buildMeasurementReport } from '../../src/results/sr/tid1500.ts';
import { sourcesOf } from './dicom-tools.ts';

// A real TID 1500 SR for delivery tests: one positive 'hemorrhage' finding over slices of the real CT
// series, built with the project's own SR builder.

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
