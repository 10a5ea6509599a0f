import { z } from 'zod';
import { DEFAULT_ANATOMY_KEYWORDS } from './anatomy-keywords.ts';

const aeTitle = z
  .string()
  .min(1)
  .max(16)
  .regex(/^[\x20-\x5b\x5d-\x7e]+$/, 'AE titles are 1-16 printable ASCII characters without backslash')
  .refine((s) => s.trim().length > 0, 'AE title must not be blank');

const port = z.coerce.number().int().min(0).max(65535);

/** Why a Redis Cluster is refused at start-up (configuration and INFO cluster alike). */
export const REDIS_CLUSTER_REFUSED =
  'Redis Cluster is not supported: the study index runs multi-key Lua scripts and MULTI transactions ' +
  "across a study's keys, which are not slot-safe. Use one Redis (with replicas and Sentinel for high " +
  'availability: redis.sentinels and redis.name); see docs/scale-out.md';

const matchValue = z.union([z.string(), z.array(z.string()).min(1)]);

/**
 * One "required series" condition of a rule's completeWhen: attribute globs a series of the study must match
 * (its first instance's values, as routing sees them; BodyPartExamined as received, not resolved). All that
 * are given must hold; an empty condition is matched by any series.
 */
export const seriesConditionSchema = z
  .object({
    Modality: matchValue.optional(),
    BodyPartExamined: matchValue.optional(),
    SOPClassUID: matchValue.optional(),
    SeriesDescription: matchValue.optional(),
    StudyDescription: matchValue.optional(),
    ProtocolName: matchValue.optional(),
  })
  .strict();

/**
 * When a study from this rule's source (its match.callingAE; every source when it has none) may complete
 * before the quiet period, from the counts its images carry (src/pipeline/counts.ts): every series the study
 * holds is complete by its counts, each condition in `series` is matched by one of them, and the study holds
 * at least `minSeries` series.
 */
export const completeWhenSchema = z
  .object({
    series: z.array(seriesConditionSchema).max(32).default([]),
    minSeries: z.number().int().min(1).max(1000).default(1),
  })
  .strict();
/** BullMQ priority of a STAT study: ahead of every other at each queue (1 is BullMQ's highest). */
export const STAT_PRIORITY = 1;
/** BullMQ priority of a routine study, the default. */
export const ROUTINE_PRIORITY = 10;

/** The lane a priority is reported under (metric label, console): 'stat', 'routine' or 'p<n>'. */
export function priorityLane(priority: number): string {
  if (priority === STAT_PRIORITY) return 'stat';
  if (priority === ROUTINE_PRIORITY) return 'routine';
  return `p${priority}`;
}

/** 'stat' (1), 'routine' (10), or a BullMQ priority number: 1 is the highest. */
const prioritySchema = z
  .union([z.literal('stat'), z.literal('routine'), z.number().int().min(1).max(2_097_152)])
  .default(ROUTINE_PRIORITY)
  .transform((p) => (p === 'stat' ? STAT_PRIORITY : p === 'routine' ? ROUTINE_PRIORITY : p));

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
        ProtocolName: matchValue.optional(),
      })
      .strict()
      .default({}),
    /**
     * Attributes this rule asserts for the images it matches, used only where the images say nothing
     * themselves: `bodyPart` applies when neither Body Part Examined, the Anatomic Region Sequence nor a
     * description keyword gives one (e.g. "CR from ER_CR with no body part is a chest"). The model
     * manifest still decides modality, size and SOP class.
     */
    assume: z
      .object({
        bodyPart: z
          .string()
          .min(1)
          .max(64)
          .refine((s) => s.trim().length > 0, 'bodyPart must not be blank'),
      })
      .strict()
      .optional(),
    models: z.array(z.string().min(1)).min(1),
    /** Study completion from the counts the images carry (completeWhenSchema); unset: the quiet period. */
    completeWhen: completeWhenSchema.optional(),
    /** Destination names; empty means the default destination. */
    destinations: z.array(z.string().min(1)).default([]),
    /**
     * 'stat', 'routine' (the default) or a BullMQ priority number (1 is the highest; stat is 1, routine
     * 10). A study takes the most urgent priority of the rules that route it, and keeps it at every queue:
     * routing, inference, delivery.
     */
    priority: prioritySchema,
    /**
     * Turnaround objective of the studies this rule routes: p95 of receive → SR delivered over the last
     * hour. Missing it raises aigw_slo_breached{rule} and a banner in the console.
     */
    slo: z
      .object({
        p95Seconds: z
          .number()
          .positive()
          .max(7 * 24 * 3600),
      })
      .strict()
      .optional(),
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

const adminRole = z.enum(['read', 'operator', 'admin']);

/**
 * Admin HTTP credentials: 'read' sees everything; 'operator' may also act through the console and its API
 * (retry, reprocess, pause...); 'admin' may also use bull-board's own actions (edit job data, clean,
 * obliterate a queue).
 */
const adminAuthSchema = z
  .object({
    basic: z
      .array(
        z
          .object({
            user: z.string().min(1),
            password: z.string().min(8),
            role: adminRole,
            /** May see identifying data (accession, patient ID and name); default: only role admin. */
            phi: z.boolean().optional(),
          })
          .strict(),
      )
      .default([]),
    bearer: z
      .array(
        z
          .object({
            name: z.string().min(1),
            token: z.string().min(16),
            role: adminRole,
            /** May see identifying data (accession, patient ID and name); default: only role admin. */
            phi: z.boolean().optional(),
          })
          .strict(),
      )
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
    /**
     * Binds this AE title to a TLS client certificate: associations calling it must come over DICOM TLS
     * with a certificate (verified against dimse.tls.caFile) whose subject Common Name is exactly this.
     * Needs dimse.tls.requireClientCert.
     */
    certificateCN: z.string().min(1).max(256).optional(),
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
    /**
     * The gateway role counts associations for these limits across every gateway sharing the Redis
     * (src/pipeline/association-slots.ts); false: per process.
     */
    clusterWide: z.boolean().default(true),
    /** Longest wait for Redis when an association asks; past it, this process's own count decides. */
    clusterCheckTimeoutMs: z.number().int().min(20).max(5000).default(300),
    /** A crashed gateway's associations stop counting this long after its last refresh. */
    clusterSlotTtlMs: z.number().int().min(1000).max(600_000).default(60_000),
  })
  .strict();

/** Ingest settings owned by src/ingest (DIMSE association policy, TLS, STOW-RS, spool watermark). */
const dimseIngestSettings = {
  /** Known peers. Calling AE titles not listed are rejected unless promiscuous is on. */
  peers: z.array(dimsePeerSchema).default([]),
  /**
   * Accept any calling AE title. Unset: on only when no peers AND no PACS destination (dicomweb or dimse)
   * are configured (zero-config), off otherwise. `true` with a PACS destination is warned about.
   */
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
      /** CA bundle that client certificates must chain to; required with requireClientCert. */
      caFile: z.string().min(1).optional(),
      /** Refuse clients without a certificate signed by caFile (never by the public CAs). */
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
    /**
     * Temp files (transfers in progress) untouched for this long are swept at start-up. Several gateways
     * may share one spool, so a younger file may be another gateway's transfer. At least twice
     * dimse.limits.idleTimeoutMs (checked at load).
     */
    staleTempAfterMs: z.number().int().min(1000).default(3_600_000),
  })
  .strict()
  .prefault({});

/** Largest object one S3 CopyObject can copy: commits of bigger staged writes would need UploadPartCopy. */
export const S3_MAX_COPY_BYTES = 5 * 1024 ** 3;

/**
 * S3-compatible object storage (AWS S3, MinIO, Ceph RGW): src/storage/s3-store.ts. Several gateways may
 * share one bucket (and prefix); each keeps only a local cache of copies it reads under <dataDir>/cache.
 */
const s3StorageSchema = z
  .object({
    bucket: z
      .string()
      .min(3)
      .max(255)
      .regex(/^[A-Za-z0-9._-]+$/, 'a bucket name: letters, digits, dots, hyphens and underscores'),
    /** http(s) URL of a MinIO / Ceph RGW / other S3-compatible server; unset: AWS S3 for the region. */
    endpoint: z
      .url()
      .refine((u) => /^https?:\/\//i.test(u), 'must be an http:// or https:// URL')
      .optional(),
    region: z.string().min(1).default('us-east-1'),
    /** Put in front of every key (e.g. 'site-a/'), so several deployments can share a bucket. */
    prefix: z
      .string()
      .default('')
      .refine(
        (p) => p === '' || (p.endsWith('/') && !p.startsWith('/') && !p.split('/').slice(0, -1).includes('')),
        "a key prefix such as 'site-a/': ends with '/', no leading '/', no empty segment",
      ),
    /** Path-style URLs (endpoint/bucket/key), as MinIO and Ceph need. Unset: on when endpoint is set. */
    forcePathStyle: z.boolean().optional(),
    /**
     * Static credentials (or GATEWAY_STORAGE_S3_ACCESS_KEY_ID / GATEWAY_STORAGE_S3_SECRET_ACCESS_KEY). Unset:
     * the AWS default chain (AWS_* variables, shared config files, web identity, instance or task role).
     */
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    /** Multipart part size of a staged write; memory per write is at most partSizeBytes × (queueSize + 1). */
    partSizeBytes: z
      .number()
      .int()
      .min(5 * 1024 ** 2)
      .max(512 * 1024 ** 2)
      .default(8 * 1024 ** 2),
    /** Parts of one staged write uploaded at once. */
    queueSize: z.number().int().min(1).max(16).default(2),
    /** A request whose socket stays silent this long fails (then is retried, up to maxAttempts). */
    requestTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    /** TCP (and TLS) connection set-up allowed per attempt. */
    connectTimeoutMs: z.number().int().min(100).max(60_000).default(3_000),
    /** Attempts per request, the first included (transient errors and throttling are retried). */
    maxAttempts: z.number().int().min(1).max(10).default(3),
  })
  .strict()
  .refine((s) => (s.accessKeyId === undefined) === (s.secretAccessKey === undefined), {
    message: 'storage.s3.accessKeyId and secretAccessKey go together',
    path: ['secretAccessKey'],
  });

/**
 * Where the gateway keeps instances and SR/SEG objects (src/storage/object-store.ts): the local filesystem
 * under dataDir (the default), or S3-compatible object storage shared by every gateway and worker.
 */
const storageSchema = z
  .object({
    backend: z.enum(['filesystem', 's3']).default('filesystem'),
    s3: s3StorageSchema.optional(),
  })
  .strict()
  .refine((s) => s.backend !== 's3' || s.s3 !== undefined, {
    message: 'storage.backend s3 needs storage.s3 (at least storage.s3.bucket)',
    path: ['s3'],
  })
  .prefault({});

/**
 * Region (a Body Part Examined term such as CHEST) → words that name it in Series Description, Protocol
 * Name or Study Description. Regions given here replace that region's default list; the others keep
 * theirs; an empty list switches a region off.
 */
const anatomyKeywordsSchema = z
  .record(
    z.string().regex(/^[A-Za-z0-9_ ]{1,16}$/, 'a Body Part Examined term such as CHEST'),
    z.array(z.string().min(1).max(64)).max(500),
  )
  .default({})
  .transform((given) => {
    const merged: Record<string, string[]> = {};
    for (const [region, words] of Object.entries(DEFAULT_ANATOMY_KEYWORDS)) merged[region] = [...words];
    for (const [region, words] of Object.entries(given)) merged[region.trim().toUpperCase()] = words;
    return merged;
  });

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
        /**
         * HTTPS for the console, the API and STOW-RS (PEM files, relative to the config file). With it the
         * listener speaks only HTTPS (TLS 1.2 or later).
         */
        tls: z
          .object({
            certFile: z.string().min(1),
            keyFile: z.string().min(1),
            /** Clients must present a certificate signed by this CA (mutual TLS). */
            caFile: z.string().min(1).optional(),
            requireClientCert: z.boolean().default(false),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    redis: z
      .object({
        url: z
          .string()
          .refine((u) => !/^[a-z]+\+cluster:/i.test(u), REDIS_CLUSTER_REFUSED)
          .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
          .default('redis://127.0.0.1:6379'),
        /** Key prefix for every queue and index key, so several gateways can share one Redis. */
        prefix: z.string().min(1).default('aigw'),
        /** Start a private redis-server when none answers at the URL (zero-config runs only). */
        autoStart: z.boolean().default(true),
        /**
         * Redis Sentinel: the sentinels to ask for the current master of `name`. When set, `url` is not
         * used (nor autoStart); the master's password is `password`, the sentinels' `sentinelPassword`.
         */
        sentinels: z
          .array(z.object({ host: z.string().min(1), port: port }).strict())
          .min(1)
          .optional(),
        /** The master name the sentinels monitor (`sentinel monitor <name> ...`). */
        name: z.string().min(1).optional(),
        /** Password of the master and replicas, when they require one (with sentinels). */
        password: z.string().min(1).optional(),
        /** Password of the sentinels themselves, when they require one. */
        sentinelPassword: z.string().min(1).optional(),
        /** Redis Cluster is refused (see docs/scale-out.md); `true` here says so at configuration time. */
        cluster: z
          .boolean()
          .refine((v) => !v, REDIS_CLUSTER_REFUSED)
          .optional(),
      })
      .strict()
      .refine((r) => (r.sentinels === undefined) === (r.name === undefined), {
        message: 'redis.sentinels and redis.name go together (the master name the sentinels monitor)',
        path: ['name'],
      })
      .prefault({}),
    dataDir: z.string().min(1).default('./data'),
    storage: storageSchema,
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
        /**
         * Largest image a worker decodes: Rows × Columns × Samples per Pixel × Bits Allocated/8 × Number of
         * Frames, as the header declares it, checked before any allocation or codec call (a small RLE or
         * JPEG 2000 file can declare gigabytes). Also the codec WebAssembly memory is reset after a decode
         * that grew it past a quarter of this. Default 512 MiB.
         */
        maxDecodedImageBytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .max(4 * 1024 * 1024 * 1024)
          .default(512 * 1024 * 1024),
        /** ONNX Runtime intra-op threads per session; unset: one per physical core. Split the cores when several workers share a host. */
        intraOpThreads: z.number().int().min(1).max(256).optional(),
        /** Role `worker` only: serve /healthz, /readyz and /metrics on http.host at this port. Unset: no listener. */
        httpPort: z.number().int().min(0).max(65535).optional(),
        /**
         * BullMQ lock of an inference job. A thread of its own renews it while the model runs, so a long run
         * keeps it; it matters only when a worker dies: its job goes to another worker after this long.
         */
        lockDurationMs: z.number().int().min(1_000).max(3_600_000).default(30_000),
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
        /** Deprecated: retention.spoolHours. When set, it overrides it. */
        spoolRetentionHours: z.number().min(0).optional(),
      })
      .strict()
      .prefault({}),
    routing: z
      .object({
        rules: z.array(routingRuleSchema).default([]),
        anatomyKeywords: anatomyKeywordsSchema,
      })
      .strict()
      .prefault({}),
    /**
     * What the gateway keeps, and for how long (src/pipeline/retention.ts, run by the gateway role). On by
     * default so that disk and Redis stay flat under steady traffic; every study is covered, oldest first.
     */
    retention: z
      .object({
        /** A study's spooled images go this long after it was done (every delivery of its last run landed). */
        spoolHours: z.number().min(0).default(24),
        /** SRs and SEGs in <dataDir>/outbox go this long after their study was done. */
        outboxHours: z.number().min(0).default(24),
        /**
         * A study that failed, or never completed, is kept this long after its last instance arrived (for an
         * admin to look and replay), then its images, outbox objects and records go.
         */
        failedDays: z.number().min(0).default(14),
        /** Failed queue jobs (kept for replay from the console) go after this many days. */
        failedJobDays: z.number().min(0).default(14),
        /** Files of the built-in folder destination (<dataDir>/results) go this many days after they were written. */
        resultsDays: z.number().min(0).default(30),
        /** A study's Redis records (summary, instance list, audit summary) go this long after its last instance, once its images are gone. */
        studyRecordDays: z.number().min(0).default(30),
        /** How often a retention pass runs. */
        intervalMinutes: z.number().min(0.01).max(1_440).default(5),
      })
      .strict()
      .prefault({}),
    /**
     * Several gateways sharing one Redis (docs/scale-out.md): cluster-wide maintenance (retention, the
     * periodic spool reconcile, the stale temp sweep, dead-worker pruning) runs on the one gateway holding a
     * Redis lease (src/pipeline/maintenance-lease.ts).
     */
    maintenance: z
      .object({
        /** The lease's expiry: renewed every third of it; another gateway takes over this long after its holder died. */
        leaseTtlMs: z.number().int().min(1000).max(600_000).default(30_000),
        /** How often the lease holder sweeps abandoned temp files and prunes dead workers' heartbeats. */
        sweepIntervalMs: z.number().int().min(1000).max(86_400_000).default(60_000),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        /** Audit segments (one JSONL file per day under <dataDir>/audit) older than this are deleted. */
        retentionDays: z.number().int().min(1).max(36_500).default(365),
        /**
         * The cluster view: every record also goes to a Redis stream (all gateways and workers), trimmed to
         * about this many records; /api/audit reads it, and this node's segments where it does not reach back.
         */
        streamMaxLen: z.number().int().min(0).max(10_000_000).default(100_000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type GatewayConfig = z.infer<typeof configSchema>;
export type RoutingRule = z.infer<typeof routingRuleSchema>;
export type CompleteWhen = z.infer<typeof completeWhenSchema>;
export type SeriesCondition = z.infer<typeof seriesConditionSchema>;
/** Region → keywords, defaults merged in (see anatomyKeywordsSchema). */
export type AnatomyKeywords = Record<string, string[]>;
export type DestinationConfig = z.infer<typeof destinationSchema>;
export type S3StorageConfig = z.infer<typeof s3StorageSchema>;
