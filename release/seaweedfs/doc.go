// Package seaweedfs pins upstream SeaweedFS, whose `weed server -s3` is the S3-compatible object
// store the backup tests run against. release/tools.sh builds it with
// `go build github.com/seaweedfs/seaweedfs/weed` (see the tool directive in go.mod).
package seaweedfs
