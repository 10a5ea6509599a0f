import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { manifestSchema, type VolumeManifest } from '../../../src/models/manifest.ts';
import { runVolumeModel, UnusableSeriesError } from '../../../src/inference/run-volume.ts';
import { MicroBatcher } from '../../../src/inference/runtime/batcher.ts';
import { DecodePool } from '../../../src/inference/runtime/decode-pool.ts';
import { mrSlices, sourcesOf } from '../../helpers/dicom-tools.ts';
import { REPO } from '../../helpers/gateway.ts';
import { writeSynthetic } from '../../helpers/synthetic-dicom.ts';

// The series-size guard of volume models holds with slices decoded ahead in threads: a series over
// the budget fails before the model runs, and no slice larger than its share of the budget is decoded.

async function brainManifest(): Promise<VolumeManifest> {
  return manifestSchema.parse(
    JSON.parse(await readFile(path.join(REPO, 'models/meshnet-brain-gwm/model.json'), 'utf8')),
  ) as VolumeManifest;
}

/** A batcher standing in for the model, which must never be reached here. */
function refusingBatcher(m: VolumeManifest, onRun: () => void): MicroBatcher {
  return new MicroBatcher(
    async () => {
      onRun();
      throw new Error('the model must not run');
    },
    { batchLimit: 1, maxWaitMs: 0, itemSize: m.input.shape.reduce((a, b) => a * b, 1) },
  );
}

test('a series over the voxel budget fails before the model runs, slices decoded ahead or not', async () => {
  const m = await brainManifest();
  let runs = 0;
  const batcher = refusingBatcher(m, () => runs++);
  const sources = sourcesOf(mrSlices(0, 20)).map((s) => s.ref); // 20 slices of 256 × 256
  const pool = new DecodePool(2);
  try {
    for (const decodePool of [pool, undefined]) {
      // Room for 5 slices: each slice in flight may take a sixteenth of it, less than one slice.
      await assert.rejects(
        runVolumeModel(m, batcher, sources, decodePool, 5 * 256 * 256),
        (err: unknown) =>
          err instanceof UnusableSeriesError && /over the \d+-sample limit|more than/.test(err.message),
      );
      // Room for the whole series: it assembles (and reaches the model, which refuses here).
      await assert.rejects(
        runVolumeModel(m, batcher, sources, decodePool, 20 * 256 * 256),
        /the model must not run/,
      );
    }
    assert.equal(runs, 2);
  } finally {
    await pool.close();
  }
});

test('frames with no position of their own are dropped and named once; decoding them is capped too', async () => {
  const m = await brainManifest();
  const dir = await mkdtemp(path.join(tmpdir(), 'volume-frames-'));
  const classicMultiFrame = async (name: string, size: number) => {
    // A classic multi-frame image: its top-level Image Position places frame 1 only.
    const file = path.join(dir, name);
    await writeSynthetic(
      file,
      {
        Modality: 'MR',
        Rows: size,
        Columns: size,
        NumberOfFrames: 3,
        ImagePositionPatient: [0, 0, 0],
        ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
        PixelSpacing: [1, 1],
      },
      new Uint16Array(3 * size * size),
    );
    return {
      key: `studies/2.25.61/2.25.62/2.25.${name.length}${size}.dcm`,
      file,
      sopInstanceUid: `2.25.${name.length}${size}`,
      sopClassUid: '1.2.840.10008.5.1.4.1.1.7',
      seriesUid: '2.25.62',
    };
  };
  try {
    const one = await classicMultiFrame('classic.dcm', 64);
    await assert.rejects(
      runVolumeModel(
        m,
        refusingBatcher(m, () => {}),
        [one],
        undefined,
        3 * 64 * 64,
      ),
      (err: unknown) => {
        assert.ok(err instanceof UnusableSeriesError);
        assert.match(err.message, /the series has 1 \(skipped: 2\.25\.\d+ \(frame 2-3\): no Image Position/);
        return true;
      },
    );
    // 70 small files whose frames are decoded and then dropped (too small, no position): with a budget
    // of 3,072 voxels the decoding stops at four times that, instead of going through every file.
    const many = [];
    for (let i = 0; i < 70; i++) many.push(await classicMultiFrame(`small-${i}.dcm`, 8));
    await assert.rejects(
      runVolumeModel(
        m,
        refusingBatcher(m, () => {}),
        many,
        undefined,
        3072,
      ),
      (err: unknown) =>
        err instanceof UnusableSeriesError && /decodes to more than 12288 samples/.test(err.message),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
