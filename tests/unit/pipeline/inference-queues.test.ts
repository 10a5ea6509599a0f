// Per-model inference queue names: derived from the manifest's id and version, always a valid BullMQ
// queue name (no ':'), never a '/' (the study job set splits `<queue>/<jobId>` at the first one), and
// read back to the model they came from.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  INFERENCE_QUEUE_PREFIX,
  MODEL_ID_PATTERN,
  MODEL_VERSION_PATTERN,
  QUEUE,
  inferenceQueueName,
  isInferenceQueue,
  modelOfInferenceQueue,
} from '../../../src/pipeline/jobs.ts';
import path from 'node:path';
import { loadModels } from '../../../src/models/registry.ts';
import { REPO } from '../../helpers/gateway.ts';

test('a model version has its own queue, read back to the model', () => {
  assert.equal(
    inferenceQueueName('squeezenet1_1-cxr-pneumonia', '1.0.0'),
    'inference.squeezenet1_1-cxr-pneumonia@1.0.0',
  );
  assert.equal(
    modelOfInferenceQueue('inference.squeezenet1_1-cxr-pneumonia@1.0.0'),
    'squeezenet1_1-cxr-pneumonia@1.0.0',
  );
  assert.notEqual(
    inferenceQueueName('m', '1'),
    inferenceQueueName('m', '2'),
    'versions do not share a queue',
  );
  assert.equal(
    modelOfInferenceQueue(inferenceQueueName('a.b_c-d', '2.0.0-rc.1+build_7')),
    'a.b_c-d@2.0.0-rc.1+build_7',
  );
});

test('the fixed queues and foreign names are no model queue; the legacy queue is an inference queue', () => {
  for (const name of [
    QUEUE.inference,
    QUEUE.delivery,
    QUEUE.studyComplete,
    'inference.',
    'inference.m',
    'inference.@1',
    'inference.M@1',
    'inference.m@1/x',
    'inference.m@1:x',
    'other.m@1',
  ])
    assert.equal(modelOfInferenceQueue(name), undefined, name);
  assert.ok(isInferenceQueue(QUEUE.inference));
  assert.ok(isInferenceQueue('inference.m@1'));
  assert.ok(!isInferenceQueue(QUEUE.delivery));
  assert.ok(!isInferenceQueue('inference.m'));
});

test('ids and versions the manifest schema refuses make no queue name', () => {
  for (const [id, version] of [
    ['Upper', '1'],
    ['a:b', '1'],
    ['a/b', '1'],
    ['a@b', '1'],
    ['', '1'],
    ['m', ''],
    ['m', '1:2'],
    ['m', '1/2'],
    ['m', '1@2'],
    ['m', '.1'],
  ])
    assert.throws(() => inferenceQueueName(id!, version!), /invalid model (id|version)/, `${id}@${version}`);
});

test('every id and version the manifest schema accepts makes a valid queue name (no ":" nor "/")', async () => {
  // The built-in manifests, through the schema.
  const { models } = await loadModels(path.join(REPO, 'models'));
  assert.ok(models.length >= 1);
  // Then every character the patterns allow, at every position of an id and a version.
  const idFirst = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const idRest = `${idFirst}._-`;
  const verFirst = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const verRest = `${verFirst}.+_-`;
  const pairs: [string, string][] = models.map((m) => [m.manifest.id, m.manifest.version]);
  for (const c of idFirst) pairs.push([`${c}${idRest.slice(0, 63)}`, '1']);
  for (const c of idRest) pairs.push([`x${c}${c}`, '1']);
  for (const c of verFirst) pairs.push(['m', `${c}${verRest.slice(0, 31)}`]);
  for (const c of verRest) pairs.push(['m', `1${c}${c}`]);
  for (const [id, version] of pairs) {
    assert.ok(MODEL_ID_PATTERN.test(id) && MODEL_VERSION_PATTERN.test(version), `${id}@${version}`);
    const name = inferenceQueueName(id, version);
    assert.ok(!name.includes(':') && !name.includes('/'), name);
    assert.ok(name.startsWith(INFERENCE_QUEUE_PREFIX));
    assert.equal(modelOfInferenceQueue(name), `${id}@${version}`);
  }
});
