import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RoutingRule } from '../../../src/config/schema.ts';
import type { InstanceRecord } from '../../../src/pipeline/study-index.ts';
import {
  explainMatch,
  planStudy,
  routeStudy,
  seriesViews,
  type RoutableModel,
} from '../../../src/routing/rules.ts';

function instance(series: string, attrs: Partial<InstanceRecord>): InstanceRecord {
  return {
    studyUid: '1.2.3',
    seriesUid: series,
    sopInstanceUid: `${series}.${Math.random().toString().slice(2, 8)}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
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

// Anatomy: the manifest's bodyPart is compared with the body part the series resolves to.
const cxr: RoutableModel = {
  id: 'cxr',
  version: '1',
  accepts: { modality: ['CR', 'DX'], bodyPart: ['CHEST'], minRows: 128, minColumns: 128 },
};
const brain: RoutableModel = {
  id: 'brain',
  version: '1',
  accepts: { modality: ['MR'], bodyPart: ['BRAIN', 'HEAD'] },
};
const cr = (attrs: Partial<InstanceRecord>, series = '1.1') =>
  instance(series, { modality: 'CR', rows: 440, columns: 440, ...attrs });

test('the chest model takes chest radiographs however they name the chest', () => {
  const variants: Partial<InstanceRecord>[] = [
    { bodyPartExamined: 'THORAX' },
    { bodyPartExamined: 'tórax' },
    { bodyPartExamined: 'PA CHEST' },
    { anatomicRegion: { value: '43799004', scheme: 'SCT', meaning: 'Chest' } },
    { seriesDescription: 'CHEST PA' },
    { studyDescription: 'THORAX' },
    { protocolName: 'Thorax_pa' },
  ];
  for (const v of variants) {
    const work = routeStudy([cr(v)], [cxr], [], 'pacs');
    assert.deepEqual(
      work.map((w) => w.modelId),
      ['cxr'],
      JSON.stringify(v),
    );
  }
  for (const v of [
    {},
    { bodyPartExamined: 'KNEE' },
    { seriesDescription: 'KNEE', studyDescription: 'CHEST' },
  ])
    assert.equal(routeStudy([cr(v)], [cxr], [], 'pacs').length, 0, JSON.stringify(v));
  // The brain model's HEAD/BRAIN accepts SKULL and KOPF, and a brain code.
  for (const v of [
    { bodyPartExamined: 'SKULL' },
    { bodyPartExamined: 'KOPF' },
    { anatomicRegion: { value: '12738006', scheme: 'SCT' } },
  ])
    assert.equal(
      routeStudy([instance('1.1', { modality: 'MR', ...v })], [brain], [], 'x').length,
      1,
      JSON.stringify(v),
    );
});

test('a rule may assume a body part for images that say nothing, and only for those', () => {
  const rules = [
    rule({
      name: 'er-cr',
      match: { callingAE: 'ER_CR', Modality: 'CR' },
      assume: { bodyPart: 'thorax' },
      models: ['*'],
    }),
    rule({ name: 'everything', models: ['*'] }),
  ];
  const plan = planStudy(
    [
      cr({ callingAe: 'ER_CR' }, '1.1'),
      cr({ callingAe: 'WARD' }, '1.2'),
      cr({ callingAe: 'ER_CR', bodyPartExamined: 'KNEE' }, '1.3'),
      cr({ callingAe: 'ER_CR', seriesDescription: 'XR KNEE' }, '1.4'),
      instance('1.5', { modality: 'DX', rows: 440, columns: 440, callingAe: 'ER_CR' }),
    ],
    [cxr, blank],
    rules,
    'pacs',
  );
  assert.deepEqual(plan.work.find((w) => w.modelId === 'cxr')?.seriesUids, ['1.1']);
  assert.deepEqual(plan.work.find((w) => w.modelId === 'cxr')?.rules, ['er-cr']);
  const anatomy = Object.fromEntries(plan.series.map((s) => [s.seriesUid, s.anatomy]));
  assert.deepEqual(anatomy['1.1'], { bodyPart: 'CHEST', source: 'rule-assumed', rule: 'er-cr' });
  assert.deepEqual(anatomy['1.2'], { source: 'none' });
  assert.deepEqual(anatomy['1.3'], { bodyPart: 'KNEE', source: 'bodyPartExamined' });
  assert.deepEqual(anatomy['1.4'], {
    bodyPart: 'KNEE',
    source: 'keyword:KNEE',
    attribute: 'SeriesDescription',
  });
  assert.deepEqual(anatomy['1.5'], { source: 'none' }, 'the rule is for CR only');
  // The manifest still decides the rest: an assumed chest of 16 rows is no chest radiograph for it.
  assert.equal(routeStudy([cr({ callingAe: 'ER_CR', rows: 16, columns: 16 })], [cxr], rules, 'x').length, 0);
});

test('rules on BodyPartExamined and ProtocolName see the resolved body part and the protocol', () => {
  const chestRule = [rule({ name: 'chest', match: { BodyPartExamined: 'CHEST' }, models: ['blank'] })];
  assert.equal(routeStudy([cr({ bodyPartExamined: 'THORAX' })], [blank], chestRule, 'x').length, 1);
  assert.equal(routeStudy([cr({ seriesDescription: 'CHEST' })], [blank], chestRule, 'x').length, 1);
  assert.equal(routeStudy([cr({ bodyPartExamined: 'KNEE' })], [blank], chestRule, 'x').length, 0);
  const thoraxRule = [rule({ match: { BodyPartExamined: ['THOR*'] }, models: ['blank'] })];
  assert.equal(
    routeStudy([cr({ bodyPartExamined: 'THORAX' })], [blank], thoraxRule, 'x').length,
    1,
    'the raw value',
  );
  const protocol = [rule({ match: { ProtocolName: '*PNEUMO*' }, models: ['blank'] })];
  assert.equal(routeStudy([cr({ protocolName: 'Thorax pneumothorax' })], [blank], protocol, 'x').length, 1);
  assert.equal(routeStudy([cr({})], [blank], protocol, 'x').length, 0);
});

test('explainMatch says which criterion failed and the value seen', () => {
  const [series] = seriesViews([cr({ bodyPartExamined: '', callingAe: 'WARD' })]);
  const none = explainMatch(series!, cxr, []);
  assert.equal(none.accepted, false);
  assert.deepEqual(none.rules, []);
  assert.deepEqual(none.anatomy, { source: 'none' });
  assert.deepEqual(
    none.reasons.map((r) => r.message),
    ['bodyPart: "" not in [CHEST]'],
  );
  assert.deepEqual(none.reasons[0], {
    rule: 'all-accepting-models',
    criterion: 'bodyPart',
    seen: '',
    expected: '[CHEST]',
    message: 'bodyPart: "" not in [CHEST]',
  });

  const [ct] = seriesViews([
    instance('2.1', { modality: 'CT', bodyPartExamined: 'KNEE', rows: 16, callingAe: 'WARD' }),
  ]);
  const rules = [
    rule({ name: 'er', match: { callingAE: 'ER_*' }, models: ['cxr'] }),
    rule({ name: 'brain-only', models: ['brain'] }),
    rule({ name: 'any', models: ['*'] }),
  ];
  const ctExplained = explainMatch(ct!, cxr, rules);
  assert.equal(ctExplained.accepted, false);
  assert.deepEqual(
    ctExplained.reasons.map((r) => `${r.rule} | ${r.message}`),
    [
      'er | callingAE: "WARD" does not match [ER_*]',
      'brain-only | models: "cxr" not in [brain]',
      'any | modality: "CT" not in [CR, DX]',
      'any | bodyPart: "KNEE" not in [CHEST]',
      'any | rows: 16 < 128',
      'any | columns: absent < 128',
    ],
  );

  const [thorax] = seriesViews([cr({ bodyPartExamined: 'THORAX', callingAe: 'WARD' })]);
  const ok = explainMatch(thorax!, cxr, rules);
  assert.equal(ok.accepted, true);
  assert.deepEqual(ok.rules, ['any']);
  assert.deepEqual(ok.anatomy, { bodyPart: 'CHEST', source: 'bodyPartExamined' });
  assert.deepEqual(
    ok.reasons.map((r) => r.criterion),
    ['callingAE', 'models'],
    'the rules that did not lead to it still say why',
  );

  // routeStudy decides with the same function: the plan carries each model's explanation.
  const plan = planStudy([cr({ bodyPartExamined: '', callingAe: 'WARD' })], [cxr, blank], [], 'pacs');
  assert.deepEqual(plan.series[0]?.models['cxr@1'], none);
  assert.equal(plan.series[0]?.models['blank@2']?.accepted, true);
});
