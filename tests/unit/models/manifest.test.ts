import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isValidUid, uidFromName } from '../../../src/dicom/uid.ts';
import {
  hasExclusiveClasses,
  ManifestError,
  parseManifest,
  type InstanceManifest,
} from '../../../src/models/manifest.ts';
import { checkModels } from '../../../src/inference/check-models.ts';
import { loadModels } from '../../../src/models/registry.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const shipped = ['image-uniformity', 'squeezenet1_1-cxr-pneumonia'];
const BRAIN = 'meshnet-brain-gwm';
const shared = path.resolve(repoRoot, '../shared');

async function shippedManifest(id: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path.join(repoRoot, 'models', id, 'model.json'), 'utf8'));
}

test('the shipped manifests validate', async () => {
  for (const id of shipped) {
    const m = parseManifest(`${id}/model.json`, await shippedManifest(id));
    assert.equal(m.id, id);
    assert.ok(m.unit === 'instance');
    assert.equal(m.preprocessing.mean.length, m.input.channels);
  }
  const brain = parseManifest('brain', await shippedManifest(BRAIN));
  assert.ok(brain.unit === 'volume');
  assert.deepEqual(brain.input.shape, [256, 256, 256]);
  assert.equal(brain.accepts.minSlices, 16);
  // MODEL.md: class 1 white matter, class 2 grey matter.
  assert.deepEqual(
    brain.outputs.labels.map((l) => [l.classIndex, l.concept.value]),
    [
      [1, '389080008'],
      [2, '389081007'],
    ],
  );
  const cxr = parseManifest('cxr', await shippedManifest('squeezenet1_1-cxr-pneumonia'));
  // Label order is the model's output order (MODEL.md: bacterial, normal, viral).
  assert.deepEqual(
    cxr.outputs.labels.map((l) => l.concept.value),
    ['53084003', '17621005', '75570004'],
  );
});

function expectManifestError(raw: unknown, fields: string[]): void {
  assert.throws(
    () => parseManifest('models/x/model.json', raw),
    (err: unknown) => {
      assert.ok(err instanceof ManifestError);
      assert.match(err.message, /^models\/x\/model\.json: invalid model manifest/);
      for (const f of fields) assert.ok(err.message.includes(f), `message names ${f}: ${err.message}`);
      return true;
    },
  );
}

test('invalid manifests are rejected with the offending fields named', async () => {
  const good = await shippedManifest('squeezenet1_1-cxr-pneumonia');
  const clone = () => structuredClone(good) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  const noOutputs = clone();
  delete noOutputs.outputs;
  expectManifestError(noOutputs, ['outputs']);

  const badChannels = clone();
  badChannels.input.channels = 2;
  expectManifestError(badChannels, ['input.channels']);

  const meanLength = clone();
  meanLength.preprocessing.mean = [0.5];
  expectManifestError(meanLength, ['preprocessing.mean']);

  const escape = clone();
  escape.onnx = '../../etc/passwd';
  expectManifestError(escape, ['onnx']);

  const badScheme = clone();
  badScheme.outputs.labels[1].concept.value = '';
  badScheme.outputs.labels[2].threshold = 1.5;
  expectManifestError(badScheme, ['outputs.labels.1.concept.value', 'outputs.labels.2.threshold']);

  const extra = clone();
  extra.typo = true;
  expectManifestError(extra, ['typo']);

  const uid = clone();
  uid.accepts.sopClassUid = ['1.2.840.10008.5.1.4.1.1.1.', '1.2.840.10008.5.1.4.1.1.1'];
  expectManifestError(uid, ['accepts.sopClassUid.0']);

  const duplicate = clone();
  duplicate.outputs.labels[2].name = duplicate.outputs.labels[0].name;
  expectManifestError(duplicate, ['outputs.labels.2.name', 'duplicate']);
});

test('exclusive classes: declared by outputs.exclusive, softmax by default, refused where they cannot be', async () => {
  const cxr = await shippedManifest('squeezenet1_1-cxr-pneumonia');
  const uniformity = await shippedManifest('image-uniformity');
  const parse = (raw: unknown) => parseManifest('m', raw) as InstanceManifest;
  // The chest model's classes (bacterial / normal / viral) are one radiograph's single diagnosis.
  assert.equal(parse(cxr).outputs.exclusive, true);
  assert.equal(hasExclusiveClasses(parse(cxr)), true);
  // The blank-image detector's one sigmoid label is an independent finding.
  assert.equal(hasExclusiveClasses(parse(uniformity)), false);

  const clone = () => structuredClone(cxr) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const implicit = clone();
  delete implicit.outputs.exclusive;
  assert.equal(hasExclusiveClasses(parse(implicit)), true, 'softmax: exclusive unless said otherwise');
  const optedOut = clone();
  optedOut.outputs.exclusive = false;
  assert.equal(hasExclusiveClasses(parse(optedOut)), false);
  const none = clone();
  none.outputs.activation = 'none';
  assert.equal(hasExclusiveClasses(parse(none)), true, 'explicitly exclusive with activation none');
  delete none.outputs.exclusive;
  assert.equal(hasExclusiveClasses(parse(none)), false);

  const sigmoid = clone();
  sigmoid.outputs.activation = 'sigmoid';
  expectManifestError(sigmoid, ['outputs.exclusive', 'sigmoid']);
  const one = clone();
  one.outputs.activation = 'none';
  one.outputs.labels = [one.outputs.labels[0]];
  expectManifestError(one, ['outputs.exclusive', 'two or more']);
  const notBoolean = clone();
  notBoolean.outputs.exclusive = 'yes';
  expectManifestError(notBoolean, ['outputs.exclusive']);
});

test('volume manifests: orientation, class indices and unit-specific fields are checked', async () => {
  const good = await shippedManifest(BRAIN);
  const clone = () => structuredClone(good) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  const orientation = clone();
  orientation.preprocessing.conform.orientation = 'LRA';
  expectManifestError(orientation, ['preprocessing.conform.orientation']);

  const classIndex = clone();
  classIndex.outputs.labels[1].classIndex = 3;
  expectManifestError(classIndex, ['outputs.labels.1.classIndex', 'below outputs.classes (3)']);

  const instanceFields = clone();
  instanceFields.aggregation = 'max'; // instance-only field on a volume model
  expectManifestError(instanceFields, ['aggregation']);

  const unit = clone();
  unit.unit = 'series';
  expectManifestError(unit, ['unit']);
});

test('loadModels: loads a model with weights, skips one without, reports why', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'models-'));
  try {
    for (const id of shipped) {
      await mkdir(path.join(dir, id));
      await copyFile(path.join(repoRoot, 'models', id, 'model.json'), path.join(dir, id, 'model.json'));
    }
    await copyFile(
      path.join(repoRoot, 'models/image-uniformity/model.onnx'),
      path.join(dir, 'image-uniformity/model.onnx'),
    );
    await mkdir(path.join(dir, 'not-a-model')); // folders without model.json are ignored
    const { models, problems } = await loadModels(dir);
    assert.deepEqual(
      models.map((m) => m.manifest.id),
      ['image-uniformity'],
    );
    const [model] = models;
    assert.equal(model!.onnxPath, path.join(dir, 'image-uniformity/model.onnx'));
    assert.equal(model!.identity.uid, uidFromName('model:image-uniformity@1.0.0'));
    assert.ok(isValidUid(model!.identity.uid));
    assert.equal(problems.length, 1);
    assert.match(
      problems[0]!,
      /squeezenet1_1-cxr-pneumonia: weights file .*squeezenet1_1_cxr\.onnx is missing/,
    );

    // A dangling symlink is missing weights too, not a crash.
    await symlink(
      path.join(dir, 'nowhere.onnx'),
      path.join(dir, 'squeezenet1_1-cxr-pneumonia/squeezenet1_1_cxr.onnx'),
    );
    assert.equal((await loadModels(dir)).problems.length, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('loadModels: an invalid manifest is an error naming the file and field', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'models-'));
  try {
    await mkdir(path.join(dir, 'broken'));
    const raw = await shippedManifest('image-uniformity');
    (raw.outputs as Record<string, unknown>).activation = 'relu';
    const file = path.join(dir, 'broken/model.json');
    await writeFile(file, JSON.stringify(raw));
    await assert.rejects(loadModels(dir), (err: unknown) => {
      assert.ok(err instanceof ManifestError);
      assert.equal(err.file, file);
      assert.match(err.message, /outputs\.activation/);
      return true;
    });
    await writeFile(file, '{ "id": ');
    await assert.rejects(loadModels(dir), /broken\/model\.json: not valid JSON/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('loadModels: a missing models directory is a problem, not a crash', async () => {
  const { models, problems } = await loadModels(path.join(tmpdir(), 'no-such-models-dir-for-test'));
  assert.deepEqual(models, []);
  assert.match(problems[0]!, /does not exist/);
});

/** A models dir with every shipped manifest and its weights (copied or symlinked from ../shared). */
async function modelsDirWithWeights(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'models-check-'));
  const weights: Record<string, string> = {
    'image-uniformity': path.join(repoRoot, 'models/image-uniformity/model.onnx'),
    'squeezenet1_1-cxr-pneumonia': path.join(
      shared,
      'models/squeezenet1_1-cxr-pneumonia/squeezenet1_1_cxr.onnx',
    ),
    [BRAIN]: path.join(shared, 'models', BRAIN, 'gwm_light_fileorder.onnx'),
  };
  for (const [id, file] of Object.entries(weights)) {
    await mkdir(path.join(dir, id));
    const manifest = await shippedManifest(id);
    await writeFile(path.join(dir, id, 'model.json'), JSON.stringify(manifest));
    await symlink(file, path.join(dir, id, manifest.onnx as string));
  }
  return dir;
}

test('models check: the shipped models agree with their ONNX files', async () => {
  const dir = await modelsDirWithWeights();
  try {
    const lines: string[] = [];
    assert.equal(await checkModels(dir, (l) => lines.push(l)), true, lines.join('\n'));
    assert.deepEqual(
      lines.map((l) => l.split(' (')[0]),
      ['OK   image-uniformity@1.0.0', `OK   ${BRAIN}@1.0.0`, 'OK   squeezenet1_1-cxr-pneumonia@1.0.0'],
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('models check: each mismatch with the ONNX file is a FAIL naming it; the CLI exits 1', async () => {
  const dir = await modelsDirWithWeights();
  try {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const edit = async (id: string, change: (m: Record<string, any>) => void) => {
      const file = path.join(dir, id, 'model.json');
      const m = JSON.parse(await readFile(file, 'utf8'));
      change(m);
      await writeFile(file, JSON.stringify(m));
    };
    await edit('squeezenet1_1-cxr-pneumonia', (m) => (m.input.height = 256));
    await edit(BRAIN, (m) => (m.outputs.classes = 4));
    await edit('image-uniformity', (m) => (m.outputs.name = 'score'));
    const lines: string[] = [];
    assert.equal(await checkModels(dir, (l) => lines.push(l)), false);
    assert.equal(lines.length, 3);
    assert.match(
      lines[0]!,
      /^FAIL image-uniformity@1\.0\.0: .*has no output 'score' \(it has logit, probability\)/,
    );
    assert.match(
      lines[1]!,
      /^FAIL meshnet-brain-gwm@1\.0\.0: .*output 'output' has shape \[batch_size, 3, 256, 256, 256\], manifest says \[N, 4, 256, 256, 256\]/,
    );
    assert.match(
      lines[2]!,
      /^FAIL squeezenet1_1-cxr-pneumonia@1\.0\.0: .*input 'input' has shape .*manifest says \[N, 3, 256, 224\]/,
    );

    // Through the CLI: exit status 1 and the same lines on stdout.
    const cli = spawnSync(
      process.execPath,
      ['--import', 'tsx', path.join(repoRoot, 'src/cli.ts'), 'models', 'check'],
      {
        env: { ...process.env, GATEWAY_MODELS_DIR: dir, LOG_LEVEL: 'silent' },
        encoding: 'utf8',
      },
    );
    assert.equal(cli.status, 1, cli.stderr);
    assert.match(cli.stdout, /FAIL squeezenet1_1-cxr-pneumonia@1\.0\.0/);

    // A missing weights file is reported and fails the check too.
    await rm(path.join(dir, 'image-uniformity', 'model.onnx'));
    const missing: string[] = [];
    assert.equal(await checkModels(dir, (l) => missing.push(l)), false);
    assert.match(missing[0]!, /^SKIP image-uniformity: weights file .* is missing/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
