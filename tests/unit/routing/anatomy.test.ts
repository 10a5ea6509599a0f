import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_ANATOMY_KEYWORDS } from '../../../src/config/anatomy-keywords.ts';
import { configSchema } from '../../../src/config/schema.ts';
import {
  bodyPartFromRegion,
  keywordRegion,
  normaliseBodyPart,
  resolveAnatomy,
} from '../../../src/routing/anatomy.ts';

test('body part synonyms: vendor and language variants become the DICOM defined term', () => {
  const chest = [
    'CHEST',
    'chest',
    ' Chest ',
    'THORAX',
    'TORAX',
    'torax',
    'TÓRAX',
    'tórax',
    'CHEST_PA',
    'PA CHEST',
    'CHEST PA',
    'chest-pa',
    'PA_CHEST',
    'THORAX PA',
    'THORAX_AP',
    'LUNG',
    'LUNGS',
    'POUMON',
    'BRUSTKORB',
    'TORACE',
    'CHEST PA PORTABLE',
    'CHEST  LAT',
  ];
  for (const v of chest) assert.equal(normaliseBodyPart(v), 'CHEST', v);
  for (const v of ['HEAD', 'SKULL', 'CRANIUM', 'KOPF', 'Schädel', 'TÊTE'])
    assert.equal(normaliseBodyPart(v), 'HEAD', v);
  for (const v of ['BRAIN', 'CERVEAU', 'Gehirn']) assert.equal(normaliseBodyPart(v), 'BRAIN', v);
  // Defined terms stand for themselves; near-misses do not collapse into the chest.
  for (const v of ['ABDOMEN', 'KNEE', 'EXTREMITY', 'CSPINE', 'HEADNECK', 'CHESTABDOMEN', 'PELVIS'])
    assert.equal(normaliseBodyPart(v), v, v);
  assert.equal(normaliseBodyPart('THORACIC SPINE'), 'TSPINE');
  assert.equal(normaliseBodyPart('C-SPINE'), 'CSPINE');
  assert.equal(normaliseBodyPart('CHEST ABDOMEN'), 'CHESTABDOMEN');
  assert.equal(normaliseBodyPart('KNIE'), 'KNEE');
  for (const v of ['', '   ', '__', 'PA', 'LAT PA', 'OTHER', 'CHESTY', 'SPAIN'])
    assert.equal(normaliseBodyPart(v), undefined, JSON.stringify(v));
});

test('anatomic region codes: SNOMED CT, SNOMED RT and the code meaning', () => {
  const cases: [Parameters<typeof bodyPartFromRegion>[0], string | undefined][] = [
    [{ value: '43799004', scheme: 'SCT', meaning: 'Chest' }, 'CHEST'],
    [{ value: '51185008', scheme: 'SCT', meaning: 'Thoracic structure' }, 'CHEST'],
    [{ value: 'T-D3000', scheme: 'SRT', meaning: 'Chest' }, 'CHEST'],
    [{ value: 'T-D3000', scheme: 'SNM3', meaning: 'Chest' }, 'CHEST'],
    [{ value: '39607008', scheme: 'SCT', meaning: 'Lung' }, 'CHEST'],
    [{ value: '12738006', scheme: 'SCT', meaning: 'Brain' }, 'BRAIN'],
    [{ value: 'T-A0100', scheme: 'SRT' }, 'BRAIN'],
    [{ value: '69536005', scheme: 'SCT', meaning: 'Head' }, 'HEAD'],
    [{ value: '72696002', scheme: 'SCT', meaning: 'Knee' }, 'KNEE'],
    [{ value: '43799004' }, 'CHEST'],
    // A code from another scheme is not read as SNOMED; its meaning still is.
    [{ value: '43799004', scheme: '99LOCAL', meaning: 'Knee' }, 'KNEE'],
    [{ value: 'X1', scheme: '99LOCAL', meaning: 'Thorax' }, 'CHEST'],
    [{ value: '999999999', scheme: 'SCT', meaning: 'Something else' }, undefined],
    [undefined, undefined],
  ];
  for (const [region, expected] of cases)
    assert.equal(bodyPartFromRegion(region), expected, JSON.stringify(region));
});

test('keyword fallback: whole words only, one region or none', () => {
  const defaults = DEFAULT_ANATOMY_KEYWORDS;
  assert.deepEqual(keywordRegion('CHEST PA', defaults), { region: 'CHEST', keyword: 'CHEST' });
  assert.deepEqual(keywordRegion('Rx Tórax 2 proj', defaults), { region: 'CHEST', keyword: 'RX TORAX' });
  assert.deepEqual(keywordRegion('XR KNEE 2V', defaults), { region: 'KNEE', keyword: 'KNEE' });
  assert.equal(keywordRegion('CHESTNUT', defaults), undefined, 'not a substring match');
  assert.equal(keywordRegion('CHEST and KNEE', defaults), undefined, 'two regions: no answer');
  assert.equal(keywordRegion('PA', defaults), undefined, 'a projection alone is no region');
  assert.deepEqual(keywordRegion('THORACIC SPINE', defaults), {
    region: 'TSPINE',
    keyword: 'THORACIC SPINE',
  });
  assert.equal(keywordRegion('', defaults), undefined);
  assert.equal(keywordRegion(undefined, defaults), undefined);

  // Whole words: an admin who adds 'PA' gets PA, not every word containing it.
  const withPa = { CHEST: ['PA'] };
  assert.deepEqual(keywordRegion('PA', withPa), { region: 'CHEST', keyword: 'PA' });
  assert.deepEqual(keywordRegion('ERECT_PA', withPa), { region: 'CHEST', keyword: 'PA' });
  assert.equal(keywordRegion('SPAIN', withPa), undefined);
  assert.equal(keywordRegion('PAED ABDO', withPa), undefined);
});

test('an admin-edited keyword map: regions given replace theirs, the rest keep the defaults', () => {
  const config = configSchema.parse({
    routing: { anatomyKeywords: { CHEST: ['RX TX', 'cxr'], knee: [], Thorax: ['BRUSTBILD'] } },
  });
  const map = config.routing.anatomyKeywords;
  assert.deepEqual(keywordRegion('RX TX 2 views', map), { region: 'CHEST', keyword: 'RX TX' });
  assert.deepEqual(keywordRegion('Portable CXR', map), { region: 'CHEST', keyword: 'CXR' });
  assert.equal(
    keywordRegion('CHEST PA', map),
    undefined,
    'CHEST was replaced, so its default words are gone',
  );
  assert.equal(keywordRegion('XR KNEE', map), undefined, 'an empty list switches the region off');
  assert.deepEqual(
    keywordRegion('BRUSTBILD', map),
    { region: 'CHEST', keyword: 'BRUSTBILD' },
    'a synonym key is its term',
  );
  assert.deepEqual(keywordRegion('CT HEAD', map), { region: 'HEAD', keyword: 'HEAD' }, 'defaults kept');
  assert.deepEqual(configSchema.parse({}).routing.anatomyKeywords.CHEST, [
    ...DEFAULT_ANATOMY_KEYWORDS.CHEST!,
  ]);
  assert.throws(() => configSchema.parse({ routing: { anatomyKeywords: { 'CHEST*': ['X'] } } }));
  assert.throws(() => configSchema.parse({ routing: { anatomyKeywords: { CHEST: [''] } } }));
});

test('resolution order: Body Part Examined, then the anatomic region, then keywords', () => {
  const kw = DEFAULT_ANATOMY_KEYWORDS;
  const chestRegion = { value: 'T-D3000', scheme: 'SRT', meaning: 'Chest' };
  assert.deepEqual(
    resolveAnatomy({ bodyPartExamined: 'THORAX', anatomicRegion: { value: '72696002', scheme: 'SCT' } }, kw),
    {
      bodyPart: 'CHEST',
      source: 'bodyPartExamined',
    },
  );
  assert.deepEqual(
    resolveAnatomy({ bodyPartExamined: '', anatomicRegion: chestRegion, seriesDescription: 'KNEE' }, kw),
    {
      bodyPart: 'CHEST',
      source: 'anatomicRegion',
    },
  );
  assert.deepEqual(resolveAnatomy({ seriesDescription: 'CHEST PA', studyDescription: 'XR KNEE' }, kw), {
    bodyPart: 'CHEST',
    source: 'keyword:CHEST',
    attribute: 'SeriesDescription',
  });
  assert.deepEqual(resolveAnatomy({ protocolName: 'Thorax pa/lat', studyDescription: 'XR' }, kw), {
    bodyPart: 'CHEST',
    source: 'keyword:THORAX',
    attribute: 'ProtocolName',
  });
  assert.deepEqual(resolveAnatomy({ seriesDescription: 'AP', studyDescription: 'THORAX' }, kw), {
    bodyPart: 'CHEST',
    source: 'keyword:THORAX',
    attribute: 'StudyDescription',
  });
  // An unknown Body Part Examined yields to better evidence, else is kept as it is.
  assert.equal(
    resolveAnatomy({ bodyPartExamined: 'OTHER', seriesDescription: 'CHEST' }, kw).bodyPart,
    'CHEST',
  );
  assert.deepEqual(resolveAnatomy({ bodyPartExamined: 'local_thing' }, kw), {
    bodyPart: 'LOCAL THING',
    source: 'bodyPartExamined',
  });
  assert.deepEqual(resolveAnatomy({ bodyPartExamined: '  ' }, kw), { source: 'none' });
  assert.deepEqual(resolveAnatomy({}, kw), { source: 'none' });
});
