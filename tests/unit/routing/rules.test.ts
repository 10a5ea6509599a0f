import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RoutingRule } from '../../../src/config/schema.ts';
import type { InstanceRecord } from '../../../src/pipeline/study-index.ts';
import { routeStudy, type RoutableModel } from '../../../src/routing/rules.ts';

function instance(series: string, attrs: Partial<InstanceRecord>): InstanceRecord {
  return {
    studyUid: '1.2.3',
    seriesUid: series,
    sopInstanceUid: `${series}.${Math.random().toString().slice(2, 8)}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    path: '/dev/null',
    size: 0,
    callingAe: 'MODALITY1',
    callingAddress: '127.0.0.1',
    receivedAt: 0,
    ...attrs,
  };
}

const chest: RoutableModel = { id: 'cxr', version: '1', accepts: { modality: ['CR', 'DX'], minRows: 128 } };
const blank: RoutableModel = { id: 'blank', version: '2', accepts: {} };
const rule = (r: Partial<RoutingRule>): RoutingRule => ({
  name: 'r',
  match: {},
  models: ['*'],
  destinations: [],
  priority: 10,
  ...r,
});

test('without rules every accepting model runs, to the default destination', () => {
  const work = routeStudy(
    [instance('1.1', { modality: 'CR', rows: 440 }), instance('1.2', { modality: 'CT', rows: 512 })],
    [chest, blank],
    [],
    'pacs',
  );
  const cxr = work.find((w) => w.modelId === 'cxr');
  assert.deepEqual(cxr?.seriesUids, ['1.1']);
  assert.deepEqual(cxr?.destinations, ['pacs']);
  assert.deepEqual(work.find((w) => w.modelId === 'blank')?.seriesUids, ['1.1', '1.2']);
});

test('rules match Modality, BodyPartExamined and calling AE, case-insensitively and with globs', () => {
  const rules = [
    rule({
      name: 'chest',
      match: { Modality: ['CR', 'DX'], BodyPartExamined: 'chest*', callingAE: 'ER_*' },
      models: ['cxr'],
      destinations: ['pacs'],
      priority: 1,
    }),
  ];
  const hit = routeStudy(
    [instance('1.1', { modality: 'CR', bodyPartExamined: 'CHEST', callingAe: 'ER_CR1', rows: 440 })],
    [chest, blank],
    rules,
    'x',
  );
  assert.equal(hit.length, 1);
  assert.equal(hit[0]?.modelId, 'cxr');
  assert.equal(hit[0]?.priority, 1);
  assert.deepEqual(hit[0]?.destinations, ['pacs']);

  const wrongAe = routeStudy(
    [instance('1.1', { modality: 'CR', bodyPartExamined: 'CHEST', callingAe: 'WARD', rows: 440 })],
    [chest],
    rules,
    'x',
  );
  assert.equal(wrongAe.length, 0);
  const noBodyPart = routeStudy(
    [instance('1.1', { modality: 'CR', callingAe: 'ER_1', rows: 440 })],
    [chest],
    rules,
    'x',
  );
  assert.equal(noBodyPart.length, 0, 'a rule on an absent attribute does not match');
});

test('a rule never forces a model onto images it does not accept', () => {
  const rules = [rule({ models: ['cxr'] })];
  assert.equal(routeStudy([instance('1.1', { modality: 'CT', rows: 512 })], [chest], rules, 'x').length, 0);
  assert.equal(
    routeStudy([instance('1.1', { modality: 'CR', rows: 16 })], [chest], rules, 'x').length,
    0,
    'below minRows',
  );
});

test('several rules selecting one model merge into one job with the union of destinations', () => {
  const rules = [
    rule({ name: 'a', models: ['blank'], destinations: ['d1'], priority: 5 }),
    rule({ name: 'b', models: ['blank'], destinations: ['d2'], priority: 3 }),
  ];
  const work = routeStudy([instance('1.1', {}), instance('1.2', {})], [blank], rules, 'x');
  assert.equal(work.length, 1);
  assert.deepEqual(work[0]?.destinations, ['d1', 'd2']);
  assert.deepEqual(work[0]?.seriesUids, ['1.1', '1.2']);
  assert.equal(work[0]?.priority, 3);
  assert.deepEqual(work[0]?.rules, ['a', 'b']);
});
