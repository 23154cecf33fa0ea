// Package cli holds what the e2e's small istiod clients share: stdout carries their answer alone,
// so Istio's logs go to stderr, and a failure is one line on stderr and exit status 1.
package cli

import (
	"fmt"
	"os"

	istiolog "istio.io/istio/pkg/log"
)

// LogToStderr sends the logs of Istio's packages to stderr.
func LogToStderr(tool string) {
	options := istiolog.DefaultOptions()
	options.OutputPaths = []string{"stderr"}
	if err := istiolog.Configure(options); err != nil {
		Fail(tool, err)
	}
}

// Fail prints the error as one line and exits with status 1.
func Fail(tool string, err error) {
	fmt.Fprintln(os.Stderr, tool+":", err)
	os.Exit(1)
}
