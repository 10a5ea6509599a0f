/** The one way an error becomes a log field or a stored reason: its message, or its string form. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === 'string' ? err : String(err);
}
