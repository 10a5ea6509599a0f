// Two gateway processes sharing one Redis (same key prefix), each with its own data directory: one of them
// holds the maintenance lease (both /readyz say which), the association limit holds for the pair, each
// one's audit records are visible through the other's admin API, and when the lease holder is killed
// (SIGKILL) the other takes the lease over and its associations stop counting once their entries expire.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  makeModelsDir,
  REDIS_URL,
  SHARED,
  startGateway,
  waitFor,
  type GatewayProcess,
} from '../helpers/gateway.ts';
import { associateRq } from '../helpers/ingest.ts';
import { runTool } from '../helpers/dicom-tools.ts';

const prefix = `aigw-e2e-several-${randomBytes(4).toString('hex')}`;
const gateways: GatewayProcess[] = [];
const CR = path.join(SHARED, 'dicom-samples/xray/cr-cervical-lat-mono1-agfa-16x16.dcm');
const CR_OTHER = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const CR_CLASS = '1.2.840.10008.5.1.4.1.1.1';
const LEASE_TTL = 2000;
const SLOT_TTL = 2000;

after(async () => {
  for (const g of gateways) await g.dispose();
  const redis = new Redis(REDIS_URL);
  const found = await redis.keys(`${prefix}:*`);
  if (found.length) await redis.del(...found);
  redis.disconnect();
});

interface Readyz {
  maintenance?: { holder: string | null; self: boolean; expiresInMs: number | null };
}

async function readyz(g: GatewayProcess): Promise<Readyz> {
  const res = await fetch(`http://127.0.0.1:${g.httpPort}/readyz`);
  return (await res.json()) as Readyz;
}

async function hold(port: number, calling: string): Promise<{ socket: Socket; accepted: boolean }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const first = new Promise<Buffer>((resolve) => socket.once('data', (c: Buffer) => resolve(c)));
  socket.write(associateRq(calling, 'AIGATEWAY', CR_CLASS));
  return { socket, accepted: (await first).readUInt8(0) === 0x02 };
}

async function echo(g: GatewayProcess, calling: string): Promise<{ out: string }> {
  const r = await runTool('echoscu', [
    '-v',
    '-aet',
    calling,
    '-aec',
    'AIGATEWAY',
    '127.0.0.1',
    String(g.dimsePort),
  ]);
  return { out: r.stdout + r.stderr };
}

test('two gateways: one maintenance holder, cluster-wide association limit, one audit view, takeover after a crash', async () => {
  const modelsDir = await makeModelsDir(['uniformity']);
  const config = {
    redis: { prefix },
    maintenance: { leaseTtlMs: LEASE_TTL },
    dimse: { limits: { maxAssociations: 2, clusterSlotTtlMs: SLOT_TTL } },
  };
  for (let i = 0; i < 2; i++) gateways.push(await startGateway({ modelsDir, role: 'gateway', config }));
  const [g1, g2] = gateways as [GatewayProcess, GatewayProcess];

  // One holder, seen alike by both.
  const views = await waitFor('a maintenance holder', async () => {
    const v = await Promise.all([readyz(g1), readyz(g2)]);
    return v.every((r) => r.maintenance?.holder) ? v : undefined;
  });
  assert.equal(views[0].maintenance!.holder, views[1].maintenance!.holder);
  assert.equal(
    views.filter((v) => v.maintenance!.self).length,
    1,
    `exactly one self: ${JSON.stringify(views)}`,
  );
  const [holder, other] = views[0].maintenance!.self ? [g1, g2] : [g2, g1];
  const holderId = views[0].maintenance!.holder!;

  // Audit: a study stored on each; both 'received' records come back through either admin API.
  assert.equal((await g1.store([CR])).code, 0);
  assert.equal((await g2.store([CR_OTHER])).code, 0);
  for (const g of [g1, g2]) {
    const seen = await waitFor(
      'both received records through one API',
      async () => {
        const res = await fetch(`http://127.0.0.1:${g.httpPort}/api/audit?type=received`);
        const records = (await res.json()) as { studyUid: string; node?: string }[];
        const nodes = new Set(records.map((r) => r.node));
        return records.length >= 2 && nodes.size >= 2
          ? { records, source: res.headers.get('x-audit-source') }
          : undefined;
      },
      20_000,
    );
    assert.notEqual(seen.source, 'local', 'answered from the cluster stream');
    assert.equal(new Set(seen.records.map((r) => r.studyUid)).size, 2);
  }

  // Association limit 2 for the pair: one held on each, a third is refused on either.
  const onHolder = await hold(holder.dimsePort, 'MOD_ONE');
  const onOther = await hold(other.dimsePort, 'MOD_TWO');
  assert.equal(onHolder.accepted && onOther.accepted, true);
  for (const g of [holder, other]) {
    const third = await echo(g, 'MOD_THREE');
    assert.match(third.out, /Association Rejected/i, third.out);
  }

  // The holder crashes, with its association open: the other takes the lease over after expiry, and
  // admits a new association once the crashed one's entry expired.
  const killedAt = Date.now();
  await holder.stop('SIGKILL');
  onHolder.socket.destroy();
  const taken = await waitFor(
    'takeover',
    async () => {
      const r = await readyz(other);
      return r.maintenance?.self ? r : undefined;
    },
    LEASE_TTL * 3 + 5000,
  );
  assert.notEqual(taken.maintenance!.holder, holderId);
  const tookMs = Date.now() - killedAt;
  assert.ok(tookMs >= LEASE_TTL / 3, `took over after ${tookMs} ms: not before the old lease could expire`);
  let again = await echo(other, 'MOD_THREE');
  while (!/Echo Response \(Success\)/.test(again.out) && Date.now() - killedAt < SLOT_TTL + 10_000) {
    await new Promise((r) => setTimeout(r, 200));
    again = await echo(other, 'MOD_THREE');
  }
  assert.match(again.out, /Echo Response \(Success\)/, again.out);
  onOther.socket.destroy();
});
