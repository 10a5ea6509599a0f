import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VolumeManifest } from '../../../src/models/manifest.ts';
import { loadModels } from '../../../src/models/registry.ts';
import type { ModelResult, SourceInstanceRef, VolumeFinding } from '../../../src/pipeline/findings.ts';
import { buildSegmentation } from '../../../src/reports/seg/segmentation.ts';
import { decodeImage } from '../../../src/imaging/decode.ts';
import { readNifti } from '../../../src/imaging/nifti.ts';
import { openModel, runModel, type LoadedModelSession } from '../../../src/inference/run-model.ts';
import { DecodePool } from '../../../src/inference/runtime/decode-pool.ts';
import { labelsOnSlices, segmentVolume } from '../../../src/inference/run-volume.ts';
import { dciodvfy, parseDicom } from '../../helpers/dicom-tools.ts';
import { assertSegFramesReferenceSource, writeEnhancedFromSlices } from '../../helpers/enhanced-mr.ts';

// The brain segmentation model (../shared/models/meshnet-brain-gwm, light model, file order) through the
// worker's volume path. Each full 256³ run takes about 5-7 s on two CPU cores, so the file runs it three times.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const shared = path.resolve(repoRoot, '../shared');
const BRAIN = 'meshnet-brain-gwm';
const SAMPLE = path.join(shared, 'models', BRAIN, 'sample/t1_crop.nii.gz');
const MR_SERIES = path.join(shared, 'dicom-samples/mr/siemens-prisma-t1-sag-series');

let dir: string;
let brain: LoadedModelSession;
let manifest: VolumeManifest;
let pool: DecodePool | undefined;
/** The real series' result, which the enhanced multi-frame copy of it must reproduce. */
let classic: ModelResult | undefined;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'brain-'));
  const modelDir = path.join(dir, BRAIN);
  await mkdir(modelDir);
  await copyFile(path.join(repoRoot, 'models', BRAIN, 'model.json'), path.join(modelDir, 'model.json'));
  await symlink(
    path.join(shared, 'models', BRAIN, 'gwm_light_fileorder.onnx'),
    path.join(modelDir, 'gwm_light_fileorder.onnx'),
  );
  const catalogue = await loadModels(dir);
  assert.deepEqual(catalogue.problems, []);
  const model = catalogue.models[0]!;
  assert.equal(model.manifest.unit, 'volume');
  manifest = model.manifest as VolumeManifest;
  // No warm-up: it is one more full-volume run, and nothing here measures time.
  // Slices decode in threads, as in a worker.
  pool = new DecodePool(2);
  brain = await openModel(
    model,
    { executionProviders: ['cpu'], deviceId: 0, strict: false, warmUp: false },
    pool,
  );
});

after(async () => {
  await brain?.close();
  await pool?.close();
  await rm(dir, { recursive: true, force: true });
});

test('MODEL.md sample: label voxel counts match the reference exactly', async () => {
  const volume = await readNifti(SAMPLE);
  assert.deepEqual(volume.dims, [256, 256, 256]);
  const seg = await segmentVolume(manifest, brain.batcher, volume);
  // MODEL.md, gwm_light_fileorder: background / WM / GM.
  assert.deepEqual(seg.counts, [15_523_464, 518_540, 735_212]);
  assert.equal(seg.voxelVolumeMm3, 1);

  // The sample is already conformed, so the label map sampled back onto its own grid is the same map.
  const back = labelsOnSlices(seg, volume);
  assert.equal(back.length, 256);
  const counts = [0, 0, 0];
  for (const slice of back) for (const v of slice) counts[v]!++;
  assert.deepEqual(counts, seg.counts);
});

function sourceRef(file: string, i: number): SourceInstanceRef {
  return {
    key: `studies/2.25.76/2.25.77/2.25.${1000 + i}.dcm`,
    file,
    sopInstanceUid: `2.25.${1000 + i}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.4',
    seriesUid: '2.25.77',
  };
}

test('real sagittal MR series: volume assembled along the normal, segmented, mapped back per slice', async () => {
  // Reverse file order on purpose: assembly must sort by position along the slice normal.
  const files = (await readdir(MR_SERIES))
    .sort()
    .reverse()
    .map((f) => path.join(MR_SERIES, f));
  const result = await runModel(brain, files.map(sourceRef));
  assert.equal(result.provider, 'cpu');
  classic = result;

  // Sagittal slices, normal = row × column = (0,1,0) × (0,0,-1) = (-1,0,0): ascending projection
  // is descending patient x, i.e. file 0035 (x = +81.6) first.
  const positions = await Promise.all(result.sources.map(async (s) => (await decodeImage(s.file)).geometry!));
  const along = positions.map((g) => -g.position[0]);
  for (let k = 1; k < along.length; k++) {
    // Spacing comes from the positions: 4.8 mm, while Slice Thickness says 4 mm.
    assert.ok(Math.abs(along[k]! - along[k - 1]! - 4.8) < 1e-3, `gap ${k}: ${along[k]! - along[k - 1]!}`);
  }
  assert.equal(path.basename(result.sources[0]!.file), '0035.dcm');
  assert.equal(result.sources.length, 35);

  const findings = result.findings as VolumeFinding[];
  assert.deepEqual(
    findings.map((f) => [f.kind, f.concept.value]),
    [
      ['volume', '389080008'],
      ['volume', '389081007'],
    ],
  );
  for (const f of findings) assert.equal(f.volumeMl, f.voxelCount / 1000); // 1 mm³ conformed voxels

  // The SEG label maps: one per source, in source order, in the source geometry.
  const seg = result.segmentation!;
  assert.equal(seg.slices.length, result.sources.length);
  assert.deepEqual([seg.rows, seg.columns], [256, 256]);
  assert.deepEqual(
    seg.segments.map((s) => s.labelValue),
    [1, 2],
  );
  // Volume from the mapped-back slices (pixel 1.015625² mm × 4.8 mm) agrees with the conformed count:
  // both geometries are right or neither is.
  const sliceVoxelMl = (1.015625 * 1.015625 * 4.8) / 1000;
  const perLabel = [0, 0, 0];
  for (const slice of seg.slices) for (const v of slice) perLabel[v]!++;
  findings.forEach((f, i) => {
    const fromSlices = perLabel[i + 1]! * sliceVoxelMl;
    assert.ok(
      Math.abs(fromSlices - f.volumeMl) < 0.1 * f.volumeMl,
      `${f.label}: ${fromSlices} vs ${f.volumeMl} mL`,
    );
  });
  // Tissue labels land on the head, not on air: nearly all labelled pixels are above 5 % of the series max.
  const images = await Promise.all(result.sources.map((s) => decodeImage(s.file)));
  let max = 0;
  for (const im of images) for (const v of im.pixels[0]!) max = Math.max(max, v);
  let labelled = 0;
  let onTissue = 0;
  seg.slices.forEach((slice, k) => {
    const pixels = images[k]!.pixels[0]!;
    slice.forEach((label, p) => {
      if (label === 0) return;
      labelled++;
      if (pixels[p]! > 0.05 * max) onTissue++;
    });
  });
  assert.ok(onTissue / labelled > 0.95, `${onTissue}/${labelled} labelled pixels on tissue`);

  // Plausibility, printed rather than asserted tightly: 4 mm 2-D sagittal slices 4.8 mm apart are far
  // from the 1 mm 3-D T1 the model was trained on (see README, "Inference").
  const total = findings.reduce((s, f) => s + f.volumeMl, 0);
  console.log(`MR series: ${findings.map((f) => `${f.label} ${f.volumeMl.toFixed(0)} mL`).join(', ')}`);
  assert.ok(total > 500 && total < 3000, `brain tissue ${total} mL is not head-sized`);
});

test('the same series as one Enhanced MR multi-frame object: same volumes, a SEG that references frames', async () => {
  assert.ok(classic?.segmentation, 'runs after the single-frame series test');
  // Frames in an order that is neither position nor file order: odd-numbered files, then even.
  const names = (await readdir(MR_SERIES)).filter((f) => f.endsWith('.dcm')).sort();
  const shuffled = [...names.filter((_, i) => i % 2 === 1), ...names.filter((_, i) => i % 2 === 0)];
  const file = path.join(dir, 'enhanced-mr.dcm');
  const header = await writeEnhancedFromSlices(
    shuffled.map((f) => path.join(MR_SERIES, f)),
    file,
    { sopInstanceUid: '2.25.5001', seriesInstanceUid: '2.25.5002' },
  );
  const result = await runModel(brain, [
    {
      key: 'studies/2.25.5000/2.25.5002/2.25.5001.dcm',
      file,
      sopInstanceUid: '2.25.5001',
      sopClassUid: header.SOPClassUID as string,
      seriesUid: '2.25.5002',
    },
  ]);

  // One slice per frame, in the order the single-frame series was assembled in.
  const frameOf = new Map(shuffled.map((f, i) => [f, i + 1]));
  assert.deepEqual(
    result.sources.map((s) => s.frameNumber),
    classic.sources.map((s) => frameOf.get(path.basename(s.file))),
  );
  assert.ok(result.sources.every((s) => s.sopInstanceUid === '2.25.5001'));
  // The same volume went into the model: the same voxel counts and the same label map on every slice.
  assert.deepEqual(
    (result.findings as VolumeFinding[]).map((f) => f.voxelCount),
    (classic.findings as VolumeFinding[]).map((f) => f.voxelCount),
  );
  assert.deepEqual(result.segmentation!.slices, classic.segmentation.slices);

  // The SEG of it: each frame derived from one frame of the enhanced object, placed where that frame lies.
  const seg = buildSegmentation({
    result: { ...result, segmentation: result.segmentation! },
    sourceHeaders: result.sources.map(() => header),
    sopInstanceUid: '2.25.5003',
    seriesInstanceUid: '2.25.5004',
  });
  assert.ok(seg);
  const segFile = path.join(dir, 'enhanced-mr-seg.dcm');
  await writeFile(segFile, seg);
  const report = await dciodvfy(segFile);
  assert.deepEqual(report.errors, [], report.output);
  const written = parseDicom(seg);
  assertSegFramesReferenceSource(written, header);
  // The enhanced object is listed once among the referenced instances.
  const series = written.ReferencedSeriesSequence as Record<string, unknown>[];
  assert.deepEqual(
    series.map((s) =>
      (s.ReferencedInstanceSequence as Record<string, unknown>[]).map((r) => r.ReferencedSOPInstanceUID),
    ),
    [['2.25.5001']],
  );
});
