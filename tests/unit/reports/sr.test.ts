import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildMeasurementReport, COMPREHENSIVE_SR_SOP_CLASS } from '../../../src/reports/sr/tid1500.ts';
import { formatDecimalString, InvalidConceptError } from '../../../src/reports/sr/content.ts';
import type { ModelResult } from '../../../src/pipeline/findings.ts';
import { InvalidUidError } from '../../../src/dicom/uid.ts';
import { dciodvfy, dsrdump, parseDicom } from '../../helpers/dicom-tools.ts';
import { readReport } from '../../helpers/sr-content.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ctDir = path.join(repoRoot, '../shared/dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
const SLICES = ['I10.dcm', 'I20.dcm', 'I30.dcm'];
const NOW = new Date(2024, 4, 17, 13, 45, 30);

type Ds = Record<string, unknown>;

async function loadSources(): Promise<{ headers: Ds[]; paths: string[] }> {
  const paths = SLICES.map((f) => path.join(ctDir, f));
  const headers = await Promise.all(paths.map(async (p) => parseDicom(await readFile(p))));
  return { headers, paths };
}

function fakeResult(headers: Ds[], paths: string[], modelName = 'Head CT triage'): ModelResult {
  return {
    model: {
      id: 'head-ct-triage',
      name: modelName,
      version: '2.1.0',
      manufacturer: 'Example Imaging Lab',
      uid: '2.25.311377328474651244120587234158339542745',
    },
    findings: [
      {
        kind: 'classification',
        label: 'hemorrhage',
        concept: { value: '50960005', scheme: 'SCT', meaning: 'Hemorrhage' },
        probability: 0.875,
        threshold: 0.5,
        positive: true,
      },
      {
        kind: 'classification',
        label: 'fracture',
        concept: { value: '125605004', scheme: 'SCT', meaning: 'Fracture of bone' },
        probability: 0.0625,
        threshold: 0.3,
        positive: false,
      },
      {
        kind: 'volume',
        label: 'brain',
        concept: { value: '12738006', scheme: 'SCT', meaning: 'Brain' },
        volumeMl: 1234.25,
        voxelCount: 98_740,
      },
    ],
    sources: headers.map((h, i) => ({
      sopClassUid: h.SOPClassUID as string,
      sopInstanceUid: h.SOPInstanceUID as string,
      seriesUid: h.SeriesInstanceUID as string,
      key: `studies/${h.StudyInstanceUID as string}/${h.SeriesInstanceUID as string}/${h.SOPInstanceUID as string}.dcm`,
      file: paths[i]!,
    })),
    provider: 'cpu',
    inferenceMs: 42,
  };
}

const SR_UID = '2.25.100000000000000000000000000000000001';
const SR_SERIES = '2.25.100000000000000000000000000000000002';

/** All string leaves of a naturalized dataset with their dotted key paths. */
function stringLeaves(v: unknown, at = ''): Array<{ at: string; value: string }> {
  if (typeof v === 'string') return [{ at, value: v }];
  if (Array.isArray(v)) return v.flatMap((x, i) => stringLeaves(x, `${at}[${i}]`));
  if (v && typeof v === 'object') {
    return Object.entries(v as Ds).flatMap(([k, x]) => stringLeaves(x, at ? `${at}.${k}` : k));
  }
  return [];
}

type Item = Ds & { ContentSequence?: Item[] };
function walk(item: Item): Item[] {
  return [item, ...(item.ContentSequence ?? []).flatMap(walk)];
}
const nameOf = (i: Item) => (i.ConceptNameCodeSequence as Ds[] | Ds | undefined) ?? undefined;
function meaning(i: Item): string | undefined {
  const n = nameOf(i);
  const first = (Array.isArray(n) ? n[0] : n) as Ds | undefined;
  return first?.CodeMeaning as string | undefined;
}

test('TID 1500 report from real CT slices passes dciodvfy and dsrdump and references every source', async (t) => {
  const { headers, paths } = await loadSources();
  const result = fakeResult(headers, paths);
  const buf = buildMeasurementReport({
    result,
    sourceHeader: headers[0]!,
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    seriesNumber: 9001,
    now: NOW,
  });
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sr-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'report.dcm');
  await writeFile(file, buf);

  const v = await dciodvfy(file);
  for (const w of v.warnings) t.diagnostic(`dciodvfy: ${w}`);
  assert.match(v.output, /ComprehensiveSR/, 'dciodvfy recognised the IOD');
  assert.deepEqual(v.errors, [], v.output);

  const d = await dsrdump(file);
  assert.equal(d.code, 0, d.stderr);
  assert.doesNotMatch(d.stderr, /^E:|error/im);
  for (const expected of [
    'Imaging Measurement Report',
    'Hemorrhage',
    'Fracture of bone',
    'Brain',
    '"Certainty of Finding")="87.5" (%,UCUM',
    '"Certainty of Finding")="6.25" (%,UCUM',
    '(52101004,SCT,"Present")',
    '(2667000,SCT,"Absent")',
    '"Volume")="1234.25" (mL,UCUM',
    '"Algorithm Version")="2.1.0"',
    '"Device Observer UID")="2.25.311377328474651244120587234158339542745"',
  ]) {
    assert.ok(d.stdout.includes(expected), `dsrdump output lacks ${expected}\n${d.stdout}`);
  }

  const sr = parseDicom(buf, true);
  const src = headers[0]!;
  assert.equal(sr.SOPClassUID, COMPREHENSIVE_SR_SOP_CLASS);
  assert.equal(sr.SOPInstanceUID, SR_UID);
  assert.equal(sr.SeriesInstanceUID, SR_SERIES);
  assert.equal(sr.Modality, 'SR');
  assert.equal(sr.StudyInstanceUID, src.StudyInstanceUID);
  assert.equal(sr.PatientID, src.PatientID);
  assert.deepEqual(sr.PatientName, src.PatientName);
  assert.equal(sr.CompletionFlag, 'COMPLETE');
  assert.equal(sr.VerificationFlag, 'UNVERIFIED');
  assert.equal(sr.ContentDate, '20240517');
  assert.equal(sr.ContentTime, '134530');
  assert.equal(sr.SeriesDescription, 'AI: Head CT triage');

  // Evidence: every source, under its own series, in the source study.
  const evidence = sr.CurrentRequestedProcedureEvidenceSequence as Ds[];
  assert.equal(evidence.length, 1);
  assert.equal(evidence[0]!.StudyInstanceUID, src.StudyInstanceUID);
  const evSeries = evidence[0]!.ReferencedSeriesSequence as Ds[];
  const evSops = evSeries.flatMap((s) =>
    (s.ReferencedSOPSequence as Ds[]).map((r) => ({
      series: s.SeriesInstanceUID,
      sop: r.ReferencedSOPInstanceUID,
    })),
  );
  assert.deepEqual(
    evSops,
    headers.map((h) => ({ series: h.SeriesInstanceUID, sop: h.SOPInstanceUID })),
  );

  // Image library: one IMAGE item per source with class + instance UID.
  const root = sr as Item;
  const library = walk(root).find((i) => meaning(i) === 'Image Library Group');
  assert.ok(library, 'Image Library Group present');
  const images = (library.ContentSequence ?? []).map((i) => (i.ReferencedSOPSequence as Ds[])[0]!);
  assert.deepEqual(
    images.map((r) => [r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID]),
    headers.map((h) => [h.SOPClassUID, h.SOPInstanceUID]),
  );

  // One measurement group per finding, each with tracking id + unique tracking UID.
  const groups = walk(root).filter((i) => meaning(i) === 'Measurement Group');
  assert.equal(groups.length, 3);
  const trackingUids = groups.map(
    (g) => (g.ContentSequence ?? []).find((i) => meaning(i) === 'Tracking Unique Identifier')?.UID,
  );
  assert.equal(new Set(trackingUids).size, 3);

  // Patient identifiers appear only in the Patient module, nowhere in the content tree. (The
  // phantom's study description happens to contain its patient name; it is copied verbatim.)
  assert.equal(sr.StudyDescription, src.StudyDescription);
  const phi = [
    src.PatientID as string,
    ...((src.PatientName as Ds[]).map((n) => n.Alphabetic) as string[]),
  ].filter((s) => s && s.length > 0);
  const leaks = stringLeaves(sr).filter(
    (l) =>
      phi.some((p) => l.value.includes(p)) &&
      !['PatientID', 'StudyDescription'].includes(l.at) &&
      !l.at.startsWith('PatientName'),
  );
  assert.deepEqual(leaks, []);
  // Only whitelisted source attributes are copied (e.g. no institution or device data of the CT).
  assert.equal(sr.InstitutionName, undefined);
  assert.equal(sr.Manufacturer, 'dicom-ai-gateway');
});

test('the same input yields byte-identical reports (idempotent retries)', async () => {
  const { headers, paths } = await loadSources();
  const input = {
    result: fakeResult(headers, paths),
    sourceHeader: headers[0]!,
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    now: NOW,
  };
  assert.ok(buildMeasurementReport(input).equals(buildMeasurementReport(input)));
});

test('frames of one multi-frame source are one image in the library and the evidence', async () => {
  const { headers, paths } = await loadSources();
  const result = fakeResult(headers, paths);
  // A volume model lists every frame of a multi-frame image as its own source.
  const [a, b] = result.sources;
  result.sources = [...[1, 2, 3].map((frameNumber) => ({ ...a!, frameNumber })), b!];
  const sr = parseDicom(
    buildMeasurementReport({
      result,
      sourceHeader: headers[0]!,
      sopInstanceUid: SR_UID,
      seriesInstanceUid: SR_SERIES,
      now: NOW,
    }),
  );
  const library = walk(sr as Item).find((i) => meaning(i) === 'Image Library Group')!;
  const images = (library.ContentSequence ?? []).map(
    (i) => (i.ReferencedSOPSequence as Ds[])[0]!.ReferencedSOPInstanceUID,
  );
  assert.deepEqual(images, [a!.sopInstanceUid, b!.sopInstanceUid]);
  const evidence = sr.CurrentRequestedProcedureEvidenceSequence as Ds[];
  const sops = (evidence[0]!.ReferencedSeriesSequence as Ds[]).flatMap((s) =>
    (s.ReferencedSOPSequence as Ds[]).map((r) => r.ReferencedSOPInstanceUID),
  );
  assert.deepEqual(sops, [a!.sopInstanceUid, b!.sopInstanceUid]);
});

test('non-ASCII text is written as UTF-8 with Specific Character Set ISO_IR 192', async (t) => {
  const { headers, paths } = await loadSources();
  const buf = buildMeasurementReport({
    result: fakeResult(headers, paths, 'Détection hémorragie'),
    sourceHeader: { ...headers[0]!, SpecificCharacterSet: undefined },
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    now: NOW,
  });
  const sr = parseDicom(buf, true);
  assert.equal(sr.SpecificCharacterSet, 'ISO_IR 192');
  assert.equal(sr.SeriesDescription, 'AI: Détection hémorragie');
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sr-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'r.dcm'), buf);
  assert.deepEqual((await dciodvfy(path.join(dir, 'r.dcm'))).errors, []);
  const d = await dsrdump(path.join(dir, 'r.dcm'));
  assert.equal(d.code, 0);
});

test('a superseding report references its predecessor and still validates', async (t) => {
  const { headers, paths } = await loadSources();
  const predecessor = {
    studyUid: headers[0]!.StudyInstanceUID as string,
    seriesUid: SR_SERIES,
    sopInstanceUid: SR_UID,
  };
  const buf = buildMeasurementReport({
    result: fakeResult(headers, paths),
    sourceHeader: headers[0]!,
    sopInstanceUid: '2.25.100000000000000000000000000000000003',
    seriesInstanceUid: SR_SERIES,
    instanceNumber: 2,
    predecessor,
    now: NOW,
  });
  const sr = parseDicom(buf, true);
  const pred = (sr.PredecessorDocumentsSequence as Ds[])[0]!;
  assert.equal(pred.StudyInstanceUID, predecessor.studyUid);
  const series = (pred.ReferencedSeriesSequence as Ds[])[0]!;
  assert.equal(series.SeriesInstanceUID, SR_SERIES);
  assert.equal((series.ReferencedSOPSequence as Ds[])[0]!.ReferencedSOPInstanceUID, SR_UID);
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sr-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'r.dcm'), buf);
  const v = await dciodvfy(path.join(dir, 'r.dcm'));
  assert.deepEqual(v.errors, [], v.output);
});

test('a manifest code from a local scheme is identified in CodingSchemeIdentificationSequence', async (t) => {
  const { headers, paths } = await loadSources();
  const result = fakeResult(headers, paths);
  result.findings[0] = {
    ...(result.findings[0] as Extract<ModelResult['findings'][number], { kind: 'classification' }>),
    concept: { value: 'HEM-01', scheme: '99AIGW', meaning: 'Hemorrhage (local)' },
  };
  const buf = buildMeasurementReport({
    result,
    sourceHeader: headers[0]!,
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    now: NOW,
  });
  const sr = parseDicom(buf, true);
  const ids = sr.CodingSchemeIdentificationSequence as Ds[] | Ds;
  const items = Array.isArray(ids) ? ids : [ids];
  assert.deepEqual(
    items.map((i) => i.CodingSchemeDesignator),
    ['99AIGW'],
    'only the non-standard scheme is listed',
  );
  assert.match(String(items[0]!.CodingSchemeName), /Head CT triage/);
  // Standard schemes only: no sequence at all.
  const plain = parseDicom(
    buildMeasurementReport({
      result: fakeResult(headers, paths),
      sourceHeader: headers[0]!,
      sopInstanceUid: SR_UID,
      seriesInstanceUid: SR_SERIES,
      now: NOW,
    }),
    false,
  );
  assert.equal(plain.CodingSchemeIdentificationSequence, undefined);
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sr-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'local.dcm'), buf);
  const v = await dciodvfy(path.join(dir, 'local.dcm'));
  assert.deepEqual(v.errors, [], v.output);
  const dump = await dsrdump(path.join(dir, 'local.dcm'));
  assert.equal(dump.code, 0, dump.stderr);
  assert.match(dump.stdout, /\(HEM-01,99AIGW,"Hemorrhage \(local\)"\)/);
});

test('invalid inputs are rejected before anything is written', async () => {
  const { headers, paths } = await loadSources();
  const base = {
    result: fakeResult(headers, paths),
    sourceHeader: headers[0]!,
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    now: NOW,
  };
  assert.throws(() => buildMeasurementReport({ ...base, sopInstanceUid: '1.2.03' }), InvalidUidError);
  assert.throws(
    () => buildMeasurementReport({ ...base, sourceHeader: { ...headers[0]!, StudyInstanceUID: '../etc' } }),
    InvalidUidError,
  );
  const bad = fakeResult(headers, paths);
  bad.findings = [
    {
      ...(bad.findings[0] as Extract<(typeof bad.findings)[0], { kind: 'classification' }>),
      probability: 1.5,
    },
  ];
  assert.throws(() => buildMeasurementReport({ ...base, result: bad }), /outside \[0, 1\]/);
  const badCode = fakeResult(headers, paths);
  badCode.findings = [{ ...badCode.findings[0]!, concept: { value: '1', scheme: 'SCT', meaning: 'a\\b' } }];
  assert.throws(() => buildMeasurementReport({ ...base, result: badCode }), InvalidConceptError);
  assert.throws(() => buildMeasurementReport({ ...base, result: { ...base.result, sources: [] } }), /source/);
  assert.throws(
    () => buildMeasurementReport({ ...base, result: { ...base.result, findings: [] } }),
    /finding/,
  );
});

test('decimal strings fit in 16 characters and keep precision', () => {
  for (const v of [0, 87.5, 1 / 3, 123456789.12345679, 1e-9, -2.5e21, 99.99999999999999]) {
    const s = formatDecimalString(v);
    assert.ok(s.length <= 16, `${s} is longer than 16`);
    assert.match(s, /^[+-]?[0-9.]+([eE][+-]?[0-9]+)?$/);
    assert.ok(Math.abs(Number(s) - v) <= Math.abs(v) * 1e-9, `${s} vs ${v}`);
  }
  assert.throws(() => formatDecimalString(Number.NaN), InvalidConceptError);
});

test('exclusive classes: the most probable is the one finding, Present, with every class probability; never all Absent', async (t) => {
  const { headers, paths } = await loadSources();
  const bacterial = { value: '53084003', scheme: 'SCT', meaning: 'Bacterial pneumonia' };
  const normal = { value: '17621005', scheme: 'SCT', meaning: 'Normal' };
  const viral = { value: '75570004', scheme: 'SCT', meaning: 'Viral pneumonia' };
  const result = fakeResult(headers, paths, 'SqueezeNet chest');
  // The chest model's near-uniform output on an adult CR (MODEL.md): no class reaches 0.5.
  result.findings = [
    {
      kind: 'exclusive-classification',
      label: 'Bacterial pneumonia',
      concept: bacterial,
      probability: 0.3372,
      classes: [
        { label: 'Bacterial pneumonia', concept: bacterial, probability: 0.3372 },
        { label: 'Normal', concept: normal, probability: 0.3314 },
        { label: 'Viral pneumonia', concept: viral, probability: 0.3314 },
      ],
    },
  ];
  const buf = buildMeasurementReport({
    result,
    sourceHeader: headers[0]!,
    sopInstanceUid: SR_UID,
    seriesInstanceUid: SR_SERIES,
    now: NOW,
  });
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sr-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'exclusive.dcm');
  await writeFile(file, buf);
  const v = await dciodvfy(file);
  assert.deepEqual(v.errors, [], v.output);
  const d = await dsrdump(file);
  assert.equal(d.code, 0, d.stderr);
  assert.doesNotMatch(d.stderr, /^E:|error/im);
  for (const expected of [
    'CODE:(,,"Finding")=(53084003,SCT,"Bacterial pneumonia")',
    'NUM:(,,"Certainty of Finding")="33.72" (%,UCUM',
    'CODE:(,,"Bacterial pneumonia")=(52101004,SCT,"Present")',
    'NUM:(,,"Bacterial pneumonia")="33.72" (%,UCUM',
    'NUM:(,,"Normal")="33.14" (%,UCUM',
    'NUM:(,,"Viral pneumonia")="33.14" (%,UCUM',
  ]) {
    assert.ok(d.stdout.includes(expected), `dsrdump output lacks ${expected}\n${d.stdout}`);
  }
  assert.ok(!d.stdout.includes('Absent'), `no class is stated Absent\n${d.stdout}`);

  const content = readReport(buf);
  assert.equal(content.groups.length, 1, 'one finding for one radiograph');
  const [group] = content.groups;
  assert.equal(group!.finding, 'Bacterial pneumonia');
  assert.equal(group!.qualitative, 'Present');
  assert.equal(group!.probability, 0.3372);
  const rounded = Object.entries(group!.classes ?? {}).map(([k, p]) => [k, Number(p.toFixed(4))]);
  assert.deepEqual(rounded, [
    ['Bacterial pneumonia', 0.3372],
    ['Normal', 0.3314],
    ['Viral pneumonia', 0.3314],
  ]);

  // A class listed as more probable than the finding is a contradiction the builder refuses.
  const contradictory = structuredClone(result);
  const f = contradictory.findings[0] as Extract<
    ModelResult['findings'][number],
    { kind: 'exclusive-classification' }
  >;
  f.classes[1]!.probability = 0.5;
  assert.throws(
    () =>
      buildMeasurementReport({
        result: contradictory,
        sourceHeader: headers[0]!,
        sopInstanceUid: SR_UID,
        seriesInstanceUid: SR_SERIES,
        now: NOW,
      }),
    /more probable than the finding/,
  );
});
