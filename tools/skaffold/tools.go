//go:build tools

// Package tools pins skaffold (built by tools/build-skaffold.sh); it is never compiled itself.
package tools

import _ "github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold"
