// OpenAPI 3 description of the admin HTTP API, served at /api/openapi.json. Written by hand, kept honest
// by tests/integration/admin-api.test.ts, which checks that every route the app serves is listed here.

import { AUDIT_TYPES } from '../pipeline/audit-trail.ts';
import { STUDY_STATES } from '../pipeline/study-index.ts';
import { JOB_STATES, QUEUE_NAME_PATTERN, WORKLIST_SORTS } from './queries.ts';

type Schema = Record<string, unknown>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Schema, description = 'OK') => ({
  description,
  content: { 'application/json': { schema } },
});
const errors = {
  '400': json(ref('Error'), 'Invalid input, with the reason'),
  '401': json(ref('Error'), 'Credentials required'),
  '429': json(ref('Error'), 'Too many failed logins from this address; Retry-After says when to retry'),
};
const actionErrors = {
  ...errors,
  '403': json(ref('Error'), 'The caller has role read; actions need role operator or admin'),
  '404': json(ref('ActionResult'), 'Unknown study, queue or job'),
  '409': json(ref('ActionResult'), 'Not possible in the current state (reason in `error`)'),
};
const uidParam = {
  name: 'uid',
  in: 'path',
  required: true,
  schema: { type: 'string' },
  description: 'StudyInstanceUID',
};
const queueParam = {
  name: 'queue',
  in: 'path',
  required: true,
  schema: { type: 'string', pattern: QUEUE_NAME_PATTERN },
  description:
    'study-complete, delivery, inference.<model id>@<version> (one queue per model version), or inference ' +
    '(the single queue of older versions, drained by the workers)',
};
const jobParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
const q = (name: string, schema: Schema, description?: string) => ({
  name,
  in: 'query',
  schema,
  description,
});

function action(summary: string, parameters: Schema[], status = '200') {
  return {
    post: {
      summary,
      tags: ['actions'],
      parameters,
      responses: { [status]: json(ref('ActionResult')), ...actionErrors },
    },
  };
}

/**
 * STOW-RS ingest (mounted when stowrs.enabled): its own credentials (stowrs.auth), not the admin
 * console's. docs/conformance.md has the full behaviour.
 */
function stow(summary: string, parameters: unknown[] = []) {
  const dicomJson = (description: string) => ({
    description,
    content: { 'application/dicom+json': { schema: { type: 'object' } } },
  });
  // A request refused before any part is read: a plain JSON reason, no PS3.18 response.
  const refused = (description: string) => ({
    description,
    content: {
      'application/json': { schema: { type: 'object', properties: { error: { type: 'string' } } } },
    },
  });
  return {
    summary,
    tags: ['ingest'],
    description:
      'multipart/related; type="application/dicom" with Part-10 parts. The PS3.18 response lists ' +
      'ReferencedSOPSequence and FailedSOPSequence (with Failure Reason). Authentication against ' +
      'stowrs.auth (Bearer or Basic); without it, loopback clients only.',
    security: [{}, { basic: [] }, { bearer: [] }],
    parameters,
    requestBody: {
      required: true,
      content: { 'multipart/related': { schema: { type: 'string', format: 'binary' } } },
    },
    responses: {
      '200': dicomJson('Every instance stored'),
      '202': dicomJson('Some stored, some failed'),
      '400': refused('Malformed request or body, invalid study UID'),
      '401': refused('Missing or wrong credentials'),
      '403': refused('No credentials configured and the client is not on loopback'),
      '409': dicomJson('No instance stored'),
      '413': refused('Body over stowrs.maxRequestBytes'),
      '415': refused('Not multipart/related with application/dicom parts'),
      '503': refused('Spool disk below spool.minFreeBytes; Retry-After given'),
    },
  };
}

export const openapiDocument = {
  openapi: '3.0.3',
  info: {
    title: 'dicom-ai-gateway admin API',
    version: '1',
    description:
      'Status and control of the gateway. With http.auth configured every route except /healthz and ' +
      '/readyz needs basic or bearer credentials; POST routes need role operator or admin (bull-board ' +
      'actions under /admin/queues need role admin). Ten failed logins from one address within a ' +
      'minute: 429 with Retry-After. Every action is audited.',
  },
  components: {
    securitySchemes: {
      basic: { type: 'http', scheme: 'basic' },
      bearer: { type: 'http', scheme: 'bearer' },
    },
    schemas: {
      Error: { type: 'object', properties: { error: { type: 'string' } }, required: ['error'] },
      ActionResult: {
        type: 'object',
        properties: {
          action: { type: 'string' },
          target: { type: 'string' },
          actor: { type: 'string' },
          result: { type: 'string', enum: ['ok', 'refused', 'error'] },
          error: { type: 'string' },
        },
        additionalProperties: true,
      },
      Check: { type: 'object', properties: { ok: { type: 'boolean' }, reason: { type: 'string' } } },
      Stages: {
        type: 'object',
        description: 'Milliseconds per stage; null when the stage has not happened',
        properties: Object.fromEntries(
          ['receiving', 'waiting', 'inference', 'delivery', 'total'].map((k) => [
            k,
            { type: 'number', nullable: true },
          ]),
        ),
      },
      Study: {
        type: 'object',
        properties: {
          studyUid: { type: 'string' },
          state: {
            type: 'string',
            enum: STUDY_STATES,
          },
          callingAe: { type: 'string' },
          firstReceivedAt: { type: 'number' },
          lastReceivedAt: { type: 'number' },
          instanceCount: { type: 'integer' },
          run: { type: 'integer' },
          detail: { type: 'string' },
          failure: { type: 'string' },
          modalities: { type: 'array', items: { type: 'string' } },
          description: { type: 'string', description: 'Study Description' },
          seriesCount: { type: 'integer' },
          identity: {
            type: 'object',
            description:
              'Accession number, patient ID and name. Users without the PHI permission see each value as `•••` (masked: true); each view by a permitted user is audited (action view-phi).',
            properties: {
              accessionNumber: { type: 'string' },
              patientId: { type: 'string' },
              patientName: { type: 'string' },
              masked: { type: 'boolean' },
            },
          },
          findings: {
            type: 'array',
            description:
              "Per model, its current report's findings table as read back from the SR: rows with code, meaning, probability (0-1), presence (Present/Absent); the top finding; positive when a finding other than Normal is Present.",
            items: { type: 'object' },
          },
          reports: {
            type: 'array',
            description: "Each model's current report; it supersedes the report it names.",
            items: {
              type: 'object',
              properties: {
                model: { type: 'string' },
                sopInstanceUid: { type: 'string' },
                run: { type: 'integer' },
                supersedes: { type: 'string' },
              },
            },
          },
          completion: {
            type: 'object',
            description:
              'How the latest run found the study complete: `mpps` when every performed procedure step ended ' +
              'and every instance they announced had arrived; `counts` when every series was complete by the ' +
              "counts its images carry and a rule's completeWhen held; `quiet-period` when the idle timer decided " +
              '(`incomplete` with `missing` announced instances and `openSteps` steps still in progress).',
            properties: {
              run: { type: 'integer' },
              by: { type: 'string', enum: ['mpps', 'counts', 'quiet-period'] },
              incomplete: { type: 'boolean' },
              missing: { type: 'integer' },
              openSteps: { type: 'integer' },
              discontinued: { type: 'string', description: 'reason of a DISCONTINUED step' },
            },
          },
          models: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                model: { type: 'string' },
                run: { type: 'integer' },
                provider: { type: 'string' },
                srUid: { type: 'string' },
                inferenceMs: { type: 'number' },
              },
            },
          },
          stages: ref('Stages'),
        },
      },
      Job: {
        type: 'object',
        properties: {
          queue: { type: 'string' },
          id: { type: 'string' },
          name: { type: 'string' },
          state: { type: 'string' },
          studyUid: { type: 'string' },
          detail: { type: 'string' },
          attemptsMade: { type: 'integer' },
          failedReason: { type: 'string' },
          createdAt: { type: 'number' },
          processedOn: { type: 'number' },
          finishedOn: { type: 'number' },
        },
      },
      AuditRecord: {
        type: 'object',
        properties: {
          at: { type: 'string', format: 'date-time' },
          type: { type: 'string', enum: AUDIT_TYPES },
          studyUid: { type: 'string' },
          host: { type: 'string' },
          pid: { type: 'integer' },
          node: { type: 'string', description: 'Instance id of the writing process (host:pid:random)' },
        },
        additionalProperties: true,
      },
      Queue: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          paused: { type: 'boolean' },
          counts: { type: 'object', additionalProperties: { type: 'integer' } },
        },
      },
      Worker: {
        type: 'object',
        properties: {
          workerId: { type: 'string' },
          host: { type: 'string' },
          pid: { type: 'integer' },
          gpu: { type: 'string' },
          providers: { type: 'object', additionalProperties: { type: 'string' } },
          models: { type: 'array', items: { type: 'string' } },
          concurrency: { type: 'integer' },
          jobsProcessed: { type: 'integer' },
          imagesProcessed: { type: 'integer' },
          jobsPerMinute: { type: 'number' },
          startedAt: { type: 'number', description: 'Redis time (ms) of the first beat' },
          lastHeartbeat: { type: 'number', description: 'Redis time (ms) of the last beat' },
          heartbeatAgeMs: { type: 'number', description: 'Since the last beat, on Redis time' },
          alive: { type: 'boolean' },
        },
      },
      Destination: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          kind: { type: 'string' },
          isDefault: { type: 'boolean' },
          health: { type: 'string', enum: ['ok', 'failing', 'unknown'] },
          status: { type: 'object', additionalProperties: true },
          backlog: { type: 'integer' },
          failedJobs: { type: 'integer' },
        },
      },
      Association: {
        type: 'object',
        properties: {
          callingAe: { type: 'string' },
          calledAe: { type: 'string' },
          address: { type: 'string' },
          startedAt: { type: 'number' },
          durationMs: { type: 'number' },
          stored: { type: 'integer' },
          failed: { type: 'integer' },
          result: { type: 'string' },
          reason: { type: 'string' },
        },
      },
    },
  },
  security: [{}, { basic: [] }, { bearer: [] }],
  paths: {
    '/healthz': {
      get: {
        summary: 'The process is alive',
        tags: ['health'],
        security: [],
        responses: { '200': json({ type: 'object' }) },
      },
    },
    '/readyz': {
      get: {
        summary:
          'Ingest is possible: Redis answers, the spool is writable, free disk is above the watermark ' +
          '(no live inference worker is a warning, not a failure, except for the in-process worker of role all)',
        tags: ['health'],
        security: [],
        responses: {
          '200': json({
            type: 'object',
            properties: {
              status: { type: 'string' },
              checks: { type: 'object', additionalProperties: ref('Check') },
              warnings: {
                type: 'array',
                items: { type: 'string' },
                description:
                  'Risky settings chosen explicitly (e.g. promiscuous DIMSE with a PACS destination), ' +
                  '"workers: <why>" when no inference worker is alive, and "models: no worker for model ' +
                  '<id>@<version> (<n> job(s) waiting)" while jobs wait for a model no live worker has',
              },
              models: {
                type: 'array',
                description:
                  'Per model queue: pending jobs, live workers taking jobs with the model loaded, and ' +
                  '`problem` ("no worker for model …") while jobs wait without one. Not a readiness failure.',
                items: {
                  type: 'object',
                  properties: {
                    model: { type: 'string' },
                    queue: { type: 'string' },
                    pending: { type: 'integer' },
                    workers: { type: 'integer' },
                    problem: { type: 'string' },
                  },
                },
              },
              maintenance: {
                type: 'object',
                description:
                  'Gateway role: which gateway holds the maintenance lease (retention, reconcile, sweeps run ' +
                  'there); self is true on that gateway. { error } while Redis does not answer.',
                properties: {
                  holder: { type: ['string', 'null'], description: 'Instance id: host:pid:random' },
                  self: { type: 'boolean' },
                  expiresInMs: { type: ['number', 'null'] },
                },
              },
            },
          }),
          '503': json({ type: 'object' }, 'Not ready; each failing check says why'),
        },
      },
    },
    '/metrics': {
      get: {
        summary: 'Prometheus metrics',
        tags: ['health'],
        responses: {
          '200': {
            description: 'Prometheus text format',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
        },
      },
    },
    '/dicomweb/studies': { post: stow('Store instances (STOW-RS, PS3.18 10.5)') },
    '/dicomweb/studies/{uid}': {
      post: stow('Store instances of one study (STOW-RS); instances of other studies fail', [uidParam]),
    },
    '/api/openapi.json': {
      get: { summary: 'This document', tags: ['meta'], responses: { '200': json({ type: 'object' }) } },
    },
    '/api/whoami': {
      get: {
        summary: 'The caller and its role',
        tags: ['meta'],
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/overview': {
      get: {
        summary:
          'Queue counts, live workers, studies by state, and per model queue the jobs waiting and the live ' +
          'workers with the model (`problem`: "no worker for model …")',
        tags: ['status'],
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/studies': {
      get: {
        summary: 'Recent studies with state, models, and time per stage',
        tags: ['status'],
        parameters: [
          q('state', {
            type: 'string',
            enum: STUDY_STATES,
          }),
          q('q', { type: 'string' }, 'search in study UID, calling AE and model'),
          q('limit', { type: 'integer', minimum: 1, maximum: 1000, default: 200 }),
        ],
        responses: { '200': json({ type: 'array', items: ref('Study') }), ...errors },
      },
    },
    '/api/studies/{uid}': {
      get: {
        summary: 'One study, its jobs and its audit timeline',
        tags: ['status'],
        parameters: [uidParam],
        responses: {
          '200': json({
            allOf: [
              ref('Study'),
              {
                type: 'object',
                properties: {
                  series: {
                    type: 'array',
                    description:
                      'Per series (latest run): the body part routing used and where it came from, and per model (`id@version`) whether it took the series and each reason it did not',
                    items: { type: 'object' },
                  },
                  models: {
                    type: 'object',
                    description: 'Per model: run, images used, images skipped and why',
                    additionalProperties: { type: 'object' },
                  },
                  jobs: { type: 'array', items: ref('Job') },
                  events: { type: 'array', items: ref('AuditRecord') },
                  instances: {
                    type: 'array',
                    description:
                      'Per instance: series, SOP class, modality, series description, size, frames',
                    items: { type: 'object' },
                  },
                },
              },
            ],
          }),
          '404': json(ref('Error'), 'Unknown study'),
          ...errors,
        },
      },
    },
    '/api/worklist': {
      get: {
        summary:
          'The triage list: one page of studies, filtered and sorted on the server, with the values present for each filter',
        tags: ['status'],
        parameters: [
          q('state', { type: 'string', enum: STUDY_STATES }),
          q('modality', { type: 'string' }),
          q('ae', { type: 'string' }, 'calling AE title (empty: STOW-RS)'),
          q('model', { type: 'string' }, 'a model id: studies it reported on'),
          q('positive', { type: 'boolean' }, 'only studies with a positive finding'),
          q(
            'q',
            { type: 'string' },
            'search in study UID, AE, description, model, finding (and accession with PHI)',
          ),
          q('sort', { type: 'string', enum: WORKLIST_SORTS, default: 'received' }),
          q('dir', { type: 'string', enum: ['asc', 'desc'], default: 'desc' }),
          q('offset', { type: 'integer', minimum: 0, default: 0 }),
          q('limit', { type: 'integer', minimum: 1, maximum: 500, default: 50 }),
        ],
        responses: {
          '200': json({
            type: 'object',
            properties: {
              total: { type: 'integer' },
              offset: { type: 'integer' },
              limit: { type: 'integer' },
              rows: { type: 'array', items: ref('Study') },
              facets: { type: 'object' },
              tookMs: { type: 'number' },
            },
          }),
          ...errors,
        },
      },
    },
    '/api/studies/{uid}/instances/{sop}/thumbnail.png': {
      get: {
        summary:
          "A PNG of the instance's first frame, at most 256 pixels a side, windowed as a reader sees it; pixels only",
        tags: ['status'],
        parameters: [uidParam, { name: 'sop', in: 'path', required: true, schema: { type: 'string' } }],
        responses: {
          '200': {
            description: 'PNG',
            content: { 'image/png': { schema: { type: 'string', format: 'binary' } } },
          },
          '404': json(ref('Error'), 'Unknown instance'),
          '422': json(ref('Error'), 'The image cannot be decoded'),
          ...errors,
        },
      },
    },
    '/api/studies/{uid}/reprocess': action(
      'Run routing again: a new run that supersedes earlier results',
      [uidParam],
      '202',
    ),
    '/api/studies/{uid}/cancel': action('Remove the study’s pending jobs and mark it failed', [uidParam]),
    '/api/studies/{uid}/retry': action('Retry every failed job of the study', [uidParam]),
    '/api/routing/explain': {
      post: {
        summary:
          'Routing dry run: which models would run on a spooled study or one DICOM file, and why each series did not reach each model. Nothing is queued.',
        tags: ['status'],
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                properties: { studyUid: { type: 'string' } },
                required: ['studyUid'],
              },
            },
            'application/dicom': { schema: { type: 'string', format: 'binary' } },
          },
        },
        responses: {
          '200': json({
            type: 'object',
            properties: {
              jobs: { type: 'array', items: { type: 'object' } },
              series: { type: 'array', items: { type: 'object' } },
              noModel: { type: 'string' },
            },
          }),
          ...actionErrors,
        },
      },
    },
    '/api/queues': {
      get: {
        summary: 'Each queue: job counts and whether it is paused',
        tags: ['status'],
        responses: { '200': json({ type: 'array', items: ref('Queue') }), ...errors },
      },
    },
    '/api/queues/{queue}/jobs': {
      get: {
        summary: 'Jobs of a queue in one state',
        tags: ['status'],
        parameters: [
          queueParam,
          q('state', {
            type: 'string',
            enum: JOB_STATES,
            default: 'failed',
          }),
          q('limit', { type: 'integer', minimum: 1, maximum: 1000, default: 100 }),
        ],
        responses: {
          '200': json({ type: 'array', items: ref('Job') }),
          '404': json(ref('Error')),
          ...errors,
        },
      },
    },
    '/api/queues/{queue}/pause': action('Pause a queue (running jobs finish)', [queueParam]),
    '/api/queues/{queue}/resume': action('Resume a queue', [queueParam]),
    '/api/queues/{queue}/jobs/{id}/retry': action('Retry a failed job', [queueParam, jobParam]),
    '/api/queues/{queue}/jobs/{id}/cancel': action('Remove a job that is not running', [
      queueParam,
      jobParam,
    ]),
    '/api/workers': {
      get: {
        summary: 'Inference workers from their heartbeats',
        tags: ['status'],
        responses: { '200': json({ type: 'array', items: ref('Worker') }), ...errors },
      },
    },
    '/api/destinations': {
      get: {
        summary: 'Destinations: health, backlog, last error',
        tags: ['status'],
        responses: { '200': json({ type: 'array', items: ref('Destination') }), ...errors },
      },
    },
    '/api/turnaround': {
      get: {
        summary:
          'Receive → SR delivered over the last hour: p50/p95 per priority lane and per lane and model, and each rule SLO (breached when its p95 is over target)',
        tags: ['status'],
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/trends': {
      get: {
        summary:
          "The console's trend charts over the last hour (1-minute points) or day (10-minute points): instances and studies per minute, receive → SR delivered p50/p95 per priority lane and per model, queue depths, final failures by stage and by calling AE, reports and positive-finding rate per model. `t` holds each point's start (seconds since 1970); every series has one value per point (null: no data)",
        tags: ['status'],
        parameters: [q('range', { type: 'string', enum: ['hour', 'day'], default: 'hour' })],
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/associations': {
      get: {
        summary: 'Recent DIMSE associations, newest first',
        tags: ['status'],
        parameters: [q('limit', { type: 'integer', minimum: 1, maximum: 1000, default: 100 })],
        responses: { '200': json({ type: 'array', items: ref('Association') }), ...errors },
      },
    },
    '/api/audit': {
      get: {
        summary: 'Audit trail export',
        tags: ['audit'],
        parameters: [
          q('studyUid', { type: 'string' }),
          q('type', {
            type: 'string',
            enum: AUDIT_TYPES,
          }),
          q('from', { type: 'string' }, 'ISO 8601 date or epoch milliseconds, inclusive'),
          q('to', { type: 'string' }, 'ISO 8601 date or epoch milliseconds, inclusive'),
          q('format', { type: 'string', enum: ['json', 'csv'], default: 'json' }),
          q('limit', { type: 'integer', minimum: 1, maximum: 100000, default: 10000 }),
        ],
        responses: {
          '200': {
            description:
              'Records, oldest first. Header X-Audit-Source: cluster (the Redis stream of every gateway and ' +
              "worker), cluster+local (the stream, and this node's segments for what is older than the stream), " +
              "or local (this node's segments only: no stream, or Redis did not answer).",
            headers: {
              'X-Audit-Source': { schema: { type: 'string', enum: ['cluster', 'cluster+local', 'local'] } },
            },
            content: {
              'application/json': { schema: { type: 'array', items: ref('AuditRecord') } },
              'text/csv': { schema: { type: 'string' } },
            },
          },
          ...errors,
        },
      },
    },
  },
} as const;
