//go:build tools

// Package tools pins the real Pulumi CLI and engine for make e2e (the e2e's verdicts come from it).
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
