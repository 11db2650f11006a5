// Command streams-validate checks the deployment files with the parsers the real tools use,
// without a Docker engine or a Kubernetes cluster:
//
//	streams-validate compose [-env KEY=VALUE]... FILE...   load docker-compose.yml like `docker compose`
//	streams-validate kustomize DIR                           render a kustomization like `kubectl apply -k`
//
// compose prints the loaded project as JSON (schema-validated, interpolated, normalized, references
// checked); kustomize prints the rendered manifests as one YAML stream. Any problem is one line on
// stderr and exit status 1, so a test or a CI step fails loudly.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: streams-validate compose [-env KEY=VALUE]... FILE...
       streams-validate kustomize DIR`

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("%s", usage))
	}
	var err error
	switch os.Args[1] {
	case "compose":
		err = runCompose(os.Args[2:], os.Stdout)
	case "dockerfile":
		err = runDockerfile(os.Args[2:], os.Stdout)
	case "kustomize":
		err = runKustomize(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "streams-validate: error: %v\n", err)
	os.Exit(1)
}
