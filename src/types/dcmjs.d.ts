// dcmjs ships no type declarations; we type the surface we use at the call sites.
declare module 'dcmjs' {
  const dcmjs: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  export default dcmjs;
}
