// Admin HTTP against real requests: failed logins are rate-limited per client address (429 with
// Retry-After, the right password included, other addresses unaffected); bull-board's own mutating routes
// (pause, clean, obliterate, edit) need role admin, while role operator may use the console's actions;
// GATEWAY_ADMIN_TOKEN works beside the configured tokens.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { createAdminApp, listen } from '../../../src/admin/app.ts';
import { loadConfig } from '../../../src/config/load.ts';
import type { GatewayConfig } from '../../../src/config/schema.ts';
import { destinationSummaries } from '../../../src/delivery/registry.ts';
import { audit } from '../../../src/pipeline/audit-trail.ts';
import { createQueues, type Queues } from '../../../src/pipeline/queues.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';

const prefix = `aigw-authh-${randomBytes(4).toString('hex')}`;
const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
const OPERATOR_TOKEN = 'operator-token-0123456789abcdef';
const ENV_TOKEN = 'env-token-0123456789abcdef';

let dir: string;
let redis: Redis;
let queues: Queues;
let index: StudyIndex;
const servers: Server[] = [];

async function configFile(): Promise<GatewayConfig> {
  const file = path.join(dir, 'gateway.yaml');
  await writeFile(
    file,
    [
      'http:',
      '  auth:',
      '    basic:',
      '      - { user: nurse, password: correct-horse, role: read }',
      '    bearer:',
      `      - { name: ops, token: ${ADMIN_TOKEN}, role: admin }`,
      `      - { name: night-shift, token: ${OPERATOR_TOKEN}, role: operator }`,
      'redis:',
      `  url: ${REDIS_URL}`,
      `  prefix: ${prefix}`,
      '  autoStart: false',
      `dataDir: ${dir}`,
    ].join('\n'),
  );
  return loadConfig({ configPath: file, env: { GATEWAY_ADMIN_TOKEN: ENV_TOKEN } });
}

async function serve(): Promise<number> {
  const cfg = await configFile();
  const app = createAdminApp({
    config: cfg,
    redis,
    index,
    queues,
    spoolDir: dir,
    store: new FilesystemObjectStore(dir),
    destinations: destinationSummaries(cfg),
  });
  const server = await listen(app, '127.0.0.1', 0);
  servers.push(server);
  return (server.address() as { port: number }).port;
}

/** One real HTTP request from a chosen loopback source address. */
function call(
  port: number,
  p: string,
  opts: { method?: string; authorization?: string; from?: string } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: p,
        method: opts.method ?? 'GET',
        localAddress: opts.from ?? '127.0.0.1',
        headers: opts.authorization ? { authorization: opts.authorization } : {},
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-authh-'));
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  index = new StudyIndex(redis, prefix);
  queues = createQueues(redis, await configFile());
  await audit.open({ dir: path.join(dir, 'audit'), retentionDays: 30, redis, prefix });
});

after(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
  await audit.close();
  await queues.close();
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

test('ten failed logins from one address within a minute: then 429 with Retry-After, for that address only', async () => {
  const port = await serve();
  for (let i = 0; i < 10; i++) {
    const r = await call(port, '/api/studies', { authorization: basic('nurse', `guess-${i}`) });
    assert.equal(r.status, 401, `attempt ${i + 1}`);
  }
  const limited = await call(port, '/api/studies', { authorization: basic('nurse', 'guess-10') });
  assert.equal(limited.status, 429);
  const retryAfter = Number(limited.headers['retry-after']);
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${limited.headers['retry-after']}`);
  // While limited, even the right password is not tried (else the guessing would go on).
  assert.equal(
    (await call(port, '/api/studies', { authorization: basic('nurse', 'correct-horse') })).status,
    429,
  );
  assert.equal((await call(port, '/api/studies', { authorization: `Bearer ${ADMIN_TOKEN}` })).status, 429);
  // Probes stay open, and another client address is not affected.
  assert.equal((await call(port, '/healthz')).status, 200);
  assert.equal(
    (await call(port, '/api/studies', { authorization: basic('nurse', 'wrong'), from: '127.0.0.2' })).status,
    401,
  );
  assert.equal(
    (await call(port, '/api/studies', { authorization: basic('nurse', 'correct-horse'), from: '127.0.0.2' }))
      .status,
    200,
  );
});

test("bull-board's mutating routes need role admin; role operator may still act through the console API", async () => {
  const port = await serve();
  const operator = `Bearer ${OPERATOR_TOKEN}`;
  const admin = `Bearer ${ADMIN_TOKEN}`;
  // Reading bull-board is fine for anyone authenticated.
  assert.equal((await call(port, '/admin/queues/api/queues', { authorization: operator })).status, 200);
  for (const [method, p] of [
    ['PUT', '/admin/queues/api/queues/delivery/pause'],
    ['PUT', '/admin/queues/api/queues/delivery/obliterate'],
    ['PUT', '/admin/queues/api/queues/delivery/clean/failed'],
    ['PATCH', '/admin/queues/api/queues/delivery/some-job/update-data'],
    ['POST', '/admin/queues/api/queues/delivery/add'],
  ] as const) {
    const r = await call(port, p, { method, authorization: operator });
    assert.equal(r.status, 403, `${method} ${p}`);
  }
  assert.equal(await queues.delivery.isPaused(), false);
  // The console's own action is the operator's to take.
  assert.equal(
    (await call(port, '/api/queues/delivery/pause', { method: 'POST', authorization: operator })).status,
    200,
  );
  assert.equal(await queues.delivery.isPaused(), true);
  // Role admin may use bull-board's actions.
  const resumed = await call(port, '/admin/queues/api/queues/delivery/resume', {
    method: 'PUT',
    authorization: admin,
  });
  assert.ok(resumed.status < 300, `admin resume: ${resumed.status}`);
  assert.equal(await queues.delivery.isPaused(), false);
  // Role read may not act at all.
  assert.equal(
    (
      await call(port, '/api/queues/delivery/pause', {
        method: 'POST',
        authorization: basic('nurse', 'correct-horse'),
      })
    ).status,
    403,
  );
});

test('GATEWAY_ADMIN_TOKEN authenticates beside the configured tokens', async () => {
  const port = await serve();
  for (const token of [ENV_TOKEN, ADMIN_TOKEN, OPERATOR_TOKEN])
    assert.equal((await call(port, '/api/whoami', { authorization: `Bearer ${token}` })).status, 200);
});
