//go:build tools

// Programs built from this module's dependencies beside the suite: agnhost, upstream's test image program the
// suite's pods run (`serve-hostname`, `connect`), packed as the image anodyne.local/agnhost; and the ginkgo
// runner, which runs the compiled suite in parallel processes (`ginkgo --procs N e2e.test -- FLAGS`).
package netpole2e

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
