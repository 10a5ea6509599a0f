// Completion from evidence: a modality (the dcmjs-dimse client) reports its Modality Performed Procedure
// Step to the gateway (real CLI child process, role `all`) around the C-STOREs of a study. With a 10-minute
// quiet period, the step's N-SET COMPLETED lets the report reach the PACS (real Orthanc) within seconds of
// the last instance; DISCONTINUED closes what arrived with its reason. An announced instance that never
// comes leaves the study to the timer (short quiet period there), marked incomplete with the missing count.
// Malformed steps get the statuses PS3.4 F.7.2 names, and the SCP keeps serving.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import dimse from 'dcmjs-dimse';
import { readHeaderSync, runTool } from '../helpers/dicom-tools.ts';
import { makeModelsDir, SHARED, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { fetchSeriesInstance, startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';
import { readReport } from '../helpers/sr-content.ts';

const { Client, Dataset } = dimse;
dimse.log.setLevel('warn');
const { NCreateRequest, NSetRequest, CStoreRequest } = dimse.requests;
type AnyRequest = InstanceType<typeof NCreateRequest | typeof NSetRequest | typeof CStoreRequest>;
type AnyResponse = InstanceType<
  | typeof dimse.responses.NCreateResponse
  | typeof dimse.responses.NSetResponse
  | typeof dimse.responses.CStoreResponse
>;

const MPPS = '1.2.840.10008.3.1.2.3.3';
const CT_DIR = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
const CT = ['I10.dcm', 'I20.dcm', 'I30.dcm'].map((f) => path.join(CT_DIR, f));
const XRAY = path.join(SHARED, 'dicom-samples/xray');
const FUJI_CHEST = path.join(XRAY, 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const AGFA = path.join(XRAY, 'cr-cervical-lat-mono1-agfa-16x16.dcm');
const IMPLICIT_LE = '1.2.840.10008.1.2';

interface Completion {
  run: number;
  by: string;
  incomplete: boolean;
  missing: number;
  openSteps: number;
  discontinued?: string;
}
interface StudyRow {
  state: string;
  reports?: { model: string; sopInstanceUid: string; run: number; supersedes?: string }[];
  run: number;
  instanceCount: number;
  completion?: Completion;
}

let orthanc: OrthancInstance;
/** Quiet period 10 minutes: only evidence can complete a study within the test. */
let slow: GatewayProcess;
/** Quiet period 3 s: the fallback timer. */
let quick: GatewayProcess;
let uidCounter = 0;
const stepUid = () => `2.25.${Date.now()}${process.pid}${++uidCounter}`;

before(async () => {
  const modelsDir = await makeModelsDir(['cxr', 'uniformity']);
  orthanc = await startOrthanc();
  const config = (quietPeriodMs: number) => ({
    destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
    defaultDestination: 'pacs',
    dimse: { peers: [{ aeTitle: 'MODALITY1' }] },
    study: { quietPeriodMs },
  });
  [slow, quick] = await Promise.all([
    startGateway({ modelsDir, config: config(600_000) }),
    startGateway({ modelsDir, config: config(3000) }),
  ]);
});

after(async () => {
  await Promise.all([slow?.dispose(), quick?.dispose()]);
  await orthanc?.stop();
});

/** One association with the requests in order; resolves with each request's response status and Error ID. */
function send(
  gateway: GatewayProcess,
  requests: AnyRequest[],
): Promise<{ status: number; errorId?: number; comment: string }[]> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const results: { status: number; errorId?: number; comment: string }[] = [];
    requests.forEach((request, i) => {
      request.on('response', (response: AnyResponse) => {
        const errorId = response.getCommandDataset().getElement('ErrorID') as unknown;
        results[i] = {
          status: response.getStatus(),
          comment: response.getErrorComment() ?? '',
          ...(typeof errorId === 'number' ? { errorId } : {}),
        };
      });
      client.addRequest(request);
    });
    client.on('networkError', (err: Error) => reject(err));
    client.on('associationRejected', () => reject(new Error('association rejected')));
    client.on('closed', () =>
      results.length === requests.length && !results.includes(undefined as never)
        ? resolve(results)
        : reject(new Error(`only ${results.filter(Boolean).length} of ${requests.length} responses`)),
    );
    client.send('127.0.0.1', gateway.dimsePort, 'MODALITY1', 'AIGATEWAY');
  });
}

function ncreate(uid: string, elements: Record<string, unknown>): AnyRequest {
  const req = new NCreateRequest(MPPS, uid);
  req.setDataset(new Dataset(elements, IMPLICIT_LE));
  return req;
}

function nset(uid: string, elements: Record<string, unknown>): AnyRequest {
  const req = new NSetRequest(MPPS, uid);
  req.setDataset(new Dataset(elements, IMPLICIT_LE));
  return req;
}

function inProgress(studyUid: string): Record<string, unknown> {
  return {
    ScheduledStepAttributesSequence: [{ StudyInstanceUID: studyUid, AccessionNumber: '' }],
    PerformedProcedureStepID: 'PPS1',
    PerformedStationAETitle: 'MODALITY1',
    PerformedProcedureStepStartDate: '20260101',
    PerformedProcedureStepStartTime: '120000',
    PerformedProcedureStepStatus: 'IN PROGRESS',
    Modality: 'CT',
    PerformedSeriesSequence: [],
  };
}

/** The Performed Series Sequence of these files (their own series and SOP instances), plus extra UIDs. */
function performedSeries(files: string[], extra: string[] = []): Record<string, unknown>[] {
  const bySeries = new Map<string, { SOPClassUID: string; SOPInstanceUID: string }[]>();
  for (const f of files) {
    const h = readHeaderSync(f);
    const list = bySeries.get(h.SeriesInstanceUID as string) ?? [];
    list.push({ SOPClassUID: h.SOPClassUID as string, SOPInstanceUID: h.SOPInstanceUID as string });
    bySeries.set(h.SeriesInstanceUID as string, list);
  }
  const items = [...bySeries].map(([seriesUid, refs]) => ({
    SeriesInstanceUID: seriesUid,
    RetrieveAETitle: '',
    SeriesDescription: '',
    PerformingPhysicianName: '',
    OperatorsName: '',
    ProtocolName: 'mpps test',
    ReferencedImageSequence: refs.map((r) => ({
      ReferencedSOPClassUID: r.SOPClassUID,
      ReferencedSOPInstanceUID: r.SOPInstanceUID,
    })),
  }));
  if (extra.length > 0 && items[0])
    items[0].ReferencedImageSequence.push(
      ...extra.map((uid) => ({
        ReferencedSOPClassUID: items[0]!.ReferencedImageSequence[0]!.ReferencedSOPClassUID,
        ReferencedSOPInstanceUID: uid,
      })),
    );
  return items;
}

const study = (gateway: GatewayProcess, uid: string) =>
  gateway.api<StudyRow>(`/api/studies/${uid}`).catch(() => undefined);

test('N-CREATE, C-STOREs, N-SET COMPLETED: with a 10-minute quiet period the SR is in Orthanc within seconds', async () => {
  const studyUid = readHeaderSync(CT[0]!).StudyInstanceUID as string;
  const uid = stepUid();
  const replies = await send(slow, [
    ncreate(uid, inProgress(studyUid)),
    ...CT.map((f) => new CStoreRequest(f)),
    nset(uid, {
      PerformedProcedureStepStatus: 'COMPLETED',
      PerformedProcedureStepEndDate: '20260101',
      PerformedProcedureStepEndTime: '120500',
      PerformedSeriesSequence: performedSeries(CT),
    }),
  ]);
  const lastInstanceAt = Date.now();
  assert.deepEqual(
    replies.map((r) => r.status),
    [0, 0, 0, 0, 0],
  );
  // Any SR series: only this gateway's report goes into this study.
  const part10 = await fetchSeriesInstance(orthanc, studyUid, 'SR', /.*/);
  const elapsed = Date.now() - lastInstanceAt;
  assert.ok(elapsed < 30_000, `SR after ${elapsed} ms`);
  assert.equal(readReport(part10).dataset.StudyInstanceUID, studyUid);
  const row = await study(slow, studyUid);
  assert.equal(row?.completion?.by, 'mpps');
  assert.equal(row?.completion?.incomplete, false);
  assert.equal(row?.completion?.missing, 0);
  assert.equal(row?.run, 1);
});

test('a later step re-opens the study: its report supersedes the first, and the study shows which is current', async () => {
  const studyUid = readHeaderSync(CT[0]!).StudyInstanceUID as string;
  const before = await study(slow, studyUid);
  const firstReport = before?.reports?.[0];
  assert.ok(firstReport, 'the first run has a current report');
  assert.equal(firstReport.run, 1);
  const late = path.join(CT_DIR, 'I40.dcm');
  const uid = stepUid();
  const replies = await send(slow, [
    ncreate(uid, inProgress(studyUid)),
    new CStoreRequest(late),
    nset(uid, {
      PerformedProcedureStepStatus: 'COMPLETED',
      PerformedSeriesSequence: performedSeries([late]),
    }),
  ]);
  assert.deepEqual(
    replies.map((r) => r.status),
    [0, 0, 0],
  );
  const row = await waitFor(
    'the second report to be current',
    async () => {
      const r = await study(slow, studyUid);
      return r?.reports?.[0]?.run === 2 && r.state === 'done' ? r : undefined;
    },
    30_000,
  );
  const current = row.reports![0]!;
  assert.equal(current.supersedes, firstReport.sopInstanceUid);
  assert.notEqual(current.sopInstanceUid, firstReport.sopInstanceUid);
  assert.equal(row.completion?.by, 'mpps');
  assert.equal(row.completion?.run, 2);
  // Both reports are in the PACS; the new one is current.
  const res = await orthanc.rest(`/dicom-web/studies/${studyUid}/instances?Modality=SR`);
  const srs = ((await res.json()) as Record<string, { Value?: unknown[] }>[]).map((i) =>
    String(i['00080018']?.Value?.[0]),
  );
  assert.deepEqual(srs.sort(), [firstReport.sopInstanceUid, current.sopInstanceUid].sort());
});

test('N-SET COMPLETED before the instances: the last announced instance completes the study', async () => {
  const studyUid = readHeaderSync(FUJI_CHEST).StudyInstanceUID as string;
  const uid = stepUid();
  const first = await send(slow, [
    ncreate(uid, { ...inProgress(studyUid), Modality: 'CR' }),
    nset(uid, {
      PerformedProcedureStepStatus: 'COMPLETED',
      PerformedSeriesSequence: performedSeries([FUJI_CHEST]),
    }),
  ]);
  assert.deepEqual(
    first.map((r) => r.status),
    [0, 0],
  );
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await study(slow, studyUid), undefined, 'nothing arrived yet: no study');
  // The images come on another association (dcmtk storescu: dcmjs cannot re-encode this file's dates).
  const stored = await slow.store([FUJI_CHEST]);
  assert.equal(stored.code, 0, stored.stderr);
  const row = await waitFor(
    'the study routed by evidence',
    async () => {
      const r = await study(slow, studyUid);
      return r?.completion !== undefined ? r : undefined;
    },
    20_000,
  );
  assert.equal(row.completion?.by, 'mpps');
  assert.equal(row.completion?.incomplete, false);
});

test('N-SET DISCONTINUED closes what arrived, with the reason recorded', async () => {
  const studyUid = readHeaderSync(AGFA).StudyInstanceUID as string;
  const uid = stepUid();
  const replies = await send(slow, [
    ncreate(uid, { ...inProgress(studyUid), Modality: 'CR' }),
    new CStoreRequest(AGFA),
    nset(uid, {
      PerformedProcedureStepStatus: 'DISCONTINUED',
      PerformedProcedureStepDiscontinuationReasonCodeSequence: [
        {
          CodeValue: '110514',
          CodingSchemeDesignator: 'DCM',
          CodeMeaning: 'Incorrect worklist entry selected',
        },
      ],
      PerformedSeriesSequence: performedSeries([AGFA], ['1.2.826.0.1.3680043.99.777.1']),
    }),
  ]);
  assert.deepEqual(
    replies.map((r) => r.status),
    [0, 0, 0],
  );
  const row = await waitFor(
    'the discontinued study routed',
    async () => {
      const r = await study(slow, studyUid);
      return r?.completion !== undefined ? r : undefined;
    },
    20_000,
  );
  assert.equal(row.completion?.by, 'mpps');
  assert.equal(row.completion?.discontinued, 'Incorrect worklist entry selected');
  assert.equal(row.completion?.missing, 0, 'a discontinued step awaits nothing');
});

test('an announced instance that never arrives: the timer completes the study, incomplete, 1 missing', async () => {
  const studyUid = readHeaderSync(CT[0]!).StudyInstanceUID as string;
  const uid = stepUid();
  const replies = await send(quick, [
    ncreate(uid, inProgress(studyUid)),
    ...CT.slice(0, 2).map((f) => new CStoreRequest(f)),
    nset(uid, {
      PerformedProcedureStepStatus: 'COMPLETED',
      PerformedSeriesSequence: performedSeries(CT.slice(0, 2), ['1.2.826.0.1.3680043.99.777.2']),
    }),
  ]);
  assert.deepEqual(
    replies.map((r) => r.status),
    [0, 0, 0, 0],
  );
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal((await study(quick, studyUid))?.completion, undefined, 'not before the quiet period');
  const row = await waitFor(
    'the study routed by the timer',
    async () => {
      const r = await study(quick, studyUid);
      return r?.completion !== undefined ? r : undefined;
    },
    20_000,
  );
  assert.deepEqual(
    { by: row.completion?.by, incomplete: row.completion?.incomplete, missing: row.completion?.missing },
    { by: 'quiet-period', incomplete: true, missing: 1 },
  );
  assert.equal(row.instanceCount, 2);
});

test('malformed steps get the PS3.4 statuses, and the SCP keeps serving', async () => {
  const studyUid = '1.2.826.0.1.3680043.99.778';
  const uid = stepUid();
  const replies = await send(slow, [
    // N-SET of a step nobody created: 0112H No such SOP Instance.
    nset(stepUid(), { PerformedProcedureStepStatus: 'COMPLETED' }),
    ncreate(uid, inProgress(studyUid)),
    // N-CREATE of a step that exists: 0111H Duplicate SOP Instance.
    ncreate(uid, inProgress(studyUid)),
    // A status that is not a Performed Procedure Step Status: 0106H Invalid attribute value.
    nset(uid, { PerformedProcedureStepStatus: 'FINISHED' }),
    nset(uid, { PerformedProcedureStepStatus: 'COMPLETED' }),
    // N-SET after COMPLETED: 0110H Processing failure, Error ID A710H (may no longer be updated).
    nset(uid, { PerformedProcedureStepStatus: 'DISCONTINUED' }),
    // N-CREATE that is not IN PROGRESS: 0106H; without a study: 0120H Missing attribute.
    ncreate(stepUid(), { ...inProgress(studyUid), PerformedProcedureStepStatus: 'COMPLETED' }),
    ncreate(stepUid(), { PerformedProcedureStepStatus: 'IN PROGRESS' }),
    ncreate(stepUid(), { ...inProgress('not a uid'), PerformedProcedureStepStatus: 'IN PROGRESS' }),
  ]);
  assert.deepEqual(
    replies.map((r) => r.status),
    [0x0112, 0x0000, 0x0111, 0x0106, 0x0000, 0x0110, 0x0106, 0x0120, 0x0106],
  );
  assert.equal(replies[5]!.errorId, 0xa710);
  const echo = await runTool('echoscu', [
    '-aet',
    'MODALITY1',
    '-aec',
    'AIGATEWAY',
    '127.0.0.1',
    String(slow.dimsePort),
  ]);
  assert.equal(echo.code, 0, echo.stderr);
  assert.ok((await fetch(`http://127.0.0.1:${slow.httpPort}/readyz`)).ok);
});
