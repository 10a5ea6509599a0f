/** A DIMSE status (or a STOW-RS failure/warning reason) as PS3.7 writes it: 0xA700. */
export function statusHex(status: number): string {
  return `0x${status.toString(16).toUpperCase().padStart(4, '0')}`;
}
