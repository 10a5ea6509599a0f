import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import type { InstanceManifest } from '../../../src/models/manifest.ts';
import { loadModels, type LoadedModel } from '../../../src/models/registry.ts';
import type {
  ClassificationFinding,
  ExclusiveClassificationFinding,
  ModelResult,
  SourceInstanceRef,
} from '../../../src/pipeline/findings.ts';
import { decodeImage } from '../../../src/imaging/decode.ts';
import { preprocess } from '../../../src/inference/preprocess.ts';
import {
  activate,
  ModelMismatchError,
  NoUsableImagesError,
  openModel,
  runModel,
  type LoadedModelSession,
} from '../../../src/inference/run-model.ts';
import { MicroBatcher } from '../../../src/inference/runtime/batcher.ts';
import { ExecutionProviderError } from '../../../src/inference/runtime/session.ts';
import { writeSynthetic } from '../../helpers/synthetic-dicom.ts';
import { buildUniformityModel } from '../../../scripts/build-uniformity-model.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const shared = path.resolve(repoRoot, '../shared');
const samples = path.join(shared, 'dicom-samples');
const CXR = 'squeezenet1_1-cxr-pneumonia';
const UNIFORMITY = 'image-uniformity';
const FUJI_CHEST = path.join(samples, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const J2K_CHEST = path.join(samples, 'xray/cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm');
const CT_SLICE = path.join(samples, 'ct-series/philips-ingenuity-head-phantom-5mm/I100.dcm');
const CPU = { executionProviders: ['cpu' as const], deviceId: 0, strict: false };

let dir: string;
let models: Map<string, LoadedModel>;
let cxr: LoadedModelSession;

before(async () => {
  // A models dir as an admin would lay it out: the manifests, the chest weights symlinked from shared.
  dir = await mkdtemp(path.join(tmpdir(), 'inference-'));
  for (const id of [CXR, UNIFORMITY]) {
    await mkdir(path.join(dir, 'models', id), { recursive: true });
    await copyFile(
      path.join(repoRoot, 'models', id, 'model.json'),
      path.join(dir, 'models', id, 'model.json'),
    );
  }
  await symlink(
    path.join(shared, 'models', CXR, 'squeezenet1_1_cxr.onnx'),
    path.join(dir, 'models', CXR, 'squeezenet1_1_cxr.onnx'),
  );
  await copyFile(
    path.join(repoRoot, 'models', UNIFORMITY, 'model.onnx'),
    path.join(dir, 'models', UNIFORMITY, 'model.onnx'),
  );
  const catalogue = await loadModels(path.join(dir, 'models'));
  assert.deepEqual(catalogue.problems, []);
  models = new Map(catalogue.models.map((m) => [m.manifest.id, m]));
  cxr = await openModel(models.get(CXR)!, CPU);
});

after(async () => {
  await cxr?.close();
  await rm(dir, { recursive: true, force: true });
});

function source(file: string, uid = '2.25.100'): SourceInstanceRef {
  return {
    key: `studies/2.25.300/2.25.200/${uid}.dcm`,
    file,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    sopInstanceUid: uid,
    seriesUid: '2.25.200',
  };
}

/** The findings as classifications (the only kind these models produce). */
function cls(result: ModelResult): ClassificationFinding[] {
  return result.findings.map((f) => {
    assert.equal(f.kind, 'classification');
    return f as ClassificationFinding;
  });
}

/** The one finding of an exclusive classifier (the chest model's classes are exclusive). */
function exclusive(result: ModelResult): ExclusiveClassificationFinding {
  assert.equal(result.findings.length, 1, 'one finding for one radiograph');
  const f = result.findings[0]!;
  assert.equal(f.kind, 'exclusive-classification');
  return f as ExclusiveClassificationFinding;
}

function assertClose(actual: number[], expected: number[], tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((v, i) =>
    assert.ok(
      Math.abs(v - expected[i]!) <= tolerance,
      `${what}[${i}]: ${v} vs ${expected[i]} (±${tolerance})`,
    ),
  );
}

test('chest model: the uncompressed Fuji CR matches MODEL.md', async () => {
  const result = await runModel(cxr, [source(FUJI_CHEST)]);
  assert.equal(result.provider, 'cpu');
  assert.equal(result.model.id, CXR);
  // Near-uniform output: still one finding, the most probable class, with every class's probability.
  const finding = exclusive(result);
  assert.deepEqual(
    finding.classes.map((c) => c.concept.value),
    ['53084003', '17621005', '75570004'],
  );
  assertClose(
    finding.classes.map((c) => c.probability),
    [0.3372, 0.3314, 0.3314],
    0.002,
    'Fuji chest',
  );
  assert.equal(finding.concept.value, '53084003', 'bacterial pneumonia is the most probable');
  assert.equal(finding.label, 'Bacterial pneumonia');
  assert.equal(finding.probability, Math.max(...finding.classes.map((c) => c.probability)));
  assert.deepEqual(result.sources, [source(FUJI_CHEST)]);
  assert.ok(result.inferenceMs > 0);
});

test('chest model: the JPEG 2000 CR matches MODEL.md', async () => {
  const finding = exclusive(await runModel(cxr, [source(J2K_CHEST)]));
  assertClose(
    finding.classes.map((c) => c.probability),
    [0.205, 0.5818, 0.2132],
    0.01,
    'J2K chest',
  );
  assert.equal(finding.label, 'Normal');
});

test('chest model declared not exclusive: each class is an independent finding against its threshold', async () => {
  const model = instanceModel(CXR);
  const independent = await openModel(
    { ...model, manifest: { ...model.manifest, outputs: { ...model.manifest.outputs, exclusive: false } } },
    CPU,
  );
  try {
    const findings = cls(await runModel(independent, [source(J2K_CHEST)]));
    assert.deepEqual(
      findings.map((f) => [f.label, f.positive]),
      [
        ['Bacterial pneumonia', false],
        ['Normal', true],
        ['Viral pneumonia', false],
      ],
    );
    assert.ok(findings.every((f) => f.positive === f.probability >= f.threshold));
  } finally {
    await independent.close();
  }
});

test('chest model: zero tensor gives the reference output', async () => {
  const logits = await cxr.batcher.run(new Float32Array(3 * 224 * 224));
  assertClose(Array.from(logits), [0.00284, 0, 0], 1e-4, 'logits');
  assertClose(activate('softmax', logits), [0.33396, 0.33302, 0.33302], 1e-4, 'probabilities');
});

test('aggregation over instances (max) and skipping of unusable images', async () => {
  const both = await runModel(cxr, [source(FUJI_CHEST, '2.25.1'), source(J2K_CHEST, '2.25.2')]);
  const fuji = await runModel(cxr, [source(FUJI_CHEST)]);
  const j2k = await runModel(cxr, [source(J2K_CHEST)]);
  exclusive(both).classes.forEach((c, k) =>
    assert.ok(
      Math.abs(
        c.probability -
          Math.max(exclusive(fuji).classes[k]!.probability, exclusive(j2k).classes[k]!.probability),
      ) < 1e-6,
    ),
  );
  const broken = source(path.join(samples, 'malformed/no-pixeldata-cr-canon.dcm'), '2.25.3');
  const mixed = await runModel(cxr, [broken, source(FUJI_CHEST, '2.25.4')]);
  assert.deepEqual(
    mixed.sources.map((s) => s.sopInstanceUid),
    ['2.25.4'],
  );
  await assert.rejects(runModel(cxr, [broken]), NoUsableImagesError);
});

test('cuda then cpu on a machine without CUDA binds cpu; strict mode refuses', async (t) => {
  const model = models.get(CXR)!;
  const fallback = await openModel(model, {
    executionProviders: ['cuda', 'cpu'],
    deviceId: 0,
    strict: false,
  });
  try {
    // Where CUDA is present the first provider binds; this test documents the CPU-only path.
    if (fallback.provider === 'cuda') t.skip('CUDA is available here');
    else assert.equal(fallback.provider, 'cpu');
    const result = await runModel(fallback, [source(FUJI_CHEST)]);
    assert.equal(result.provider, fallback.provider);
  } finally {
    await fallback.close();
  }
  if (fallback.provider === 'cpu') {
    await assert.rejects(
      openModel(model, { executionProviders: ['cuda', 'cpu'], deviceId: 0, strict: true }),
      (err: unknown) =>
        err instanceof ExecutionProviderError && /strict mode: execution provider 'cuda'/.test(err.message),
    );
  }
});

/** The chest model with its manifest narrowed to the instance unit it has. */
function instanceModel(id: string): LoadedModel & { manifest: InstanceManifest } {
  const model = models.get(id)!;
  assert.equal(model.manifest.unit, 'instance');
  return model as LoadedModel & { manifest: InstanceManifest };
}

test('a manifest that disagrees with its ONNX file is refused', async () => {
  const model = instanceModel(CXR);
  const wrongInput = {
    ...model,
    manifest: { ...model.manifest, input: { ...model.manifest.input, name: 'image' } },
  };
  await assert.rejects(openModel(wrongInput, CPU), ModelMismatchError);
  const wrongSize = {
    ...model,
    manifest: { ...model.manifest, input: { ...model.manifest.input, height: 256 } },
  };
  await assert.rejects(openModel(wrongSize, CPU), /shape/);
  const wrongLabels = {
    ...model,
    manifest: {
      ...model.manifest,
      outputs: { ...model.manifest.outputs, labels: model.manifest.outputs.labels.slice(0, 2) },
    },
  };
  await assert.rejects(openModel(wrongLabels, CPU), /3 classes, the manifest lists 2 labels/);
});

test('batcher: concurrent samples run as one session.run, split back in order', async () => {
  const spec = instanceModel(CXR).manifest;
  const size = 3 * 224 * 224;
  const inputs = [
    preprocess(await decodeImage(FUJI_CHEST), spec),
    preprocess(await decodeImage(J2K_CHEST), spec),
    preprocess(await decodeImage(CT_SLICE), spec),
    new Float32Array(size),
  ];
  const single = async (x: Float32Array) =>
    (await cxr.session.run({ input: new ort.Tensor('float32', x, [1, 3, 224, 224]) })).logits!
      .data as Float32Array;
  const expected: number[][] = [];
  for (const x of inputs) expected.push(Array.from(await single(x)));

  const calls: number[] = [];
  const runner = async (data: Float32Array, n: number) => {
    calls.push(n);
    return (await cxr.session.run({ input: new ort.Tensor('float32', data, [n, 3, 224, 224]) })).logits!
      .data as Float32Array;
  };
  // Full batch: flushed by the limit, no timer involved (maxWaitMs is an hour).
  const full = new MicroBatcher(runner, { batchLimit: 4, maxWaitMs: 3_600_000, itemSize: size });
  const outputs = await Promise.all(inputs.map((x) => full.run(x)));
  assert.deepEqual(calls, [4]);
  outputs.forEach((o, i) => assertClose(Array.from(o), expected[i]!, 1e-4, `sample ${i}`));
  assert.notDeepEqual(expected[0], expected[1]); // the rows really differ, so a mix-up would show

  // Partial batch: samples queued in the same tick go out together when the wait ends.
  calls.length = 0;
  const partial = new MicroBatcher(runner, { batchLimit: 8, maxWaitMs: 0, itemSize: size });
  const three = await Promise.all(inputs.slice(0, 3).map((x) => partial.run(x)));
  assert.deepEqual(calls, [3]);
  three.forEach((o, i) => assertClose(Array.from(o), expected[i]!, 1e-4, `partial ${i}`));

  // More than the limit: the first three go at once, the fourth once the model has been free for the wait.
  calls.length = 0;
  const small = new MicroBatcher(runner, { batchLimit: 3, maxWaitMs: 5, itemSize: size });
  const four = await Promise.all(inputs.map((x) => small.run(x)));
  assert.deepEqual(calls, [3, 1]);
  four.forEach((o, i) => assertClose(Array.from(o), expected[i]!, 1e-4, `overflow ${i}`));
  await assert.rejects(small.run(new Float32Array(5)), /sample has 5 values/);
});

test('uniformity model: the committed ONNX file is what the script builds', async () => {
  const committed = await readFile(path.join(repoRoot, 'models', UNIFORMITY, 'model.onnx'));
  assert.deepEqual(Buffer.from(buildUniformityModel()), committed);
});

/** A flat 128×128 CT-like image: every pixel the same value. */
function writeUniform(file: string, value: number): Promise<void> {
  const attrs = { Rows: 128, Columns: 128, BitsStored: 12, HighBit: 11, PixelRepresentation: 0 };
  return writeSynthetic(
    file,
    { ...attrs, WindowCenter: '1000', WindowWidth: '400' },
    new Uint16Array(128 * 128).fill(value),
  );
}

test('uniformity model: a flat image scores high, real radiographs and CT low', async () => {
  const session = await openModel(models.get(UNIFORMITY)!, CPU);
  try {
    const flat = path.join(dir, 'flat.dcm');
    await writeUniform(flat, 1000);
    const high = cls(await runModel(session, [source(flat)]))[0]!;
    assert.equal(high.concept.value, '113010');
    assert.ok(high.probability > 0.95 && high.positive, `flat image: ${high.probability}`);
    for (const file of [FUJI_CHEST, J2K_CHEST, CT_SLICE]) {
      const low = cls(await runModel(session, [source(file)]))[0]!;
      assert.ok(low.probability < 0.05 && !low.positive, `${path.basename(file)}: ${low.probability}`);
    }
  } finally {
    await session.close();
  }
});
