import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { InstanceManifest } from '../../../src/models/manifest.ts';
import { decodeImage, DecodeError } from '../../../src/imaging/decode.ts';
import { instanceInput } from '../../../src/inference/instance-input.ts';
import { DecodePool } from '../../../src/inference/runtime/decode-pool.ts';
import { REPO } from '../../helpers/gateway.ts';
import { SAMPLES } from '../../helpers/ingest.ts';
import chest from '../../../models/squeezenet1_1-cxr-pneumonia/model.json' with { type: 'json' };

const m = chest as unknown as InstanceManifest;
const CT = path.join(SAMPLES, 'ct-series/philips-ingenuity-head-phantom-5mm/I10.dcm');
const MR = path.join(SAMPLES, 'mr/siemens-prisma-t1-sag-series/0010.dcm');
const ENHANCED_MR = path.join(SAMPLES, 'multiframe/enhanced-mr-10frames-small.dcm');
const J2K_CHEST = path.join(SAMPLES, 'xray/cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm');
const SAME_CT = path.join(SAMPLES, 'compressed/same-ct-image');
const JPEG_EXTENDED_CT = path.join(SAME_CT, 'ct_1.2.840.10008.1.2.4.51_jpeg-extended-12bit.dcm');

test('decode threads give the main thread’s samples, reasons and errors', async () => {
  const pool = new DecodePool(2);
  try {
    for (const file of [CT, J2K_CHEST, JPEG_EXTENDED_CT]) {
      const inThread = await pool.prepare(file, m);
      const inline = await instanceInput(file, m);
      assert.ok('sample' in inThread && 'sample' in inline, file);
      assert.deepEqual(inThread.sample, inline.sample, file);
    }
    assert.deepEqual(await pool.prepare(path.join(SAMPLES, 'xray/cr-cervical-lat-mono1-agfa-16x16.dcm'), m), {
      rejected: '16×16 is smaller than 128×128',
    });
    await assert.rejects(
      pool.prepare(path.join(SAMPLES, 'malformed/truncated-pixeldata-MR_truncated.dcm'), m),
      (err: unknown) => err instanceof DecodeError && /Pixel Data is truncated/.test(err.message),
    );
    // JPEG progressive (.4.55), which no decoder here handles, made by dcmtk from a real CT slice.
    const dir = await mkdtemp(path.join(tmpdir(), 'pool-progressive-'));
    try {
      const progressive = path.join(dir, 'progressive.dcm');
      execFileSync('dcmcjpeg', [
        '+ep',
        path.join(SAME_CT, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm'),
        progressive,
      ]);
      await assert.rejects(
        pool.prepare(progressive, m),
        (err: unknown) =>
          err instanceof DecodeError && /1\.2\.840\.10008\.1\.2\.4\.55 is not supported/.test(err.message),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    // Whole images for volume models: the same pixels, geometry and window as on the main thread.
    for (const [file, options] of [
      [MR, { frames: 'first', modalityLut: true }],
      [ENHANCED_MR, { frames: 'all', modalityLut: true }],
    ] as const) {
      assert.deepEqual(await pool.decode(file, options), await decodeImage(file, options), file);
    }
    // I/O trouble is not a DecodeError: the job retries.
    await assert.rejects(
      pool.prepare('/nonexistent/x.dcm', m),
      (err: unknown) => !(err instanceof DecodeError),
    );
    // Many at once, more than the threads' queues hold: every one answered, in any order.
    const many = await Promise.all(Array.from({ length: 40 }, () => pool.prepare(CT, m)));
    assert.ok(many.every((r) => 'sample' in r && r.sample.length === 3 * 224 * 224));
  } finally {
    await pool.close();
  }
});

test('recycled sample buffers are written over with the next samples, never mixed up', async () => {
  const pool = new DecodePool(1);
  const series = path.dirname(CT);
  const files = ['I10.dcm', 'I20.dcm', 'I30.dcm', 'I40.dcm'].map((f) => path.join(series, f));
  try {
    const expected = await Promise.all(files.map((f) => instanceInput(f, m)));
    assert.notDeepEqual(expected[0], expected[1]); // the slices differ, so a stale buffer would show
    for (let round = 0; round < 3; round++) {
      const got = await Promise.all(files.map((f) => pool.prepare(f, m)));
      got.forEach((g, i) => assert.deepEqual(g, expected[i], `round ${round}, ${files[i]}`));
      for (const g of got) {
        if (!('sample' in g)) throw new Error('no sample');
        pool.recycle(g.sample);
        assert.equal(g.sample.length, 0); // handed to the thread: detached here
      }
    }
    // A view into a bigger buffer is not the pool's to give away.
    const view = new Float32Array(16).subarray(4, 8);
    pool.recycle(view);
    assert.equal(view.length, 4);
  } finally {
    await pool.close();
  }
});

test('a decode thread that dies fails only its own images and is replaced', async () => {
  const pool = new DecodePool(1);
  try {
    const inFlight = pool.prepare(J2K_CHEST, m);
    // A real thread exit while it holds an image (how a crashing decoder would look).
    const slots = (pool as unknown as { slots: { thread: { terminate(): Promise<number> } }[] }).slots;
    await slots[0]!.thread.terminate();
    await assert.rejects(inFlight, /decode thread died/);
    const after = await pool.prepare(CT, m);
    assert.ok('sample' in after, 'a new thread took over');
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.prepare(CT, m), /closed/);
});

test('closing the pool settles the images still in its threads', async () => {
  const pool = new DecodePool(1);
  const inFlight = [pool.prepare(J2K_CHEST, m), pool.prepare(J2K_CHEST, m), pool.prepare(CT, m)].map((p) =>
    p.then(
      () => 'answered',
      (err: Error) => err.message,
    ),
  );
  await pool.close();
  assert.deepEqual(await Promise.all(inFlight), Array(3).fill('the decode pool is closed'));
});

test('decode threads start wherever the process was started from', async () => {
  // The threads load TypeScript through tsx: found from the pool's module, not the working directory.
  const dir = await mkdtemp(path.join(tmpdir(), 'pool-cwd-'));
  try {
    const script = path.join(dir, 'use-pool.mts'); // an ES module wherever it lies
    await writeFile(
      script,
      [
        `import { DecodePool } from ${JSON.stringify(path.join(REPO, 'src/inference/runtime/decode-pool.ts'))};`,
        `const m = JSON.parse(${JSON.stringify(JSON.stringify(chest))});`,
        'const pool = new DecodePool(1);',
        `const r = await pool.prepare(${JSON.stringify(CT)}, m);`,
        "console.log('sample' in r ? r.sample.length : JSON.stringify(r));",
        'await pool.close();',
      ].join('\n'),
    );
    const out = execFileSync(process.execPath, ['--import', import.meta.resolve('tsx'), script], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(out.trim(), String(3 * 224 * 224));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
