// The release package's door: finding and verifying a built release, and the timed raw boot of etcd and kube-apiserver.
export { Release, locateRelease, locateReleases, compareVersions, sha256File, PROGRAMS, IMAGES, type ImageName, type Program, type ReleaseManifest, type ReleaseFile, type LocateOptions } from './release.js';
export { rawBoot, freeLoopbackPort, httpGet, type RawBootResult } from './rawboot.js';
