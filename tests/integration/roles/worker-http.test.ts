import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { keys, type WorkerHeartbeat } from '../../../src/pipeline/keys.ts';
import { makeModelsDir, REDIS_URL, startGateway } from '../../helpers/gateway.ts';

// A split-out worker process (CLI role `worker`, worker.httpPort set) answers probes and serves its own
// metrics, and nothing else; bound beyond loopback it needs auth like the admin console.

test('a worker process serves /healthz, /readyz and /metrics, and no admin API', async () => {
  const modelsDir = await makeModelsDir(['uniformity']);
  const worker = await startGateway({ modelsDir, role: 'worker' });
  try {
    const base = `http://127.0.0.1:${worker.httpPort}`;
    const health = (await (await fetch(`${base}/healthz`)).json()) as { role: string };
    assert.equal(health.role, 'worker');
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    const body = (await ready.json()) as { checks: Record<string, { ok: boolean; reason: string }> };
    assert.deepEqual(Object.keys(body.checks).sort(), ['models', 'redis', 'storage', 'worker']);
    assert.match(body.checks.models!.reason, /1 model\(s\) loaded/);
    assert.deepEqual(body.checks.storage, { ok: true, reason: 'storage reachable' });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /aigw_execution_provider\{model="image-uniformity",provider="cpu"\} 1/);
    assert.match(metrics, /aigw_inference_seconds/);
    assert.equal((await fetch(`${base}/api/studies`)).status, 404);
    // Its heartbeat is what the gateway's console and /readyz read.
    const redis = new Redis(REDIS_URL);
    try {
      const beats = Object.values(await redis.hgetall(keys.workers(worker.prefix))).map(
        (v) => JSON.parse(v) as WorkerHeartbeat,
      );
      assert.equal(beats.length, 1);
      assert.deepEqual(beats[0]!.providers, { 'image-uniformity': 'cpu' });
      // Its models as <id>@<version>, and that it takes jobs (its storage answers).
      assert.deepEqual(beats[0]!.models, ['image-uniformity@1.0.0']);
      assert.equal(beats[0]!.accepting, true);
    } finally {
      redis.disconnect();
    }
  } finally {
    await worker.dispose();
    await rm(modelsDir, { recursive: true, force: true });
  }
});

test('a worker bound beyond loopback without auth refuses to start', async () => {
  const modelsDir = await makeModelsDir(['uniformity']);
  try {
    await assert.rejects(
      startGateway({ modelsDir, role: 'worker', config: { http: { host: '0.0.0.0', port: 8080 } } }),
      /not loopback: configure http\.auth/,
    );
  } finally {
    await rm(modelsDir, { recursive: true, force: true });
  }
});
