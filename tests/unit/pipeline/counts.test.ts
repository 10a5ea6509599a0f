// What an instance says about the size of its series, and which completeWhen rules apply to it: the part of
// study completion from counts that runs in the gateway process before the index script.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configSchema } from '../../../src/config/schema.ts';
import type { InstanceHeader } from '../../../src/dicom/part10.ts';
import { countEvidence, CountRules, matchesCondition, NO_COUNT_PLAN } from '../../../src/pipeline/counts.ts';

const CT = '1.2.840.10008.5.1.4.1.1.2';
const ENHANCED_CT = '1.2.840.10008.5.1.4.1.1.2.1';
const ENHANCED_MR = '1.2.840.10008.5.1.4.1.1.4.1';

test('countEvidence: series count, acquisition count, enhanced multi-frame object', () => {
  assert.deepEqual(countEvidence({ sopClassUid: CT, seriesRelatedInstances: 3 }), {
    seriesInstances: 3,
    acquisition: undefined,
    wholeSeries: false,
  });
  assert.deepEqual(countEvidence({ sopClassUid: CT, imagesInAcquisition: 40, acquisitionNumber: 2 }), {
    seriesInstances: undefined,
    acquisition: { images: 40, number: '2' },
    wholeSeries: false,
  });
  // No Acquisition Number: one acquisition, ''.
  assert.deepEqual(countEvidence({ sopClassUid: CT, imagesInAcquisition: 40 }).acquisition, {
    images: 40,
    number: '',
  });
  assert.equal(countEvidence({ sopClassUid: ENHANCED_CT, numberOfFrames: 120 }).wholeSeries, true);
  assert.equal(countEvidence({ sopClassUid: ENHANCED_MR, numberOfFrames: 2 }).wholeSeries, true);
  // One frame is not a volume; a classic CT with many frames is not enhanced; a series count governs.
  assert.equal(countEvidence({ sopClassUid: ENHANCED_CT, numberOfFrames: 1 }).wholeSeries, false);
  assert.equal(countEvidence({ sopClassUid: ENHANCED_CT }).wholeSeries, false);
  assert.equal(countEvidence({ sopClassUid: CT, numberOfFrames: 120 }).wholeSeries, false);
  assert.equal(
    countEvidence({ sopClassUid: ENHANCED_CT, numberOfFrames: 120, seriesRelatedInstances: 2 }).wholeSeries,
    false,
  );
  assert.deepEqual(countEvidence({ sopClassUid: CT }), {
    seriesInstances: undefined,
    acquisition: undefined,
    wholeSeries: false,
  });
});

test('matchesCondition: wildcards, case-insensitive, every given attribute, absent value never matches', () => {
  const axial: InstanceHeader = { modality: 'CT', seriesDescription: 'Thorax 1.0 Axial B30f' };
  assert.ok(matchesCondition(axial, { Modality: 'CT', SeriesDescription: '*axial*' }));
  assert.ok(matchesCondition(axial, { Modality: ['MR', 'ct'] }));
  assert.ok(!matchesCondition(axial, { Modality: 'CT', SeriesDescription: '*CORONAL*' }));
  assert.ok(!matchesCondition(axial, { ProtocolName: '*' }), 'no Protocol Name: no match');
  assert.ok(matchesCondition(axial, {}), 'an empty condition takes any series');
  // Values are cut at their VR's length first, as routing does (CS: 16).
  assert.ok(!matchesCondition({ modality: 'C'.repeat(40) }, { Modality: 'C'.repeat(17) }));
});

function rules(raw: unknown[]) {
  return new CountRules(configSchema.parse({ routing: { rules: raw } }).routing.rules);
}

test('CountRules: rules apply by callingAE; conditions are numbered by rule and place', () => {
  const r = rules([
    { name: 'plain', models: ['*'] },
    {
      name: 'ct-from-scanner',
      match: { callingAE: 'CT_*' },
      models: ['*'],
      completeWhen: { series: [{ Modality: 'CT', SeriesDescription: '*AXIAL*' }, { Modality: 'SR' }] },
    },
    { name: 'cr-anywhere', models: ['*'], completeWhen: { minSeries: 2 } },
  ]);
  assert.equal(r.empty, false);
  const axial = { modality: 'CT', seriesDescription: 'AXIAL 1mm' };
  assert.deepEqual(r.forInstance({ ...axial, callingAe: 'CT_ROOM1' }), {
    conditions: '1.0',
    rules: '1:1:2;2:2:0',
  });
  // Another sender: only the rule without callingAE applies, and its conditions are the only ones matched.
  assert.deepEqual(r.forInstance({ ...axial, callingAe: 'MR_ROOM1' }), { conditions: '', rules: '2:2:0' });
  assert.deepEqual(r.forInstance({ modality: 'SR', callingAe: 'ct_room2' }), {
    conditions: '1.1',
    rules: '1:1:2;2:2:0',
  });
  // STOW-RS has no calling AE: rules that name one do not apply.
  assert.deepEqual(r.forInstance({ ...axial, callingAe: '' }), { conditions: '', rules: '2:2:0' });
});

test('CountRules: no completeWhen anywhere, no plan', () => {
  const r = rules([{ name: 'plain', match: { Modality: 'CT' }, models: ['*'] }]);
  assert.equal(r.empty, true);
  assert.deepEqual(r.forInstance({ modality: 'CT', callingAe: 'X' }), NO_COUNT_PLAN);
});

test('completeWhen is validated: unknown attributes and minSeries below 1 are refused', () => {
  const parse = (completeWhen: unknown) =>
    configSchema.safeParse({ routing: { rules: [{ name: 'r', models: ['*'], completeWhen }] } }).success;
  assert.equal(parse({}), true);
  assert.equal(parse({ series: [{ Modality: 'CT' }], minSeries: 2 }), true);
  assert.equal(parse({ series: [{ PatientName: '*' }] }), false);
  assert.equal(parse({ minSeries: 0 }), false);
  assert.equal(parse({ series: [{ Modality: 'CT' }], extra: true }), false);
});
