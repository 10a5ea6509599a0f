// Once the gateway delivers into a PACS, an open DIMSE door lets anyone on the network inject studies whose
// results land in the PACS. With a PACS destination configured, callers outside dimse.peers are refused
// unless dimse.promiscuous is set explicitly; then the gateway warns at start-up and in /readyz.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { makeModelsDir, startGateway, type GatewayProcess } from '../../helpers/gateway.ts';
import { dcmtk } from '../../helpers/ingest.ts';

const PACS = { kind: 'dicomweb', url: 'http://127.0.0.1:9/dicom-web' };

function echo(g: GatewayProcess, calling: string) {
  return dcmtk('echoscu', ['-v', '-aet', calling, '-aec', 'AIGATEWAY', '127.0.0.1', String(g.dimsePort)]);
}

async function readyz(g: GatewayProcess) {
  const res = await fetch(`http://127.0.0.1:${g.httpPort}/readyz`);
  return { status: res.status, body: (await res.json()) as { status: string; warnings?: string[] } };
}

test('with a PACS destination and no peers, an unknown caller is refused', async () => {
  const modelsDir = await makeModelsDir(['uniformity']);
  const g = await startGateway({
    modelsDir,
    config: { destinations: { pacs: PACS }, defaultDestination: 'pacs' },
  });
  try {
    const stranger = await echo(g, 'STRANGER');
    assert.notEqual(stranger.code, 0, stranger.out);
    assert.match(stranger.out, /Association Rejected|calling AE title not recognized/i, stranger.out);
    const ready = await readyz(g);
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body.warnings ?? [], []);
  } finally {
    await g.dispose();
    await rm(modelsDir, { recursive: true, force: true });
  }
});

test('with a PACS destination and peers, only peers get in', async () => {
  const modelsDir = await makeModelsDir(['uniformity']);
  const g = await startGateway({
    modelsDir,
    config: {
      destinations: { pacs: { kind: 'dimse', host: '127.0.0.1', port: 9, aeTitle: 'PACS' } },
      defaultDestination: 'pacs',
      dimse: { aeTitle: 'AIGATEWAY', host: '127.0.0.1', peers: [{ aeTitle: 'MODALITY1' }] },
    },
  });
  try {
    assert.equal((await echo(g, 'MODALITY1')).code, 0);
    assert.notEqual((await echo(g, 'STRANGER')).code, 0);
  } finally {
    await g.dispose();
    await rm(modelsDir, { recursive: true, force: true });
  }
});

test('dimse.promiscuous: true with a PACS destination accepts anyone, and says so at start-up and in /readyz', async () => {
  const modelsDir = await makeModelsDir(['uniformity']);
  const g = await startGateway({
    modelsDir,
    config: {
      destinations: { pacs: PACS },
      defaultDestination: 'pacs',
      dimse: { aeTitle: 'AIGATEWAY', host: '127.0.0.1', promiscuous: true },
    },
  });
  try {
    const stranger = await echo(g, 'STRANGER');
    assert.equal(stranger.code, 0, stranger.out);
    const ready = await readyz(g);
    assert.equal(ready.status, 200, 'a warning, not a failure');
    assert.equal(ready.body.warnings?.length, 1, JSON.stringify(ready.body));
    assert.match(ready.body.warnings![0]!, /promiscuous.*PACS/i);
    const log = await readFile(g.logPath, 'utf8');
    const warned = log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { event?: string; level?: number })
      .filter((e) => e.event === 'dimse.promiscuous_with_pacs');
    assert.equal(warned.length, 1, 'one start-up warning');
    assert.equal(warned[0]!.level, 40, 'logged at warn level');
  } finally {
    await g.dispose();
    await rm(modelsDir, { recursive: true, force: true });
  }
});
