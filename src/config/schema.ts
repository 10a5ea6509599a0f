import { z } from 'zod';

const aeTitle = z
  .string()
  .min(1)
  .max(16)
  .regex(/^[\x20-\x5b\x5d-\x7e]+$/, 'AE titles are 1-16 printable ASCII characters without backslash')
  .refine((s) => s.trim().length > 0, 'AE title must not be blank');

const port = z.coerce.number().int().min(0).max(65535);

const matchValue = z.union([z.string(), z.array(z.string()).min(1)]);

export const routingRuleSchema = z
  .object({
    name: z.string().min(1),
    /** Attribute matches; all must hold. Values are case-insensitive; '*' globs are allowed. */
    match: z
      .object({
        Modality: matchValue.optional(),
        BodyPartExamined: matchValue.optional(),
        SOPClassUID: matchValue.optional(),
        callingAE: matchValue.optional(),
        SeriesDescription: matchValue.optional(),
        StudyDescription: matchValue.optional(),
      })
      .strict()
      .default({}),
    models: z.array(z.string().min(1)).min(1),
    /** Destination names; empty means the default destination. */
    destinations: z.array(z.string().min(1)).default([]),
    /** BullMQ priority: 1 is the highest. */
    priority: z.number().int().min(1).max(2_097_152).default(10),
  })
  .strict();

const destinationSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('dicomweb'),
      url: z.url(),
      timeoutMs: z.number().int().positive().default(30_000),
      headers: z.record(z.string(), z.string()).default({}),
    })
    .strict(),
  z.object({ kind: z.literal('folder'), path: z.string().min(1) }).strict(),
]);

export const configSchema = z
  .object({
    dimse: z
      .object({
        aeTitle: aeTitle.default('AIGATEWAY'),
        host: z.string().default('0.0.0.0'),
        port: port.default(11112),
        maxPduLength: z.number().int().min(4096).max(4_194_304).default(262_144),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: port.default(8080),
      })
      .strict()
      .prefault({}),
    redis: z
      .object({
        url: z
          .string()
          .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
          .default('redis://127.0.0.1:6379'),
        /** Key prefix for every queue and index key, so several gateways can share one Redis. */
        prefix: z.string().min(1).default('aigw'),
        /** Start a private redis-server when none answers at the URL (zero-config runs only). */
        autoStart: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    dataDir: z.string().min(1).default('./data'),
    modelsDir: z.string().min(1).default('./models'),
    study: z
      .object({
        quietPeriodMs: z.number().int().min(100).max(3_600_000).default(10_000),
      })
      .strict()
      .prefault({}),
    worker: z
      .object({
        concurrency: z.number().int().min(1).max(64).default(2),
        executionProviders: z
          .array(z.enum(['cuda', 'cpu']))
          .min(1)
          .default(['cuda', 'cpu']),
        deviceId: z.number().int().min(0).default(0),
        /** Refuse to start unless the first execution provider binds. */
        strict: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    destinations: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/), destinationSchema).default({}),
    /** Destination used by rules that name none. Unset: the built-in 'local-folder' destination. */
    defaultDestination: z.string().optional(),
    delivery: z
      .object({
        attempts: z.number().int().min(1).default(30),
        backoffMs: z.number().int().min(10).default(5_000),
      })
      .strict()
      .prefault({}),
    routing: z
      .object({
        rules: z.array(routingRuleSchema).default([]),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type GatewayConfig = z.infer<typeof configSchema>;
export type RoutingRule = z.infer<typeof routingRuleSchema>;
export type DestinationConfig = z.infer<typeof destinationSchema>;
