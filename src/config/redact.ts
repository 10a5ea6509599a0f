// Redaction for anything that prints the effective configuration (`config check`): its output ends up in
// tickets and chat. Secrets are recognised by where they sit and by what they look like, so a setting
// added later is covered too: a key named like a credential, every value of a header map, the password of
// a URL's userinfo, a secret-named URL query parameter, and any "Bearer …"/"Basic …" value.

export const REDACTED = '[redacted]';

/** Key names (case, '-' and '_' ignored) whose values are credentials. */
const SECRET_NAME =
  /(password|passcode|passwd|passphrase|secret|token|apikey|key|authorization|credential|cookie|bearer|session|signature)s?$/;
/** Scheme-prefixed credentials, whatever the key they sit under. */
const CREDENTIAL_VALUE = /^\s*(bearer|basic|digest|token|apikey)\s+\S/i;
/** Keys made of a secret word but naming no secret (paths of PEM files, ids). */
const NOT_SECRET = new Set(['keyfile', 'certfile', 'cafile', 'clientid']);

function normalise(key: string): string {
  return key.toLowerCase().replace(/[-_\s]/g, '');
}

export function isSecretName(key: string): boolean {
  const k = normalise(key);
  return !NOT_SECRET.has(k) && SECRET_NAME.test(k);
}

/** A URL with its userinfo password and secret-named query values replaced; other strings unchanged. */
export function redactUrl(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // Unparseable but URL-shaped: hide anything between '://' and '@'.
    return value.replace(/(:\/\/)[^/@]*@/, `$1${REDACTED}@`);
  }
  let changed = false;
  if (url.password !== '') {
    url.password = REDACTED;
    changed = true;
  } else if (url.username !== '' && !value.includes(`${url.username}@`)) {
    url.username = REDACTED;
    changed = true;
  }
  for (const name of [...url.searchParams.keys()]) {
    if (isSecretName(name)) {
      url.searchParams.set(name, REDACTED);
      changed = true;
    }
  }
  // URL encodes the brackets; print them as typed.
  return changed ? url.toString().replaceAll(encodeURIComponent(REDACTED), REDACTED) : value;
}

function redactString(value: string): string {
  return CREDENTIAL_VALUE.test(value) ? REDACTED : redactUrl(value);
}

/**
 * A deep copy of `value` fit to print. `underSecret`: the parent key names a secret (e.g. a list of
 * bearer tokens); `headers`: the parent is a header map, whose every value may be a credential.
 */
export function redactSecrets(value: unknown, key = '', underSecret = false): unknown {
  const secretKey = key !== '' && isSecretName(key);
  if (typeof value === 'string') {
    if (value === '') return value;
    return secretKey || underSecret ? REDACTED : redactString(value);
  }
  if (typeof value === 'number' || typeof value === 'bigint')
    return secretKey || underSecret ? REDACTED : value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, '', secretKey || underSecret));
  if (value !== null && typeof value === 'object') {
    const isHeaderMap = normalise(key) === 'headers';
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = isHeaderMap ? redactSecrets(v, k, true) : redactSecrets(v, k);
    }
    return out;
  }
  return value;
}
