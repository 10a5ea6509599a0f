// The Kubernetes manifests under deploy/kubernetes: every core object validates against the Kubernetes
// OpenAPI schemas (npm kubernetes-models, offline), the KEDA ScaledObject against a schema of the fields it
// uses, and the objects fit together and with the gateway: the settings they pass parse as a configuration,
// every Secret/ConfigMap/claim/port they name exists, probes hit /healthz and /readyz, workers ask for a GPU,
// the autoscaler reads the metric the gateway exports. kubernetes-models ignores unknown fields, so the
// fields that matter are also checked by path (a misspelt livenessProbe fails here).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ENV_ADMIN_TOKEN, ENV_DICOMWEB_URL, ENV_SETTINGS, loadConfig } from '../../../src/config/load.ts';
import { queueDepth } from '../../../src/observability/metrics.ts';
import { QUEUE, inferenceQueueName } from '../../../src/pipeline/jobs.ts';
import { REPO } from '../../helpers/gateway.ts';

const DIR = path.join(REPO, 'deploy/kubernetes');

type Obj = { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: unknown };

function loadAll(): { file: string; obj: Obj }[] {
  const out: { file: string; obj: Obj }[] = [];
  for (const file of readdirSync(DIR).filter((f) => f.endsWith('.yaml'))) {
    for (const doc of parseAllDocuments(readFileSync(path.join(DIR, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      out.push({ file, obj: doc.toJS() as Obj });
    }
  }
  return out;
}

const MODELS: Record<string, (o: Obj) => { validate(): void }> = {
  'v1/ConfigMap': (o) => new ConfigMap(o as never),
  'v1/Secret': (o) => new Secret(o as never),
  'v1/Service': (o) => new Service(o as never),
  'v1/PersistentVolumeClaim': (o) => new PersistentVolumeClaim(o as never),
  'apps/v1/Deployment': (o) => new Deployment(o as never),
  'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o as never),
};

const labels = z.record(z.string(), z.string());
const scaledObjectSchema = z
  .object({
    apiVersion: z.literal('keda.sh/v1alpha1'),
    kind: z.literal('ScaledObject'),
    metadata: z.object({ name: z.string().min(1), labels: labels.optional() }).strict(),
    spec: z
      .object({
        scaleTargetRef: z.object({ name: z.string().min(1), kind: z.string().optional() }).strict(),
        minReplicaCount: z.number().int().min(0),
        maxReplicaCount: z.number().int().min(1),
        pollingInterval: z.number().int().min(1).optional(),
        cooldownPeriod: z.number().int().min(0).optional(),
        triggers: z
          .array(
            z
              .object({
                type: z.literal('prometheus'),
                metadata: z
                  .object({
                    serverAddress: z.url(),
                    query: z.string().min(1),
                    threshold: z.string().regex(/^\d+(\.\d+)?$/),
                    activationThreshold: z
                      .string()
                      .regex(/^\d+(\.\d+)?$/)
                      .optional(),
                  })
                  .strict(),
              })
              .strict(),
          )
          .min(1),
      })
      .strict()
      .refine((s) => s.minReplicaCount <= s.maxReplicaCount, 'minReplicaCount above maxReplicaCount'),
  })
  .strict();

const all = loadAll();
const byKind = (kind: string) => all.filter((d) => d.obj.kind === kind).map((d) => d.obj);
const named = (kind: string, name: string): unknown => byKind(kind).find((o) => o.metadata.name === name);
const deployment = (name: string) => {
  const d = named('Deployment', name) as IDeployment | undefined;
  assert.ok(d, `Deployment ${name}`);
  return d;
};

test('every object validates: core objects against the Kubernetes schemas, KEDA against its schema', () => {
  const kinds = all.map((d) => d.obj.kind).sort();
  assert.deepEqual(kinds, [
    'ConfigMap',
    'Deployment',
    'Deployment',
    'PersistentVolumeClaim',
    'PodDisruptionBudget',
    'PodDisruptionBudget',
    'ScaledObject',
    'Secret',
    'Service',
  ]);
  for (const { file, obj } of all) {
    if (obj.kind === 'ScaledObject') {
      const r = scaledObjectSchema.safeParse(obj);
      assert.ok(r.success, `${file}: ${r.error?.message}`);
      continue;
    }
    const model = MODELS[`${obj.apiVersion}/${obj.kind}`];
    assert.ok(model, `${file}: no schema for ${obj.apiVersion} ${obj.kind}`);
    assert.doesNotThrow(() => model(obj).validate(), `${file}: ${obj.kind} ${obj.metadata.name}`);
  }
  // The validation is real: a wrong type is refused.
  const broken = structuredClone(deployment('aigw-gateway'));
  broken.spec!.template.spec!.containers[0]!.ports![0]!.containerPort = '11112' as never;
  assert.throws(() => new Deployment(broken).validate(), /containerPort must be integer/);
});

test('the settings the pods get parse as a gateway configuration, secrets from the Secret', () => {
  const configMap = named('ConfigMap', 'aigw-config') as { data: Record<string, string> };
  const secret = named('Secret', 'aigw-secrets') as { stringData: Record<string, string> };
  const known = new Set([...Object.keys(ENV_SETTINGS), ENV_ADMIN_TOKEN, ENV_DICOMWEB_URL]);
  for (const name of ['aigw-gateway', 'aigw-worker']) {
    const container = deployment(name).spec!.template.spec!.containers[0]!;
    assert.deepEqual(container.envFrom, [{ configMapRef: { name: 'aigw-config' } }]);
    const env: Record<string, string> = { ...configMap.data };
    for (const e of container.env ?? []) {
      assert.ok(known.has(e.name), `${name}: ${e.name} is not a setting the gateway reads`);
      if (e.value !== undefined) env[e.name] = e.value;
      else {
        const ref = e.valueFrom?.secretKeyRef;
        assert.ok(ref, `${name}: ${e.name} comes from neither a value nor a Secret`);
        assert.equal(ref.name, 'aigw-secrets');
        assert.ok(ref.key in secret.stringData, `${name}: Secret key ${ref.key}`);
        env[e.name] = secret.stringData[ref.key]!;
      }
    }
    for (const k of Object.keys(configMap.data)) assert.ok(known.has(k), `ConfigMap: ${k} is not a setting`);
    const config = loadConfig({ env });
    assert.equal(config.redis.sentinels?.length, 3, `${name}: Redis through three sentinels`);
    assert.equal(config.redis.name, 'mymaster');
    assert.ok(config.redis.password, `${name}: the Redis password from the Secret`);
    assert.ok(config.http.auth?.bearer.length, `${name}: bound beyond loopback, with a bearer token`);
    assert.equal(config.dataDir, '/data');
    // The data volume is the shared claim, mounted where the settings say.
    const spec = deployment(name).spec!.template.spec!;
    assert.deepEqual(container.volumeMounts, [{ name: 'data', mountPath: '/data' }]);
    assert.equal(spec.volumes?.[0]?.persistentVolumeClaim?.claimName, 'aigw-data');
  }
  const claim = named('PersistentVolumeClaim', 'aigw-data') as { spec: { accessModes: string[] } };
  assert.deepEqual(claim.spec.accessModes, ['ReadWriteMany'], 'gateways and workers share the spool');
});

test('probes, ports, the Service, the GPU, the disruption budgets and the autoscaler fit together', () => {
  const gw = deployment('aigw-gateway').spec!.template;
  const gwc = gw.spec!.containers[0]!;
  assert.deepEqual(gwc.args, ['gateway']);
  assert.deepEqual(
    gwc.ports?.map((p) => [p.name, p.containerPort]),
    [
      ['dicom', 11112],
      ['http', 8080],
    ],
  );
  assert.equal(gwc.livenessProbe?.httpGet?.path, '/healthz');
  assert.equal(gwc.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(gwc.livenessProbe?.httpGet?.port, 'http');
  const svc = named('Service', 'aigw-gateway') as {
    spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string }[] };
  };
  assert.deepEqual(svc.spec.selector, gw.metadata!.labels);
  assert.deepEqual(
    svc.spec.ports.map((p) => [p.port, p.targetPort]),
    [
      [11112, 'dicom'],
      [8080, 'http'],
    ],
  );

  const wk = deployment('aigw-worker').spec!.template;
  const wkc = wk.spec!.containers[0]!;
  assert.deepEqual(wkc.args, ['worker']);
  assert.equal(String(wkc.resources?.limits?.['nvidia.com/gpu']), '1');
  const httpPort = wkc.env?.find((e) => e.name === 'GATEWAY_WORKER_HTTP_PORT')?.value;
  assert.equal(Number(httpPort), wkc.ports?.find((p) => p.name === 'http')?.containerPort);
  assert.equal(wkc.livenessProbe?.httpGet?.path, '/healthz');
  assert.equal(wkc.readinessProbe?.httpGet?.path, '/readyz');

  for (const [name, labelsOf] of [
    ['aigw-gateway', gw.metadata!.labels],
    ['aigw-worker', wk.metadata!.labels],
  ] as const) {
    const pdb = named('PodDisruptionBudget', name) as { spec: { selector: { matchLabels: object } } };
    assert.deepEqual(pdb.spec.selector.matchLabels, labelsOf, `PodDisruptionBudget ${name} selects its pods`);
  }

  const scaled = scaledObjectSchema.parse(byKind('ScaledObject')[0]);
  assert.equal(scaled.spec.scaleTargetRef.name, 'aigw-worker');
  const query = scaled.spec.triggers[0]!.metadata.query;
  // The metric and the states it sums are the ones the gateway exports (inference jobs all carry a
  // priority, so they wait in "prioritized", never in BullMQ's wait list), over every inference queue:
  // one per model version (inference.<id>@<version>) and the legacy "inference"; max per queue over the
  // gateways (which all read the same Redis), summed over the queues.
  const metricName = (queueDepth as unknown as { name: string }).name;
  assert.equal(
    query,
    `sum(max by (queue, state) (${metricName}{queue=~"inference.*",state=~"waiting|prioritized"}))`,
  );
  const pattern = new RegExp(`^(?:${/queue=~"([^"]+)"/.exec(query)![1]!})$`);
  for (const name of [QUEUE.inference, inferenceQueueName('squeezenet1_1-cxr-pneumonia', '1.0.0')])
    assert.ok(pattern.test(name), `${name} is counted`);
  for (const name of [QUEUE.delivery, QUEUE.studyComplete]) assert.ok(!pattern.test(name), `${name} is not`);
});
