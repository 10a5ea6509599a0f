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

/** How a DICOMweb destination authenticates; OAuth2 tokens are cached until shortly before they expire. */
const dicomwebAuthSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('none') }).strict(),
  z.object({ type: z.literal('basic'), user: z.string().min(1), password: z.string() }).strict(),
  z.object({ type: z.literal('bearer'), token: z.string().min(1) }).strict(),
  z
    .object({
      type: z.literal('oauth2'),
      tokenUrl: z.url(),
      clientId: z.string().min(1),
      clientSecret: z.string().min(1),
      scope: z.string().optional(),
    })
    .strict(),
]);

const destinationSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('dicomweb'),
      url: z.url(),
      timeoutMs: z.number().int().positive().default(30_000),
      headers: z.record(z.string(), z.string()).default({}),
      /** Unset: no Authorization header (other than one given in headers). */
      auth: dicomwebAuthSchema.optional(),
      /** PEM file of the CA(s) that sign the server's certificate (private PKI); relative to the config file. */
      caFile: z.string().min(1).optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('dimse'),
      host: z.string().min(1),
      port: port.refine((p) => p > 0, 'port must be 1-65535'),
      /** Called AE title (the PACS). */
      aeTitle,
      /** Calling AE title; defaults to dimse.aeTitle. */
      callingAeTitle: aeTitle.optional(),
      timeoutMs: z.number().int().positive().default(30_000),
      /** DICOM TLS; PEM files relative to the config file. */
      tls: z
        .object({
          caFile: z.string().min(1).optional(),
          certFile: z.string().min(1).optional(),
          keyFile: z.string().min(1).optional(),
          rejectUnauthorized: z.boolean().default(true),
        })
        .strict()
        .optional(),
    })
    .strict(),
  z.object({ kind: z.literal('folder'), path: z.string().min(1) }).strict(),
]);

const adminRole = z.enum(['read', 'admin']);

/** Admin HTTP credentials: 'read' sees everything, 'admin' may also act (retry, reprocess, pause...). */
const adminAuthSchema = z
  .object({
    basic: z
      .array(z.object({ user: z.string().min(1), password: z.string().min(8), role: adminRole }).strict())
      .default([]),
    bearer: z
      .array(z.object({ name: z.string().min(1), token: z.string().min(16), role: adminRole }).strict())
      .default([]),
  })
  .strict()
  .refine((a) => a.basic.length + a.bearer.length > 0, 'configure at least one basic user or bearer token');

/** A known DICOM peer (modality, PACS) allowed to open associations with us. */
const dimsePeerSchema = z
  .object({
    aeTitle,
    /** IP address the peer must connect from; any address when unset. */
    host: z.string().min(1).optional(),
    /** Concurrent associations from this peer; dimse.limits.maxAssociationsPerPeer when unset. */
    maxAssociations: z.number().int().min(1).max(1000).optional(),
    /** This peer must present a valid user identity (username, or username + passcode). */
    requireUserIdentity: z.boolean().default(false),
  })
  .strict();

const credentialUser = z.object({ username: z.string().min(1), password: z.string().min(1) }).strict();

/** DIMSE association limits (also the DIMSE server's defaults when it is started without a config). */
export const dimseLimitsSchema = z
  .object({
    maxAssociations: z.number().int().min(1).max(10_000).default(64),
    maxAssociationsPerPeer: z.number().int().min(1).max(10_000).default(16),
    /** ARTIM: time allowed between TCP connect and the A-ASSOCIATE-RQ. */
    associationTimeoutMs: z.number().int().min(1000).max(600_000).default(30_000),
    /** Idle time allowed between two PDUs of an established association. */
    idleTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();

/** Ingest settings owned by src/ingest (DIMSE association policy, TLS, STOW-RS, spool watermark). */
const dimseIngestSettings = {
  /** Known peers. Calling AE titles not listed are rejected unless promiscuous is on. */
  peers: z.array(dimsePeerSchema).default([]),
  /** Accept any calling AE title. Unset: on when no peers are configured (zero-config), off otherwise. */
  promiscuous: z.boolean().optional(),
  limits: dimseLimitsSchema.prefault({}),
  /** User identity negotiation (PS3.7 D.3.3.7): accepted username/passcode pairs. */
  userIdentity: z
    .object({
      /** Every association must present a valid identity (not only peers with requireUserIdentity). */
      required: z.boolean().default(false),
      users: z.array(credentialUser).default([]),
    })
    .strict()
    .prefault({}),
  /** DICOM TLS listener on its own port, beside the plain one. */
  tls: z
    .object({
      port: port.default(2762),
      /** PEM files; relative paths are relative to the config file. */
      certFile: z.string().min(1),
      keyFile: z.string().min(1),
      /** CA bundle that client certificates must chain to. */
      caFile: z.string().min(1).optional(),
      requireClientCert: z.boolean().default(false),
    })
    .strict()
    .optional(),
};

const stowrsSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Largest request body accepted. */
    maxRequestBytes: z
      .number()
      .int()
      .min(1024)
      .default(8 * 1024 ** 3),
    /** Credentials; with none configured, only loopback clients may store. */
    auth: z
      .object({
        basic: z.array(credentialUser).default([]),
        bearer: z.array(z.string().min(16)).default([]),
      })
      .strict()
      .optional(),
  })
  .strict()
  .prefault({});

const spoolSchema = z
  .object({
    /** Below this much free disk space, new instances are refused (C-STORE 0xA700, STOW-RS 409). */
    minFreeBytes: z
      .number()
      .int()
      .min(0)
      .default(1024 ** 3),
    /** Largest single instance accepted. */
    maxInstanceBytes: z
      .number()
      .int()
      .min(1024)
      .default(4 * 1024 ** 3),
  })
  .strict()
  .prefault({});

export const configSchema = z
  .object({
    dimse: z
      .object({
        aeTitle: aeTitle.default('AIGATEWAY'),
        host: z.string().default('0.0.0.0'),
        port: port.default(11112),
        maxPduLength: z.number().int().min(4096).max(4_194_304).default(262_144),
        ...dimseIngestSettings,
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: port.default(8080),
        /** Required when host is not loopback (checked at start-up by src/admin/auth.ts). */
        auth: adminAuthSchema.optional(),
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
    spool: spoolSchema,
    stowrs: stowrsSchema,
    modelsDir: z.string().min(1).default('./models'),
    study: z
      .object({
        quietPeriodMs: z.number().int().min(100).max(3_600_000).default(10_000),
        /**
         * Besides start-up and every time Redis comes back after a lost connection, the spool is reconciled
         * with the index this often (instances whose index write failed during an outage are indexed then).
         */
        reconcileIntervalMs: z.number().int().min(1000).max(86_400_000).default(300_000),
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
        /** Threads that decode and preprocess images; 0 decodes on the main thread. Unset: cores − 1, at most 4. */
        decodeThreads: z.number().int().min(0).max(64).optional(),
        /** ONNX Runtime intra-op threads per session; unset: one per physical core. Split the cores when several workers share a host. */
        intraOpThreads: z.number().int().min(1).max(256).optional(),
        /** Role `worker` only: serve /healthz, /readyz and /metrics on http.host at this port. Unset: no listener. */
        httpPort: z.number().int().min(0).max(65535).optional(),
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
        /** Exponential backoff stops growing here: 30 attempts then span about 6 hours. */
        maxBackoffMs: z.number().int().min(10).default(900_000),
        /** Per-destination circuit breaker: opens after this many consecutive transient failures... */
        breakerThreshold: z.number().int().min(1).default(5),
        /** ...and lets one probe through after this cool-down. */
        breakerCooldownMs: z.number().int().min(10).default(60_000),
        /** Delete a study's spooled images this long after all its deliveries succeeded; unset: keep. */
        spoolRetentionHours: z.number().min(0).optional(),
      })
      .strict()
      .prefault({}),
    routing: z
      .object({
        rules: z.array(routingRuleSchema).default([]),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        /** Audit segments (one JSONL file per day under <dataDir>/audit) older than this are deleted. */
        retentionDays: z.number().int().min(1).max(36_500).default(365),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type GatewayConfig = z.infer<typeof configSchema>;
export type RoutingRule = z.infer<typeof routingRuleSchema>;
export type DestinationConfig = z.infer<typeof destinationSchema>;
