// The error-message helper lives in util/ so that libraries below observability (config, dicom, models)
// use the same one; logging code imports it from here.
export { errorMessage } from '../util/error-message.ts';
