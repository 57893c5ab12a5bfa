//go:build tools

// Package tools pins Helm. It lives in its own module because helm v3.22
// requires k8s.io/* v0.37, which conflicts with the v0.36 staging pins that
// ../go.mod needs for k8s.io/kubernetes v1.36. Built by ../build-k8s.sh.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
