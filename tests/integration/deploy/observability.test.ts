// The files ops teams load, checked against the code so they cannot drift from it: the Prometheus alert
// rules pass `promtool check rules` (Debian's prometheus package) and their own `promtool test rules` (each
// alert fires on the series meant to trigger it, and only then); the Grafana dashboard matches a schema of
// the fields it uses, and its PromQL parses (promtool, as recording rules); and every metric named in the
// dashboard's and the alerts' PromQL is in the /metrics of a real gateway process, where the alerts' gauges
// carry values.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { z } from 'zod';
import { makeModelsDir, REPO, startGateway, type GatewayProcess } from '../../helpers/gateway.ts';

const run = promisify(execFile);
const ALERTS = path.join(REPO, 'deploy/prometheus/alerts.yml');
const ALERT_TESTS = path.join(REPO, 'deploy/prometheus/alerts.test.yml');
const DASHBOARD = path.join(REPO, 'deploy/grafana/dicom-ai-gateway.json');
const PROMTOOL = '/usr/bin/promtool';
const AUTH = { user: 'ops', password: 'ops-password-1' };

// The Grafana dashboard fields this dashboard uses (JSON model, schemaVersion 39).
const datasource = z.object({ type: z.literal('prometheus'), uid: z.literal('${datasource}') }).strict();
const target = z
  .object({
    refId: z.string().regex(/^[A-Z]$/),
    datasource,
    expr: z.string().min(1),
    legendFormat: z.string(),
  })
  .strict();
const gridPos = z.object({
  x: z.number().int().min(0).max(23),
  y: z.number().int().min(0),
  w: z.number().int().min(1).max(24),
  h: z.number().int().min(1),
});
const timeseries = z
  .object({
    id: z.number().int().positive(),
    type: z.literal('timeseries'),
    title: z.string().min(1),
    description: z.string(),
    datasource,
    gridPos,
    fieldConfig: z.object({
      defaults: z.object({
        unit: z.enum(['short', 's', 'bytes', 'percentunit']),
        min: z.number().optional(),
      }),
      overrides: z.array(z.unknown()),
    }),
    options: z.object({
      legend: z.object({
        displayMode: z.enum(['list', 'table', 'hidden']),
        placement: z.enum(['bottom', 'right']),
        showLegend: z.boolean(),
      }),
      tooltip: z.object({ mode: z.enum(['single', 'multi', 'none']), sort: z.enum(['none', 'asc', 'desc']) }),
    }),
    targets: z.array(target).min(1),
  })
  .strict();
const row = z
  .object({
    id: z.number().int().positive(),
    type: z.literal('row'),
    title: z.string().min(1),
    collapsed: z.literal(false),
    gridPos,
    panels: z.array(z.never()),
  })
  .strict();
const dashboardSchema = z
  .object({
    title: z.string().min(1),
    uid: z.string().regex(/^[A-Za-z0-9_-]{1,40}$/),
    description: z.string(),
    tags: z.array(z.string()),
    timezone: z.enum(['browser', 'utc', '']),
    schemaVersion: z.number().int().min(36),
    version: z.number().int(),
    editable: z.boolean(),
    refresh: z.string().regex(/^\d+[smh]$/),
    time: z.object({ from: z.string(), to: z.string() }).strict(),
    templating: z
      .object({
        list: z.array(
          z.discriminatedUnion('type', [
            z.object({
              name: z.literal('datasource'),
              type: z.literal('datasource'),
              query: z.literal('prometheus'),
            }),
            z.object({
              name: z.string().regex(/^\w+$/),
              type: z.literal('query'),
              datasource,
              query: z.object({ query: z.string(), refId: z.string() }),
              definition: z.string(),
            }),
          ]),
        ),
      })
      .strict(),
    annotations: z.object({ list: z.array(z.unknown()) }),
    panels: z.array(z.union([timeseries, row])).min(1),
  })
  .strict();
type Dashboard = z.infer<typeof dashboardSchema>;

const alertsSchema = z.object({
  groups: z.array(
    z.object({
      name: z.string(),
      rules: z.array(
        z.object({
          alert: z.string().regex(/^Aigw[A-Za-z0-9]+$/),
          expr: z.string(),
          for: z.string(),
          labels: z.object({ severity: z.enum(['warning', 'critical']) }),
          annotations: z.object({ summary: z.string(), description: z.string() }),
        }),
      ),
    }),
  ),
});

let gateway: GatewayProcess;
let dashboard: Dashboard;
let alerts: z.infer<typeof alertsSchema>;

before(async () => {
  const parsed = dashboardSchema.safeParse(JSON.parse(await readFile(DASHBOARD, 'utf8')));
  assert.ok(parsed.success, `dashboard schema: ${parsed.error?.message}`);
  dashboard = parsed.data;
  alerts = alertsSchema.parse(parse(await readFile(ALERTS, 'utf8')));
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['uniformity']),
    config: {
      http: { auth: { basic: [{ user: AUTH.user, password: AUTH.password, role: 'read' }] } },
      spool: { minFreeBytes: 123_456_789 },
    },
  });
});

after(async () => {
  await gateway?.dispose();
});

/** The dashboard's PromQL with Grafana's variables as Prometheus would see them after substitution. */
function dashboardExprs(): { panel: string; expr: string }[] {
  return dashboard.panels.flatMap((p) =>
    p.type === 'timeseries'
      ? p.targets.map((t) => ({
          panel: p.title,
          expr: t.expr.replaceAll('$__rate_interval', '2m').replaceAll('$job', '.*'),
        }))
      : [],
  );
}

function alertExprs(): { alert: string; expr: string }[] {
  return alerts.groups.flatMap((g) => g.rules.map((r) => ({ alert: r.alert, expr: r.expr })));
}

/** Metric names in PromQL: identifiers starting with the gateway's prefix. */
const metricNames = (expr: string) => [...expr.matchAll(/\baigw_[A-Za-z0-9_:]*/g)].map((m) => m[0]);

test('alerts: promtool check rules and promtool test rules pass; each watched condition has its alert', async () => {
  const check = await run(PROMTOOL, ['check', 'rules', ALERTS]);
  assert.match(check.stdout, /SUCCESS: 6 rules found/);
  const unit = await run(PROMTOOL, ['test', 'rules', ALERT_TESTS], { cwd: path.dirname(ALERT_TESTS) });
  assert.match(unit.stdout, /SUCCESS/);
  const watched = new Map(alertExprs().map((a) => [a.alert, metricNames(a.expr)]));
  assert.deepEqual(watched.get('AigwNoWorkerAlive'), ['aigw_workers_alive']);
  assert.deepEqual(watched.get('AigwNoWorkerForModel'), [
    'aigw_inference_model_jobs_pending',
    'aigw_inference_model_workers',
  ]);
  assert.deepEqual(watched.get('AigwDestinationBreakerOpen'), ['aigw_destination_breaker_open']);
  assert.deepEqual(watched.get('AigwTurnaroundP95OverTarget'), [
    'aigw_slo_p95_seconds',
    'aigw_slo_target_seconds',
  ]);
  assert.deepEqual(watched.get('AigwSpoolDiskNearWatermark'), [
    'aigw_spool_free_bytes',
    'aigw_spool_min_free_bytes',
  ]);
});

test('promtool rejects a broken rule file (the check can fail)', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-rules-'));
  try {
    const bad = path.join(dir, 'bad.yml');
    await writeFile(
      bad,
      'groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: max(aigw_workers_alive ==\n',
    );
    await assert.rejects(run(PROMTOOL, ['check', 'rules', bad]));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('dashboard: schema, unique ids, grid inside 24 columns, and every PromQL expression parses', async () => {
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of dashboard.panels) assert.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the grid`);
  const exprs = dashboardExprs();
  assert.ok(exprs.length >= 15, `${exprs.length} expressions`);
  // Every panel filters on the job variable, so the dashboard's picker means something.
  for (const p of dashboard.panels)
    if (p.type === 'timeseries') for (const t of p.targets) assert.match(t.expr, /job=~"\$job"/, p.title);
  // promtool parses PromQL in recording rules: one per expression.
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-dashboard-'));
  try {
    const rules = {
      groups: [
        {
          name: 'dashboard',
          rules: exprs.map((e, i) => ({ record: `aigw_dashboard:expr${i}`, expr: e.expr })),
        },
      ],
    };
    const file = path.join(dir, 'dashboard-rules.json');
    await writeFile(file, JSON.stringify(rules));
    const check = await run(PROMTOOL, ['check', 'rules', file]);
    assert.match(check.stdout, new RegExp(`SUCCESS: ${exprs.length} rules found`));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("every metric in the dashboard's and the alerts' PromQL is in a running gateway's /metrics", async () => {
  const res = await fetch(`http://127.0.0.1:${gateway.httpPort}/metrics`, {
    headers: { authorization: `Basic ${Buffer.from(`${AUTH.user}:${AUTH.password}`).toString('base64')}` },
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  // Names from the TYPE lines (every registered metric has one, with or without samples yet); a
  // histogram's series are its _bucket, _sum and _count.
  const exposed = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exposed.add(name!);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exposed.add(`${name}${s}`);
  }
  assert.ok(exposed.size > 20, `${exposed.size} metrics`);
  const used = [
    ...dashboardExprs().map((e) => ({ where: `dashboard panel "${e.panel}"`, expr: e.expr })),
    ...alertExprs().map((a) => ({ where: `alert ${a.alert}`, expr: a.expr })),
  ];
  const missing: string[] = [];
  for (const u of used) {
    const names = metricNames(u.expr);
    assert.ok(names.length > 0, `${u.where} names a gateway metric`);
    for (const n of names) if (!exposed.has(n)) missing.push(`${u.where}: ${n}`);
  }
  assert.deepEqual(missing, []);

  // The alerts' gauges have values in a real gateway (read from Redis and the spool's disk at scrape time).
  assert.match(text, /^aigw_workers_alive \d+$/m);
  assert.match(text, /^aigw_spool_min_free_bytes 123456789$/m);
  const free = Number(/^aigw_spool_free_bytes (\d+)$/m.exec(text)?.[1]);
  assert.ok(free > 0, `spool free ${free}`);
  // The built-in folder destination, breaker closed.
  assert.match(text, /^aigw_destination_breaker_open\{destination="[^"]+"\} 0$/m);
});
