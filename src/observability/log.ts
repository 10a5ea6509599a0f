import pino from 'pino';

// Patient-identifying attributes never reach the logs: redact them wherever they appear.
const PHI_KEYS = [
  'PatientName',
  'PatientID',
  'PatientBirthDate',
  'patientName',
  'patientId',
  'patientBirthDate',
  'AccessionNumber',
  'accessionNumber',
];

export const log = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
  redact: { paths: [...PHI_KEYS, ...PHI_KEYS.map((k) => `*.${k}`)], censor: '[redacted]' },
});

export type Logger = typeof log;
