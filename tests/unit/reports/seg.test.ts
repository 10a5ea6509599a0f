import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSegmentation, SEGMENTATION_SOP_CLASS } from '../../../src/reports/seg/segmentation.ts';
import { ReportInputError } from '../../../src/reports/derived-object.ts';
import type { ModelResult, SegmentationResult } from '../../../src/pipeline/findings.ts';
import { dciodvfy, mrSlices, parseDicom, sourcesOf } from '../../helpers/dicom-tools.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const REFERENCE_SEG = path.join(repoRoot, '../shared/dicom-samples/multiframe/seg-liver-dcmqi-3frames.dcm');
const SEG_UID = '2.25.300000000000000000000000000000000001';
const SEG_SERIES = '2.25.300000000000000000000000000000000002';

type Ds = Record<string, unknown>;

const WM = { value: '33999003', scheme: 'SCT', meaning: 'White matter' };
const GM = { value: '29811004', scheme: 'SCT', meaning: 'Gray matter' };

/** Four real sagittal MR slices, in file order 4,3,2,1 (not position order), with synthetic label maps. */
async function fixture(): Promise<{
  headers: Ds[];
  result: ModelResult & { segmentation: SegmentationResult };
}> {
  const mr = sourcesOf(mrSlices(10, 14).reverse());
  const headers = mr.map((x) => x.header);
  const rows = headers[0]!.Rows as number;
  const columns = headers[0]!.Columns as number;
  const slices = headers.map((_, i) => {
    const map = new Uint8Array(rows * columns);
    // White matter: a square on every slice; grey matter: a bar on slices 0 and 2 only.
    for (let r = 100; r < 140; r++) for (let c = 100; c < 140; c++) map[r * columns + c] = 1;
    if (i % 2 === 0) for (let c = 0; c < 30; c++) map[10 * columns + c] = 2;
    return map;
  });
  return {
    headers,
    result: {
      model: {
        id: 'meshnet-brain-gwm',
        name: 'MeshNet GWM',
        version: '1.0',
        manufacturer: 'brainchop',
        uid: '2.25.42',
      },
      findings: [],
      sources: mr.map((x) => x.ref),
      provider: 'cpu',
      inferenceMs: 1,
      segmentation: {
        rows,
        columns,
        slices,
        segments: [
          { labelValue: 1, label: 'White Matter', concept: WM },
          {
            labelValue: 2,
            label: 'Grey Matter',
            concept: GM,
            category: { value: '85756007', scheme: 'SCT', meaning: 'Tissue' },
          },
        ],
      },
    },
  };
}

test('SEG from real MR slices passes dciodvfy and round-trips the label maps frame by frame', async (t) => {
  const { headers, result } = await fixture();
  const bytes = buildSegmentation({
    result,
    sourceHeaders: headers,
    sopInstanceUid: SEG_UID,
    seriesInstanceUid: SEG_SERIES,
    now: new Date(2024, 0, 2, 3, 4, 5),
  });
  assert.ok(bytes);
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-seg-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'seg.dcm');
  await writeFile(file, bytes);
  const report = await dciodvfy(file);
  assert.deepEqual(report.errors, [], report.output);

  const ds = parseDicom(bytes, true);
  assert.equal(ds.SOPClassUID, SEGMENTATION_SOP_CLASS);
  assert.equal(ds.StudyInstanceUID, headers[0]!.StudyInstanceUID);
  assert.equal(ds.FrameOfReferenceUID, headers[0]!.FrameOfReferenceUID);
  assert.equal(ds.SegmentationType, 'BINARY');
  // 4 white-matter frames + 2 grey-matter frames (empty frames are not written).
  assert.equal(ds.NumberOfFrames, 6);
  const perFrame = ds.PerFrameFunctionalGroupsSequence as Ds[];
  assert.equal(perFrame.length, 6);
  const segs = ds.SegmentSequence as Ds[];
  assert.deepEqual(
    segs.map((s) => [s.SegmentNumber, s.SegmentLabel, (s.SegmentedPropertyTypeCodeSequence as Ds).CodeValue]),
    [
      [1, 'White Matter', '33999003'],
      [2, 'Grey Matter', '29811004'],
    ],
  );

  // Unpack the bits and compare each frame with the label map of the source it derives from.
  const pixels = new Uint8Array((ds.PixelData as ArrayBuffer[])[0]!);
  const { rows, columns } = result.segmentation;
  const frameSize = rows * columns;
  const bySop = new Map(result.sources.map((s, i) => [s.sopInstanceUid, i]));
  const positions: number[][] = [];
  perFrame.forEach((f, k) => {
    const deriv = (f.DerivationImageSequence as Ds).SourceImageSequence as Ds;
    const src = bySop.get(deriv.ReferencedSOPInstanceUID as string);
    assert.notEqual(src, undefined);
    const segmentNumber = (f.SegmentIdentificationSequence as Ds).ReferencedSegmentNumber as number;
    const label = result.segmentation.segments[segmentNumber - 1]!.labelValue;
    const pos = ((f.PlanePositionSequence as Ds).ImagePositionPatient as string[]).map(Number);
    assert.deepEqual(pos, (headers[src!]!.ImagePositionPatient as number[]).map(Number));
    if (segmentNumber === 1) positions.push(pos);
    const map = result.segmentation.slices[src!]!;
    for (let p = 0; p < frameSize; p++) {
      const bit = k * frameSize + p;
      const set = (pixels[bit >> 3]! >> (bit & 7)) & 1;
      if (set !== (map[p] === label ? 1 : 0)) assert.fail(`frame ${k} pixel ${p} differs`);
    }
  });
  // Frames of a segment run along the slice normal (the files were given in reverse order).
  const values = (ds.PerFrameFunctionalGroupsSequence as Ds[]).map(
    (f) => (f.FrameContentSequence as Ds).DimensionIndexValues as number[],
  );
  assert.deepEqual(values.slice(0, 4), [
    [1, 1],
    [1, 2],
    [1, 3],
    [1, 4],
  ]);
  // Row (0,1,0) x column (0,0,-1) = (-1,0,0): along the normal x decreases, strictly.
  for (let k = 1; k < positions.length; k++) assert.ok(positions[k]![0]! < positions[k - 1]![0]!);
});

test('SEG has the same top-level structure as the dcmqi reference', async () => {
  const { headers, result } = await fixture();
  const ours = parseDicom(
    buildSegmentation({
      result,
      sourceHeaders: headers,
      sopInstanceUid: SEG_UID,
      seriesInstanceUid: SEG_SERIES,
    })!,
  );
  const ref = parseDicom(await readFile(REFERENCE_SEG));
  // Attributes that make a SEG usable in a viewer: all present in both.
  for (const key of [
    'ImageType',
    'SegmentationType',
    'SegmentSequence',
    'SharedFunctionalGroupsSequence',
    'PerFrameFunctionalGroupsSequence',
    'DimensionOrganizationSequence',
    'DimensionIndexSequence',
    'ReferencedSeriesSequence',
    'FrameOfReferenceUID',
    'ContentLabel',
    'BitsAllocated',
  ]) {
    assert.ok(key in ref, `reference has ${key}`);
    assert.ok(key in ours, `ours has ${key}`);
  }
  const keysOf = (v: unknown) => Object.keys((Array.isArray(v) ? v[0] : v) as Ds).sort();
  assert.deepEqual(
    keysOf(ours.PerFrameFunctionalGroupsSequence),
    keysOf(ref.PerFrameFunctionalGroupsSequence),
  );
  assert.deepEqual(
    (ours.DimensionIndexSequence as Ds[]).map((d) => d.DimensionDescriptionLabel),
    (ref.DimensionIndexSequence as Ds[]).map((d) => d.DimensionDescriptionLabel),
  );
});

test('SEG input is validated: geometry, sizes, label values; an empty result writes nothing', async () => {
  const { headers, result } = await fixture();
  const base = { sourceHeaders: headers, sopInstanceUid: SEG_UID, seriesInstanceUid: SEG_SERIES };
  const empty = {
    ...result.segmentation,
    slices: result.segmentation.slices.map((s) => new Uint8Array(s.length)),
  };
  assert.equal(buildSegmentation({ ...base, result: { ...result, segmentation: empty } }), undefined);
  const short = { ...result.segmentation, slices: result.segmentation.slices.slice(1) };
  assert.throws(
    () => buildSegmentation({ ...base, result: { ...result, segmentation: short } }),
    ReportInputError,
  );
  const zero = { ...result.segmentation, segments: [{ labelValue: 0, label: 'bg', concept: WM }] };
  assert.throws(
    () => buildSegmentation({ ...base, result: { ...result, segmentation: zero } }),
    ReportInputError,
  );
  const wrongSize = { ...result.segmentation, rows: 10 };
  assert.throws(
    () => buildSegmentation({ ...base, result: { ...result, segmentation: wrongSize } }),
    ReportInputError,
  );
  const noGeometry = headers.map((h) => ({ ...h, ImagePositionPatient: undefined }));
  assert.throws(() => buildSegmentation({ ...base, sourceHeaders: noGeometry, result }), ReportInputError);
});
