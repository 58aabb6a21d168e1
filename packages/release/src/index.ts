export { Release, locateRelease, sha256File, PROGRAMS, type Program, type ReleaseManifest, type ReleaseFile, type LocateOptions } from './release.js';
export { rawBoot, freeLoopbackPort, httpGet, type RawBootResult } from './rawboot.js';
