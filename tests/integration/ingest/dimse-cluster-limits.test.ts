// Association limits across gateways: two DIMSE servers sharing one Redis count their associations together
// (pipeline/association-slots.ts), with dcmtk senders and associations held open on raw sockets. A crashed
// gateway's associations stop counting once their entries expire; when Redis does not answer in time, the
// local per-process limits decide, within the bound.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { AssociationSlots } from '../../../src/pipeline/association-slots.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { createIngestRedis } from '../../../src/pipeline/redis.ts';
import { associationLimitFallbacks } from '../../../src/observability/metrics.ts';
import { associateRq, dcmtk, startTestDimse, type TestDimse } from '../../helpers/ingest.ts';
import { startPrivateRedis } from '../../helpers/redis-server.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const AE = 'AIGW_TEST';
const CR_CLASS = '1.2.840.10008.5.1.4.1.1.1';
const admin = new Redis(REDIS_URL);
const prefix = `aigw-test-slots-${randomBytes(4).toString('hex')}`;
const connections: Redis[] = [];

after(async () => {
  const found = await admin.keys(`${prefix}*`);
  if (found.length) await admin.del(...found);
  for (const c of connections) c.disconnect();
  admin.disconnect();
});

function echo(port: number, calling: string) {
  return dcmtk('echoscu', ['-v', '-aet', calling, '-aec', AE, '127.0.0.1', String(port)]);
}

/** An association opened on a raw socket and held open until the socket is destroyed. */
async function hold(port: number, calling: string): Promise<{ socket: Socket; accepted: boolean }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const first = new Promise<Buffer>((resolve) => socket.once('data', (c: Buffer) => resolve(c)));
  socket.write(associateRq(calling, AE, CR_CLASS));
  const pdu = await first;
  return { socket, accepted: pdu.readUInt8(0) === 0x02 };
}

async function gateway(
  nodeId: string,
  limits: { maxAssociations: number; maxAssociationsPerPeer: number },
  opts: {
    redisUrl?: string;
    ttlMs?: number;
    timeoutMs?: number;
    peers?: { aeTitle: string; maxAssociations?: number }[];
  } = {},
): Promise<{ dimse: TestDimse; slots: AssociationSlots; redis: Redis }> {
  const redis = await createIngestRedis(opts.redisUrl ?? REDIS_URL);
  connections.push(redis);
  const slots = new AssociationSlots({
    redis,
    prefix,
    nodeId,
    ttlMs: opts.ttlMs ?? 60_000,
    timeoutMs: opts.timeoutMs ?? 300,
  });
  const dimse = await startTestDimse({ limits, slots, ...(opts.peers ? { peers: opts.peers } : {}) });
  return { dimse, slots, redis };
}

const REJECTED_LIMIT = /Association Rejected[\s\S]*(Local Limit Exceeded|local-limit-exceeded)/i;

test('maxAssociations 2 over two gateways: the third association is rejected on either; a slot frees when one ends', async () => {
  const a = await gateway('gw-a', { maxAssociations: 2, maxAssociationsPerPeer: 8 });
  const b = await gateway('gw-b', { maxAssociations: 2, maxAssociationsPerPeer: 8 });
  try {
    const onA = await hold(a.dimse.server.port, 'MOD_ONE');
    const onB = await hold(b.dimse.server.port, 'MOD_TWO');
    assert.equal(onA.accepted, true, 'first association (gateway A) accepted');
    assert.equal(onB.accepted, true, 'second association (gateway B) accepted');
    assert.equal(await admin.zcard(keys.associationSlots(prefix, 'total')), 2);

    // Each gateway alone has one association, under its limit of 2: only the cluster count refuses.
    const thirdA = await echo(a.dimse.server.port, 'MOD_THREE');
    assert.match(thirdA.out, REJECTED_LIMIT, thirdA.out);
    const thirdB = await echo(b.dimse.server.port, 'MOD_THREE');
    assert.match(thirdB.out, REJECTED_LIMIT, thirdB.out);

    // The association on A ends: B accepts a new one (the entry was removed, not left to expire).
    onA.socket.destroy();
    let again = await echo(b.dimse.server.port, 'MOD_THREE');
    for (let i = 0; i < 50 && !/Echo Response \(Success\)/.test(again.out); i++) {
      await new Promise((r) => setTimeout(r, 50));
      again = await echo(b.dimse.server.port, 'MOD_THREE');
    }
    assert.match(again.out, /Echo Response \(Success\)/, again.out);
    onB.socket.destroy();
  } finally {
    await a.dimse.close();
    await b.dimse.close();
  }
});

test("a peer's own limit holds across gateways", async () => {
  const peers = [{ aeTitle: 'BUSY_MOD', maxAssociations: 1 }, { aeTitle: 'OTHER_MOD' }];
  const a = await gateway('gw-a2', { maxAssociations: 10, maxAssociationsPerPeer: 4 }, { peers });
  const b = await gateway('gw-b2', { maxAssociations: 10, maxAssociationsPerPeer: 4 }, { peers });
  try {
    const held = await hold(a.dimse.server.port, 'BUSY_MOD');
    assert.equal(held.accepted, true);
    const second = await echo(b.dimse.server.port, 'BUSY_MOD');
    assert.match(second.out, REJECTED_LIMIT, second.out);
    assert.match((await echo(b.dimse.server.port, 'OTHER_MOD')).out, /Echo Response \(Success\)/);
    held.socket.destroy();
  } finally {
    await a.dimse.close();
    await b.dimse.close();
  }
});

test("a crashed gateway's associations stop counting once their entries expire", async () => {
  const TTL = 1500;
  const a = await gateway('gw-a3', { maxAssociations: 1, maxAssociationsPerPeer: 8 }, { ttlMs: TTL });
  const b = await gateway('gw-b3', { maxAssociations: 1, maxAssociationsPerPeer: 8 }, { ttlMs: TTL });
  try {
    await admin.del(keys.associationSlots(prefix, 'total'));
    const held = await hold(a.dimse.server.port, 'MOD_ONE');
    assert.equal(held.accepted, true);
    // Gateway A "crashes": it stops refreshing and can no longer reach Redis to remove its entry.
    a.slots.close();
    a.redis.disconnect();
    const crashedAt = Date.now();
    held.socket.destroy();
    const blocked = await echo(b.dimse.server.port, 'MOD_TWO');
    assert.match(blocked.out, REJECTED_LIMIT, `still counted right after the crash:\n${blocked.out}`);
    let again = blocked;
    while (!/Echo Response \(Success\)/.test(again.out) && Date.now() - crashedAt < TTL + 3000) {
      await new Promise((r) => setTimeout(r, 100));
      again = await echo(b.dimse.server.port, 'MOD_TWO');
    }
    assert.match(again.out, /Echo Response \(Success\)/, again.out);
    const freedAfter = Date.now() - crashedAt;
    assert.ok(freedAfter >= TTL - 200, `freed ${freedAfter} ms after the crash: only by expiry (ttl ${TTL})`);
  } finally {
    await a.dimse.close();
    await b.dimse.close();
  }
});

test('live associations are refreshed past the entry ttl', async () => {
  const TTL = 1000;
  const a = await gateway('gw-a4', { maxAssociations: 1, maxAssociationsPerPeer: 8 }, { ttlMs: TTL });
  const b = await gateway('gw-b4', { maxAssociations: 1, maxAssociationsPerPeer: 8 }, { ttlMs: TTL });
  try {
    await admin.del(keys.associationSlots(prefix, 'total'));
    const held = await hold(a.dimse.server.port, 'MOD_ONE');
    assert.equal(held.accepted, true);
    await new Promise((r) => setTimeout(r, 3 * TTL));
    const blocked = await echo(b.dimse.server.port, 'MOD_TWO');
    assert.match(blocked.out, REJECTED_LIMIT, `a live association still counts:\n${blocked.out}`);
    held.socket.destroy();
  } finally {
    await a.dimse.close();
    await b.dimse.close();
  }
});

test('Redis not answering in time: the association is admitted on the local limits, within the bound', async () => {
  const redis = await startPrivateRedis();
  const pauser = new Redis(redis.url);
  const a = await gateway(
    'gw-a5',
    { maxAssociations: 1, maxAssociationsPerPeer: 8 },
    {
      redisUrl: redis.url,
      timeoutMs: 300,
    },
  );
  try {
    const before = (await associationLimitFallbacks.get()).values[0]?.value ?? 0;
    await pauser.call('CLIENT', 'PAUSE', '3000', 'ALL');
    const started = Date.now();
    const first = await hold(a.dimse.server.port, 'MOD_ONE');
    const tookMs = Date.now() - started;
    assert.equal(first.accepted, true, 'admitted on the local count while Redis is paused');
    assert.ok(tookMs < 1500, `answered in ${tookMs} ms (bound 300 ms + dcmtk-free raw socket)`);
    assert.equal((await associationLimitFallbacks.get()).values[0]?.value, before + 1);
    // The local limit (1) still holds for this process.
    const second = await echo(a.dimse.server.port, 'MOD_TWO');
    assert.match(second.out, REJECTED_LIMIT, second.out);
    first.socket.destroy();
  } finally {
    await a.dimse.close();
    pauser.disconnect();
    await redis.kill();
  }
});
