import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { manifestSchema, type VolumeManifest } from '../../src/models/manifest.ts';
import { runVolumeModel, UnusableSeriesError } from '../../workers/inference/run-volume.ts';
import { MicroBatcher } from '../../workers/runtime/batcher.ts';
import { DecodePool } from '../../workers/runtime/decode-pool.ts';
import { mrSlices, sourcesOf } from '../helpers/dicom-tools.ts';
import { REPO } from '../helpers/gateway.ts';

// The series-size guard of volume models holds with slices decoded ahead in threads: a series over
// the budget fails before the model runs, and no slice larger than its share of the budget is decoded.

test('a series over the voxel budget fails before the model runs, slices decoded ahead or not', async () => {
  const m = manifestSchema.parse(
    JSON.parse(await readFile(path.join(REPO, 'models/meshnet-brain-gwm/model.json'), 'utf8')),
  ) as VolumeManifest;
  let runs = 0;
  const batcher = new MicroBatcher(
    async () => {
      runs++;
      throw new Error('the model must not run');
    },
    { batchLimit: 1, maxWaitMs: 0, itemSize: m.input.shape.reduce((a, b) => a * b, 1) },
  );
  const sources = sourcesOf(mrSlices(0, 20)).map((s) => s.ref); // 20 slices of 256 × 256
  const pool = new DecodePool(2);
  try {
    for (const decodePool of [pool, undefined]) {
      // Room for 5 slices: each slice in flight may take a sixteenth of it, less than one slice.
      await assert.rejects(
        runVolumeModel(m, batcher, sources, decodePool, 5 * 256 * 256),
        (err: unknown) =>
          err instanceof UnusableSeriesError && /over the \d+-byte limit|more than/.test(err.message),
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
